"""The decorator: turn a function into a marked one that runs the pipeline.

Whether a function is sync or async is decided once, here, at decoration
time; the wrappers then take one branch-free path per call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

import anyio

from ._callables import is_async_callable
from ._callables import unwrap_partial as _unwrap_partial
from ._memo import ABSENT, NO_VALUE
from ._pipeline import Pipeline
from ._steps import drive_async, drive_sync
from .exceptions import ConfigurationError

__all__ = ["SyncMarked", "is_async_callable", "wrap"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class SyncMarked(Protocol[P, R_co]):
    """A marked sync function: call it as before, or ``await f.acall(...)``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    async def acall(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Run the call from async code; the body runs in a worker thread."""
        ...


def check_markable(fn: Any) -> None:
    """Refuse what the pipeline cannot cache: generators, non-callables."""
    if not callable(fn):
        raise ConfigurationError(f"@spot.mark needs a function, got {type(fn).__qualname__}")
    target = _unwrap_partial(fn)
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        raise ConfigurationError(
            f"{getattr(target, '__qualname__', target)!s} is a generator function; "
            "marking generators is not supported (return a list instead)"
        )


def _copy_metadata(wrapper: Any, fn: Any) -> None:
    functools.update_wrapper(wrapper, fn)
    target = _unwrap_partial(fn)
    if not inspect.isroutine(target) and not isinstance(target, type):
        target = type(target)  # a callable object: name it after its class
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        if getattr(fn, attr, None) is None and hasattr(target, attr):
            setattr(wrapper, attr, getattr(target, attr))
    wrapper.__wrapped__ = fn


def wrap(fn: Callable[..., Any], pipeline: Pipeline) -> Callable[..., Any]:
    """Return the marked version of ``fn`` driven by ``pipeline``."""
    stats = pipeline.engine.stats
    # The memory tier may be consulted before the pipeline starts only when
    # no hook must see the call and deriving the key does no file I/O.
    fast = not pipeline.task.hooks and not pipeline.task.keyer.blocking
    key_for = pipeline.key_for
    memo_lookup = pipeline.memo_lookup
    disk_lookup = pipeline.disk_lookup
    steps = pipeline.steps

    def probe(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The hit path: memory tier, then the backend's non-waiting read."""
        if not fast:
            return None, NO_VALUE
        ids = key_for(args, kwargs)
        value = memo_lookup(ids[1])
        if value is not NO_VALUE:
            stats.memory_hits += 1
            return ids, value
        return ids, disk_lookup(ids[1])

    coalescer = pipeline.engine.coalescer
    accept = pipeline.accept

    async def async_probe(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """probe() for async callers: concurrent reads share one query."""
        if not fast:
            return None, NO_VALUE
        ids = key_for(args, kwargs)
        key = ids[1]
        value = memo_lookup(key)
        if value is not NO_VALUE:
            stats.memory_hits += 1
            return ids, value
        pending = coalescer.lookup(key)
        if pending is None:
            return ids, disk_lookup(key)
        return ids, accept(key, await pending)

    if is_async_callable(fn):

        async def async_marked(*args: Any, **kwargs: Any) -> Any:
            ids, value = await async_probe(args, kwargs)
            if value is NO_VALUE or value is ABSENT:
                return await drive_async(
                    steps(args, kwargs, ids, value is ABSENT), lambda: fn(*args, **kwargs)
                )
            return value

        _copy_metadata(async_marked, fn)
        return async_marked

    def sync_marked(*args: Any, **kwargs: Any) -> Any:
        ids, value = probe(args, kwargs)
        if value is NO_VALUE or value is ABSENT:
            body = functools.partial(fn, *args, **kwargs)
            return drive_sync(steps(args, kwargs, ids, value is ABSENT), body)
        return value

    async def acall(*args: Any, **kwargs: Any) -> Any:
        ids, value = await async_probe(args, kwargs)
        if value is NO_VALUE or value is ABSENT:
            body = functools.partial(fn, *args, **kwargs)
            return await drive_async(
                steps(args, kwargs, ids, value is ABSENT), lambda: anyio.to_thread.run_sync(body)
            )
        return value

    _copy_metadata(sync_marked, fn)
    sync_marked.acall = acall  # type: ignore[attr-defined]
    return sync_marked
