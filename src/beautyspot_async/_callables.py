"""Whether calling a callable returns a coroutine, decided once per callable.

The decorator (``_marked``) and the limiter both choose an async or a sync
wrapper at decoration time, never per call, so they must agree on what
counts as async: one rule, here.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

__all__ = ["is_async_callable", "unwrap_partial"]


def unwrap_partial(fn: Any) -> Any:
    """The callable under any number of ``functools.partial`` layers."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` returns a coroutine (partials and callable objects too).

    A coroutine function, a bound method of one, or a partial of either is
    async; so is an instance whose class defines ``async def __call__``. A
    class is not, even one with an async ``__call__``: calling the class
    builds an instance.
    """
    target = unwrap_partial(fn)
    if inspect.iscoroutinefunction(target):
        return True
    # Look the method up on the type, as the call itself does.
    call = getattr(type(target), "__call__", None)  # noqa: B004 - instances, not callability
    return not inspect.isroutine(target) and inspect.iscoroutinefunction(call)
