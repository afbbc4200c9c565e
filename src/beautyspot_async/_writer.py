"""The writer: batches results from every caller into few transactions.

All writes, durable ones included, go through one queue drained by a task on
the I/O loop. Callers that need durability (``wait=True``) wait for their own
item; write-behind callers do not wait at all. Draining whatever accumulated
while the previous batch was being written gives group commit for free: a
``gather`` of 10 000 misses becomes a handful of transactions, not 10 000.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ._store import ResultStore, WriteItem

__all__ = ["Submission", "Writer"]

logger = logging.getLogger("beautyspot_async")

ErrorReporter = Callable[[WriteItem, BaseException], Awaitable[None]]


@dataclass(slots=True)
class Submission:
    """A queued write and what to do once it is durable (or has failed)."""

    item: WriteItem
    done: concurrent.futures.Future[None] | None = None
    #: Runs on the I/O loop after the write, success or failure.
    on_complete: Callable[[BaseException | None], None] | None = None
    report: ErrorReporter | None = None


@dataclass(slots=True)
class _Marker:
    """Queued by flush(): everything queued before it has been written once it is reached."""

    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Writer:
    """Queue + drain task for one ResultStore, living on the I/O loop."""

    def __init__(self, store: ResultStore, *, batch_size: int = 2000) -> None:
        self._store = store
        self._batch_size = batch_size
        self._queue: deque[Submission | _Marker] = deque()
        self._idle = True
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start the drain task; call on the I/O loop."""
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._idle = False
            self._task = self._loop.create_task(self._drain_forever(), name="beautyspot-writer")

    def submit(self, submission: Submission) -> None:
        """Queue a write; callable from any thread, never waits."""
        self._queue.append(submission)
        # The drain task sets _idle before its final emptiness check, and we
        # read _idle after appending, so a wake-up can never be lost; it can
        # at worst be sent twice.
        if self._idle and self._loop is not None:
            self._idle = False
            self._loop.call_soon_threadsafe(self._set_wake)

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def flush(self) -> None:
        """Return once everything queued before this call has been written."""
        marker = _Marker()
        self.submit_marker(marker)
        await marker.done

    def submit_marker(self, marker: _Marker) -> None:
        self._queue.append(marker)
        if self._idle and self._loop is not None:
            self._idle = False
            self._set_wake()

    async def stop(self) -> None:
        """Flush, then stop the drain task; call on the I/O loop."""
        if self._task is None or self._task.done():
            # Nothing drains the queue: write what is left here.
            await self._drain_once()
            return
        await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._idle = True
        self._loop = None

    async def _drain_forever(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._idle = True
                if not self._queue:
                    await self._wake.wait()
                    self._wake.clear()
                self._idle = False
            await self._drain_once()

    async def _drain_once(self) -> None:
        while self._queue:
            batch: list[Submission] = []
            marker: _Marker | None = None
            while self._queue and len(batch) < self._batch_size:
                entry = self._queue.popleft()
                if isinstance(entry, _Marker):
                    marker = entry
                    break
                batch.append(entry)
            if batch:
                await self._write(batch)
            if marker is not None and not marker.done.done():
                marker.done.set_result(None)

    async def _write(self, batch: list[Submission]) -> None:
        try:
            errors = await self._store.write([s.item for s in batch])
        except BaseException as exc:  # pragma: no cover - store.write reports per item
            errors = [exc] * len(batch)
            if not isinstance(exc, Exception):
                raise
        for submission, error in zip(batch, errors, strict=True):
            if error is None:
                self.written += 1
            else:
                self.failed += 1
                if submission.report is not None:
                    await submission.report(submission.item, error)
            if submission.on_complete is not None:
                submission.on_complete(error)
            done = submission.done
            if done is not None and not done.done():
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)
