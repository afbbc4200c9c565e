"""A queue any thread can fill, drained in batches by one task on the I/O loop.

Both the writer and the reader are one of these: callers never wait to
enqueue, and whatever piles up while a batch is in flight becomes the next
batch, so load turns into fewer, larger round trips by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["QueueDrain"]

logger = logging.getLogger("beautyspot_async")

E = TypeVar("E")


class QueueDrain(Generic[E]):
    """Subclasses implement :meth:`_drain_once`, which empties ``self._queue``."""

    def __init__(self) -> None:
        self._queue: deque[E] = deque()
        self._idle = True
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start the drain task; call on the I/O loop."""
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._idle = False
            self._task = self._loop.create_task(self._drain_forever())

    #: Called (from any thread) when an entry arrives while no drain task
    #: runs -- the Spot was closed under a call still in flight -- so that
    #: the owner reopens and the entry is not stranded.
    revive: Callable[[], object] | None = None

    def _enqueue(self, entry: E) -> None:
        """Queue ``entry``; callable from any thread, never waits."""
        self._queue.append(entry)
        # The drain task sets _idle before its final emptiness check, and we
        # read _idle after appending, so a wake-up can never be lost; at
        # worst it is sent twice.
        loop = self._loop
        if loop is None:
            if self.revive is not None:
                self.revive()
        elif self._idle:
            self._idle = False
            loop.call_soon_threadsafe(self._set_wake)

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        """Drain everything queued, the batch in flight included, then stop.

        Call on the I/O loop. The drain task is asked to finish, never
        cancelled: cancelling it mid-batch would drop that batch (results a
        caller already has). Each backend operation is bounded by the Spot's
        ``backend_timeout``, so this cannot hang on a frozen server.
        """
        task = self._task
        if task is not None and not task.done():
            self._stopping = True
            self._set_wake()
            # shield: a cancelled closer must not cancel the batch in flight.
            await asyncio.shield(task)
        else:
            await self._drain_once()
        self._task = None
        self._stopping = False
        self._idle = True
        self._loop = None
        if self._queue and self.revive is not None:
            self.revive()  # arrived after the task's last look

    async def _drain_forever(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._idle = True
                if not self._queue:
                    await self._wake.wait()
                    self._wake.clear()
                self._idle = False
            try:
                await self._drain_once()
            except Exception:  # one bad batch must not stop every later one
                logger.exception("%s: a batch failed unexpectedly", type(self).__name__)

    async def _drain_once(self) -> None:
        raise NotImplementedError
