"""The shared machinery behind one Spot: store, writer, memory tier, flights.

Every marked function of a Spot shares one engine. The engine's lifecycle
(open, flush, close) runs on the I/O loop; its hot-path members (memory tier,
flight registry, writer queue) are safe to touch from any thread.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from ._coalesce import NowaitCoalescer
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
    #: Times a call waited for another process holding the key's lease.
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
        self.reader = Reader(self.store)
        self.coalescer = NowaitCoalescer(db)
        self.memo = MemoryTier(max_entries=memory_entries, max_bytes=memory_bytes)
        self.flights = FlightRegistry()
        self.stats = EngineStats()
        self.blob_threshold = blob_threshold
        self.default_wait = default_wait
        self.lease_ttl = lease_ttl
        self.on_backend_error = on_backend_error
        self.clock = clock
        self.ready = False
        self._owner = ""
        self._owner_pid = 0
        #: Leases this process holds and renews, by key.
        self._held: dict[str, str] = {}
        # A Spot dropped without aclose() still flushes its queued writes and
        # closes its connections, instead of leaving its drain tasks to be
        # garbage-collected while pending.
        weakref.finalize(self, _shut_down, self.reader, self.writer, self.store)

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        """Open the backends and start the writer (from any loop)."""
        if not self.ready:
            await io_loop.run(self._open_on_io_loop)

    async def _open_on_io_loop(self) -> None:
        await self.store.open_on_io_loop()
        self.writer.start()
        self.reader.start()
        self.ready = True

    async def flush(self) -> None:
        """Wait until every write queued so far is durable (or has failed)."""
        if self.ready or self.writer.pending:
            await io_loop.run(self.writer.flush)

    async def aclose(self) -> None:
        """Flush, stop the writer and close the backends; idempotent."""
        await io_loop.run(self._close_on_io_loop)

    async def _close_on_io_loop(self) -> None:
        if not self.ready and not self.writer.pending:
            return
        self.ready = False
        try:
            await self.reader.stop()
            await self.writer.stop()
        finally:
            await self.store.close_on_io_loop()

    async def history(self, limit: int) -> Any:
        await self.open()
        await self.flush()
        return await io_loop.run(self.store.history, limit)

    # -- used by the pipeline ----------------------------------------------------------

    def lease_owner(self) -> str | None:
        """This process's lease identity, or None when leases are off."""
        if self.lease_ttl is None or not self.store.supports_leases:
            return None
        pid = os.getpid()
        if self._owner_pid != pid:  # a forked child is a different owner
            self._owner = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:12]}"
            self._owner_pid = pid
        return self._owner

    def hold_lease(self, key: str, owner: str) -> None:
        """Keep renewing ``owner``'s lease on ``key`` until :meth:`lease_done`.

        A lease must outlive the execution it guards, however long that
        takes, yet expire soon after its holder dies: so it is granted for
        ``lease_ttl`` and renewed every third of that while we still hold it.
        """
        self._held[key] = owner
        io_loop.submit(self._renew(key, owner))

    def lease_done(self, key: str) -> None:
        """Stop renewing the lease on ``key`` (its result is stored, or abandoned)."""
        self._held.pop(key, None)

    async def _renew(self, key: str, owner: str) -> None:
        ttl = self.lease_ttl
        assert ttl is not None
        while True:
            await anyio.sleep(ttl / 3)
            if self._held.get(key) != owner:
                return
            try:
                await self.store.renew_lease(key, owner, ttl)
            except Exception as exc:  # the next renewal may succeed; expiry is the fallback
                logger.warning("renewing the lease on %s failed: %s", key, exc)

    def release_soon(self, key: str, owner: str) -> None:
        """Release a lease without waiting (safe inside a cancelled scope)."""
        self.lease_done(key)
        io_loop.submit(self.store.release(key, owner))

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


def _shut_down(reader: Reader, writer: Writer, store: ResultStore) -> None:
    if not io_loop.running:
        return

    async def shut_down() -> None:
        try:
            await reader.stop()
            await writer.stop()
        finally:
            await store.close_on_io_loop()

    io_loop.submit(shut_down())
