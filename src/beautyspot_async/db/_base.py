# Over 500 lines: the protocol; each optional method sits with its default and contract.
"""The task database protocol.

A task database maps a cache key to one :class:`TaskRecord`. It stores the
metadata of every cached call and, for small results, the serialized payload.
"""

from __future__ import annotations

import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, Self

import anyio
import anyio.lowlevel

from .._failure import (
    FailureRecord,
    failure_from_record,
    failure_record_key,
    is_failure_key,
    record_of_failure,
    tombstone,
)
from .._record import TaskRecord, as_record, saved_record
from ._common import WaitStatistics, lookup_then_lease

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EvictionCandidate", "LeaseHolder", "RecordTaskDB", "TaskDB"]


class LeaseHolder(NamedTuple):
    """An unexpired lease as :meth:`TaskDB.lease_holders` reports it."""

    #: The owner string the holder passed to :meth:`TaskDB.acquire_lease`.
    owner: str
    #: Seconds until the lease expires unless renewed (on the backend's clock).
    expires_in: float


class EvictionCandidate(NamedTuple):
    """An entry as :meth:`TaskDB.eviction_candidates` lists it (enough to delete it)."""

    cache_key: str
    #: The payload's size wherever it lives (row or blob).
    size_bytes: int
    result_type: str
    #: The blob location when ``result_type`` is ``"blob"``.
    result_value: str | None
    #: When the entry was last used: its last recorded hit or its last write.
    used_at: float


logger = logging.getLogger("beautyspot_async")

#: Keywords of :meth:`TaskDB.save` beyond the ones section 5 of the contract
#: fixes; they are passed only to a ``save()`` that accepts them.
OPTIONAL_SAVE_KEYWORDS: Final = frozenset({"size_bytes", "meta"})
_accepted_optional: dict[type, frozenset[str]] = {}


def _optional_keywords(cls: type[TaskDB]) -> frozenset[str]:
    """The optional ``save()`` keywords ``cls`` accepts (inspected once per class)."""
    accepted = _accepted_optional.get(cls)
    if accepted is None:
        parameters = inspect.signature(cls.save).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            accepted = OPTIONAL_SAVE_KEYWORDS
        else:
            accepted = OPTIONAL_SAVE_KEYWORDS & {p.name for p in parameters}
        _accepted_optional[cls] = accepted
    return accepted


