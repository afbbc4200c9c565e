# Over 500 lines: the public facade; each method is a documented delegation to its owner module.
"""Spot: the configuration, lifecycle and composition root of the library."""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypeVar, overload

from . import _maintenance as maintenance
from . import _policy
from ._batch import Batch, MapProgress, MapReport
from ._budget import check_budget
from ._engine import Engine, SpotStatistics
from ._marked import SyncMarked, check_markable, wrap, wrap_stream
from ._modes import Mode, check_mode, env_mode
from ._modes import scoped as scoped_mode
from ._outcomes import Outcomes
from ._pipeline import Pipeline, TaskConfig
from ._portal import io_loop
from ._store import DEFAULT_BACKEND_TIMEOUT, check_timeout
from ._stream import check_replay, is_stream_function, stream_usage
from ._typed import typed_serializer
from ._urls import resolve_db, resolve_storage
from .cachekey import ArgumentKeyer, function_identity, underlying_function
from .db import TaskDB
from .db._history import with_meta_columns
from .exceptions import ConfigurationError
from .hooks import HookBase, HookSet
from .serializer import MsgpackSerializer, Serializer, default_serializer
from .storage import BlobStorageBase

if TYPE_CHECKING:
    import pandas as pd

    from .limiter import Limiter

__all__ = ["Project", "Spot"]

logger = logging.getLogger("beautyspot_async")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound=type)

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_live_spots: weakref.WeakSet[Spot] = weakref.WeakSet()


def live_spots() -> list[Spot]:
    """The Spots alive in this process (for the pytest plugin's report)."""
    return list(_live_spots)


