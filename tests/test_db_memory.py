"""MemoryTaskDB: the conformance suite plus what only a dict can promise."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace

import anyio
import pandas as pd
import pytest

from beautyspot_async._record import TaskRecord
from beautyspot_async.db._memory import MemoryTaskDB
from beautyspot_async.testing import FakeClock, check_taskdb, check_taskdb_pair

pytestmark = pytest.mark.anyio


class TestConformance:
    """MemoryTaskDB passes the shared TaskDB suite under asyncio and trio."""

    async def test_with_fake_clock(self) -> None:
        clock = FakeClock()
        await check_taskdb(lambda: MemoryTaskDB(clock=clock), clock=clock)

    async def test_with_async_factory(self) -> None:
        clock = FakeClock()

        async def factory() -> MemoryTaskDB:
            await anyio.lowlevel.checkpoint()
            return MemoryTaskDB(clock=clock)

        await check_taskdb(factory, clock=clock)

    async def test_pair_is_one_shared_instance(self) -> None:
        # One process sees a MemoryTaskDB: two "instances of one store" are one instance.
        clock = FakeClock()
        db = MemoryTaskDB(clock=clock)
        await check_taskdb_pair(lambda: (db, db), clock=clock)


class TestSharedInstance:
    """One instance is one store: closing keeps data, threads see each other's writes."""

    async def test_aclose_keeps_rows(self) -> None:
        db = MemoryTaskDB()
        await db.save(
            cache_key="k",
            func_name="f",
            input_id="i",
            version=None,
            result_type="inline",
            content_type=None,
            result_data=b"v",
        )
        await db.aclose()
        record = await db.get("k")
        assert record is not None
        assert record.result_data == b"v"

    def test_get_nowait_from_another_thread(self) -> None:
        db = MemoryTaskDB()
        anyio.run(
            lambda: db.save_many(
                [TaskRecord("k", "f", "i", None, "inline", None, result_data=b"x", size_bytes=1)]
            )
        )
        seen: list[TaskRecord | None] = []
        thread = threading.Thread(target=lambda: seen.append(db.get_nowait("k")))
        thread.start()
        thread.join()
        assert seen[0] is not None
        assert seen[0].result_data == b"x"
        assert db.get_nowait("missing") is None


class TestHistoryTies:
    """With a clock that does not move, history still lists the latest write first."""

    async def test_newest_write_first_on_tied_timestamps(self) -> None:
        db = MemoryTaskDB(clock=FakeClock())
        for key in ("a", "b", "c", "a"):
            await db.save(
                cache_key=key,
                func_name="f",
                input_id="i",
                version=None,
                result_type="inline",
                content_type=None,
            )
        frame = await db.get_history()
        assert list(frame["cache_key"]) == ["a", "c", "b"]


class _ResetsCreatedAt(MemoryTaskDB):
    def _upsert(self, record: TaskRecord, now: float) -> None:
        self._rows.pop(record.cache_key, None)
        super()._upsert(record, now)


class _OldestFirst(MemoryTaskDB):
    async def get_history(self, limit: int = 1000) -> pd.DataFrame:
        frame = await super().get_history(limit=10**9)
        return frame.iloc[::-1].head(limit).reset_index(drop=True)


class _GreedyLeases(MemoryTaskDB):
    async def acquire_lease(self, cache_key: str, owner: str, ttl: float) -> bool:
        return True


class _TruncatesLargePayloads(MemoryTaskDB):
    async def get(self, cache_key: str) -> TaskRecord | None:
        record = await super().get(cache_key)
        if record is None or record.result_data is None:
            return record
        return replace(record, result_data=record.result_data[: 1 << 16])


class _LyingNowait(MemoryTaskDB):
    async def get(self, cache_key: str) -> TaskRecord | None:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._rows.get(cache_key)

    def get_nowait(self, cache_key: str) -> TaskRecord | None:
        return None


class _NowaitRaisesWouldBlock(MemoryTaskDB):
    def get_many_nowait(self, cache_keys: Sequence[str]) -> dict[str, TaskRecord | None]:
        raise anyio.WouldBlock


class _ReleasesAnyOwner(MemoryTaskDB):
    async def release_leases(self, cache_keys: Sequence[str], owner: str) -> None:
        for key in cache_keys:
            self._leases.pop(key, None)


class _GrantsWithoutLeasing(MemoryTaskDB):
    async def lookup_or_lease(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        found: dict[str, TaskRecord | bool] = dict(await self.get_many(cache_keys))
        return {key: found.get(key, True) for key in cache_keys}


class _SavesWithoutReleasing(MemoryTaskDB):
    async def save_and_release(
        self, records: Sequence[TaskRecord], leases: Mapping[str, Sequence[str]]
    ) -> None:
        await self.save_many(records)


class _NoReRead(MemoryTaskDB):
    """Reads, then leases, without re-reading: a key stored in between is granted."""

    async def lookup_or_lease(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        found: dict[str, TaskRecord | bool] = dict(await self.get_many(cache_keys))
        for key in cache_keys:
            if key not in found:
                for _ in range(5):
                    await anyio.lowlevel.checkpoint()
                found[key] = await self.acquire_lease(key, owner, ttl)
        return found


class _TwoOwnersWin(MemoryTaskDB):
    """Every instance keeps its own leases, as if each process had its own table."""

    async def lookup_or_lease(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        found: dict[str, TaskRecord | bool] = dict(await self.get_many(cache_keys))
        await anyio.lowlevel.checkpoint()
        return {key: found.get(key, True) for key in cache_keys}


class TestSuiteCatchesBugs:
    """check_taskdb fails, naming the check, for a backend that breaks the contract."""

    @pytest.mark.parametrize(
        ("broken", "check"),
        [
            (_ResetsCreatedAt, "upsert"),
            (_OldestFirst, "history"),
            (_GreedyLeases, "leases"),
            (_TruncatesLargePayloads, "round_trip"),
            (_LyingNowait, "nowait_reads"),
            (_NowaitRaisesWouldBlock, "nowait_reads"),
            (_ReleasesAnyOwner, "release_leases"),
            (_GrantsWithoutLeasing, "lookup_or_lease"),
            (_SavesWithoutReleasing, "save_and_release"),
        ],
    )
    async def test_broken_backend_fails(self, broken: type[MemoryTaskDB], check: str) -> None:
        clock = FakeClock()
        with pytest.raises(AssertionError, match=rf"check_taskdb\[{check}\]"):
            await check_taskdb(lambda: broken(clock=clock), clock=clock)

    @pytest.mark.parametrize(
        ("broken", "check"),
        [(_TwoOwnersWin, "lookup_or_lease_race"), (_NoReRead, "saved_is_a_record")],
    )
    async def test_broken_pair_fails(self, broken: type[MemoryTaskDB], check: str) -> None:
        clock = FakeClock()
        db = broken(clock=clock)
        with pytest.raises(AssertionError, match=rf"check_taskdb_pair\[{check}\]"):
            await check_taskdb_pair(lambda: (db, db), clock=clock)
