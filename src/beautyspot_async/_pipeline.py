# Over 500 lines: the steps of one call (probe, lead, store, replay) read as one sequence.
"""The one call pipeline: key -> probe -> single-flight -> lookup/lease -> execute -> store.

The pipeline owns the whole call. :meth:`Pipeline.probe` is the hit path: it
answers from the memory tier or the backend's non-waiting read without any
step, and otherwise returns a :class:`Miss` saying what it learned. The rest
is written once, as a generator that *describes* every side effect it needs
(the steps of ``_steps``: ``Call``, ``Io``, ``Wait``, ``Blocking``,
``EXECUTE``) instead of performing it. Two small drivers perform those steps,
one for async callers and one for sync callers, so a fix to the pipeline is a
fix for both -- and a test can drive the generator with scripted answers.

Exceptions raised while performing a step are thrown back into the
generator at the step, so ordinary ``try``/``except`` in the pipeline sees
them -- including cancellation, which is how a cancelled leader hands its
flight over to a waiter. Cleanup paths only ask for ``Call`` steps: they may
be running inside a cancelled scope, and a ``Call`` never waits (a generator
being closed cannot yield at all, so there they act at once: ``_clean_up``).

(Over 500 lines on purpose: every branch of one call reads top to bottom here.)
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from . import _policy
from ._coalesce import DIRECT
from ._engine import Engine
from ._explain import Explanation, current_arguments, explain_call
from ._memory_tier import IMMUTABLE_TYPES, NO_VALUE, MemoryEntry
from ._modes import current as current_mode
from ._modes import record_replay_miss
from ._preview import argument_meta
from ._reader import Absent
from ._record import INLINE, TaskRecord
from ._singleflight import Flight, FlightEnd
from ._steps import EXECUTE, Blocking, Call, Io, Step, Steps, Wait
from ._store import WriteItem
from ._usage import measure
from .cachekey import ArgumentKeyer, KeyScope
from .exceptions import BackendError, CacheCorruptedError, CacheMissError, SerializationError
from .hooks import (
    CacheHitContext,
    CacheMissContext,
    HookContext,
    HookSet,
    PreExecuteContext,
    SaveErrorContext,
)
from .serializer import Serializer, _UnregisteredTypeError

__all__ = ["UNPROBED", "Miss", "Pipeline", "TaskConfig"]

logger = logging.getLogger("beautyspot_async")


# -- configuration -----------------------------------------------------------------


#: Exact types whose canonical key encoding depends only on (type, value).
#: float is left out: 0.0 == -0.0 and NaN != NaN would break the dict lookup.
_SIMPLE_TYPES: Final = frozenset({str, bytes, int, bool, type(None)})
#: The remembered ids of a marked function: twice as many as the memory tier
#: holds entries (a warm hit needs both, and the cache is emptied when full),
#: within these bounds (~360 B per entry).
_IDS_CACHE_MIN: Final = 1024
_IDS_CACHE_MAX: Final = 65536

#: The backend's non-waiting read said the key is not stored.
_ABSENT: Final[Any] = object()


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
    #: ``usage(result)``: what one execution cost (settles a stacked limiter).
    usage: Callable[[Any], Any] | None = None
    #: ``@spot.mark(mode=)``: this function's cache mode, over the Spot's.
    mode: str | None = None
    #: ``"preview"``: store argument previews and digests with each entry.
    store_args: str = "preview"


class Miss(NamedTuple):
    """What :meth:`Pipeline.probe` learned about a call it could not answer."""

    #: ``(input_id, cache_key)``, or None when the probe did not look: a hook
    #: must see the call first, or deriving the key does file I/O.
    ids: tuple[str, str] | None
    #: The backend's non-waiting read said the key is not stored.
    absent: bool


#: The probe did not look; the pipeline derives the key and looks itself.
UNPROBED: Final = Miss(None, False)


def _clean_up(exc: BaseException, fn: Callable[..., None], *args: Any) -> Steps:
    """Ask for ``fn(*args)`` as a ``Call`` step on the way out of a failed step.

    A generator being closed (its driver was garbage-collected mid-call:
    ``GeneratorExit``) may not yield any more, so then it is done at once.
    """
    if isinstance(exc, GeneratorExit):
        fn(*args)
        return
    yield Call(fn, args)


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

    def __init__(self, engine: Engine, task: TaskConfig) -> None:
        self.engine = engine
        self.task = task
        self._loads = task.serializer.loads
        self._keyer_blocking = task.keyer.blocking
        self._scope = KeyScope(task.identity, task.version)
        # The probe may answer before the pipeline starts only when no hook
        # must see the call and deriving the key does no file I/O.
        self._probes = not task.hooks and not task.keyer.blocking
        # Ids of calls whose arguments are all plain values of exact builtin
        # types, keyed by (types, values): for those, the canonical encoding
        # is a function of exactly that, so remembering the ids is exact --
        # and it skips two hashes on every repeat call.
        self._ids_cacheable = task.keyer.by_value_only
        self._ids: dict[tuple[Any, ...], tuple[str, str]] = {}
        self._ids_limit = min(max(2 * engine.memory_entries, _IDS_CACHE_MIN), _IDS_CACHE_MAX)
        #: ``@spot.mark(mode=)``, else ``Spot(mode=)`` (see _modes for the rest).
        self.explicit_mode = task.mode if task.mode is not None else engine.mode

    @property
    def keyer_blocks(self) -> bool:
        """Whether deriving a key may do file I/O (a KeyGen file helper)."""
        return self._keyer_blocking

    def cache_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The cache key of one call (may do file I/O: see :attr:`keyer_blocks`)."""
        return self.key_for(args, kwargs)[1]

    def mode(self) -> str:
        """The cache mode of a call made now."""
        return current_mode(self.engine, self.explicit_mode, self.engine.env_mode)

    # -- the hit path -------------------------------------------------------------

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
            if len(self._ids) >= self._ids_limit:
                self._ids.clear()  # crude, but O(1) and the common keys come right back
            self._ids[remember] = ids
        return ids

    def probe(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The hit path, without waiting: the call's result, or a :class:`Miss`.

        A hit returns the value itself, so answering one allocates nothing.
        """
        if not self._probes:
            return UNPROBED
        ids = self.key_for(args, kwargs)
        key = ids[1]
        # _look(), inlined: this is the hit path of every sync call.
        engine = self.engine
        value = engine.recall(key, self._loads)
        if value is not NO_VALUE:
            engine.stats.memory_hits += 1
            return value
        value = self._accept(key, engine.read_nowait(key))
        if value is NO_VALUE:
            return Miss(ids, False)
        if value is _ABSENT:
            return Miss(ids, True)
        return value

    async def aprobe(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """:meth:`probe` for async callers: concurrent non-waiting reads share one query."""
        if not self._probes:
            return UNPROBED
        ids = self.key_for(args, kwargs)
        key = ids[1]
        engine = self.engine
        value = engine.recall(key, self._loads)
        if value is not NO_VALUE:
            engine.stats.memory_hits += 1
            return value
        if engine.reads_here:  # a network backend's read on this loop
            (record,) = await engine.read_here([key])
        else:
            pending = engine.read_nowait_batched(key)
            direct = pending is None or pending is DIRECT
            record = engine.read_nowait(key) if direct else await pending
        value = self._accept(key, record)
        if value is NO_VALUE:
            return Miss(ids, False)
        if value is _ABSENT:
            return Miss(ids, True)
        return value

    async def aprobe_many(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """:meth:`aprobe` for many positional calls at once (the batch runner's hits).

        The keys the memory tier does not hold are read with one
        ``get_many_nowait`` (one ``IN (...)`` query per few hundred keys on
        SQLite), never key by key. A call whose key cannot be derived
        answers ``UNPROBED``: the pipeline derives it again, and raises,
        when that call runs.
        """
        if not self._probes:
            return [UNPROBED] * len(calls)
        engine = self.engine
        loads = self._loads
        answers: list[Any] = [UNPROBED] * len(calls)
        waiting: list[tuple[int, tuple[str, str]]] = []
        for i, args in enumerate(calls):
            try:
                ids = self.key_for(args, {})
            except Exception:
                continue
            value = engine.recall(ids[1], loads)
            if value is not NO_VALUE:
                engine.stats.memory_hits += 1
                answers[i] = value
            else:
                waiting.append((i, ids))
        keys = [ids[1] for _, ids in waiting]
        if not keys:
            found: dict[str, Any] = {}
        elif engine.reads_here:  # a network backend's read on this loop, one batch for all
            found = dict(zip(keys, await engine.read_here(keys), strict=True))
        else:
            found = engine.read_many_nowait(keys)
        for i, ids in waiting:
            value = self._accept(ids[1], found.get(ids[1], NO_VALUE))
            if value is NO_VALUE:
                answers[i] = Miss(ids, False)
            elif value is _ABSENT:
                answers[i] = Miss(ids, True)
            else:
                answers[i] = value
        return answers

    def _look(self, key: str) -> Any:
        """The memory tier, then the backend's non-waiting read: a value, _ABSENT or NO_VALUE."""
        engine = self.engine
        value = engine.recall(key, self._loads)
        if value is not NO_VALUE:
            engine.stats.memory_hits += 1
            return value
        return self._accept(key, engine.read_nowait(key))

    def _accept(self, key: str, record: Any) -> Any:
        """Turn a non-waiting read's answer for ``key`` into a value, _ABSENT or NO_VALUE."""
        if record is None:
            return _ABSENT
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
            value = self._loads(payload)
        except Exception:
            # Corrupt (the pipeline logs it and rewrites the entry) or of an
            # unregistered type (the pipeline raises): either way, not here.
            return NO_VALUE
        engine.stats.hits += 1
        engine.hit(key)
        entry_value = value if type(value) in IMMUTABLE_TYPES else NO_VALUE
        engine.remember(key, MemoryEntry(payload, record.expires_at, entry_value))
        return value

    # -- the pipeline --------------------------------------------------------------

    def steps(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], miss: Miss, refresh: bool = False
    ) -> Steps:
        """The rest of a call :meth:`probe` could not answer.

        ``refresh``: never read the stored entry; execute and overwrite it.
        """
        task = self.task
        engine = self.engine
        if miss.ids is None:
            if self._keyer_blocking:
                input_id = yield Blocking(task.keyer.input_id, (args, kwargs))
            else:
                input_id = task.keyer.input_id(args, kwargs)
            key = self._scope(input_id)
        else:
            input_id, key = miss.ids
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

        absent = miss.absent
        if miss.ids is None and not refresh:  # the probe did not look: look now
            value = yield Call(self._look, (key,))
            if value is not NO_VALUE and value is not _ABSENT:
                if base is not None:
                    yield from self._fire("on_cache_hit", CacheHitContext(**base, result=value))
                return value
            absent = value is _ABSENT

        while True:
            flight, leader = yield Call(engine.join_flight, (key,))
            if leader:
                break
            outcome = yield Wait(flight.add_waiter, ())
            if outcome.kind is FlightEnd.RESOLVED:
                engine.stats.joins += 1
                value = outcome.share()
                if base is not None:
                    yield from self._fire("on_cache_hit", CacheHitContext(**base, result=value))
                return value
            if outcome.kind is FlightEnd.FAILED:
                assert outcome.error is not None
                raise outcome.error
            # ABANDONED: the leader was cancelled; race the other waiters to lead.

        return (yield from self._lead(flight, key, input_id, args, kwargs, base, absent, refresh))

    def replay(self, args: tuple[Any, ...], kwargs: dict[str, Any], miss: Miss) -> Steps:
        """A call in replay mode that :meth:`probe` could not answer: stored, or an error.

        Reads the backend (no lease, no flight, no hooks), never executes and
        never writes; a miss raises :class:`CacheMissError` with the explanation.
        """
        engine = self.engine
        absent = miss.absent
        if miss.ids is None:
            if self._keyer_blocking:
                input_id = yield Blocking(self.task.keyer.input_id, (args, kwargs))
                key = self._scope(input_id)
            else:
                key = self.key_for(args, kwargs)[1]
            value = yield Call(self._look, (key,))
            if value is not NO_VALUE and value is not _ABSENT:
                return value
            absent = value is _ABSENT
        else:
            key = miss.ids[1]
        if not engine.ready:
            yield Io(engine.open, (), False)
        # A non-waiting read that said "not stored" needs no second look.
        record = None if absent else (yield Io(engine.fetch, (key,), engine.loop_bound))
        if record is not None:
            value, _ = yield from self._decode(record)
            if value is not NO_VALUE:
                engine.stats.hits += 1
                engine.hit(key)
                return value
        explanation = yield Io(self.explain, (args, kwargs), engine.loop_bound)
        record_replay_miss(explanation)
        raise CacheMissError(
            f"replay mode: {self.task.identity} has no stored result for this call "
            f"({explanation.status}); the function was not run.\n{explanation}",
            explanation=explanation,
        )

    async def explain(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Explanation:
        """Why a call hits or misses: see :class:`Explanation`."""
        task = self.task
        input_id = task.keyer.input_id(args, kwargs)
        key = self._scope(input_id)
        return await explain_call(
            self.engine,
            func_name=task.identity,
            version=task.version,
            key=key,
            loads=self._loads,
            current_args=current_arguments(task.keyer, args, kwargs),
        )

    def _lead(
        self,
        flight: Flight,
        key: str,
        input_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        base: dict[str, Any] | None,
        absent: bool,
        refresh: bool = False,
    ) -> Steps:
        task = self.task
        engine = self.engine
        owner: str | None = None
        bypass = False
        try:
            try:
                if not engine.ready:
                    yield Io(engine.open, (), False)
                if refresh:
                    # Overwrite whatever is stored: no lookup, hence no lease.
                    record = None
                else:
                    record, owner = yield from self._lookup(key, absent)
                if owner is not None:
                    yield Call(engine.hold_lease, (key, owner))
            except BackendError as exc:
                if not engine.bypass_errors:
                    raise
                bypass = True
                record = None
                warnings.warn(
                    f"{exc}; running {task.identity} uncached (on_backend_error='bypass')",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if record is not None:
                value, payload = yield from self._decode(record)
                if value is not NO_VALUE:
                    engine.stats.hits += 1
                    engine.hit(key)
                    entry = MemoryEntry(
                        payload,
                        record.expires_at,
                        value if type(value) in IMMUTABLE_TYPES else NO_VALUE,
                    )
                    yield Call(self._share, (flight, entry, key))
                    if base is not None:
                        yield from self._fire("on_cache_hit", CacheHitContext(**base, result=value))
                    return value
            result = yield EXECUTE
        except BaseException as exc:
            yield from _clean_up(exc, self._give_up, flight, key, owner, exc)
            raise

        engine.stats.misses += 1
        call = (args, kwargs)
        return (yield from self._store(flight, key, input_id, result, owner, base, bypass, call))

    def _lookup(
        self, key: str, absent: bool
    ) -> Generator[Step, Any, tuple[TaskRecord | None, str | None]]:
        """Find ``key`` in the backend; on a miss, take its cross-process lease.

        ``absent``: the non-waiting read already said the key is not stored.
        Returns ``(record, lease_owner)``; the owner is set when this process
        now holds the key's lease and must release it after storing.
        """
        engine = self.engine
        owner: str | None = yield Call(engine.lease_owner, ())
        if absent and owner is None:
            return None, None
        answer = yield Wait(engine.lookup, (key, owner))
        if answer is Absent.THEIRS:
            # Another process is executing this key: wait for its result, or
            # for its lease to come free (released, lapsed, or its holder dead).
            assert owner is not None
            engine.stats.lease_waits += 1
            answer = yield Wait(engine.wait_for_lease, (key, owner))
        if answer is Absent.OURS:
            return None, owner
        return answer, None

    def _decode(self, record: TaskRecord) -> Generator[Step, Any, tuple[Any, bytes]]:
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
                payload = yield Io(engine.load_payload, (record,), engine.loop_bound)
            return self._loads(payload), payload
        except _UnregisteredTypeError:
            raise
        except BackendError as exc:  # the blob storage failed or did not answer in time
            if not engine.bypass_errors:
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
        call: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    ) -> Steps:
        task = self.task
        engine = self.engine
        wait = engine.default_wait if task.wait is None else task.wait
        try:
            store_it = bypass is False and (task.cache_if is None or bool(task.cache_if(result)))
            payload = _dumps(task.serializer, result)
        except Exception as exc:
            yield Call(self._let_go, (flight, key, owner))
            if base is not None:
                yield from self._fire(
                    "on_save_error", SaveErrorContext(**base, result=result, error=exc)
                )
            if wait:
                yield Call(flight.fail, (exc,))
                raise
            logger.error("result of %s could not be stored: %s", task.identity, exc)
            yield Call(flight.resolve, (lambda: copy.deepcopy(result),))
            return result

        expires = _policy.expires_at(engine.clock(), task.ttl)
        entry = MemoryEntry(
            payload, expires, result if type(result) in IMMUTABLE_TYPES else NO_VALUE
        )
        if not store_it:
            yield Call(self._let_go, (flight, key, owner))
            yield Call(self._share, (flight, entry, None, False))
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
                meta=self._meta(call, result),
            )
            report = self._reporter(base, result)
            if wait:
                try:
                    yield Wait(engine.write, (record, owner, report))
                except BackendError as exc:
                    yield Call(engine.land, (flight,))
                    if not engine.bypass_errors:
                        yield Call(flight.fail, (exc,))
                        raise
                    warnings.warn(
                        f"{exc}; result of {task.identity} not cached", RuntimeWarning, stacklevel=2
                    )
                    yield Call(self._share, (flight, entry, None, False))
                    return result
                except BaseException as exc:
                    # Cancelled while waiting for durability: the write still
                    # completes on the I/O loop, and the waiters get the value.
                    yield from _clean_up(exc, self._share, flight, entry, key)
                    raise
                yield Call(self._share, (flight, entry, key))
            else:
                yield Call(engine.write_behind, (record, owner, entry, report))
                yield Call(self._share, (flight, entry))
        if base is not None:
            yield from self._fire("on_cache_miss", CacheMissContext(**base, result=result))
        return result

    def _meta(
        self, call: tuple[tuple[Any, ...], dict[str, Any]] | None, result: Any
    ) -> dict[str, Any] | None:
        """What the entry remembers of its call; never raises (meta only describes)."""
        task = self.task
        meta: dict[str, Any] = {}
        if call is not None and task.store_args == "preview":
            try:
                meta.update(argument_meta(task.keyer.key_arguments(*call)))
            except Exception as exc:
                logger.debug("arguments of %s not stored: %r", task.identity, exc)
        if task.usage is not None:
            used = measure(task.usage, result, task.identity)
            if used is not None:
                meta["usage"] = used
        return meta or None

    # -- how a flight ends (performed as Call steps) ---------------------------------------

    def _share(
        self, flight: Flight, entry: MemoryEntry, remember_as: str | None = None, land: bool = True
    ) -> None:
        """End ``flight`` with ``entry``'s value for every joined caller.

        ``remember_as``: also keep the entry in the memory tier under that key.
        ``land``: unregister the flight (False when that was done already).
        """
        engine = self.engine
        if remember_as is not None:
            engine.remember(remember_as, entry)
        if land:
            engine.land(flight)
        if entry.value is not NO_VALUE:
            value = entry.value
            flight.resolve(lambda: value)
        else:
            loads, payload = self._loads, entry.payload
            flight.resolve(lambda: loads(payload))

    def _let_go(self, flight: Flight, key: str, owner: str | None) -> None:
        """Unregister ``flight`` and give back the key's lease, if we hold it."""
        self.engine.land(flight)
        if owner is not None:
            self.engine.release_lease(key, owner)

    def _give_up(self, flight: Flight, key: str, owner: str | None, error: BaseException) -> None:
        """The leader failed or was cancelled: fail the flight, or hand it to a waiter."""
        self.engine.land(flight)
        if isinstance(error, Exception):
            flight.fail(error)
        else:  # cancelled or interrupted: a waiter takes over
            flight.abandon()
        if owner is not None:
            self.engine.release_lease(key, owner)

    # -- helpers ------------------------------------------------------------------------

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
