"""Coalesce the non-waiting backend work of one event-loop turn into one statement.

``asyncio.gather`` over 10 000 cached calls starts 10 000 tasks that each
miss the memory tier within the same turn of the loop. Each registers its key
here and awaits; a callback scheduled behind them answers the whole batch
with one ``get_many_nowait`` (a single ``IN (...)`` query on SQLite). The read
still never waits; it just happens once instead of 10 000 times. Misses take
their leases the same way: one ``lookup_or_lease_nowait`` transaction per
turn instead of one per call (:class:`InlineLeases`).

A lone call should not pay for that: awaiting the batch costs a turn of the
loop. So the first task to ask in a turn acts directly, and so do its own
later requests (a loop of sequential calls may never yield the turn); the
requests of *other* tasks in the same turn -- a ``gather`` -- are batched
(:class:`LoopTurns`).

asyncio only: under trio (no ``call_soon``) the caller acts key by key.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import anyio

from . import _gc_burst
from ._memory_tier import NO_VALUE
from ._portal import Outcome, Waiter, settle_here
from ._reader import lease_returner, read_answer
from ._record import TaskRecord
from .db import TaskDB

__all__ = [
    "DIRECT",
    "InlineLeases",
    "InlineWrite",
    "InlineWrites",
    "LoopTurns",
    "NowaitCoalescer",
    "TurnLeaders",
    "Slices",
]

_T = TypeVar("_T")

#: "Read it yourself, now": the first lookup of a loop turn.
DIRECT: Any = object()


class TurnLeaders:
    """Per loop: the task that goes first in the current turn (and acts directly)."""

    __slots__ = ("_first",)

    def __init__(self) -> None:
        self._first: dict[asyncio.AbstractEventLoop, object] = {}

    def first(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the current task goes first in this turn: the first to ask, or that one again."""
        task = asyncio.current_task(loop)
        first = self._first.get(loop)
        if first is None:
            self._first[loop] = task
            loop.call_soon(self._first.pop, loop, None)
            return True
        return first is task


class LoopTurns(Generic[_T]):
    """Per loop: who goes first in the current turn, and the batch of everyone else.

    ``answer(batch)`` runs in a callback on the loop, once per turn that
    batched anything, after the tasks that filled it have all had their go.
    """

    __slots__ = ("_answer", "_batches", "_leaders")

    def __init__(self, answer: Callable[[list[_T]], None]) -> None:
        self._answer = answer
        self._batches: dict[asyncio.AbstractEventLoop, list[_T]] = {}
        self._leaders = TurnLeaders()

    def join(self, loop: asyncio.AbstractEventLoop) -> list[_T] | None:
        """``None``: act directly now; otherwise the batch to append to."""
        batch = self._batches.get(loop)
        if batch is None:
            if self._leaders.first(loop):
                return None
            batch = self._batches[loop] = []
            loop.call_soon(self._run, loop)
        elif len(batch) == _gc_burst.BURST:
            # A burst: from here on, not after the turn (its calls allocate now).
            _gc_burst.burst(loop)
        return batch

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._answer(self._batches.pop(loop, []))


class NowaitCoalescer:
    """Per-loop batches of keys waiting for one ``get_many_nowait``."""

    __slots__ = ("_db", "_turns")

    def __init__(self, db: TaskDB) -> None:
        self._db = db
        self._turns: LoopTurns[tuple[str, asyncio.Future[Any]]] = LoopTurns(self._answer)

    def lookup(self, key: str) -> Any:
        """A future of the record (None: absent, NO_VALUE: unknown); DIRECT; or None off asyncio."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        batch = self._turns.join(loop)
        if batch is None:
            return DIRECT
        future: asyncio.Future[Any] = loop.create_future()
        batch.append((key, future))
        return future

    def _answer(self, batch: list[tuple[str, asyncio.Future[Any]]]) -> None:
        try:
            found = self._db.get_many_nowait([key for key, _ in batch])
        except Exception:  # a broken fast path only costs the fallback
            found = {}
        for key, future in batch:
            if not future.done():
                future.set_result(found.get(key, NO_VALUE))


#: One lease lookup: key, owner, lease ttl and the caller's waiter.
_Lease = tuple[str, str, float, Waiter]


class InlineLeases:
    """A miss's lookup-and-lease on the caller's thread, batched per loop turn.

    :meth:`submit` either settles the waiter at once, queues it for this
    turn's batch (one ``lookup_or_lease_nowait`` transaction), or declines;
    whatever the backend declines goes to ``fallback`` (the I/O loop's
    reader). ``release(key, owner)`` gives back a lease granted to a caller
    that was cancelled before it received the answer.
    """

    __slots__ = ("_active", "_db", "_fallback", "_on_commit", "_release", "_turns", "chunk")

    def __init__(
        self,
        db: TaskDB,
        fallback: Callable[[str, str, float, Waiter], None],
        release: Callable[[str, str], None],
        on_commit: Callable[[], None],
        *,
        chunk: int = 250,
    ) -> None:
        self._db = db
        self._fallback = fallback
        self._release = release
        #: Called after each transaction committed here (the owner's housekeeping).
        self._on_commit = on_commit
        #: Keys per transaction in a batch (bounds the longest one).
        self.chunk = chunk
        self._turns: LoopTurns[_Lease] = LoopTurns(self._answer)
        self._active: set[object] = set()

    def submit(self, key: str, owner: str, ttl: float, waiter: Waiter) -> bool:
        """Take over ``waiter``'s lookup (True), or leave it to the caller (False)."""
        loop = waiter.loop
        if loop is not None:
            batch = self._turns.join(loop)
            if batch is not None:
                batch.append((key, owner, ttl, waiter))
                return True
        # The first caller of a turn, a sync caller or a trio caller: its own
        # thread, one key, nothing to wait for.
        try:
            found = self._db.lookup_or_lease_nowait([key], owner, ttl)
        except anyio.WouldBlock:
            return False
        self._on_commit()
        waiter.future.set_result(read_answer(found.get(key, True)))
        return True

    def _answer(self, batch: list[_Lease]) -> None:
        groups: dict[tuple[str, float], list[_Lease]] = {}
        for lease in batch:
            groups.setdefault((lease[1], lease[2]), []).append(lease)
        parts = [
            leases[start : start + self.chunk]
            for leases in groups.values()
            for start in range(0, len(leases), self.chunk)
        ]
        Slices(parts, self._lease_part, self._lease_elsewhere, self._active)()

    @property
    def busy(self) -> bool:
        """Whether a batch is being leased here (callable from any thread).

        The writer holds its batches back meanwhile: each of them takes the
        write lock for tens of milliseconds, and every lease transaction
        that runs into it is declined to the I/O thread.
        """
        return bool(self._active)

    def _lease_elsewhere(self, part: list[_Lease]) -> None:
        for lease in part:
            self._fallback(*lease)

    def _lease_part(self, part: list[_Lease]) -> bool:
        owner, ttl = part[0][1], part[0][2]
        try:
            found = self._db.lookup_or_lease_nowait([lease[0] for lease in part], owner, ttl)
        except anyio.WouldBlock:
            return False
        self._on_commit()
        outcomes: list[Outcome] = [
            (lease[3], read_answer(found.get(lease[0], True)), None) for lease in part
        ]
        key_of = {id(lease[3]): lease[0] for lease in part}
        settle_here(outcomes, lease_returner(self._release, owner, key_of))
        return True


