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
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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
]

_T = TypeVar("_T")

#: "Read it yourself, now": the first lookup of a loop turn.
DIRECT: Any = object()


class LoopTurns(Generic[_T]):
    """Per loop: who goes first in the current turn, and the batch of everyone else.

    ``answer(batch)`` runs in a callback on the loop, once per turn that
    batched anything, after the tasks that filled it have all had their go.
    """

    __slots__ = ("_answer", "_batches", "_first")

    def __init__(self, answer: Callable[[list[_T]], None]) -> None:
        self._answer = answer
        self._batches: dict[asyncio.AbstractEventLoop, list[_T]] = {}
        #: Per loop, the task that acted directly in the current turn.
        self._first: dict[asyncio.AbstractEventLoop, object] = {}

    def join(self, loop: asyncio.AbstractEventLoop) -> list[_T] | None:
        """``None``: act directly now; otherwise the batch to append to."""
        batch = self._batches.get(loop)
        if batch is None:
            task = asyncio.current_task(loop)
            first = self._first.get(loop)
            if first is None:
                self._first[loop] = task
                loop.call_soon(self._first.pop, loop, None)
                return None
            if first is task:
                return None
            batch = self._batches[loop] = []
            loop.call_soon(self._run, loop)
        return batch

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._batches.pop(loop, [])
        if len(batch) >= _gc_burst.BURST:
            _gc_burst.burst(loop)
        self._answer(batch)


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

    __slots__ = ("_db", "_fallback", "_release", "_turns", "chunk")

    def __init__(
        self,
        db: TaskDB,
        fallback: Callable[[str, str, float, Waiter], None],
        release: Callable[[str, str], None],
        *,
        chunk: int = 500,
    ) -> None:
        self._db = db
        self._fallback = fallback
        self._release = release
        #: Keys per transaction in a batch (bounds the longest one).
        self.chunk = chunk
        self._turns: LoopTurns[_Lease] = LoopTurns(self._answer)

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
        waiter.future.set_result(read_answer(found.get(key, True)))
        return True

    def _answer(self, batch: list[_Lease]) -> None:
        groups: dict[tuple[str, float], list[_Lease]] = {}
        for lease in batch:
            groups.setdefault((lease[1], lease[2]), []).append(lease)
        for (owner, ttl), leases in groups.items():
            for start in range(0, len(leases), self.chunk):
                part = leases[start : start + self.chunk]
                try:
                    found = self._db.lookup_or_lease_nowait(
                        [lease[0] for lease in part], owner, ttl
                    )
                except anyio.WouldBlock:
                    for lease in part:
                        self._fallback(*lease)
                    continue
                outcomes: list[Outcome] = [
                    (lease[3], read_answer(found.get(lease[0], True)), None) for lease in part
                ]
                key_of = {id(lease[3]): lease[0] for lease in part}
                settle_here(outcomes, lease_returner(self._release, owner, key_of))


#: One durable write: the record, its lease owner, the caller's waiter, what
#: to run once it is durable (``on_written(None)``), and whatever the
#: fallback needs besides (passed through untouched).
InlineWrite = tuple[TaskRecord, "str | None", Waiter, Callable[[BaseException | None], None], Any]


class InlineWrites:
    """A durable write on the caller's thread, batched per loop turn like :class:`InlineLeases`.

    Each key's lease goes with its row in one ``save_and_release_nowait``
    transaction; what the backend declines goes to ``fallback`` (the I/O
    loop's writer). ``max_bytes`` and ``max_keys`` bound one transaction.
    """

    __slots__ = ("_db", "_fallback", "_turns", "committed", "max_bytes", "max_keys")

    def __init__(
        self,
        db: TaskDB,
        fallback: Callable[[InlineWrite], None],
        *,
        max_bytes: int = 256 * 1024,
        max_keys: int = 500,
    ) -> None:
        self._db = db
        self._fallback = fallback
        self.max_bytes = max_bytes
        self.max_keys = max_keys
        #: Rows made durable here (racy across threads: for statistics).
        self.committed = 0
        self._turns: LoopTurns[InlineWrite] = LoopTurns(self._answer)

    def submit(self, write: InlineWrite) -> bool:
        """Take over the write (True), or leave it to the caller (False)."""
        loop = write[2].loop
        if loop is not None:
            batch = self._turns.join(loop)
            if batch is not None:
                batch.append(write)
                return True
        if write[0].size_bytes > self.max_bytes:
            return False
        try:
            self._commit([write])
        except anyio.WouldBlock:
            return False
        self._settle([write])
        return True

    def _answer(self, batch: list[InlineWrite]) -> None:
        part: list[InlineWrite] = []
        size = 0
        for write in batch:
            if write[0].size_bytes > self.max_bytes:
                self._fallback(write)
                continue
            if part and (len(part) >= self.max_keys or size + write[0].size_bytes > self.max_bytes):
                self._commit_or_fall_back(part)
                part, size = [], 0
            part.append(write)
            size += write[0].size_bytes
        if part:
            self._commit_or_fall_back(part)

    def _commit_or_fall_back(self, part: list[InlineWrite]) -> None:
        try:
            self._commit(part)
        except anyio.WouldBlock:
            for write in part:
                self._fallback(write)
            return
        self._settle(part)

    def _commit(self, part: list[InlineWrite]) -> None:
        owners: dict[str, list[str]] = {}
        for record, owner, *_ in part:
            if owner is not None:
                owners.setdefault(owner, []).append(record.cache_key)
        self._db.save_and_release_nowait([write[0] for write in part], owners)

    def _settle(self, part: list[InlineWrite]) -> None:
        self.committed += len(part)
        for write in part:
            write[3](None)
        settle_here([(write[2], None, None) for write in part])
