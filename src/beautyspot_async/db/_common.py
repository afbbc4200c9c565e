"""Parts every task database shares, written once.

* :func:`lookup_then_lease`: read, lease what is missing, re-read what was
  leased -- the logic of :meth:`TaskDB.lookup_or_lease` over a backend's own
  primitives, so a backend that batches them (pipelining, one connection)
  does not rewrite the logic.
* :class:`WaitStatistics` and :class:`WaitTracker`: what
  :meth:`TaskDB.statistics` reports about waits on notifications.
* :class:`LoopReads`: :meth:`TaskDB.get_many_here` for a network backend --
  a connection per caller loop, one query in flight on it, and the lookups
  that arrive meanwhile answered together by the next query.

Record building and the ``size_bytes`` rule live in ``_record``; error
translation in ``_errormap``; per-loop clients in ``_lazy``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio

from .._lazy import PerLoop
from .._record import TaskRecord

__all__ = ["LoopReads", "WaitStatistics", "WaitTracker", "lookup_then_lease"]

logger = logging.getLogger("beautyspot_async")

C = TypeVar("C")


async def lookup_then_lease(
    cache_keys: Sequence[str],
    *,
    read: Callable[[list[str]], Awaitable[Mapping[str, TaskRecord]]],
    lease: Callable[[list[str]], Awaitable[Sequence[bool]]],
    release: Callable[[list[str]], Awaitable[object]],
) -> dict[str, TaskRecord | bool]:
    """:meth:`TaskDB.lookup_or_lease` over three primitives.

    ``read(keys)`` returns the stored records among ``keys``; ``lease(keys)``
    tries to take each key's lease, one answer per key in order;
    ``release(keys)`` gives leases back. A key written (and its lease
    released) by another process between our read and our lease must not
    come back ``True``, so every leased key is read again; one found stored
    now has its lease given back and comes back as its record.
    """
    keys = list(dict.fromkeys(cache_keys))
    found: dict[str, TaskRecord | bool] = dict(await read(keys))
    missing = [key for key in keys if key not in found]
    if not missing:
        return found
    granted = await lease(missing)
    leased = [key for key, ok in zip(missing, granted, strict=True) if ok]
    if leased:
        late = await read(leased)
        if late:
            await release(list(late))
            found.update(late)
    taken = set(leased)
    for key in missing:
        found.setdefault(key, key in taken)
    return found


@dataclass(frozen=True, slots=True)
class WaitStatistics:
    """What :meth:`TaskDB.statistics` reports: waits for other processes' results.

    A wait is *parked* once it has re-checked the key and sleeps until a
    notification (or its timeout) wakes it.
    """

    #: Waits parked right now.
    waits_parked: int = 0
    #: The keys those waits are parked on.
    parked_keys: frozenset[str] = frozenset()
    #: Notifications received since the database was made.
    notifications_received: int = 0


@dataclass(slots=True)
class WaitTracker:
    """The mutable counters behind :class:`WaitStatistics` (one per database)."""

    _parked: Counter[str] = field(default_factory=Counter)
    _notifications: int = 0

    @contextmanager
    def parked(self, cache_key: str) -> Iterator[None]:
        """Count a wait on ``cache_key`` as parked for the block's duration."""
        self._parked[cache_key] += 1
        try:
            yield
        finally:
            self._parked[cache_key] -= 1
            if not self._parked[cache_key]:
                del self._parked[cache_key]

    def notified(self) -> None:
        """Count one notification received."""
        self._notifications += 1

    def snapshot(self) -> WaitStatistics:
        return WaitStatistics(
            waits_parked=sum(self._parked.values()),
            parked_keys=frozenset(self._parked),
            notifications_received=self._notifications,
        )


#: A queued lookup's answer when its batch failed: the caller falls back.
_FAILED: Any = object()


