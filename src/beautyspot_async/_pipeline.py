"""The one call pipeline: key -> lookup -> single-flight -> execute -> store.

The pipeline is written once, as a generator that *describes* the I/O it
needs (the steps of ``_steps``: ``Io``, ``Wait``, ``Blocking``, ``EXECUTE``)
instead of performing it. Two small drivers perform those steps, one for
async callers and one for sync callers, so a fix to the pipeline is a fix
for both.

Exceptions raised while performing a step are thrown back into the
generator at the step, so ordinary ``try``/``except`` in the pipeline sees
them -- including cancellation, which is how a cancelled leader hands its
flight over to a waiter. Cleanup paths never yield: they may be running
inside a cancelled scope, so anything they must do is fire-and-forget.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import anyio

from . import _policy
from ._memo import ABSENT, IMMUTABLE_TYPES, NO_VALUE, MemoEntry
from ._record import INLINE, TaskRecord
from ._singleflight import Flight, OutcomeKind
from ._steps import EXECUTE, Blocking, Io, Step, Steps, Wait
from ._store import WriteItem
from ._writer import Submission
from .cachekey import ArgumentKeyer, KeyScope
from .exceptions import BackendError, CacheCorruptedError, SerializationError
from .hooks import (
    CacheHitContext,
    CacheMissContext,
    HookContext,
    HookSet,
    PreExecuteContext,
    SaveErrorContext,
)
from .serializer import Serializer, _UnregisteredTypeError

__all__ = ["Pipeline", "TaskConfig"]

logger = logging.getLogger("beautyspot_async")


# -- configuration -----------------------------------------------------------------


#: Exact types whose canonical key encoding depends only on (type, value).
#: float is left out: 0.0 == -0.0 and NaN != NaN would break the dict lookup.
_SIMPLE_TYPES: Final = frozenset({str, bytes, int, bool, type(None)})
_IDS_CACHE_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """Everything the pipeline needs to know about one marked function."""

    identity: str
    version: str | None
    keyer: ArgumentKeyer
    serializer: Serializer
    save_blob: bool | None
    content_type: str | None
    ttl: float | None
    wait: bool | None
    cache_if: Callable[[Any], bool] | None
    hooks: HookSet


def _dumps(serializer: Serializer, result: Any) -> bytes:
    """Serialize a fresh result; on failure the error carries the result as ``value``.

    The result may have cost money (a paid API call): a caller who cannot
    have it cached still gets it back from ``exc.value``.
    """
    try:
        return serializer.dumps(result)
    except SerializationError as exc:
        exc.value = result
        raise
    except Exception as exc:  # a custom serializer's own error
        raise SerializationError(
            f"cannot serialize the result ({type(exc).__name__}: {exc})", value=result
        ) from exc


class Pipeline:
    """The call pipeline of one marked function, bound to its Spot's engine."""

    def __init__(self, engine: Any, task: TaskConfig) -> None:
        from ._engine import Engine

        assert isinstance(engine, Engine)
        self.engine = engine
        self.task = task
        self._keyer_blocking = task.keyer.blocking
        self._scope = KeyScope(task.identity, task.version)
        # Ids of calls whose arguments are all plain values of exact builtin
        # types, keyed by (types, values): for those, the canonical encoding
        # is a function of exactly that, so remembering the ids is exact --
        # and it skips two hashes on every repeat call.
        self._ids_cacheable = task.keyer.by_value_only
        self._ids: dict[tuple[Any, ...], tuple[str, str]] = {}

    # -- the fast path ------------------------------------------------------------

    def key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        """Return ``(input_id, cache_key)`` of a call (may do file I/O for some key functions)."""
        remember = None
        if self._ids_cacheable and not kwargs and len(args) <= 4:
            types = tuple(map(type, args))
            if _SIMPLE_TYPES.issuperset(types):
                remember = (*types, *args)
                ids = self._ids.get(remember)
                if ids is not None:
                    return ids
        input_id = self.task.keyer.input_id(args, kwargs)
        ids = (input_id, self._scope(input_id))
        if remember is not None:
            if len(self._ids) >= _IDS_CACHE_SIZE:
                self._ids.clear()  # crude, but O(1) and the common keys come right back
            self._ids[remember] = ids
        return ids

    def memo_lookup(self, key: str) -> Any:
        """Return the result held in memory for ``key``, or NO_VALUE."""
        engine = self.engine
        entry = engine.memo.get(key)
        if entry is None:
            return NO_VALUE
        if entry.expires_at is not None and entry.expires_at <= engine.clock():
            engine.memo.discard(key)
            return NO_VALUE
        if entry.value is not NO_VALUE:
            return entry.value
        try:
            return self.task.serializer.loads(entry.payload)
        except Exception:  # a decoder changed under us: forget the entry
            engine.memo.discard(key)
            return NO_VALUE

    def disk_lookup(self, key: str) -> Any:
        """Answer a hit from the backend's non-waiting read, without a flight.

        Returns the value, ABSENT when the backend says the key is not
        stored, or NO_VALUE when it cannot tell without waiting (the
        pipeline then asks it properly, off this thread).
        """
        try:
            record = self.engine.store.db.get_nowait(key)
        except anyio.WouldBlock:
            return NO_VALUE
        return self.accept(key, record)

    def accept(self, key: str, record: Any) -> Any:
        """Turn a non-waiting read's answer for ``key`` into a value, ABSENT or NO_VALUE."""
        if record is None:
            return ABSENT
        if record is NO_VALUE:
            return NO_VALUE
        engine = self.engine
        payload = record.result_data
        if (
            record.result_type != INLINE
            or payload is None
            or record.problem is not None
            or record.is_expired(engine.clock())
        ):
            return NO_VALUE
        try:
            value = self.task.serializer.loads(payload)
        except Exception:
            # Corrupt (the pipeline logs it and rewrites the entry) or of an
            # unregistered type (the pipeline raises): either way, not here.
            return NO_VALUE
        engine.stats.hits += 1
        entry_value = value if type(value) in IMMUTABLE_TYPES else NO_VALUE
        engine.memo.put(key, MemoEntry(payload, record.expires_at, entry_value))
        return value

    # -- the pipeline --------------------------------------------------------------

    def steps(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ids: tuple[str, str] | None = None,
        absent: bool = False,
    ) -> Steps:
        """The whole call.

        ``ids`` is ``(input_id, cache_key)`` when the caller already derived
        them and found nothing in the memory tier or through the backend's
        non-waiting read; ``absent`` when that read said "not stored".
        """
        task = self.task
        engine = self.engine
        if ids is None:
            if self._keyer_blocking:
                input_id = yield Blocking(task.keyer.input_id, (args, kwargs))
            else:
                input_id = task.keyer.input_id(args, kwargs)
            key = self._scope(input_id)
        else:
            input_id, key = ids
        base: dict[str, Any] | None = None
        if task.hooks:
            base = {
                "func_name": task.identity,
                "cache_key": key,
                "input_id": input_id,
                "version": task.version,
                "args": args,
                "kwargs": MappingProxyType(kwargs),
            }
            yield from self._fire("pre_execute", PreExecuteContext(**base))

        if ids is None:
            value = self.memo_lookup(key)
            if value is not NO_VALUE:
                engine.stats.memory_hits += 1
                if base is not None:
                    yield from self._fire("on_cache_hit", CacheHitContext(**base, result=value))
                return value

        while True:
            flight, leader = engine.flights.join(key)
            if leader:
                break
            outcome = yield Wait(flight.add_waiter, ())
            if outcome.kind is OutcomeKind.RESOLVED:
                engine.stats.joins += 1
                value = outcome.share()
                if base is not None:
                    yield from self._fire("on_cache_hit", CacheHitContext(**base, result=value))
                return value
            if outcome.kind is OutcomeKind.FAILED:
                assert outcome.error is not None
                raise outcome.error
            # ABANDONED: the leader was cancelled; race the other waiters to lead.

        nowait = None if ids is None else absent
        return (yield from self._lead(flight, key, input_id, args, kwargs, base, nowait))

    def _lead(
        self,
        flight: Flight,
        key: str,
        input_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        base: dict[str, Any] | None,
        nowait: bool | None,
    ) -> Steps:
        task = self.task
        engine = self.engine
        store = engine.store
        on_io = store.loop_bound
        owner: str | None = None
        bypass = False
        try:
            try:
                if not engine.ready:
                    yield Io(engine.open, (), False)
                record, owner = yield from self._lookup(key, nowait)
                if owner is not None:
                    engine.leases.hold(key, owner)
            except BackendError as exc:
                if engine.on_backend_error != "bypass":
                    raise
                bypass = True
                record = None
                warnings.warn(
                    f"{exc}; running {task.identity} uncached (on_backend_error='bypass')",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if record is not None:
                value, payload = yield from self._decode(record, on_io)
                if value is not NO_VALUE:
                    engine.stats.hits += 1
                    entry = MemoEntry(
                        payload,
                        record.expires_at,
                        value if type(value) in IMMUTABLE_TYPES else NO_VALUE,
                    )
                    engine.memo.put(key, entry)
                    self._settle_resolved(flight, entry)
                    if base is not None:
                        yield from self._fire("on_cache_hit", CacheHitContext(**base, result=value))
                    return value
            result = yield EXECUTE
        except BaseException as exc:
            engine.flights.land(flight)
            if isinstance(exc, Exception):
                flight.fail(exc)
            else:  # cancelled or interrupted: a waiter takes over
                flight.abandon()
            if owner is not None:
                engine.leases.release_soon(key, owner)
            raise

        engine.stats.misses += 1
        return (yield from self._store(flight, key, input_id, result, owner, base, bypass))

    def _lookup(
        self, key: str, nowait: bool | None
    ) -> Generator[Step, Any, tuple[TaskRecord | None, str | None]]:
        """Find ``key`` in the backend; on a miss, take its cross-process lease.

        ``nowait`` is the outcome of a non-waiting read the caller already
        made (True: absent, False: unknown), or None when none was made.
        Returns ``(record, lease_owner)``; the owner is set when this process
        now holds the key's lease and must release it after storing.
        """
        engine = self.engine
        store = engine.store
        owner = engine.leases.owner()
        if nowait is None:
            try:
                record = store.db.get_nowait(key)
            except anyio.WouldBlock:
                pass
            else:
                if record is not None or owner is None:
                    return record, None
        elif nowait and owner is None:
            return None, None
        ttl = engine.leases.ttl or 0.0
        found = yield Wait(engine.reader.submit, (key, owner, ttl))
        if found is False:
            # Another process is executing this key: wait for its result, or
            # for its lease to come free (released, lapsed, or its holder dead).
            assert owner is not None
            engine.stats.lease_waits += 1
            found = yield Wait(engine.leases.wait, (key, owner))
        if isinstance(found, TaskRecord):
            return found, None
        return None, owner if found else None

    def _decode(self, record: TaskRecord, on_io: bool) -> Generator[Step, Any, tuple[Any, bytes]]:
        """Decode a stored record into ``(value, payload)``.

        A corrupt or expired record reads as ``(NO_VALUE, b"")``. An intact
        record of a type not registered in this process raises
        SerializationError: recomputing it would re-bill the call.
        """
        engine = self.engine
        if record.is_expired(engine.clock()):
            return NO_VALUE, b""
        try:
            if record.problem is not None:
                raise CacheCorruptedError(record.problem)
            if record.result_type == INLINE and record.result_data is not None:
                payload = record.result_data
            else:
                payload = yield Io(engine.store.load_payload, (record,), on_io)
            return self.task.serializer.loads(payload), payload
        except _UnregisteredTypeError:
            raise
        except BackendError as exc:  # the blob storage failed or did not answer in time
            if engine.on_backend_error != "bypass":
                raise
            warnings.warn(
                f"{exc}; running {self.task.identity} uncached (on_backend_error='bypass')",
                RuntimeWarning,
                stacklevel=2,
            )
            return NO_VALUE, b""
        except (CacheCorruptedError, SerializationError, ValueError) as exc:
            engine.stats.corrupt += 1
            logger.warning(
                "cache entry %s of %s is corrupt (%s); recomputing and rewriting it",
                record.cache_key,
                record.func_name,
                exc,
            )
            return NO_VALUE, b""

    def _store(
        self,
        flight: Flight,
        key: str,
        input_id: str,
        result: Any,
        owner: str | None,
        base: dict[str, Any] | None,
        bypass: bool,
    ) -> Steps:
        task = self.task
        engine = self.engine
        wait = engine.default_wait if task.wait is None else task.wait
        try:
            store_it = bypass is False and (task.cache_if is None or bool(task.cache_if(result)))
            payload = _dumps(task.serializer, result)
        except Exception as exc:
            engine.flights.land(flight)
            if owner is not None:
                engine.leases.release_soon(key, owner)
            if base is not None:
                yield from self._fire(
                    "on_save_error", SaveErrorContext(**base, result=result, error=exc)
                )
            if wait:
                flight.fail(exc)
                raise
            logger.error("result of %s could not be stored: %s", task.identity, exc)
            flight.resolve(lambda: copy.deepcopy(result))
            return result

        expires = _policy.expires_at(engine.clock(), task.ttl)
        entry = MemoEntry(payload, expires, result if type(result) in IMMUTABLE_TYPES else NO_VALUE)
        if not store_it:
            if owner is not None:
                engine.leases.release_soon(key, owner)
            self._settle_resolved(flight, entry)
        else:
            record = TaskRecord(
                cache_key=key,
                func_name=task.identity,
                input_id=input_id,
                version=task.version,
                result_type=_policy.placement(
                    len(payload), threshold=engine.blob_threshold, save_blob=task.save_blob
                ),
                content_type=task.content_type,
                result_data=payload,
                expires_at=expires,
                size_bytes=len(payload),
            )
            report = self._reporter(base, result)
            if wait:
                submission = Submission(
                    WriteItem(record, owner),
                    on_complete=lambda _error: engine.leases.done(key),
                    report=report,
                )
                try:
                    yield Wait(engine.writer.submit_and_notify, (submission,))
                except BackendError as exc:
                    engine.flights.land(flight)
                    if engine.on_backend_error != "bypass":
                        flight.fail(exc)
                        raise
                    warnings.warn(
                        f"{exc}; result of {task.identity} not cached", RuntimeWarning, stacklevel=2
                    )
                    self._settle_resolved(flight, entry, land=False)
                    return result
                except BaseException:
                    # Cancelled while waiting for durability: the write still
                    # completes on the I/O loop, and the waiters get the value.
                    engine.memo.put(key, entry)
                    self._settle_resolved(flight, entry)
                    raise
                engine.memo.put(key, entry)
                self._settle_resolved(flight, entry)
            else:
                engine.memo.pin(key, entry)
                engine.writer.submit(
                    Submission(
                        WriteItem(record, owner),
                        on_complete=lambda _error: self._written_behind(key, entry),
                        report=report,
                    )
                )
                self._settle_resolved(flight, entry)
        if base is not None:
            yield from self._fire("on_cache_miss", CacheMissContext(**base, result=result))
        return result

    # -- helpers ------------------------------------------------------------------------

    def _written_behind(self, key: str, entry: MemoEntry) -> None:
        self.engine.leases.done(key)
        self.engine.memo.unpin(key, entry)

    def _settle_resolved(self, flight: Flight, entry: MemoEntry, *, land: bool = True) -> None:
        if land:
            self.engine.flights.land(flight)
        if entry.value is not NO_VALUE:
            value = entry.value
            flight.resolve(lambda: value)
        else:
            loads, payload = self.task.serializer.loads, entry.payload
            flight.resolve(lambda: loads(payload))

    def _reporter(
        self, base: dict[str, Any] | None, result: Any
    ) -> Callable[[WriteItem, BaseException], Awaitable[None]]:
        identity = self.task.identity
        hooks = self.task.hooks

        async def report(item: WriteItem, error: BaseException) -> None:
            logger.error(
                "writing the result of %s (%s) failed: %s", identity, item.record.cache_key, error
            )
            if base is not None and hooks.wants("on_save_error"):
                context = SaveErrorContext(**base, result=result, error=error)
                hooks.fire_sync("on_save_error", context)
                await hooks.fire_async("on_save_error", context)

        return report

    def _fire(self, event: str, context: HookContext) -> Generator[Step, Any, None]:
        hooks = self.task.hooks
        hooks.fire_sync(event, context)
        if hooks.has_async(event):
            yield Io(hooks.fire_async, (event, context), False)
