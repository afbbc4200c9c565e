"""A task database held in a dict: for tests, notebooks and throwaway runs."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

import anyio.lowlevel

from beautyspot_async._failure import FailureRecord
from beautyspot_async._record import TaskRecord
from beautyspot_async.db._base import EvictionCandidate, LeaseHolder, RecordTaskDB
from beautyspot_async.db._history import records_to_frame

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MemoryTaskDB"]


class MemoryTaskDB(RecordTaskDB):
    """Keep every record in process memory; nothing survives the process.

    Works on any event loop and under asyncio and trio (``loop_bound`` is
    false), and from several threads at once. ``aclose`` keeps the data: a
    closed database "reopens" with everything it held.

    Leases are real but only coordinate callers that share this instance
    (one process); they expire by ``clock``, the same wall clock that stamps
    ``created_at``/``updated_at``.
    """

    loop_bound: ClassVar[bool] = False
    backend_name: ClassVar[str] = "memory"
    supports_leases: ClassVar[bool] = True

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # A plain lock is fine on an event-loop thread here: it is only held
        # for a few dict operations and never across an await.
        self._lock = threading.Lock()
        self._rows: dict[str, TaskRecord] = {}
        # Write sequence numbers order history when timestamps tie (a fake
        # clock that does not move, or two writes within one clock tick).
        self._seq: dict[str, int] = {}
        self._counter = itertools.count()
        self._leases: dict[str, tuple[str, float]] = {}
        # Apart from the records, so no reader of records ever meets one.
        self._failures: dict[str, FailureRecord] = {}
        # Last recorded hit per key (see touch()), dropped with the row.
        self._used: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"MemoryTaskDB(<{len(self._rows)} records>)"

    async def init_schema(self) -> None:
        """Nothing to create; present for the protocol."""
        await anyio.lowlevel.checkpoint()

    def _upsert(self, record: TaskRecord, now: float) -> None:
        previous = self._rows.get(record.cache_key)
        self._rows[record.cache_key] = replace(
            record,
            created_at=previous.created_at if previous is not None else now,
            updated_at=now,
        )
        self._seq[record.cache_key] = next(self._counter)

    async def get(self, cache_key: str) -> TaskRecord | None:
        await anyio.lowlevel.checkpoint()
        return self.get_nowait(cache_key)

    def get_nowait(self, cache_key: str) -> TaskRecord | None:
        """Answer from memory; never raises :class:`anyio.WouldBlock`."""
        with self._lock:
            return self._rows.get(cache_key)

    async def get_many(self, cache_keys: Sequence[str]) -> dict[str, TaskRecord]:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return {k: r for k in cache_keys if (r := self._rows.get(k)) is not None}

    async def _save_record(self, record: TaskRecord) -> None:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            self._upsert(record, self._clock())

    async def save_many(self, records: Iterable[TaskRecord]) -> None:
        """Upsert the batch atomically: readers see all of it or none.

        ``size_bytes`` of each record is kept as given (a record object always
        carries one); only the timestamps are replaced.
        """
        batch = list(records)
        await anyio.lowlevel.checkpoint()
        with self._lock:
            now = self._clock()
            for record in batch:
                self._upsert(record, now)

    async def delete(self, cache_key: str) -> bool:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            self._seq.pop(cache_key, None)
            self._used.pop(cache_key, None)
            return self._rows.pop(cache_key, None) is not None

    async def delete_expired(self, now: float | None = None) -> int:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            cutoff = self._clock() if now is None else now
            doomed = [k for k, r in self._rows.items() if r.is_expired(cutoff)]
            for key in doomed:
                del self._rows[key]
                del self._seq[key]
                self._used.pop(key, None)
            return len(doomed)

    async def iter_records(self) -> AsyncIterator[TaskRecord]:
        """Yield a snapshot taken when iteration starts."""
        with self._lock:
            snapshot = list(self._rows.values())
        for record in snapshot:
            await anyio.lowlevel.checkpoint()
            yield record

    async def get_history(self, limit: int = 1000) -> pd.DataFrame:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            newest = sorted(
                self._rows.values(),
                key=lambda r: (r.updated_at, self._seq[r.cache_key]),
                reverse=True,
            )[: max(limit, 0)]
        return records_to_frame(newest)

    async def touch(self, cache_keys: Sequence[str], now: float) -> None:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            for key in cache_keys:
                if key in self._rows:
                    self._used[key] = max(now, self._used.get(key, now))

    async def usage_totals(self) -> tuple[int, int]:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return len(self._rows), sum(max(r.size_bytes, 0) for r in self._rows.values())

    async def eviction_candidates(self, limit: int) -> list[EvictionCandidate]:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            candidates = [
                EvictionCandidate(
                    r.cache_key,
                    r.size_bytes,
                    r.result_type,
                    r.result_value,
                    max(r.updated_at, self._used.get(r.cache_key, r.updated_at)),
                )
                for r in self._rows.values()
            ]
        candidates.sort(key=lambda c: c.used_at)
        return candidates[: max(limit, 0)]

    async def save_failure(self, failure: FailureRecord) -> None:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            self._failures[failure.cache_key] = failure

    async def get_failures(
        self, func_name: str | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            found = [
                f for f in self._failures.values() if func_name is None or f.func_name == func_name
            ]
        found.sort(key=lambda f: f.failed_at, reverse=True)
        return found[: max(limit, 0)]

    async def delete_failures(self, cache_keys: Sequence[str]) -> int:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return sum(self._failures.pop(key, None) is not None for key in set(cache_keys))

    async def acquire_lease(self, cache_key: str, owner: str, ttl: float) -> bool:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            now = self._clock()
            held = self._leases.get(cache_key)
            if held is not None and held[0] != owner and held[1] > now:
                return False
            self._leases[cache_key] = (owner, now + ttl)
            return True

    async def release_lease(self, cache_key: str, owner: str) -> None:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            held = self._leases.get(cache_key)
            if held is not None and held[0] == owner:
                del self._leases[cache_key]

    async def renew_leases(self, cache_keys: Sequence[str], owner: str, ttl: float) -> None:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            now = self._clock()
            for key in cache_keys:
                held = self._leases.get(key)
                if held is not None and held[0] == owner:
                    self._leases[key] = (owner, now + ttl)

    async def lease_holders(self, cache_keys: Sequence[str]) -> dict[str, LeaseHolder]:
        await anyio.lowlevel.checkpoint()
        with self._lock:
            now = self._clock()
            return {
                key: LeaseHolder(held[0], held[1] - now)
                for key in cache_keys
                if (held := self._leases.get(key)) is not None and held[1] > now
            }

    async def take_over_leases(self, stale: Mapping[str, str], owner: str, ttl: float) -> list[str]:
        await anyio.lowlevel.checkpoint()
        taken = []
        with self._lock:
            now = self._clock()
            for key, dead in stale.items():
                held = self._leases.get(key)
                if held is not None and held[0] == dead:
                    self._leases[key] = (owner, now + ttl)
                    taken.append(key)
        return taken
