"""The async shell around one task database and one blob storage.

It owns opening and closing them, decides which of them a payload goes to,
and is the one place where backend calls are bounded: every operation runs
under :meth:`ResultStore.guard`, which gives it the Spot's
``backend_timeout`` and turns an expired deadline into BackendError naming
the backend and the operation. The shipped backends translate their drivers'
errors themselves (``_errormap``); the guard passes those through and only
translates what a custom backend let escape. A frozen
server (connections accepted, nothing answered) thus fails a call instead of
hanging it. All of it runs on the Spot's I/O loop for loop-bound backends
(see ``_portal``), on the caller's loop otherwise -- hence anyio deadlines,
which work under asyncio and trio alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import anyio

from ._errormap import backend_error
from ._failure import FailureRecord, is_failure_key
from ._record import BLOB, TaskRecord, as_record
from .db import EvictionCandidate, LeaseHolder, TaskDB
from .exceptions import BackendError, BeautySpotError, CacheCorruptedError, ConfigurationError
from .storage import BlobStorageBase

__all__ = ["DEFAULT_BACKEND_TIMEOUT", "ResultStore", "WriteItem", "check_timeout"]


@dataclass(slots=True)
class WriteItem:
    """One result on its way to durability.

    ``record.result_data`` holds the serialized payload; for BLOB placement
    the store moves it to blob storage and records the location instead.
    """

    record: TaskRecord
    lease_owner: str | None = None


#: The default of ``Spot(backend_timeout=...)``, in seconds.
DEFAULT_BACKEND_TIMEOUT = 30.0


def check_timeout(timeout: object) -> float | None:
    """Return a valid ``backend_timeout`` (seconds > 0, or None), else raise."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f"backend_timeout must be a finite number of seconds > 0, or None; got {timeout!r}"
        )
    return float(timeout)


class BackendTimeout(TimeoutError):
    """The cause chained to a BackendError whose operation ran out of time."""


class Guard:
    """``with Guard(backend, operation, timeout):`` -- see :meth:`ResultStore.guard`.

    The driver is left to clean up after the cancellation: each of ours
    drops a connection cancelled mid-request, so the next operation opens a
    fresh one and the Spot recovers as soon as the server answers again.
    """

    __slots__ = ("_scope", "backend", "operation", "timeout")

    def __init__(self, backend: str, operation: str, timeout: float | None) -> None:
        self.backend = backend
        self.operation = operation
        self.timeout = timeout
        # No deadline, no cancel scope: the translation alone is almost free.
        self._scope = None if timeout is None else anyio.move_on_after(timeout)

    def __enter__(self) -> None:
        if self._scope is not None:
            self._scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self._scope
        if scope is not None:
            # Not its return value: trio's says True when nothing was raised.
            scope.__exit__(exc_type, exc, tb)
            if scope.cancelled_caught:  # our deadline expired
                raise self.timed_out() from BackendTimeout(f"no answer within {self.timeout:g} s")
        if not isinstance(exc, Exception) or isinstance(exc, BeautySpotError):
            return  # success, cancellation from outside, or already ours
        if scope is not None and scope.cancel_called:
            # A driver turned our cancellation into an error of its own.
            raise self.timed_out() from exc
        # Our backends translated their errors already (see _errormap); what
        # reaches here came from a custom backend, whose driver we cannot know.
        detail = f"{type(exc).__name__}: {exc}"
        raise backend_error(self.backend, self.operation, exc, detail) from exc

    def timed_out(self) -> BackendError:
        return BackendError(
            f"{self.operation} timed out after {self.timeout:g} s: the {self.backend} server "
            "did not answer (Spot(backend_timeout=...) sets this deadline)",
            backend=self.backend,
        )