class _MarkDecorator(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> SyncMarked[P, R]: ...


class Spot:
    """A place where results of marked functions are kept.

    ``name`` names the default files (``./<name>.db`` and ``./<name>_blobs/``)
    and must match ``[A-Za-z0-9_.-]+``. Nothing is opened until the first call,
    ``async with spot`` or ``with spot``.

    More options: ``lease_ttl`` (seconds a holder on *another host* that died
    can block a key it was executing -- a dead holder on this host is taken
    over at once, and live holders renew; ``None`` disables cross-process
    leases),
    ``on_backend_error`` (``"raise"`` or ``"bypass"``: run uncached with a
    warning when the backend is down), ``memory_cache_entries`` /
    ``memory_cache_bytes`` (bounds of the in-process front tier; 0 disables
    it) and ``clock`` (wall clock for TTLs, injectable for tests).

    ``backend_timeout`` (seconds, default 30; ``None`` disables it) bounds
    every operation on the task database and blob storage -- connecting,
    lookups, blob loads and saves, writes, closing -- so a frozen server
    (connections accepted, nothing answered) fails a call with
    :class:`~beautyspot_async.BackendError` naming the backend and the
    operation, or runs it uncached under ``on_backend_error="bypass"``,
    instead of hanging it. The Spot recovers once the server answers again.

    ``store_args`` (``"preview"``, the default, or ``"none"``): with
    ``"preview"`` each stored result keeps a short preview and a digest of
    every argument in its key (secret-looking names redacted), shown by
    :meth:`history`, the CLI and the dashboard.

    ``max_bytes`` (an int, or a size such as ``"10GB"``) and ``max_entries``
    bound the store: when a write takes it over either, the writer evicts
    the least recently used entries, blobs included, a tenth below the bound;
    after ``flush()`` the store is within it. Hits record last use lazily (at
    most one write per entry per hour, never on the hit path).
    """

    def __init__(
        self,
        name: str,
        *,
        db: TaskDB | str | Any = None,
        storage: BlobStorageBase | str | Any = None,
        serializer: Serializer | None = None,
        tpm: float | None = None,
        limiter: Limiter | None = None,
        rpm: float | None = None,
        mode: Mode | None = None,
        blob_threshold: int = 64 * 1024,
        default_wait: bool = True,
        hooks: Iterable[HookBase] = (),
        lease_ttl: float | None = 30.0,
        on_backend_error: Literal["raise", "bypass"] = "raise",
        memory_cache_entries: int = 10_000,
        memory_cache_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        backend_timeout: float | None = DEFAULT_BACKEND_TIMEOUT,
        store_args: Literal["preview", "none"] = "preview",
        max_bytes: int | str | None = None,
        max_entries: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigurationError(
                f"invalid Spot name {name!r}: use letters, digits, '_', '.' and '-' only "
                "(it becomes part of file names)"
            )
        if not isinstance(blob_threshold, int) or blob_threshold < 0:
            raise ConfigurationError(f"blob_threshold must be an int >= 0, got {blob_threshold!r}")
        if on_backend_error not in ("raise", "bypass"):
            raise ConfigurationError(
                f"on_backend_error must be 'raise' or 'bypass', got {on_backend_error!r}"
            )
        if lease_ttl is not None and not lease_ttl > 0:
            raise ConfigurationError(f"lease_ttl must be > 0 seconds or None, got {lease_ttl!r}")
        backend_timeout = check_timeout(backend_timeout)
        if store_args not in ("preview", "none"):
            raise ConfigurationError(f"store_args must be 'preview' or 'none', got {store_args!r}")
        self._store_args: str = store_args
        max_bytes = check_budget("max_bytes", max_bytes)
        max_entries = check_budget("max_entries", max_entries)
        if serializer is None:
            serializer = default_serializer()
        _check_serializer(serializer, "serializer")
        if limiter is not None and (tpm is not None or rpm is not None):
            raise ConfigurationError("pass tpm=/rpm= or limiter=, not both")
        if tpm is not None or rpm is not None:
            from .limiter import Limiter

            limiter = Limiter(tpm=tpm, rpm=rpm)
        self.name = name
        self.serializer: Serializer = serializer
        self.default_wait = bool(default_wait)
        self._limiter = limiter
        self._hooks = HookSet(hooks)
        self._engine = Engine(
            db=resolve_db(db, name),
            storage=resolve_storage(storage, name),
            blob_threshold=blob_threshold,
            default_wait=self.default_wait,
            lease_ttl=lease_ttl,
            on_backend_error=on_backend_error,
            clock=clock,
            memory_entries=memory_cache_entries,
            memory_bytes=memory_cache_bytes,
            backend_timeout=backend_timeout,
            max_bytes=max_bytes,
            max_entries=max_entries,
        )
        self._engine.mode = None if mode is None else check_mode(mode, "Spot(mode=...)")
        self._engine.env_mode = env_mode()
        self._identities: dict[str, weakref.ref[Any] | Callable[[], Any]] = {}
        self._identity_lock = threading.Lock()
        _live_spots.add(self)

    def __repr__(self) -> str:
        store = self._engine.store
        return (
            f"Spot({self.name!r}, db={type(store.db).__name__}, "
            f"storage={type(store.storage).__name__})"
        )

    # -- components -------------------------------------------------------------------

    @property
    def db(self) -> TaskDB:
        """The task database."""
        return self._engine.store.db

    @property
    def storage(self) -> BlobStorageBase:
        """The blob storage."""
        return self._engine.store.storage

    @property
    def limiter(self) -> Limiter:
        """The Spot's rate limiter (``Spot(tpm=...)`` or ``Spot(limiter=...)``).

        ``@spot.limiter(cost=...)`` on a Spot without one is a
        ConfigurationError at decoration time.
        """
        if self._limiter is None:
            return _MissingLimiter(self.name)  # type: ignore[return-value]
        return self._limiter

    # -- the decorator ---------------------------------------------------------------------

    @overload
    def mark(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def mark(self, fn: Callable[P, R], /) -> SyncMarked[P, R]: ...
    @overload
    def mark(
        self,
        *,
        version: str | None = None,
        save_blob: bool | None = None,
        input_key_fn: Callable[..., str | bytes] | None = None,
        keygen: Callable[..., str | bytes] | None = None,
        content_type: str | None = None,
        ttl: float | timedelta | None = None,
        wait: bool | None = None,
        hooks: Iterable[HookBase] = (),
        serializer: Serializer | None = None,
        cache_if: Callable[[Any], bool] | None = None,
        name: str | None = None,
        usage: Callable[[Any], Any] | None = None,
        mode: Mode | None = None,
        replay: Literal["items", "timed"] = "items",
        replay_speed: float = 1.0,
    ) -> _MarkDecorator: ...

    def mark(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        version: str | None = None,
        save_blob: bool | None = None,
        input_key_fn: Callable[..., str | bytes] | None = None,
        keygen: Callable[..., str | bytes] | None = None,
        content_type: str | None = None,
        ttl: float | timedelta | None = None,
        wait: bool | None = None,
        hooks: Iterable[HookBase] = (),
        serializer: Serializer | None = None,
        cache_if: Callable[[Any], bool] | None = None,
        name: str | None = None,
        usage: Callable[[Any], Any] | None = None,
        mode: Mode | None = None,
        replay: Literal["items", "timed"] = "items",
        replay_speed: float = 1.0,
    ) -> Any:
        """Persist every result of ``fn``; bare (``@spot.mark``) or with options.

        See the decorator guide for each option. Unknown options are a
        TypeError at decoration time.
        """
        if input_key_fn is not None and keygen is not None:
            raise ConfigurationError("pass input_key_fn= or its alias keygen=, not both")
        key_fn = input_key_fn if input_key_fn is not None else keygen
        if version is not None and not isinstance(version, str):
            raise ConfigurationError(f"version must be a str, got {type(version).__name__}")
        if save_blob not in (None, True, False):
            raise ConfigurationError(f"save_blob must be True, False or None, got {save_blob!r}")
        if cache_if is not None and not callable(cache_if):
            raise ConfigurationError("cache_if must be a callable taking the result")
        if mode is not None:
            check_mode(mode, "@spot.mark(mode=...)")
        check_replay(replay, replay_speed)
        if usage is not None and not callable(usage):
            raise ConfigurationError(
                "usage must be a callable taking the result and returning a number or a "
                "mapping of numbers, e.g. usage=lambda r: r.usage.total_tokens"
            )
        if serializer is not None:
            _check_serializer(serializer, "serializer")
        ttl_seconds = _policy.normalize_ttl(ttl)
        task_hooks = HookSet(hooks)

        def decorate(func: Callable[..., Any]) -> Any:
            check_markable(func)
            stream = is_stream_function(func)
            identity = function_identity(func, name)
            self._claim_identity(identity, func, explicit=name is not None)
            task = TaskConfig(
                identity=identity,
                version=version,
                keyer=ArgumentKeyer(func, input_key_fn=key_fn),
                serializer=typed_serializer(
                    func, serializer if serializer is not None else self.serializer
                ),
                save_blob=save_blob,
                content_type=content_type,
                ttl=ttl_seconds,
                wait=wait,
                cache_if=cache_if,
                hooks=self._hooks.merged(task_hooks),
                usage=usage if usage is None or not stream else stream_usage(usage),
                mode=mode,
                store_args=self._store_args,
            )
            if stream:
                pipeline = Pipeline(self._engine, task)
                return wrap_stream(func, pipeline, timed=replay == "timed", speed=replay_speed)
            return wrap(func, Pipeline(self._engine, task))

        return decorate if fn is None else decorate(fn)

    def _claim_identity(self, identity: str, fn: Any, *, explicit: bool) -> None:
        """Refuse two live, different callables sharing one identity.

        Re-decorating the same code (a re-imported module, a re-run notebook
        cell) is allowed; two lambdas, or closures made in a loop, are not:
        they would silently share results.
        """
        # A partial or bound method is judged by the function behind it: its
        # bound arguments are part of every key, so partials of one function
        # never share results and need no name of their own.
        target = underlying_function(fn)
        code = getattr(target, "__code__", None)
        with self._identity_lock:
            previous_ref = self._identities.get(identity)
            previous = previous_ref() if previous_ref is not None else None
            if previous is not None and previous is not target and not explicit:
                prev_code = getattr(previous, "__code__", None)
                same_definition = (
                    code is not None
                    and prev_code is not None
                    and (code.co_filename, code.co_firstlineno)
                    == (prev_code.co_filename, prev_code.co_firstlineno)
                    and not code.co_freevars
                    and _same_defaults(target, previous)
                )
                if not same_definition or "<lambda>" in identity:
                    raise ConfigurationError(
                        f"two different functions share the identity {identity!r} on "
                        f"Spot {self.name!r}; give each a unique name: "
                        "@spot.mark(name='...')"
                    )
            try:
                self._identities[identity] = weakref.ref(target)
            except TypeError:  # some callables cannot be weakly referenced
                self._identities[identity] = lambda: target

    # -- serialization -------------------------------------------------------------------

    def register_type(
        self,
        type_: type,
        code: int | None = None,
        encoder: Callable[[Any], Any] | None = None,
        decoder: Callable[[Any], Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """Teach the Spot's msgpack serializer a type: by class, or by ext ``code`` 0..111.

        ``spot.register_type(type_=Model)`` is enough for a pydantic model,
        dataclass, NamedTuple or Enum: it is stored under ``module.qualname``
        (or ``name=``). Other classes need ``encoder=``/``decoder=``; the
        seed's numeric form ``code=`` keeps working. Types named by a marked
        function's return annotation need no registration at all.
        """
        if not isinstance(self.serializer, MsgpackSerializer):
            raise ConfigurationError(
                "register_type needs the default msgpack serializer; this Spot uses "
                f"{type(self.serializer).__qualname__}"
            )
        self.serializer.register_type(
            type_=type_, code=code, encoder=encoder, decoder=decoder, name=name
        )

    def register(
        self,
        code: int | None = None,
        encoder: Callable[[Any], Any] | None = None,
        decoder: Callable[[Any], Any] | None = None,
        *,
        name: str | None = None,
    ) -> Callable[[T], T]:
        """Class-decorator form of :meth:`register_type`: ``@spot.register()`` on a class."""

        def decorate(cls: T) -> T:
            self.register_type(
                type_=cls,
                code=code,
                encoder=encoder,
                decoder=decoder,
                name=name,
            )
            return cls

        return decorate

    # -- controlling the cache ----------------------------------------------------------------

    def mode(self, mode: Mode) -> contextlib.AbstractContextManager[None]:
        """``with spot.mode("replay"):`` -- this Spot's calls inside use ``mode``.

        ``"normal"`` reads and writes; ``"replay"`` only reads (a miss raises
        :class:`CacheMissError`, the function never runs, nothing is
        written); ``"refresh"`` never reads (executes and overwrites);
        ``"off"`` neither reads nor writes. A context variable: it covers
        the tasks and worker threads started inside, and wins over
        ``@spot.mark(mode=)``, ``Spot(mode=)`` and ``BEAUTYSPOT_MODE``.
        """
        return scoped_mode(self._engine, check_mode(mode, "spot.mode(...)"))

    async def invalidate(
        self,
        func: Callable[..., Any] | str | None = None,
        *,
        version: str | None = None,
        older_than: float | timedelta | datetime | None = None,
    ) -> int:
        """Delete stored entries; return how many.

        ``func``: a marked function or its identity (default: every
        function). ``version``: only entries stored under that version, or
        ``"stale"`` for every version but ``func``'s current one.
        ``older_than``: only entries created before that (aware) datetime, or
        more than that many seconds (or that timedelta) ago, by the wall clock
        the backend stamps entries with. Rows go first, then blobs;
        the memory tier and recorded failures of those keys go too.
        """
        identity, current_version = self._identity_of(func)
        if version == "stale" and (identity is None or current_version is _UNKNOWN):
            raise ConfigurationError(
                'invalidate(version="stale") needs func= as a marked function, to know its '
                "current version"
            )
        cutoff = self._cutoff(older_than)
        keys = await maintenance.select_keys(  # reads the history, which flushes first
            self,
            func_name=identity,
            version=version,
            current_version=None if current_version is _UNKNOWN else current_version,
            created_before=cutoff,
        )
        return await self._engine.invalidate(keys)

    async def clear(self) -> int:
        """Delete every stored entry; return how many."""
        return await self.invalidate()

    def _identity_of(self, func: Callable[..., Any] | str | None) -> tuple[str | None, Any]:
        if func is None:
            return None, _UNKNOWN
        if isinstance(func, str):
            return func, _UNKNOWN
        call = getattr(func, "__beautyspot__", None)
        if call is None or call.pipeline.engine is not self._engine:
            raise ConfigurationError(
                f"func= must be a function marked on this Spot or its identity string, got "
                f"{getattr(func, '__qualname__', func)!r}"
            )
        task = call.pipeline.task
        return task.identity, task.version

    def _cutoff(self, older_than: float | timedelta | datetime | None) -> float | None:
        if older_than is None:
            return None
        if isinstance(older_than, datetime):
            if older_than.tzinfo is None:
                raise ConfigurationError("older_than= as a datetime must be timezone-aware")
            return older_than.timestamp()
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ConfigurationError(
                f"older_than= must be a timedelta, seconds >= 0 or an aware datetime, "
                f"got {older_than!r}"
            )
        # Entries carry the backend's wall-clock times, not the Spot's clock.
        return time.time() - float(seconds)

    # -- batches ----------------------------------------------------------------------------

    async def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int = 32,
        retries: int = 3,
        retry_on: Callable[[BaseException], bool] | None = None,
        max_errors: int | None = None,
        progress: bool | Callable[[MapProgress], Any] | None = None,
    ) -> MapReport:
        """Call the marked ``fn(item)`` for every item; return a :class:`MapReport`.

        Cached items are hits, the rest execute with at most ``concurrency``
        at once; ``items`` (any iterable or async iterable) is read lazily.
        A failing item does not stop the batch: a transient failure is
        retried up to ``retries`` times (``retry_on`` decides; by default
        HTTP 408/409/429/5xx, timeouts and lost connections), waiting out a
        ``Retry-After`` (which also pauses the function's rate limiter) or an
        exponential backoff with jitter, and an item that still fails is a
        :class:`Failure` in the report and is recorded in the task database
        (never cached), so the next run tries it again. After ``max_errors``
        failures no new item starts; the ones running finish. ``progress``:
        None shows a live line when stderr is a terminal, True always, False
        never, a callable receives :class:`MapProgress` snapshots.

        Cancelled or interrupted (Ctrl+C), the batch stops starting items,
        cancels the running ones, makes every finished result durable, logs
        a one-line summary and re-raises.
        """
        batch = Batch(
            self,
            fn,
            star=False,
            concurrency=concurrency,
            retries=retries,
            retry_on=retry_on,
            max_errors=max_errors,
            progress=progress,
        )
        return await batch.collect(items)

    async def starmap(
        self,
        fn: Callable[..., Any],
        items: Iterable[Iterable[Any]] | AsyncIterable[Iterable[Any]],
        *,
        concurrency: int = 32,
        retries: int = 3,
        retry_on: Callable[[BaseException], bool] | None = None,
        max_errors: int | None = None,
        progress: bool | Callable[[MapProgress], Any] | None = None,
    ) -> MapReport:
        """:meth:`map` calling ``fn(*item)``: each item is a tuple of arguments."""
        batch = Batch(
            self,
            fn,
            star=True,
            concurrency=concurrency,
            retries=retries,
            retry_on=retry_on,
            max_errors=max_errors,
            progress=progress,
        )
        return await batch.collect(items)

    def imap(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        concurrency: int = 32,
        retries: int = 3,
        retry_on: Callable[[BaseException], bool] | None = None,
        max_errors: int | None = None,
        progress: bool | Callable[[MapProgress], Any] | None = None,
        star: bool = False,
    ) -> Outcomes:
        """:meth:`map`, yielding ``(index, value or Failure)`` in completion order.

        Nothing is kept once yielded, so memory stays bounded by
        ``concurrency`` however many items there are. Leaving the loop early
        cancels the calls still running (``await it.aclose()`` waits for
        them to end). ``star=True`` calls ``fn(*item)``.
        """
        batch = Batch(
            self,
            fn,
            star=star,
            concurrency=concurrency,
            retries=retries,
            retry_on=retry_on,
            max_errors=max_errors,
            progress=progress,
        )
        return Outcomes(batch, items)

    # -- inspection -------------------------------------------------------------------------

    async def history(self, limit: int = 1000) -> pd.DataFrame:
        """The newest ``limit`` stored results' metadata, newest first.

        Pending write-behind results are flushed first, so everything a call
        has returned is listed. Payloads are not loaded. Besides the
        backend's columns, ``args`` holds the stored argument previews
        (name -> text, or None) and ``usage`` the call's recorded usage.
        """
        if not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(f"limit must be an int >= 0, got {limit!r}")
        frame: pd.DataFrame = await self._engine.history(limit)
        return with_meta_columns(frame)

    async def failures(
        self, func: Callable[..., Any] | str | None = None, limit: int = 1000
    ) -> pd.DataFrame:
        """Recorded failures (calls that failed for good in a batch run), newest first.

        ``func`` is a function marked on this Spot, its identity string (the
        ``func_name`` column of :meth:`history`), or ``None`` for all. A
        failure whose key has since been stored (here or in another process)
        is not listed, and its record is deleted. Columns: ``cache_key``,
        ``func_name``, ``version``, ``exc_type``, ``message``, ``attempts``,
        ``failed_at`` (timezone-aware UTC) and ``args``.
        """
        from ._failure import failures_to_frame

        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(f"limit must be an int >= 0, got {limit!r}")
        func_name: str | None = None
        if isinstance(func, str):
            func_name = func
        elif func is not None:
            if not callable(func):
                raise ConfigurationError(
                    f"func must be a marked function, its name or None, got {type(func).__name__}"
                )
            # The identity it was marked under (name= included), else its default one.
            target = underlying_function(getattr(func, "__wrapped__", func))
            with self._identity_lock:
                marked = [i for i, ref in self._identities.items() if ref() is target]
            func_name = marked[0] if marked else function_identity(target)
        return failures_to_frame(await self._engine.failures(func_name, limit))

    def statistics(self) -> SpotStatistics:
        """Counters of hits, misses, joins and writes since creation."""
        return self._engine.statistics()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the backends now instead of on first use."""
        await self._engine.open()

    async def flush(self) -> None:
        """Wait until every queued write is durable (failed writes were reported)."""
        await self._engine.flush()

    async def aclose(self) -> None:
        """Flush and close the backends. Idempotent; the Spot reopens on next use."""
        await self._engine.aclose()

    async def __aenter__(self) -> Spot:
        await self._engine.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> Spot:
        io_loop.call(self._engine.open)
        return self

    def __exit__(self, *exc_info: object) -> None:
        io_loop.call(self._engine.aclose)


#: ``spot.invalidate(func="name")`` cannot know that function's current version.
_UNKNOWN: Any = object()


class _MissingLimiter:
    """Stands in for ``spot.limiter`` when no limit is configured."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _fail(self) -> ConfigurationError:
        return ConfigurationError(
            f"Spot {self._name!r} has no rate limit; create it with Spot(..., tpm=...) "
            "or Spot(..., limiter=bs.Limiter(...)) before using @spot.limiter"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._fail()

    def __getattr__(self, name: str) -> Any:
        raise self._fail()


def _same_defaults(a: Any, b: Any) -> bool:
    """Whether two definitions of one function carry equal default arguments."""
    a, b = getattr(a, "func", a), getattr(b, "func", b)
    try:
        return bool(
            getattr(a, "__defaults__", None) == getattr(b, "__defaults__", None)
            and getattr(a, "__kwdefaults__", None) == getattr(b, "__kwdefaults__", None)
        )
    except Exception:  # defaults that cannot be compared are treated as different
        return False


def _check_serializer(serializer: Any, option: str) -> None:
    if not (
        callable(getattr(serializer, "dumps", None))
        and callable(getattr(serializer, "loads", None))
    ):
        raise ConfigurationError(
            f"{option} must have dumps(obj) -> bytes and loads(bytes) -> obj methods, got "
            f"{type(serializer).__qualname__}"
        )


class Project(Spot):
    """Deprecated alias of :class:`Spot` (the name used by beautyspot 1.x)."""

    _warned = False

    def __init__(self, name: str, **kwargs: Any) -> None:
        if not Project._warned:
            Project._warned = True
            warnings.warn("bs.Project is deprecated; use bs.Spot", DeprecationWarning, stacklevel=2)
        super().__init__(name, **kwargs)

    _task_warned = False

    def task(self, fn: Any = None, /, **options: Any) -> Any:
        """Deprecated alias of :meth:`Spot.mark`."""
        if not Project._task_warned:
            Project._task_warned = True
            warnings.warn(
                "Project.task is deprecated; use Spot.mark", DeprecationWarning, stacklevel=2
            )
        return self.mark(fn, **options) if fn is not None else self.mark(**options)


def _flush_at_exit() -> None:
    """Make write-behind results durable and close connections at exit.

    Registered with threading's own exit hook, which runs before the
    interpreter joins non-daemon threads (aiosqlite's connection threads
    are such threads and would otherwise keep the process alive).
    """
    for spot in list(_live_spots):
        engine = spot._engine
        if not engine.ready and not engine.writer.pending and not engine.leases.held:
            continue
        try:
            io_loop.call(engine.aclose)
        except Exception:
            logger.exception("flushing Spot %r at exit failed", spot.name)


def _register_exit_hook() -> None:
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(_flush_at_exit)
            return
        except RuntimeError:  # interpreter already shutting down
            pass
    atexit.register(_flush_at_exit)


_register_exit_hook()
