"""The shared machinery behind one Spot: store, writer, memory tier, flights.

Every marked function of a Spot shares one engine. The engine's lifecycle
(open, flush, close) runs on the I/O loop; its hot-path members (memory tier,
flight registry, writer queue) are safe to touch from any thread.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ._coalesce import NowaitCoalescer
from ._leases import Leases
from ._memo import MemoryTier
from ._portal import io_loop
from ._reader import Reader
from ._singleflight import FlightRegistry
from ._store import DEFAULT_BACKEND_TIMEOUT, ResultStore
from ._writer import Writer
from .db import TaskDB
from .storage import BlobStorageBase

__all__ = ["Engine", "EngineStats", "SpotStatistics"]

logger = logging.getLogger("beautyspot_async")


class EngineStats:
    """Plain counters. Increments from several threads may race and lose a
    count; they are for observation, not accounting."""

    __slots__ = ("corrupt", "hits", "joins", "lease_waits", "memory_hits", "misses")

    def __init__(self) -> None:
        self.hits = 0
        self.memory_hits = 0
        self.misses = 0
        self.joins = 0
        self.corrupt = 0
        self.lease_waits = 0


@dataclass(frozen=True, slots=True)
class SpotStatistics:
    """A snapshot of a Spot's activity since it was created."""

    #: Calls answered from the task database or blob storage.
    hits: int
    #: Calls answered from the in-process memory tier.
    memory_hits: int
    #: Calls that executed the function.
    misses: int
    #: Calls that joined a concurrent execution of the same key.
    joins: int
    #: Stored entries found corrupt (recomputed and rewritten).
    corrupt: int
    #: Calls that waited for another process holding the key's lease.
    lease_waits: int
    #: Writes queued and not yet durable.
    pending_writes: int
    #: Writes made durable.
    written: int
    #: Writes that failed.
    write_failures: int
    #: Entries and bytes held by the memory tier.
    memory_entries: int
    memory_bytes: int


class Engine:
    """Store + writer + memory tier + flights, with a lazy lifecycle."""

    def __init__(
        self,
        *,
        db: TaskDB,
        storage: BlobStorageBase,
        blob_threshold: int,
        default_wait: bool,
        lease_ttl: float | None,
        on_backend_error: Literal["raise", "bypass"],
        clock: Callable[[], float],
        memory_entries: int,
        memory_bytes: int,
        backend_timeout: float | None = DEFAULT_BACKEND_TIMEOUT,
    ) -> None:
        self.store = ResultStore(db, storage, timeout=backend_timeout)
        self.writer = Writer(self.store)
        self.leases = Leases(self.store, lease_ttl)
        self.reader = Reader(self.store, self.leases.release_soon)
        self.coalescer = NowaitCoalescer(db)
        self.memo = MemoryTier(max_entries=memory_entries, max_bytes=memory_bytes)
        self.flights = FlightRegistry()
        self.stats = EngineStats()
        self.blob_threshold = blob_threshold
        self.default_wait = default_wait
        self.on_backend_error = on_backend_error
        self.clock = clock
        self.ready = False
        for drain in (self.writer, self.reader, self.leases.releaser):
            drain.revive = self._revive
        # A Spot dropped without aclose() still flushes its queued writes,
        # gives back its leases and closes its connections, instead of
        # leaving its drain tasks to be garbage-collected while pending.
        weakref.finalize(self, _shut_down, self.reader, self.writer, self.leases, self.store)

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Open the backends and start the writer (from any loop)."""
        if not self.ready:
            await io_loop.run(self._open_on_io_loop)

    def _revive(self) -> None:
        # A call that was in flight when the Spot closed reopens it to store
        # its result, as any new call would.
        io_loop.submit(self.open())

    async def _open_on_io_loop(self) -> None:
        if self.ready:
            return
        await self.store.open_on_io_loop()
        self.writer.start()
        self.reader.start()
        self.leases.start()
        self.ready = True

    async def flush(self) -> None:
        """Wait until every write queued so far is durable (or has failed)."""
        if self.ready or self.writer.pending:
            await io_loop.run(self.writer.flush)

    async def aclose(self) -> None:
        """Flush, stop the writer and close the backends; idempotent."""
        await io_loop.run(self._close_on_io_loop)

    async def _close_on_io_loop(self) -> None:
        if not self.ready and not self.writer.pending and not self.leases.held:
            return
        self.ready = False
        await _close(self.reader, self.writer, self.leases, self.store)

    async def history(self, limit: int) -> Any:
        await self.open()
        await self.flush()
        return await io_loop.run(self.store.history, limit)

    # -- used by the pipeline ----------------------------------------------------------

    def statistics(self) -> SpotStatistics:
        s = self.stats
        return SpotStatistics(
            hits=s.hits,
            memory_hits=s.memory_hits,
            misses=s.misses,
            joins=s.joins,
            corrupt=s.corrupt,
            lease_waits=s.lease_waits,
            pending_writes=self.writer.pending,
            written=self.writer.written,
            write_failures=self.writer.failed,
            memory_entries=len(self.memo),
            memory_bytes=self.memo.nbytes,
        )


async def _close(reader: Reader, writer: Writer, leases: Leases, store: ResultStore) -> None:
    # Order matters: lookups in flight may still grant leases; queued writes
    # release their leases with their results; what is still held after
    # that belongs to calls that will not store anything.
    try:
        await reader.stop()
        await writer.stop()
        await leases.stop()
    finally:
        await store.close_on_io_loop()


def _shut_down(reader: Reader, writer: Writer, leases: Leases, store: ResultStore) -> None:
    if io_loop.running:
        io_loop.submit(_close(reader, writer, leases, store))