#: Seconds of transactions one loop callback may run before yielding the loop.
SLICE: Final = 0.05
#: A batch whose transaction was declined (the write lock is held elsewhere)
#: tries again after these delays, then leaves what is left to the I/O thread.
RETRY_DELAYS: Final = (0.0005, 0.001, 0.002, 0.004)


class Slices(Generic[_T]):
    """Run a batch's parts, a slice of time per loop callback; retry declined ones briefly.

    A batch of 10 000 is many bounded transactions; run back to back they
    would hold the loop for all of them, so each callback stops after
    :data:`SLICE` seconds. ``run(part)`` returns False when the backend
    declined: usually another connection committing for a moment, so the
    part is retried after short delays (:data:`RETRY_DELAYS`) before the
    rest of the batch is handed to ``fall_back`` -- which would otherwise
    take the write lock and make every later part decline too.
    """

    __slots__ = ("_active", "_fall_back", "_parts", "_retries", "_run")

    def __init__(
        self,
        parts: list[_T],
        run: Callable[[_T], bool],
        fall_back: Callable[[_T], None],
        active: set[object],
    ) -> None:
        self._parts = deque(parts)
        self._run = run
        self._fall_back = fall_back
        self._retries = 0
        #: Holds this batch while it has parts left (see InlineLeases.busy).
        self._active = active
        active.add(self)

    def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        parts = self._parts
        started = time.perf_counter()
        while parts:
            if not self._run(parts[0]):
                if self._retries < len(RETRY_DELAYS):
                    loop.call_later(RETRY_DELAYS[self._retries], self)
                    self._retries += 1
                    return
                while parts:
                    self._fall_back(parts.popleft())
                break
            parts.popleft()
            if parts and time.perf_counter() - started >= SLICE:
                loop.call_soon(self)
                return
        self._active.discard(self)


#: One durable write: the record, its lease owner, the caller's waiter, and
#: what to run once it is durable (``on_written(None)``).
InlineWrite = tuple[TaskRecord, "str | None", Waiter, Callable[[BaseException | None], None]]


class InlineWrites:
    """A lone durable write on the caller's thread: one ``save_and_release_nowait``.

    Only the first write of a loop turn (or of a sync or trio caller) goes
    here. Concurrent writes -- a ``gather`` of misses -- are left to the I/O
    loop's writer: its transactions of thousands of rows rewrite each
    B-tree page once, where many small ones would rewrite it each time and
    multiply the WAL. ``max_bytes`` bounds the transaction.
    """

    __slots__ = ("_db", "_leaders", "_on_commit", "committed", "max_bytes")

    def __init__(
        self, db: TaskDB, on_commit: Callable[[], None], *, max_bytes: int = 64 * 1024
    ) -> None:
        self._db = db
        self._on_commit = on_commit
        self.max_bytes = max_bytes
        #: Rows made durable here (racy across threads: for statistics).
        self.committed = 0
        self._leaders = TurnLeaders()

    def submit(self, write: InlineWrite) -> bool:
        """Make the write durable now (True), or leave it to the caller (False)."""
        record, owner, waiter, on_written = write
        if record.size_bytes > self.max_bytes:
            return False
        if waiter.loop is not None and not self._leaders.first(waiter.loop):
            return False
        try:
            self._db.save_and_release_nowait(
                [record], {} if owner is None else {owner: [record.cache_key]}
            )
        except anyio.WouldBlock:
            return False
        self.committed += 1
        self._on_commit()
        on_written(None)
        waiter.future.set_result(None)
        return True
