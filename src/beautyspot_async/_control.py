"""Per-call control of a marked function: key, lookup, invalidate, refresh, explain.

Attached to every marked function by ``wrap``. On an ``async def`` they are
coroutines (``await f.lookup(x)``), except ``f.key``; on a plain ``def`` they
block, and the ``a``-prefixed twins (``await f.alookup(x)``...) are
coroutines, like ``f.acall``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from ._modes import REFRESH, REPLAY
from ._portal import io_loop

if TYPE_CHECKING:
    from ._explain import Explanation
    from ._pipeline import Pipeline

__all__ = ["add_controls"]


def add_controls(
    wrapper: Any,
    pipeline: Pipeline,
    *,
    run: Callable[..., Any],
    is_async: bool,
) -> None:
    """Give ``wrapper`` its ``key``/``lookup``/``invalidate``/``refresh``/``explain``.

    ``run(mode, args, kwargs)`` is the wrapper's own coroutine for a call in
    ``mode`` (the function body runs in a worker thread for a sync function).
    """
    engine = pipeline.engine

    def key(*args: Any, **kwargs: Any) -> str:
        """The cache key of ``f(*args, **kwargs)`` (derived, not looked up)."""
        return pipeline.cache_key(args, kwargs)

    async def lookup(*args: Any, **kwargs: Any) -> Any:
        """The stored result of the call, or :class:`CacheMissError`; never runs ``f``."""
        return await run(REPLAY, args, kwargs)

    async def refresh(*args: Any, **kwargs: Any) -> Any:
        """Run the call and overwrite whatever is stored for it."""
        return await run(REFRESH, args, kwargs)

    async def invalidate(*args: Any, **kwargs: Any) -> bool:
        """Delete the call's stored entry; whether there was one."""
        cache_key = await _key_off_loop(pipeline, args, kwargs)
        return await engine.invalidate([cache_key]) > 0

    async def explain(*args: Any, **kwargs: Any) -> Explanation:
        """Why the call hits or misses: see :class:`~beautyspot_async.Explanation`."""
        await engine.open()
        await engine.flush()
        return await io_loop.run(pipeline.explain, args, kwargs)

    wrapper.key = key
    controls = {
        "lookup": lookup,
        "refresh": refresh,
        "invalidate": invalidate,
        "explain": explain,
    }
    for name, coroutine_fn in controls.items():
        if is_async:
            setattr(wrapper, name, coroutine_fn)
        else:
            setattr(wrapper, "a" + name, coroutine_fn)
            setattr(wrapper, name, _blocking(coroutine_fn))


def _blocking(coroutine_fn: Callable[..., Any]) -> Callable[..., Any]:
    """The sync twin: runs ``coroutine_fn`` on the Spot's I/O loop and waits."""

    @functools.wraps(coroutine_fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return io_loop.call(functools.partial(coroutine_fn, *args, **kwargs))

    return call


async def _key_off_loop(pipeline: Pipeline, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    # A key function that reads files (KeyGen.file_content) must not block the loop.
    if pipeline.keyer_blocks:
        return await anyio.to_thread.run_sync(lambda: pipeline.cache_key(args, kwargs))
    return pipeline.cache_key(args, kwargs)