class _Lane(Generic[C]):
    """One loop's connection, its lookups in waiting and its deadline (that loop's only)."""

    __slots__ = (
        "busy",
        "cancelling",
        "conn",
        "expired",
        "queue",
        "reader",
        "since",
        "timeout",
        "timer",
    )

    def __init__(self) -> None:
        self.conn: C | None = None
        self.busy = False
        self.queue: deque[tuple[str, asyncio.Future[Any]]] = deque()
        #: The deadline of the latest lookup (seconds; None: unbounded).
        self.timeout: float | None = None
        #: The task whose query is in flight, since when, and its cancel count then.
        self.reader: asyncio.Task[Any] | None = None
        self.since = 0.0
        self.cancelling = 0
        #: The reader the watchdog cancelled, and the watchdog's timer.
        self.expired: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None


class LoopReads(Generic[C]):
    """Read-only lookups on the caller's own asyncio loop (:meth:`TaskDB.get_many_here`).

    A hit then costs one round trip on the caller's loop instead of two
    thread hops to the Spot's I/O loop around it. Each loop gets its own
    connection, ``open()``-ed on first use and closed with ``close(conn)`` on
    that loop (when it shuts down, or on :meth:`aclose`). ``read(conn, keys)``
    returns the records found among ``keys`` in one round trip.

    One query is in flight per connection. A lookup that finds it idle
    queries at once for its own keys (a lone call pays no extra loop turn);
    lookups arriving while a query runs queue up, and the next query -- a
    task started when the current one ends -- answers up to ``batch_size``
    of them together: a ``gather`` over many hits costs a few round trips.

    Deadlines: a query not answered within the lookup's ``timeout`` is
    cancelled, and the lookup raises ``TimeoutError``. One watchdog timer per
    loop enforces them (armed at most once per ``timeout``), not a timer per
    lookup: on a hit that costs a few tens of microseconds, ``asyncio.timeout``
    alone cost ~5 us. A caller cancelled (or timed out) mid-query leaves the
    connection in an unknown state: it is closed and the next lookup opens
    another. A queued lookup whose batch failed raises ``anyio.WouldBlock``,
    as does any call off asyncio (trio): the caller then takes its usual path.
    """

    def __init__(
        self,
        open: Callable[[], Awaitable[C]],
        close: Callable[[C], Awaitable[None]],
        read: Callable[[C, list[str]], Awaitable[Mapping[str, TaskRecord]]],
        *,
        batch_size: int = 1000,
    ) -> None:
        self._open = open
        self._close_conn = close
        self._read = read
        self._batch_size = batch_size
        self._lanes: PerLoop[_Lane[C]] = PerLoop(_Lane, self._close_lane)
        self._tasks: set[asyncio.Task[None]] = set()

    async def get_many(
        self,
        keys: list[str],
        timeout: float | None,  # noqa: ASYNC109 - a deadline without a timer per hit
    ) -> dict[str, TaskRecord | None]:
        """Each of ``keys`` -> its record, or None when not stored."""
        try:
            lane = self._lanes.get()
        except RuntimeError:  # not on asyncio
            raise anyio.WouldBlock from None
        lane.timeout = timeout
        if lane.busy:
            return await self._queued(lane, keys)
        lane.busy = True
        task = self._watch(lane)
        try:
            found = await self._query(lane, keys)
        except BaseException as exc:
            self._drop(lane)
            if self._expired(lane, task, exc):
                raise TimeoutError(f"no answer within {timeout:g} s") from None
            raise
        finally:
            lane.reader = lane.expired = None
            lane.busy = False
            if lane.queue:
                self._start_batch(lane)
        if len(keys) == 1:
            key = keys[0]
            return {key: found.get(key)}
        return {key: found.get(key) for key in keys}

    async def _query(self, lane: _Lane[C], keys: list[str]) -> Mapping[str, TaskRecord]:
        """One round trip on the lane's connection, opened on first use."""
        conn = lane.conn
        if conn is None:
            conn = lane.conn = await self._open()
        return await self._read(conn, keys)

    # -- deadlines -------------------------------------------------------------------

    def _watch(self, lane: _Lane[C]) -> asyncio.Task[Any] | None:
        """Make the current task the lane's reader, under the lane's deadline."""
        timeout = lane.timeout
        if timeout is None:
            return None
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task on asyncio
            return None
        loop = task.get_loop()
        lane.reader = task
        lane.since = loop.time()
        lane.cancelling = task.cancelling()
        if lane.timer is None:
            lane.timer = loop.call_at(lane.since + timeout, self._on_timer, lane)
        return task

    def _on_timer(self, lane: _Lane[C]) -> None:
        lane.timer = None
        reader, timeout = lane.reader, lane.timeout
        if reader is None or timeout is None:
            return  # idle: the next query arms it again
        loop = reader.get_loop()
        due = lane.since + timeout
        if loop.time() >= due:
            lane.expired = reader
            reader.cancel()
        else:  # a later query: its own deadline
            lane.timer = loop.call_at(due, self._on_timer, lane)

    @staticmethod
    def _expired(lane: _Lane[C], task: asyncio.Task[Any] | None, exc: BaseException) -> bool:
        """Whether ``exc`` is the watchdog cancelling ``task`` (then uncancelled)."""
        return (
            task is not None
            and lane.expired is task
            and isinstance(exc, asyncio.CancelledError)
            and task.uncancel() <= lane.cancelling
        )

    # -- lookups that wait for the connection ------------------------------------------

    async def _queued(self, lane: _Lane[C], keys: list[str]) -> dict[str, TaskRecord | None]:
        loop = asyncio.get_running_loop()
        futures = []
        for key in keys:
            future: asyncio.Future[Any] = loop.create_future()
            lane.queue.append((key, future))
            futures.append(future)
        answers: dict[str, TaskRecord | None] = {}
        for key, future in zip(keys, futures, strict=True):
            answer = await future
            if answer is _FAILED:
                raise anyio.WouldBlock
            answers[key] = answer
        return answers

    def _start_batch(self, lane: _Lane[C]) -> None:
        lane.busy = True
        task = asyncio.get_running_loop().create_task(self._batches(lane))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _batches(self, lane: _Lane[C]) -> None:
        try:
            while lane.queue:
                batch: list[tuple[str, asyncio.Future[Any]]] = []
                while lane.queue and len(batch) < self._batch_size:
                    batch.append(lane.queue.popleft())
                wanted = list(dict.fromkeys(key for key, future in batch if not future.done()))
                if not wanted:
                    continue
                task = self._watch(lane)
                try:
                    found = await self._query(lane, wanted)
                except BaseException as exc:
                    self._drop(lane)
                    for _, future in batch:
                        if not future.done():
                            future.set_result(_FAILED)
                    if isinstance(exc, Exception) or self._expired(lane, task, exc):
                        # The server failed or did not answer in time: every
                        # lookup still queued falls back too (finally, below).
                        logger.debug("a batch of reads on the caller's loop failed: %r", exc)
                        return
                    raise
                finally:
                    lane.reader = lane.expired = None
                for key, future in batch:
                    if not future.done():
                        future.set_result(found.get(key))
        finally:
            lane.busy = False
            while lane.queue:
                _, future = lane.queue.popleft()
                if not future.done():
                    future.set_result(_FAILED)

    # -- connections -----------------------------------------------------------------

    def _drop(self, lane: _Lane[C]) -> None:
        """Forget the lane's connection (it may be mid-request) and close it in the background."""
        conn, lane.conn = lane.conn, None
        if conn is not None:
            task = asyncio.get_running_loop().create_task(_closing(self._close_conn, conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _close_lane(self, lane: _Lane[C]) -> None:
        timer, lane.timer = lane.timer, None
        if timer is not None:
            timer.cancel()
        conn, lane.conn = lane.conn, None
        if conn is not None:
            await self._close_conn(conn)

    async def aclose(self) -> None:
        """Close every loop's connection; the next lookup opens a new one (see ``PerLoop``)."""
        await self._lanes.aclose()


async def _closing(close: Callable[[C], Awaitable[None]], conn: C) -> None:
    await close(conn)
