"""Coalesce the non-waiting reads of one event-loop turn into one query.

``asyncio.gather`` over 10 000 cached calls starts 10 000 tasks that each
miss the memory tier within the same turn of the loop. Each registers its key
here and awaits; a callback scheduled behind them answers the whole batch
with one ``get_many_nowait`` (a single ``IN (...)`` query on SQLite). The read
still never waits; it just happens once instead of 10 000 times.

A lone call should not pay for that: awaiting the batch costs a turn of the
loop. So the first task to look up in a turn reads directly (the caller gets
:data:`DIRECT` and reads itself), and so do its own later lookups (a loop of
sequential calls may never yield the turn); lookups of *other* tasks in the
same turn -- a ``gather`` -- are batched.

asyncio only: under trio (no ``call_soon``) the caller reads key by key.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._memory_tier import NO_VALUE
from .db import TaskDB

__all__ = ["DIRECT", "NowaitCoalescer"]

#: "Read it yourself, now": the first lookup of a loop turn.
DIRECT: Any = object()


class NowaitCoalescer:
    """Per-loop batches of keys waiting for one ``get_many_nowait``."""

    __slots__ = ("_batches", "_busy", "_db")

    def __init__(self, db: TaskDB) -> None:
        self._db = db
        self._batches: dict[asyncio.AbstractEventLoop, list[tuple[str, asyncio.Future[Any]]]] = {}
        #: Per loop, the task that looked up directly in the current turn.
        self._busy: dict[asyncio.AbstractEventLoop, object] = {}

    def lookup(self, key: str) -> Any:
        """A future of the record (None: absent, NO_VALUE: unknown); DIRECT; or None off asyncio."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        batch = self._batches.get(loop)
        if batch is None:
            task = asyncio.current_task(loop)
            first = self._busy.get(loop)
            if first is None:
                self._busy[loop] = task
                loop.call_soon(self._busy.pop, loop, None)
                return DIRECT
            if first is task:
                return DIRECT
            batch = self._batches[loop] = []
            loop.call_soon(self._answer, loop)
        future: asyncio.Future[Any] = loop.create_future()
        batch.append((key, future))
        return future

    def _answer(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._batches.pop(loop, [])
        try:
            found = self._db.get_many_nowait([key for key, _ in batch])
        except Exception:  # a broken fast path only costs the fallback
            found = {}
        for key, future in batch:
            if not future.done():
                future.set_result(found.get(key, NO_VALUE))
