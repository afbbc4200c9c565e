# Over 500 lines: the one surface the pipeline calls; its reads, leases and writes read together.
"""The shared machinery behind one Spot: store, writer, memory tier, flights.

Every marked function of a Spot shares one engine. The pipeline reaches it
only through the methods below, never through its parts. Its lifecycle (open,
flush, close) runs on the I/O loop; the methods the pipeline calls are safe
from any thread and never wait.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio

from ._budget import Budget
from ._clone import copier
from ._coalesce import InlineLeases, InlineWrites, NowaitCoalescer
from ._failed_keys import FailedKeys
from ._failure import FailureRecord
from ._gc_burst import end_burst
from ._leases import Leases
from ._memory_tier import NO_VALUE, MemoryEntry, MemoryTier
from ._portal import Waiter, io_loop
from ._reader import Absent, Reader
from ._record import INLINE, TaskRecord
from ._singleflight import Flight, FlightRegistry
from ._store import DEFAULT_BACKEND_TIMEOUT, BackendTimeout, ResultStore, WriteItem
from ._writer import ErrorReporter, Submission, Writer
from .db import TaskDB
from .exceptions import ConfigurationError
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
        max_bytes: int | None = None,
        max_entries: int | None = None,
    ) -> None:
        self.store = ResultStore(db, storage, timeout=backend_timeout)
        self.writer = Writer(self.store)
        self.leases = Leases(self.store, lease_ttl)
        self.failed = FailedKeys(self.store)
        self._reader = Reader(self.store, self.leases.release_soon)
        self._coalescer = NowaitCoalescer(db)
        self._db = db
        # Only for backends that have the non-waiting writes (SQLite): for
        # the others every attempt would decline, at the price of a loop turn.
        self._inline_leases = (
            InlineLeases(db, self._reader.submit, self.leases.release_soon, self._committed)
            if type(db).lookup_or_lease_nowait is not TaskDB.lookup_or_lease_nowait
            else None
        )
        if self._inline_leases is not None:
            leases = self._inline_leases
            self.writer.hold_back = lambda: leases.busy
        self._inline_writes = (
            InlineWrites(db, self._committed)
            if type(db).save_and_release_nowait is not TaskDB.save_and_release_nowait
            else None
        )
        self._housekeeping = False
        self._memory = MemoryTier(max_entries=memory_entries, max_bytes=memory_bytes)
        #: How many results the memory tier may hold (the pipeline sizes caches by it).
        self.memory_entries = memory_entries
        # Not a bound method of the engine: the writer, which the finalizer
        # below keeps alive, must not keep the engine alive through it.
        self._memory_discard = self._memory.discard
        self._flights = FlightRegistry()
        #: Streams being produced in this process, by key (see _stream).
        self.streams: dict[str, Any] = {}
        if (max_bytes is not None or max_entries is not None) and type(db).delete is TaskDB.delete:
            raise ConfigurationError(
                f"{type(db).__name__} does not implement delete(), so it cannot evict "
                "entries to keep Spot(max_bytes=, max_entries=)"
            )
        self.budget = Budget(
            self.store, clock, self._memory_discard, max_bytes=max_bytes, max_entries=max_entries
        )
        self.writer.budget = self.budget
        #: Read on the hit path: keys whose last use is written or queued.
        self._touched = self.budget.touched
        #: Counters the pipeline bumps directly: a method call per count would
        #: cost the hit path more than the count itself.
        self.stats = EngineStats()
        self.blob_threshold = blob_threshold
        self.default_wait = default_wait
        #: Whether a failing backend runs calls uncached (with a warning).
        self.bypass_errors = on_backend_error == "bypass"
        #: Whether reaching the backends takes the I/O loop.
        self.loop_bound = self.store.loop_bound
        self.clock = clock
        #: ``Spot(mode=)`` and ``BEAUTYSPOT_MODE`` as read at creation (see _modes).
        self.mode: str | None = None
        self.env_mode: str | None = None
        self.ready = False
        self._read_nowait = db.get_nowait
        for drain in (self.writer, self._reader, self.leases.releaser, self.failed):
            drain.revive = self._revive
        # A Spot dropped without aclose() still flushes its queued writes,
        # gives back its leases and closes its connections, instead of
        # leaving its drain tasks to be garbage-collected while pending.
        weakref.finalize(
            self, _shut_down, self._reader, self.writer, self.leases, self.failed, self.store
        )

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
        self._reader.start()
        self.leases.start()
        self.failed.start()
        self.ready = True

    async def flush(self) -> None:
        """Wait until every write queued so far is durable (or has failed)."""
        if self.ready or self.writer.pending or self.failed.pending:
            await io_loop.run(self._flush_on_io_loop)

    async def _flush_on_io_loop(self) -> None:
        await self.writer.flush()
        # Writes just made durable may have queued their failure records' deletion.
        await self.failed.flush()

    async def invalidate(self, keys: Sequence[str]) -> int:
        """Delete the entries of ``keys`` (rows, blobs, memory tier, failure records).

        Queued writes are flushed first, so a write-behind result cannot land
        after its deletion. Returns how many stored rows existed.
        """
        await self.open()
        await self.flush()
        return await io_loop.run(self._invalidate_on_io_loop, list(keys))

    async def _invalidate_on_io_loop(self, keys: list[str]) -> int:
        deleted = await self.store.delete_entries(keys)
        for key in keys:
            self._memory.discard(key)
            self.budget.forget_key(key)
        if keys:
            await self.store.delete_failures(keys)
        return deleted

    async def aclose(self) -> None:
        """Flush, stop the writer and close the backends; idempotent."""
        await io_loop.run(self._close_on_io_loop)
        end_burst()

    async def _close_on_io_loop(self) -> None:
        if (
            not self.ready
            and not self.writer.pending
            and not self.leases.held
            and not self.failed.pending
        ):
            return
        self.ready = False
        await _close(self._reader, self.writer, self.leases, self.failed, self.store)

    async def history(self, limit: int) -> Any:
        await self.open()
        await self.flush()
        return await io_loop.run(self.store.history, limit)

    # -- failure records -------------------------------------------------------------

    async def record_failure(self, failure: FailureRecord) -> None:
        """Record that ``failure.cache_key`` failed for good (bounded by the backend timeout)."""
        await self.open()
        await io_loop.run(self.store.save_failure, failure)
        # After the save: a result stored from now on deletes the record.
        self.failed.note([failure.cache_key])

    async def clear_failures(self, keys: Sequence[str]) -> int:
        """Delete the failure records of ``keys``; return how many there were."""
        await self.open()
        wanted = list(keys)
        self.failed.forget(wanted)
        removed: int = await io_loop.run(self.store.delete_failures, wanted)
        return removed

    async def failures(self, func_name: str | None, limit: int) -> list[FailureRecord]:
        """Recorded failures, newest first, without those whose key now has a live entry."""
        await self.open()
        await self.flush()
        found: list[FailureRecord] = await io_loop.run(self._live_failures, func_name, limit)
        return found

    async def _live_failures(self, func_name: str | None, limit: int) -> list[FailureRecord]:
        pruned: set[str] = set()
        while True:
            # Pruned rows are asked for again (and skipped): the count stays
            # right even on a backend whose deletes do not take at once.
            request = limit + len(pruned)
            fetched = await self.store.get_failures(func_name, request)
            found = [f for f in fetched if f.cache_key not in pruned]
            # A result stored since, in any process, makes its failure stale.
            stored = await self.store.lookup_many([f.cache_key for f in found], None, 0.0)
            now = self.clock()
            stale = {
                key
                for key, record in stored.items()
                if isinstance(record, TaskRecord)
                and record.problem is None
                and not record.is_expired(now)
            }
            if stale:
                self.failed.forget(stale)
                await self.store.delete_failures(sorted(stale))
                pruned |= stale
            live = [f for f in found if f.cache_key not in stale]
            if not stale or len(fetched) < request:
                self.failed.note(f.cache_key for f in live[:limit])
                return live[:limit]

    # -- the memory tier -------------------------------------------------------------

    def recall(self, key: str, loads: Callable[[bytes], Any]) -> Any:
        """Return the result the memory tier holds for ``key``, or NO_VALUE."""
        entry = self._memory.get(key)
        if entry is None:
            return NO_VALUE
        if key not in self._touched:  # Budget.hit, inlined: this is the warm hit path
            self.budget.hit(key)
        if entry.expires_at is not None and entry.expires_at <= self.clock():
            self._memory.discard(key)
            return NO_VALUE
        if entry.value is not NO_VALUE:
            return entry.value
        copy = entry.copy
        if copy is not None:
            return copy()
        try:
            value = loads(entry.payload)
        except Exception:  # a decoder changed under us: forget the entry
            self._memory.discard(key)
            return NO_VALUE
        if not entry.seen:
            # A result read once is not worth planning a copy of (a batch
            # that reads every key once would pay for nothing): note it.
            entry.seen = True
        else:
            # Hit here again, likely more: keep this decode as the private
            # source of later copies and hand the caller a copy of it.
            copy = copier(value)
            if copy is not None:
                self._memory.replace(key, entry, replace(entry, copy=copy))
                return copy()
        return value

    def remember(self, key: str, entry: MemoryEntry) -> None:
        """Keep ``entry`` in the memory tier, within its bounds."""
        self._memory.put(key, entry)

    def forget(self, key: str) -> None:
        """Drop ``key`` from the memory tier (its stored entry was deleted)."""
        self._memory.discard(key)

    def hit(self, key: str) -> None:
        """Note a hit answered from the backend (its last use is written later, batched)."""
        if key not in self._touched:
            self.budget.hit(key)

    # -- reads ---------------------------------------------------------------------------

    def read_nowait(self, key: str) -> Any:
        """The backend's non-waiting read: the record, None (absent) or NO_VALUE (can't tell)."""
        try:
            return self._read_nowait(key)
        except anyio.WouldBlock:
            return NO_VALUE

    def read_many_nowait(self, keys: list[str]) -> dict[str, Any]:
        """:meth:`read_nowait` of many keys in one query; keys it cannot answer are left out."""
        try:
            return self._db.get_many_nowait(keys)
        except Exception:  # a broken fast path only costs the fallback
            return {}

    def read_nowait_batched(self, key: str) -> Any:
        """:meth:`read_nowait` shared with the loop's other callers: see ``_coalesce``."""
        return self._coalescer.lookup(key)

    @functools.cached_property
    def reads_here(self) -> bool:
        """Whether hits read on the caller's loop (``TaskDB.get_many_here``), not ``get_nowait``."""
        db = type(self.store.db)
        return db.get_many_here is not TaskDB.get_many_here and db.get_nowait is TaskDB.get_nowait

    async def read_here(self, keys: list[str]) -> list[Any]:
        """The backend's read on the caller's own asyncio loop (``TaskDB.get_many_here``), per key.

        A hit then needs no hop to the I/O loop. Each answer is the record,
        None (absent) or NO_VALUE: no answer (not open yet, not asyncio, no
        such read, or it failed), and the caller takes the usual path. A read
        that outlasts ``backend_timeout`` raises that BackendError (the usual
        path would wait as long again), unless errors are bypassed.
        """
        store = self.store
        if not self.ready or not self.reads_here or not keys:
            return [NO_VALUE] * len(keys)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio: only the usual path
            return [NO_VALUE] * len(keys)
        db = store.db
        found: Any = None
        try:
            found = await db.get_many_here(keys, store.timeout)
        except anyio.WouldBlock:
            pass
        except TimeoutError as exc:
            if not self.bypass_errors:  # the usual path would wait as long again
                raise store.guard(db.backend_name, "lookup").timed_out() from BackendTimeout(
                    str(exc)
                )
        except Exception as exc:
            # Any other failure: the usual path reads again, and reports it.
            logger.debug("%s: read on the caller's loop failed: %r", db.backend_name, exc)
        if found is None:
            return [NO_VALUE] * len(keys)
        answers = [found.get(key, NO_VALUE) for key in keys]
        return [a if a is None or type(a) is TaskRecord else NO_VALUE for a in answers]

    def lookup(self, key: str, owner: str | None, waiter: Waiter) -> None:
        """Settle ``waiter`` with the backend's ``ReadAnswer`` for ``key``, leasing it to ``owner``.

        A ``Wait`` step submit: batched with the lookups of concurrent calls,
        on the caller's thread when the backend can do it without waiting
        (``_coalesce.InlineLeases``), otherwise on the I/O loop.
        """
        ttl = self.leases.ttl or 0.0
        if owner is not None:
            waiter.unclaimed = functools.partial(self._unclaimed_lease, key, owner)
            inline = self._inline_leases
            if inline is not None and inline.submit(key, owner, ttl, waiter):
                return
        self._reader.submit(key, owner, ttl, waiter)

    def _unclaimed_lease(self, key: str, owner: str, answer: Any) -> None:
        # The caller left between the grant and reading it: give the lease back.
        if answer is Absent.OURS:
            self.leases.release_soon(key, owner)

    def _committed(self) -> None:
        # After each transaction on a caller's thread: the work it put off.
        if self._db.housekeeping_due:
            self._schedule_housekeeping()

    def _schedule_housekeeping(self) -> None:
        # Once at a time: commits keep arriving while one is scheduled.
        if not self._housekeeping and io_loop.running:
            self._housekeeping = True
            io_loop.submit(self._housekeep())

    async def _housekeep(self) -> None:
        try:
            await self.store.housekeeping()
        finally:
            self._housekeeping = False

    async def fetch(self, key: str) -> TaskRecord | None:
        """The record stored under ``key``, without taking any lease (replay, explain)."""
        found = await self.store.lookup_many([key], None, 0.0)
        record = found.get(key)
        return record if isinstance(record, TaskRecord) else None

    async def load_payload(self, record: TaskRecord) -> bytes:
        """The payload of a stored record, from the blob storage when it is not inline."""
        return await self.store.load_payload(record)

    # -- flights -------------------------------------------------------------------------

    def join_flight(self, key: str) -> tuple[Flight, bool]:
        """The flight executing ``key`` and whether the caller leads it."""
        return self._flights.join(key)

    def land(self, flight: Flight) -> None:
        """Unregister a finished flight: later callers of its key start afresh."""
        self._flights.land(flight)

    # -- leases --------------------------------------------------------------------------

    def lease_owner(self) -> str | None:
        """This process's lease identity, or None when leases are off."""
        return self.leases.owner()

    def wait_for_lease(self, key: str, owner: str, waiter: Waiter) -> None:
        """Settle ``waiter`` once ``key``, leased elsewhere, is stored or ours (a Wait submit)."""
        waiter.unclaimed = functools.partial(self._unclaimed_lease, key, owner)
        self.leases.wait(key, owner, waiter)

    def hold_lease(self, key: str, owner: str) -> None:
        """Keep a freshly granted lease renewed until its result is stored."""
        self.leases.hold(key, owner)

    def release_lease(self, key: str, owner: str) -> None:
        """Give a lease back without waiting (safe in a cancelled scope)."""
        self.leases.release_soon(key, owner)

    # -- writes --------------------------------------------------------------------------

    def write(
        self, record: TaskRecord, owner: str | None, report: ErrorReporter, waiter: Waiter
    ) -> None:
        """Queue a durable write; ``waiter`` is settled once it is (a ``Wait`` submit).

        The key's lease, if ``owner`` holds one, goes with the result.
        """
        key = record.cache_key
        failed, failed_keys = self.failed, self.failed.keys

        def written(error: BaseException | None) -> None:
            self.leases.done(key)
            if key in failed_keys and error is None:
                failed.cleared(key)

        inline = self._inline_writes
        if (
            inline is not None
            and record.result_type == INLINE
            # A write-behind of this key still queued must not land after this one.
            and not self._memory.pinned(key)
            # Eviction runs in the writer's drain, after the writes it counts.
            and not self.budget.enforced
            and inline.submit((record, owner, waiter, written))
        ):
            return
        submission = Submission(WriteItem(record, owner), on_complete=written, report=report)
        self.writer.submit_and_notify(submission, waiter)

    def write_behind(
        self, record: TaskRecord, owner: str | None, entry: MemoryEntry, report: ErrorReporter
    ) -> None:
        """Queue a write nobody waits for; the memory tier answers ``entry`` until it is durable."""
        key = record.cache_key
        memory = self._memory
        memory.pin(key, entry)

        failed, failed_keys = self.failed, self.failed.keys

        def written(error: BaseException | None) -> None:
            self.leases.done(key)
            memory.unpin(key, entry)
            if key in failed_keys and error is None:
                failed.cleared(key)

        self.writer.submit(Submission(WriteItem(record, owner), on_complete=written, report=report))

    # -- observation ---------------------------------------------------------------------

    def statistics(self) -> SpotStatistics:
        s = self.stats
        inline_written = self._inline_writes.committed if self._inline_writes else 0
        return SpotStatistics(
            hits=s.hits,
            memory_hits=s.memory_hits,
            misses=s.misses,
            joins=s.joins,
            corrupt=s.corrupt,
            lease_waits=s.lease_waits,
            pending_writes=self.writer.pending,
            written=self.writer.written + inline_written,
            write_failures=self.writer.failed,
            memory_entries=len(self._memory),
            memory_bytes=self._memory.nbytes,
        )


async def _close(
    reader: Reader, writer: Writer, leases: Leases, failed: FailedKeys, store: ResultStore
) -> None:
    # Order matters: lookups in flight may still grant leases; queued writes
    # release their leases with their results (and queue the deletion of
    # their failure records); what is still held after that belongs to
    # calls that will not store anything.
    try:
        await reader.stop()
        await writer.stop()
        await leases.stop()
        await failed.stop()
    finally:
        await store.close_on_io_loop()


def _shut_down(
    reader: Reader, writer: Writer, leases: Leases, failed: FailedKeys, store: ResultStore
) -> None:
    if io_loop.running:
        io_loop.submit(_close(reader, writer, leases, failed, store))