class TaskDB(ABC):
    """Abstract async task database.

    Contract for implementations:

    * Four methods are required: :meth:`init_schema`, :meth:`get`,
      :meth:`save` and :meth:`get_history`. Everything else has a working
      default written on top of them; override it when the backend can do
      better (one round trip for many keys, a server-side expiry sweep...).
    * :meth:`init_schema` is "create if missing": it runs every time a Spot
      opens the database and must not touch existing rows.
    * :meth:`save` is an idempotent upsert. Saving a key twice leaves one row
      holding the second value; ``created_at`` keeps the first write's time and
      ``updated_at`` the last. The backend stamps both with its own clock.
    * After :meth:`save` returns, the row is durable: a crash of this process
      does not lose it.
    * :meth:`get` returns the record as saved or ``None``. It does not filter
      expired rows (the pipeline decides expiry), and must not raise for a
      missing key. A mapping keyed by :class:`TaskRecord`'s field names is
      accepted in place of a record (``cache_key``, ``size_bytes`` and the
      timestamps may be left out); anything else is a BackendError.
    * :meth:`save` receives the keywords listed on it. ``size_bytes`` is
      optional: it is passed only when ``save()`` names it or takes
      ``**kwargs``, so a ``save()`` written without it works.
    * Driver errors are raised as :class:`~beautyspot_async.BackendError` with
      the driver's exception chained as ``__cause__``.
    * :meth:`aclose` is idempotent, and a closed database reopens on its next
      use (lazily, in :meth:`init_schema` or the first call). ``async with db:``
      runs :meth:`init_schema` on entry and :meth:`aclose` on exit.

    Threading and event loops: a Spot calls a database from one event loop at
    a time. When :attr:`loop_bound` is true (the default: the connections of
    asyncpg, redis.asyncio and aiosqlite belong to the loop that opened them),
    every call is made from the Spot's own I/O loop thread, so an
    implementation may keep loop-bound connections and needs no locking
    across threads. A backend whose methods work on any loop and under any
    anyio backend (asyncio or trio) sets ``loop_bound = False`` and is then
    called directly from the caller's loop.
    """

    #: Whether the database's connections belong to one event loop.
    loop_bound: ClassVar[bool] = True
    #: Short name used in error messages and logs.
    backend_name: ClassVar[str] = "custom"

    # -- required -----------------------------------------------------------

    @abstractmethod
    async def init_schema(self) -> None:
        """Create tables, indexes or key spaces if they are missing."""

    @abstractmethod
    async def get(self, cache_key: str) -> TaskRecord | Mapping[str, Any] | None:
        """Return the record stored under ``cache_key`` (or a mapping of it), or ``None``."""

    @abstractmethod
    async def save(
        self,
        *,
        cache_key: str,
        func_name: str,
        input_id: str,
        version: str | None,
        result_type: str,
        content_type: str | None,
        result_value: str | None = None,
        result_data: bytes | None = None,
        expires_at: float | None = None,
    ) -> None:
        """Insert or replace the record for ``cache_key``; durable on return.

        Optional keywords beyond these are passed only to a ``save()`` that
        declares them (or takes ``**kwargs``). Today there is one:
        ``size_bytes: int | None = None``, the payload's size wherever it
        lives; a backend that stores it defaults it to ``len(result_data)``
        (0 when that is None). ``meta: Mapping[str, Any] | None = None``
        is what the library knows about the call (argument previews, usage),
        a JSON-able dict; it is passed only when there is one, and a backend
        that does not store it loses nothing but that description.
        """

    @abstractmethod
    async def get_history(self, limit: int = 1000) -> pd.DataFrame:
        """Return up to ``limit`` records, newest ``updated_at`` first.

        The frame has :data:`~beautyspot_async.db.HISTORY_COLUMNS` (timestamps
        as timezone-aware UTC) and never loads payloads.
        """

    # -- optional, with working defaults --------------------------------------

    async def __aenter__(self) -> Self:
        await self.init_schema()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def statistics(self) -> WaitStatistics:
        """Waits for other processes' results in this instance, as a snapshot.

        Backends that wait on notifications (PostgreSQL, Redis) count them;
        the default reports none.
        """
        return WaitStatistics()

    async def get_many(self, cache_keys: Sequence[str]) -> dict[str, TaskRecord]:
        """Return the records found among ``cache_keys`` (absent keys omitted)."""
        found: dict[str, TaskRecord] = {}
        for key in cache_keys:
            record = as_record(await self.get(key), key, backend=self.backend_name)
            if record is not None:
                found[key] = record
        return found

    async def get_meta(self, cache_key: str) -> Mapping[str, Any] | None:
        """The meta stored with ``cache_key`` (None when absent or not stored).

        What ``show`` and the dashboard display. The default reads the whole
        record with :meth:`get`; the shipped backends read the one field.
        """
        record = as_record(await self.get(cache_key), cache_key, backend=self.backend_name)
        return None if record is None else record.meta

    async def save_many(self, records: Iterable[TaskRecord]) -> None:
        """Upsert every record; the batch is durable on return.

        Timestamps on the incoming records are ignored, as in :meth:`save`.
        Backends with transactions should write the batch in one.
        """
        optional = _optional_keywords(type(self))
        for r in records:
            extra: dict[str, Any] = {"size_bytes": r.size_bytes} if "size_bytes" in optional else {}
            if r.meta is not None and "meta" in optional:
                extra["meta"] = r.meta
            await self.save(
                cache_key=r.cache_key,
                func_name=r.func_name,
                input_id=r.input_id,
                version=r.version,
                result_type=r.result_type,
                content_type=r.content_type,
                result_value=r.result_value,
                result_data=r.result_data,
                expires_at=r.expires_at,
                **extra,
            )

    async def save_and_release(
        self, records: Sequence[TaskRecord], leases: Mapping[str, Sequence[str]]
    ) -> None:
        """:meth:`save_many`, then give up ``leases`` (owner -> keys).

        The pipeline's writer calls this once per batch. Backends with
        transactions should do both in one, saving a round trip per batch.
        Leases are released by the caller if this raises. Once the records
        are saved it does not raise: the rows are durable, so a lease that
        cannot be given up is logged and left to expire (it only delays
        other processes by at most its ttl).
        """
        await self.save_many(records)
        for owner, keys in leases.items():
            try:
                await self.release_leases(keys, owner)
            except Exception as exc:
                logger.warning(
                    "%s: saved %d result(s) but could not release their leases (%s: %s); "
                    "they expire on their own",
                    self.backend_name,
                    len(keys),
                    type(exc).__name__,
                    exc,
                )

    async def schema_exists(self) -> bool:
        """Whether :meth:`init_schema` has run on this store, checked read-only.

        Read-only tools (``history``, ``stats``, ``show``) ask first, so that
        looking at a store that was never written creates nothing in it. It
        must not create anything itself. The default answers ``True`` (it
        cannot tell), and such tools then open the database as usual.
        """
        return True

    async def delete(self, cache_key: str) -> bool:
        """Remove ``cache_key``; return whether a row existed. Idempotent."""
        raise NotImplementedError(f"{type(self).__name__} does not support delete()")

    def iter_records(self) -> AsyncIterator[TaskRecord]:
        """Yield every record, payloads included, in no particular order.

        Implement it as an ``async def`` generator.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support iter_records()")

    async def delete_expired(self, now: float | None = None) -> int:
        """Remove the rows expired at ``now`` (default: the current time).

        Returns how many rows were removed. The default walks
        :meth:`iter_records`; backends with an expiry index override it.
        """
        cutoff = time.time() if now is None else now
        doomed = [r.cache_key async for r in self.iter_records() if r.is_expired(cutoff)]
        removed = 0
        for key in doomed:
            removed += await self.delete(key)
        return removed

    def get_nowait(self, cache_key: str) -> TaskRecord | None:
        """Look ``cache_key`` up without waiting, from any thread.

        An optional fast path for the cache-hit case. It must never block on
        a lock, the network or a slow read: when it cannot answer at once
        (database busy, row too large, not opened yet) it raises
        :class:`anyio.WouldBlock` and the caller falls back to :meth:`get`.
        The default always raises.
        """
        raise anyio.WouldBlock

    def get_many_nowait(self, cache_keys: Sequence[str]) -> dict[str, TaskRecord | None]:
        """:meth:`get_nowait` for many keys at once (one query where possible).

        The result maps a key to its record, or to ``None`` when it is
        certainly not stored; a key the backend cannot answer without waiting
        is left out. Never blocks, never raises WouldBlock.
        """
        found: dict[str, TaskRecord | None] = {}
        for key in cache_keys:
            try:
                found[key] = self.get_nowait(key)
            except anyio.WouldBlock:
                continue
        return found

    def lookup_or_lease_nowait(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """:meth:`lookup_or_lease` at once on this thread, or :class:`anyio.WouldBlock`.

        An optional fast path for a miss's lease, run on the caller's thread
        -- often its event loop's. Same answers as :meth:`lookup_or_lease`.
        It must never wait (for a lock, the network, a large row) and must
        finish in a bounded, small time; when it cannot, it raises
        ``WouldBlock`` having changed nothing, and the caller falls back to
        :meth:`lookup_or_lease`. The default always raises.
        """
        raise anyio.WouldBlock

    def save_and_release_nowait(
        self, records: Sequence[TaskRecord], leases: Mapping[str, Sequence[str]]
    ) -> None:
        """:meth:`save_and_release` at once on this thread, or :class:`anyio.WouldBlock`.

        The same rules as :meth:`lookup_or_lease_nowait`: all of it is
        durable on return, or nothing was written and the caller falls back
        to :meth:`save_and_release`. The default always raises.
        """
        raise anyio.WouldBlock

    @property
    def housekeeping_due(self) -> bool:
        """Whether the non-waiting writes put off work :meth:`housekeeping` should do now."""
        return False

    async def housekeeping(self) -> None:
        """Do what the non-waiting writes put off (SQLite: a WAL checkpoint).

        The engine runs it on the I/O loop when :attr:`housekeeping_due`
        says so. The default does nothing.
        """

    async def get_many_here(
        self,
        cache_keys: Sequence[str],
        timeout: float | None,  # noqa: ASYNC109 - a deadline without a timer per hit
    ) -> Mapping[str, TaskRecord | None]:
        """Read ``cache_keys`` on the *calling* asyncio event loop, taking no lease.

        An optional fast path for cache hits on a :attr:`loop_bound` backend
        whose reads cross the network: a hit then needs no hop to the Spot's
        I/O loop. Unlike every other method it is called on the caller's own
        event loop -- any asyncio loop of the process, several at once, while
        the I/O loop uses the database too -- so an implementation keeps its
        own connection per loop (``db._common.LoopReads`` does all of that)
        and never touches the connections the other methods use. It only
        reads: no lease, no write, no last-use record. It is never called
        under trio.

        Returns each key's record, or ``None`` when it is certainly not
        stored; a key left out is one it could not answer. It must raise
        ``TimeoutError`` when the server has not answered within ``timeout``
        seconds (the Spot's ``backend_timeout``; None: no deadline) -- the
        caller sets no deadline of its own, which would cost every hit a
        timer. It raises :class:`anyio.WouldBlock` when it cannot read on
        this loop at all (the default always does) and ``BackendError`` for
        driver errors; then the caller takes the usual path, which reads
        again and reports errors as usual.
        """
        raise anyio.WouldBlock

    async def aclose(self) -> None:
        """Release connections. Idempotent; the database reopens on next use."""

    # -- failure records (the batch runner's) ----------------------------------

    async def save_failure(self, failure: FailureRecord) -> None:
        """Record that ``failure.cache_key`` failed for good; an upsert by cache key.

        The default, written on the required methods alone so that every
        custom backend can record failures, keeps the failure among the
        records: under the key ``"!failure:" + cache_key`` (a cache key is a
        hex digest, so that row is never looked up as a result), with
        ``result_type="failure"`` and the failure as JSON in ``result_data``.
        The library's readers (history, ``stats``, ``show``, garbage
        collection) skip such rows. The shipped backends keep failures apart
        instead (a table, a key namespace); override all three failure
        methods together to do the same.
        """
        await self.save_many([record_of_failure(failure)])

    async def get_failures(
        self, func_name: str | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        """Up to ``limit`` recorded failures (of ``func_name`` only, if given), newest first.

        The default finds its rows by walking :meth:`iter_records` when the
        backend has it, else the whole :meth:`get_history`, and reads them
        with :meth:`get_many`: linear in the number of records.
        """
        rows: list[TaskRecord] = []
        if type(self).iter_records is not TaskDB.iter_records:
            async for row in self.iter_records():
                key = row.get("cache_key", "") if isinstance(row, Mapping) else ""
                record = as_record(row, key, backend=self.backend_name)
                if record is not None and is_failure_key(record.cache_key):
                    rows.append(record)
        else:
            rows = list((await self.get_many(await self._failure_row_keys())).values())
        failures = [
            f
            for r in rows
            if (f := failure_from_record(r)) is not None
            and (func_name is None or f.func_name == func_name)
        ]
        failures.sort(key=lambda f: f.failed_at, reverse=True)
        return failures[: max(limit, 0)]

    async def _failure_row_keys(self) -> list[str]:
        frame = await self.get_history(2**31 - 1)
        if "cache_key" not in getattr(frame, "columns", ()):
            return []  # an empty history may come without columns
        return [key for key in frame["cache_key"] if is_failure_key(key)]

    async def delete_failures(self, cache_keys: Sequence[str]) -> int:
        """Remove the failures recorded for ``cache_keys``; return how many existed.

        The default deletes their rows; on a backend without :meth:`delete`
        it overwrites each with an expired, empty row instead, which
        :meth:`delete_expired` sweeps later.
        """
        row_keys = [failure_record_key(key) for key in dict.fromkeys(cache_keys)]
        if not row_keys:
            return 0
        found = await self.get_many(row_keys)
        live = [key for key, record in found.items() if failure_from_record(record) is not None]
        for key in live:
            try:
                await self.delete(key)
            except NotImplementedError:
                await self.save_many([tombstone(key)])
        return len(live)

    # -- size budgets (last use, totals, eviction order) -----------------------

    async def touch(self, cache_keys: Sequence[str], now: float) -> None:
        """Record that ``cache_keys`` were used (hit) at ``now``.

        Called by the writer in batches, at most once per entry per hour, so
        a store need not make it cheap per key, only per batch. A key that is
        not stored may be ignored. The default records nothing: the least
        recently used order then falls back to ``updated_at`` (last write).
        Backends that track use must drop a key's last use with its row.
        """
        await anyio.lowlevel.checkpoint()

    async def usage_totals(self) -> tuple[int, int]:
        """``(entries, bytes)`` stored: the row count and the sum of ``size_bytes``.

        The default walks :meth:`iter_records` when the backend has it, else
        the whole :meth:`get_history`: linear, but only budget enforcement and
        ``gc`` call it, at open and on demand.
        """
        entries = total = 0
        for record in await self._all_metadata():
            entries += 1
            total += max(int(record[1]), 0)
        return entries, total

    async def _all_metadata(self) -> list[tuple[str, int, float]]:
        """``(cache_key, size_bytes, updated_at)`` of every result row (failures skipped)."""
        rows: list[tuple[str, int, float]] = []
        if type(self).iter_records is not TaskDB.iter_records:
            async for row in self.iter_records():
                key = row.get("cache_key", "") if isinstance(row, Mapping) else ""
                record = as_record(row, key, backend=self.backend_name)
                if record is not None and not is_failure_key(record.cache_key):
                    rows.append((record.cache_key, record.size_bytes, record.updated_at))
            return rows
        frame = await self.get_history(2**31 - 1)
        if "cache_key" not in getattr(frame, "columns", ()):
            return rows
        n = len(frame)
        sizes = frame["size_bytes"] if "size_bytes" in frame.columns else [0] * n
        times = frame["updated_at"] if "updated_at" in frame.columns else [0.0] * n
        for key, size, updated in zip(frame["cache_key"], sizes, times, strict=True):
            if not is_failure_key(key):
                stamp = updated.timestamp() if hasattr(updated, "timestamp") else float(updated)
                rows.append((str(key), int(size), float(stamp)))
        return rows

    async def eviction_candidates(self, limit: int) -> list[EvictionCandidate]:
        """Up to ``limit`` entries, least recently used first.

        Last use is the later of the entry's last recorded :meth:`touch` and
        its ``updated_at``. The default orders :meth:`get_history` (or
        :meth:`iter_records`) by ``updated_at`` and reads the chosen rows
        with :meth:`get_many`; backends that track use override it with one
        ordered query.
        """
        if limit <= 0:
            return []
        oldest = sorted(await self._all_metadata(), key=lambda row: row[2])[:limit]
        found = await self.get_many([key for key, _, _ in oldest])
        candidates = []
        for key, size, updated in oldest:
            record = as_record(found.get(key), key, backend=self.backend_name)
            if record is not None:
                candidates.append(
                    EvictionCandidate(key, size, record.result_type, record.result_value, updated)
                )
        return candidates

    # -- cross-process single-flight (leases) --------------------------------

    #: Whether :meth:`acquire_lease` coordinates across processes. The default
    #: implementation grants every lease, which is correct for a database only
    #: one process can see (memory).
    supports_leases: ClassVar[bool] = False

    async def acquire_lease(self, cache_key: str, owner: str, ttl: float) -> bool:
        """Try to become the one process executing ``cache_key``.

        Returns ``True`` when ``owner`` now holds the lease (or already held
        it); ``False`` when another owner holds an unexpired lease. A lease
        expires ``ttl`` seconds after it was taken, so a dead holder blocks
        the key for at most ``ttl``.
        """
        return True

    async def release_lease(self, cache_key: str, owner: str) -> None:
        """Give up ``owner``'s lease on ``cache_key``; a no-op if not held."""

    async def release_leases(self, cache_keys: Sequence[str], owner: str) -> None:
        """Give up ``owner``'s leases on all of ``cache_keys`` (one batch)."""
        for key in cache_keys:
            await self.release_lease(key, owner)

    async def renew_leases(self, cache_keys: Sequence[str], owner: str, ttl: float) -> None:
        """Extend ``owner``'s leases on ``cache_keys`` to ``ttl`` from now (one batch).

        Keys whose lease ``owner`` no longer holds are left alone. The default
        renews key by key through :meth:`acquire_lease`.
        """
        for key in cache_keys:
            await self.acquire_lease(key, owner, ttl)

    async def lease_holders(self, cache_keys: Sequence[str]) -> dict[str, LeaseHolder]:
        """Who holds an unexpired lease on each of ``cache_keys`` (others omitted).

        Lets a caller see that a holder on its own host has died and take its
        lease over at once instead of waiting for it to expire. The default
        knows nothing, so leases of dead holders simply expire.
        """
        return {}

    async def take_over_leases(self, stale: Mapping[str, str], owner: str, ttl: float) -> list[str]:
        """Hand the leases in ``stale`` (key -> dead owner) to ``owner``.

        Atomic per key: a lease is taken only while the dead owner still
        holds it, so two callers racing for one dead lease cannot both win.
        Returns the keys taken. The default takes none.
        """
        return []

    async def lookup_or_lease(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """Read ``cache_keys``; take the lease of each one that is missing.

        Returns, per key, the stored record; ``True`` when the key is not
        stored and ``owner`` now holds its lease; ``False`` when another owner
        holds an unexpired lease. The pipeline's miss path calls this once
        for a whole batch of concurrent misses.

        A key that is written (and its lease released) by another process
        between the read and the lease must not come back ``True``: the
        default re-reads every key it leased (see
        :func:`~beautyspot_async.db._common.lookup_then_lease`, which a backend
        can call with batched primitives). A backend that can do the read and
        the lease in one atomic step (one transaction) should override this.
        """

        async def lease(keys: list[str]) -> list[bool]:
            return [await self.acquire_lease(key, owner, ttl) for key in keys]

        return await lookup_then_lease(
            cache_keys,
            read=self.get_many,
            lease=lease,
            release=lambda keys: self.release_leases(keys, owner),
        )

    async def wait_for_result(self, cache_key: str, timeout: float) -> None:  # noqa: ASYNC109 - the protocol bounds the wait; backends map it to their own notification timeout
        """Return when ``cache_key`` may have been written, or after ``timeout``.

        Backends with notifications (LISTEN/NOTIFY, pub/sub) wake on them; the
        default sleeps briefly (polling). Callers re-check with
        :meth:`get`, so a spurious early return is harmless.
        """
        await anyio.sleep(min(timeout, 0.05))


class RecordTaskDB(TaskDB):
    """A :class:`TaskDB` whose ``save()`` hands one settled record to :meth:`_save_record`.

    The shipped backends derive from it, so the keywords of ``save()`` are
    turned into a record in one place (``saved_record``: the one
    ``size_bytes`` rule) and ``save()`` stores what ``save_many()`` would.
    """

    async def save(
        self,
        *,
        cache_key: str,
        func_name: str,
        input_id: str,
        version: str | None,
        result_type: str,
        content_type: str | None,
        result_value: str | None = None,
        result_data: bytes | None = None,
        expires_at: float | None = None,
        size_bytes: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert or replace the record for ``cache_key``; durable on return."""
        await self._save_record(
            saved_record(
                cache_key=cache_key,
                func_name=func_name,
                input_id=input_id,
                version=version,
                result_type=result_type,
                content_type=content_type,
                result_value=result_value,
                result_data=result_data,
                expires_at=expires_at,
                size_bytes=size_bytes,
                meta=meta,
            )
        )

    @abstractmethod
    async def _save_record(self, record: TaskRecord) -> None:
        """Upsert ``record``; its timestamps are ignored (the backend stamps them)."""
