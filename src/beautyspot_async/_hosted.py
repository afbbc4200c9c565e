"""Run a coroutine in a task of its own, outside any task group the caller holds.

An async iterator that a consumer may abandon at any ``yield`` (``break``
out of ``async for``) cannot keep its work in a task group across yields:
the group's cancel scope would end up in the consumer's task. The work runs
in a host task instead -- a plain asyncio task, or a trio system task -- and
the iterator cancels it through a cancel scope the work enters itself. The
coroutine must catch its own exceptions: a failing trio system task takes
the whole run down.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

from ._portal import on_asyncio

__all__ = ["spawn_hosted"]

#: Host tasks on asyncio, kept referenced until they end (the loop keeps only weak ones).
_RUNNING: set[Any] = set()


def spawn_hosted(run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Start ``run()`` in a host task on the current event loop, with the caller's context."""
    context = contextvars.copy_context()
    if not on_asyncio():  # anyio's other backend: trio
        import trio

        trio.lowlevel.spawn_system_task(run, context=context)
        return
    import asyncio

    task = asyncio.get_running_loop().create_task(run(), context=context)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