class ResultStore:
    """Task database + blob storage, opened lazily on the I/O loop.

    ``timeout`` bounds each backend operation (seconds; None: unbounded).
    """

    def __init__(
        self,
        db: TaskDB,
        storage: BlobStorageBase,
        *,
        timeout: float | None = DEFAULT_BACKEND_TIMEOUT,
    ) -> None:
        self.db = db
        self.storage = storage
        self.timeout = timeout
        self.loop_bound = db.loop_bound or storage.loop_bound
        self.supports_leases = type(db).supports_leases
        #: Whether failures live among the records (TaskDB's default storage),
        #: so that readers of records must skip them.
        self.failures_among_records = type(db).save_failure is TaskDB.save_failure
        self._opened = False
        self._open_lock: asyncio.Lock | None = None

    # -- the boundary ------------------------------------------------------------

    def guard(self, backend: str, operation: str) -> Guard:
        """Bound a block by the timeout; translate what escapes it into BackendError.

        ``backend`` is the ``backend_name`` of the db or storage the block
        talks to and ``operation`` what it does ("lookup", "saving results"),
        so the error tells the user which server did not answer to what.
        Every backend call of the pipeline goes through here: route new ones
        through it too (``with store.guard(db.backend_name, "..."):``).
        """
        return Guard(backend, operation, self.timeout)

    # -- lifecycle (always on the I/O loop) -----------------------------------

    async def open_on_io_loop(self) -> None:
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._opened:
                return
            with self.guard(self.db.backend_name, "opening the task database"):
                await self.db.init_schema()
            self._opened = True

    async def close_on_io_loop(self) -> None:
        """Close both backends, each within the timeout; report the first failure."""
        self._opened = False
        errors: list[BeautySpotError] = []
        for backend, closer in (
            (self.db.backend_name, self.db.aclose),
            (self.storage.backend_name, self.storage.aclose),
        ):
            try:
                with self.guard(backend, "closing"):
                    await closer()
            except BeautySpotError as exc:  # close both even if one fails
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- reads -----------------------------------------------------------------

    async def lookup_many(
        self, cache_keys: list[str], owner: str | None, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """Records of ``cache_keys``; with an ``owner``, leases for the missing ones.

        See :meth:`TaskDB.lookup_or_lease` for the values. Without an owner,
        absent keys are simply omitted.
        """
        with self.guard(self.db.backend_name, "lookup"):
            if owner is None:
                found: dict[str, Any] = dict(await self.db.get_many(cache_keys))
            else:
                found = dict(await self.db.lookup_or_lease(cache_keys, owner, ttl))
        # A custom backend's get_many may hand back mappings instead of records.
        checked: dict[str, TaskRecord | bool] = {}
        backend = self.db.backend_name
        for key, value in found.items():
            record = value if isinstance(value, bool) else as_record(value, key, backend=backend)
            if record is not None:
                checked[key] = record
        return checked

    async def release_many(self, owners: dict[str, list[str]]) -> None:
        """Give up leases (owner -> keys), one batch per owner."""
        for owner, keys in owners.items():
            with self.guard(self.db.backend_name, "releasing leases"):
                await self.db.release_leases(keys, owner)

    async def renew(self, keys: list[str], owner: str, ttl: float) -> None:
        with self.guard(self.db.backend_name, "renewing leases"):
            await self.db.renew_leases(keys, owner, ttl)

    async def lease_holders(self, keys: list[str]) -> dict[str, LeaseHolder]:
        with self.guard(self.db.backend_name, "reading lease holders"):
            return await self.db.lease_holders(keys)

    async def take_over(self, stale: dict[str, str], owner: str, ttl: float) -> list[str]:
        with self.guard(self.db.backend_name, "taking over leases"):
            return await self.db.take_over_leases(stale, owner, ttl)

    async def load_payload(self, record: TaskRecord) -> bytes:
        """Return the serialized payload of ``record`` wherever it lives.

        Raises CacheCorruptedError when it is missing or cannot be trusted.
        """
        if record.result_type == BLOB:
            if not record.result_value:
                raise CacheCorruptedError(f"blob record {record.cache_key} has no location")
            with self.guard(self.storage.backend_name, "loading a blob"):
                return await self.storage.load(record.result_value)
        if record.result_data is None:
            raise CacheCorruptedError(f"record {record.cache_key} has no payload")
        return record.result_data

    # -- writes ----------------------------------------------------------------

    async def write(self, items: Sequence[WriteItem]) -> list[BaseException | None]:
        """Make ``items`` durable; return, per item, the error that stopped it.

        Blobs are written first, so a row never points at a blob that is not
        there yet. Rows are written, and this process's leases on them given
        up, in one ``save_and_release`` batch. Each backend call is bounded
        by the timeout, so a write to a frozen backend fails, never hangs.
        """
        errors: list[BaseException | None] = [None] * len(items)
        rows: list[TaskRecord] = []
        row_index: list[int] = []
        silent: BeautySpotError | None = None  # a blob save that timed out
        for i, item in enumerate(items):
            record = item.record
            if record.result_type == BLOB:
                if silent is not None:
                    # The storage did not answer: waiting out the deadline
                    # once per blob would hold a batch of n blobs n times as long.
                    errors[i] = silent
                    continue
                try:
                    with self.guard(self.storage.backend_name, "saving a blob"):
                        location = await self.storage.save(
                            record.cache_key, record.result_data or b""
                        )
                except BeautySpotError as exc:
                    errors[i] = exc
                    if isinstance(exc.__cause__, BackendTimeout):
                        silent = exc
                    continue
                record = replace(record, result_value=location, result_data=None)
            rows.append(record)
            row_index.append(i)
        owners: dict[str, list[str]] = {}
        for item in items:
            if item.lease_owner is not None:
                owners.setdefault(item.lease_owner, []).append(item.record.cache_key)
        if not rows:
            await self._release_quietly(owners)
            return errors
        try:
            with self.guard(self.db.backend_name, "saving results"):
                # Leases of failed blob writes go too: another process may retry.
                await self.db.save_and_release(rows, owners)
        except BeautySpotError as exc:
            for i in row_index:
                errors[i] = exc
            if not isinstance(exc.__cause__, BackendTimeout):
                # Released even after a failed write, so another process may
                # retry. Not after a timeout: the server is not answering, and
                # the leases expire on their own.
                await self._release_quietly(owners)
        return errors

    async def _release_quietly(self, owners: dict[str, list[str]]) -> None:
        # A lease left behind only delays other processes until it expires.
        for owner, keys in owners.items():
            with contextlib.suppress(BeautySpotError):
                await self.release_many({owner: keys})

    async def housekeeping(self) -> None:
        """The task database's deferred upkeep (a WAL checkpoint); never raises.

        Skipped work is only deferred: the next non-waiting write asks again.
        """
        try:
            with self.guard(self.db.backend_name, "housekeeping"):
                await self.db.housekeeping()
        except Exception as exc:
            logging.getLogger("beautyspot_async").debug("housekeeping failed: %s", exc)

    async def history(self, limit: int) -> Any:
        request = limit
        while True:
            with self.guard(self.db.backend_name, "reading history"):
                frame = await self.db.get_history(request)
            if not self.failures_among_records or "cache_key" not in getattr(frame, "columns", ()):
                return frame
            kept = frame[~frame["cache_key"].map(is_failure_key).astype(bool)]
            if len(frame) < request or len(kept) >= limit:
                return kept.head(limit).reset_index(drop=True)
            # Failure rows took places of the limit: ask again for as many more.
            request = limit + len(frame) - len(kept)

    async def delete_entries(self, cache_keys: Sequence[str]) -> int:
        """Delete the rows of ``cache_keys``, then their blobs; return how many rows existed.

        The row goes first, so no row ever points at a deleted blob; a blob
        left behind by a crash in between is an orphan for ``gc``.
        """
        found = await self.lookup_many(list(cache_keys), None, 0.0)
        deleted = 0
        for key in cache_keys:
            with self.guard(self.db.backend_name, "deleting an entry"):
                existed = await self.db.delete(key)
            deleted += bool(existed)
            record = found.get(key)
            blob = isinstance(record, TaskRecord) and record.result_type == BLOB
            if blob and isinstance(record, TaskRecord) and record.result_value:
                with self.guard(self.storage.backend_name, "deleting a blob"):
                    await self.storage.delete(record.result_value)
        return deleted

    # -- size budgets ------------------------------------------------------------

    async def touch(self, cache_keys: Sequence[str], now: float) -> None:
        with self.guard(self.db.backend_name, "recording last use"):
            await self.db.touch(cache_keys, now)

    async def usage_totals(self) -> tuple[int, int]:
        with self.guard(self.db.backend_name, "counting usage"):
            entries, total = await self.db.usage_totals()
        return int(entries), int(total)

    async def eviction_candidates(self, limit: int) -> list[EvictionCandidate]:
        with self.guard(self.db.backend_name, "listing least recently used entries"):
            return list(await self.db.eviction_candidates(limit))

    async def delete_candidates(self, doomed: Sequence[EvictionCandidate]) -> int:
        """:meth:`delete_entries` for entries already read: row first, then blob."""
        deleted = 0
        for candidate in doomed:
            with self.guard(self.db.backend_name, "evicting an entry"):
                existed = await self.db.delete(candidate.cache_key)
            deleted += bool(existed)
            if candidate.result_type == BLOB and candidate.result_value:
                with self.guard(self.storage.backend_name, "deleting a blob"):
                    await self.storage.delete(candidate.result_value)
        return deleted

    # -- failure records -------------------------------------------------------

    async def save_failure(self, failure: FailureRecord) -> None:
        with self.guard(self.db.backend_name, "recording a failure"):
            await self.db.save_failure(failure)

    async def get_failures(self, func_name: str | None, limit: int) -> list[FailureRecord]:
        with self.guard(self.db.backend_name, "reading failures"):
            return list(await self.db.get_failures(func_name, limit))

    async def delete_failures(self, cache_keys: Sequence[str]) -> int:
        with self.guard(self.db.backend_name, "deleting failures"):
            return int(await self.db.delete_failures(cache_keys))
