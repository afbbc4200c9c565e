"""The writer: batches results from every caller into few transactions.

All writes, durable ones included, go through one queue drained by a task on
the I/O loop. Callers that need durability (``wait=True``) wait for their own
item; write-behind callers do not wait at all. Draining whatever accumulated
while the previous batch was being written gives group commit for free: a
``gather`` of 10 000 misses becomes a handful of transactions, not 10 000.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ._budget import Budget
from ._drain import QueueDrain
from ._portal import Outcome, Waiter, settle_all
from ._store import ResultStore, WriteItem

__all__ = ["Submission", "Writer"]

ErrorReporter = Callable[[WriteItem, BaseException], Awaitable[None]]


@dataclass(slots=True)
class Submission:
    """A queued write and what to do once it is durable (or has failed)."""

    item: WriteItem
    #: Settled once the write is durable (or with its error), for wait=True callers.
    done: Waiter | None = None
    #: Runs on the I/O loop after the write, success or failure.
    on_complete: Callable[[BaseException | None], None] | None = None
    report: ErrorReporter | None = None


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(slots=True)
class _Marker:
    """Queued by flush(): everything queued before it has been written once it is reached."""

    done: asyncio.Future[None] = field(default_factory=_new_future)


class Writer(QueueDrain["Submission | _Marker"]):
    """Queue + drain task for one ResultStore's writes, living on the I/O loop."""

    def __init__(self, store: ResultStore, *, batch_size: int = 2000, linger: float = 0.01) -> None:
        super().__init__()
        self._store = store
        self.linger = linger
        self._batch_size = batch_size
        self.written = 0
        self.failed = 0
        #: Last-use touches and size budgets, settled after the write batches.
        self.budget: Budget | None = None
        #: True while writes should wait (callers leasing on their own threads).
        self.hold_back: Callable[[], bool] | None = None
        self._ticker: asyncio.Task[None] | None = None

    def submit(self, submission: Submission) -> None:
        """Queue a write; callable from any thread, never waits."""
        self._enqueue(submission)

    def submit_and_notify(self, submission: Submission, waiter: Waiter) -> None:
        """Queue a write whose caller waits on ``waiter`` for durability."""
        submission.done = waiter
        self._enqueue(submission)

    def start(self) -> None:
        super().start()
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(_nudge_now_and_then(self))

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        await super().stop()
        if self.budget is not None and self.budget.pending:
            # Hits since the last batch, with nothing left to write to carry them.
            await self.budget.settle()

    def nudge(self) -> None:
        """Have the drain run once (it settles touches and budgets) with nothing to write."""
        self._enqueue(_Marker())

    async def flush(self) -> None:
        """Return once everything queued before this call has been written.

        Call on the I/O loop.
        """
        marker = _Marker()
        self._enqueue(marker)
        if self._task is None or self._task.done():
            await self._drain_once()  # nothing else drains: do it here
        await marker.done

    async def _drain_once(self) -> None:
        if (
            self.linger
            and self._queue
            and not any(
                isinstance(entry, _Marker) or entry.done is not None for entry in self._queue
            )
        ):
            # Nobody is waiting for these writes: let a few more arrive so a
            # run of sequential write-behind misses shares one transaction
            # instead of each taking the write lock from the next lookup.
            await asyncio.sleep(self.linger)
        if self.hold_back is not None and self.hold_back():
            # A caller's loop is leasing a batch on its own connection: let it
            # finish before taking the write lock (bounded, then write anyway).
            # Polled: the flag belongs to another thread, which has no cheap
            # way to wake this loop.
            for _ in range(int(HOLD_BACK_MAX / _HOLD_BACK_POLL)):
                await asyncio.sleep(_HOLD_BACK_POLL)
                if not self.hold_back():
                    break
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
                if self.budget is not None:
                    # flush() returns with the store within its budget.
                    await self.budget.settle()
                marker.done.set_result(None)
        if self.budget is not None:
            await self.budget.settle()

    async def _write(self, batch: list[Submission]) -> None:
        items = [s.item for s in batch]
        errors = await self._store.write(items)
        if self.budget is not None:
            self.budget.written(items, errors)
        outcomes: list[Outcome] = []
        for submission, error in zip(batch, errors, strict=True):
            if error is None:
                self.written += 1
            else:
                self.failed += 1
                if submission.report is not None:
                    await submission.report(submission.item, error)
            if submission.on_complete is not None:
                submission.on_complete(error)
            if submission.done is not None:
                outcomes.append((submission.done, None, error))
        if outcomes:
            settle_all(outcomes)


#: Seconds the writer waits at most for callers leasing a batch (see hold_back).
HOLD_BACK_MAX = 0.2
_HOLD_BACK_POLL = 0.002

#: Seconds between checks for hits whose last use waits to be written.
TOUCH_NUDGE = 30.0


async def _nudge_now_and_then(writer: Writer) -> None:
    # Hits never wake the writer (that would cost the hit path a syscall);
    # this does, now and then, so the last use of hits alone gets written.
    while True:
        await asyncio.sleep(TOUCH_NUDGE)
        if writer.budget is not None and writer.budget.pending:
            writer.nudge()
