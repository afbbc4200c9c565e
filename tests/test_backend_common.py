"""The parts every backend shares: size rule, error map, lazy clients, read-lease-reread."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

import beautyspot_async as bs
from beautyspot_async._errormap import ErrorMap
from beautyspot_async._lazy import LazyClient
from beautyspot_async._record import TaskRecord, payload_size, saved_record
from beautyspot_async.db import MemoryTaskDB, SQLiteTaskDB, WaitStatistics
from beautyspot_async.db._common import WaitTracker, lookup_then_lease
from beautyspot_async.storage import LocalStorage

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    # LazyClient follows asyncio loops; aiosqlite is asyncio-only.
    return "asyncio"


def _record(key: str) -> TaskRecord:
    return TaskRecord(key, "f", "i", None, "inline", None, result_data=b"x")


class TestSizeRule:
    """``size_bytes`` is kept when given; ``None`` means the inline payload's length."""

    def test_given_size_is_kept(self) -> None:
        assert payload_size(7, b"abc") == 7
        assert payload_size(0, b"abc") == 0

    def test_missing_size_is_the_payload_length(self) -> None:
        assert payload_size(None, b"abc") == 3
        assert payload_size(None, None) == 0

    def test_saved_record_settles_the_size(self) -> None:
        record = saved_record(
            cache_key="k",
            func_name="f",
            input_id="i",
            version=None,
            result_type="inline",
            content_type=None,
            result_data=b"12345",
        )
        assert record.size_bytes == 5
        assert (record.created_at, record.updated_at) == (0.0, 0.0)


class TestErrorMap:
    """Mapped driver errors become BackendError chained to them; nothing else is touched."""

    errors = ErrorMap(
        "demo",
        {sqlite3.Error: None, ValueError: lambda exc: "closed" in str(exc)},
        transient=(ConnectionError,),
    )

    def test_mapped_error_is_translated_and_chained(self) -> None:
        expected = pytest.raises(bs.BackendError, match=r"\[demo\] save failed: boom")
        with expected as caught, self.errors.translating("save"):
            raise sqlite3.OperationalError("boom")
        assert caught.value.backend == "demo"
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)

    def test_predicate_picks_instances(self) -> None:
        with pytest.raises(bs.BackendError), self.errors.translating("read"):
            raise ValueError("connection closed")
        with pytest.raises(ValueError, match="bad argument"), self.errors.translating("read"):
            raise ValueError("bad argument")

    def test_transient_errors_are_translated_and_flagged(self) -> None:
        assert self.errors.is_transient(ConnectionResetError())
        assert not self.errors.is_transient(sqlite3.OperationalError())
        with pytest.raises(bs.BackendError), self.errors.translating("read"):
            raise ConnectionResetError("reset")

    def test_library_errors_pass_through(self) -> None:
        original = bs.BackendError("already ours", backend="other")
        with pytest.raises(bs.BackendError) as caught, self.errors.translating("read"):
            raise original
        assert caught.value is original
        with pytest.raises(bs.ConfigurationError), self.errors.translating("open"):
            raise bs.ConfigurationError("newer schema")

    def test_unmapped_errors_pass_through(self) -> None:
        with pytest.raises(KeyError), self.errors.translating("read"):
            raise KeyError("x")


class TestLazyClient:
    """Opened once on first use, reopened when dead, closed idempotently."""

    async def test_concurrent_first_use_opens_once(self) -> None:
        opened: list[object] = []

        async def open_() -> object:
            await anyio.sleep(0.01)
            opened.append(object())
            return opened[-1]

        async def close(_: object) -> None:
            pass

        lazy = LazyClient(open_, close)
        got: list[object] = []

        async def grab() -> None:
            got.append(await lazy.get())

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(grab)
        assert len(opened) == 1
        assert all(g is opened[0] for g in got)

    async def test_dead_resource_is_reopened_and_close_is_idempotent(self) -> None:
        closed: list[list[bool]] = []

        async def open_() -> list[bool]:
            return [True]

        async def close(resource: list[bool]) -> None:
            closed.append(resource)

        lazy = LazyClient(open_, close, alive=lambda r: r[0])
        first = await lazy.get()
        first[0] = False
        assert lazy.peek() is None
        second = await lazy.get()
        assert second is not first
        await lazy.aclose()
        await lazy.aclose()
        assert closed == [second]

    def test_loop_bound_resource_is_dropped_on_a_new_loop(self) -> None:
        count = 0

        async def open_() -> int:
            nonlocal count
            count += 1
            return count

        async def close(_: int) -> None:
            pass

        bound = LazyClient(open_, close)
        assert anyio.run(bound.get) == 1
        assert anyio.run(bound.get) == 2
        kept = LazyClient(open_, close, loop_bound=False)
        assert anyio.run(kept.get) == 3
        assert anyio.run(kept.get) == 3


class TestLookupThenLease:
    """A key stored between the read and the lease comes back as a record, its lease given back."""

    async def test_late_write_is_returned_and_released(self) -> None:
        stored: dict[str, TaskRecord] = {"hit": _record("hit")}
        released: list[str] = []

        async def read(keys: list[str]) -> dict[str, TaskRecord]:
            return {k: stored[k] for k in keys if k in stored}

        async def lease(keys: list[str]) -> list[bool]:
            stored["late"] = _record("late")  # written by another process meanwhile
            return [key != "held" for key in keys]

        async def release(keys: list[str]) -> None:
            released.extend(keys)

        found = await lookup_then_lease(
            ["hit", "late", "free", "held", "hit"], read=read, lease=lease, release=release
        )
        assert found == {
            "hit": stored["hit"],
            "late": stored["late"],
            "free": True,
            "held": False,
        }
        assert released == ["late"]


class TestStatistics:
    """Backends report waits as an immutable snapshot."""

    def test_tracker_counts_parked_waits(self) -> None:
        tracker = WaitTracker()
        with tracker.parked("k"), tracker.parked("k"):
            tracker.notified()
            snapshot = tracker.snapshot()
            assert snapshot == WaitStatistics(2, frozenset({"k"}), 1)
        assert tracker.snapshot() == WaitStatistics(0, frozenset(), 1)

    def test_default_reports_nothing(self) -> None:
        assert MemoryTaskDB().statistics() == WaitStatistics()


class TestAsyncWith:
    """``async with`` opens a task database and closes both kinds of backend."""

    async def test_taskdb(self, tmp_path: Path) -> None:
        async with SQLiteTaskDB(tmp_path / "t.db") as db:
            assert await db.schema_exists()
            await db.save_many([_record("k")])
        assert db._conn.peek() is None
        async with db:  # a closed database reopens
            assert await db.get("k") is not None

    async def test_storage(self, tmp_path: Path) -> None:
        async with LocalStorage(tmp_path) as storage:
            location = await storage.save("abcd", b"data")
        assert await storage.load(location) == b"data"
