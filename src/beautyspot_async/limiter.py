# Over 500 lines: tasks and threads share one FIFO queue under one lock; its paths read together.
"""The async GCRA rate limiter: ``bs.Limiter``.

A :class:`Limiter` holds one or two budgets, requests per minute (``rpm``) and
tokens per minute (``tpm``). Every admission counts one request and ``cost``
tokens, decided atomically over both budgets by the pure arithmetic in
``beautyspot_async._gcra``; this module is the waiting shell around it.

Waiting
    Waiters form one FIFO queue per limiter. Only the head of the queue
    watches the clock; everyone behind it sleeps until woken, so a large cost
    at the head is never overtaken by a stream of small ones. A waiter that is
    cancelled before admission leaves the queue and has booked nothing; one
    cancelled in the instant after admission hands its booking back.

    An asyncio head on a local, real-time limiter does not step itself: one
    loop timer on its own loop admits it at its slot and arms the next head's
    (``_serve_locked``), so an admission costs one timer and the admitted
    task's switch, not a cancel scope, an event and a second task's wake-up
    per wait. Trio, sync, fake-clock and Redis waiters step themselves.

Threads and event loops
    One limiter may serve several event loops (asyncio and trio) and plain
    threads at once. The state sits behind a ``threading.Lock`` that is only
    ever held for a few microseconds of arithmetic, never across I/O or a
    wait, so an event-loop thread taking it does not stall. Waiters are woken
    through ``beautyspot_async._wakeup`` (``call_soon_threadsafe`` /
    ``run_sync_soon``, never a blocking call), as the I/O portal's are.
    Sync callers (``acquire_blocking`` and decorated sync functions) wait on a
    ``threading.Event`` in their own thread; calling them on a thread that
    runs an event loop blocks that loop for the wait -- the caller's choice.

Clocks
    ``clock`` is any zero-argument callable returning monotonic seconds. If
    it also has an async ``sleep(seconds)`` method (a test's fake clock),
    async waiters sleep through it, so tests control time completely; any
    other clock is assumed to advance at real speed. Sync waiters always
    wait in real time for the clock difference.

Redis
    ``backend="redis://..."`` keeps the budgets in Redis (see
    ``beautyspot_async._limiter_redis``, imported only then): the queue stays
    FIFO within the process, the head of each process's queue asks Redis.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

import anyio
import anyio.to_thread

from . import _gcra
from ._callables import is_async_callable
from ._reservation import LimiterStatistics, Reservation, _Acquisition
from ._usage import collect_reservation
from ._wakeup import Wakeup
from .exceptions import ConfigurationError, RateLimitError

if TYPE_CHECKING:
    from ._limiter_redis import RedisBudgetStore

__all__ = ["Limiter", "LimiterStatistics", "Reservation"]

P = ParamSpec("P")
R = TypeVar("R")

PERIOD = 60.0
"""Seconds in the period that ``tpm`` and ``rpm`` are expressed in."""

Cost = float | Callable[..., float]


class _Queued:
    """One caller in the limiter's FIFO queue, and how to wake it."""

    __slots__ = ("costs", "deadline", "enqueued_at", "grant", "timed", "wakeup")

    def __init__(
        self, costs: tuple[float, ...], enqueued_at: float, wakeup: Wakeup, timed: bool
    ) -> None:
        self.costs = costs
        self.enqueued_at = enqueued_at
        self.wakeup = wakeup
        # Served by a loop timer while at the head (see Limiter._serve_locked)
        # instead of stepping itself: an asyncio task on a local, real-time limiter.
        self.timed = timed
        # Set by the head while it waits for the clock; None while queued behind.
        self.deadline: float | None = None
        self.grant: tuple[_gcra.Mark, ...] | None = None


class Limiter:
    """GCRA rate limiter over requests and tokens per minute.

    ``Limiter(tpm=None, rpm=None, burst=0, clock=time.monotonic, backend=None,
    key=None, *, rpm_burst=None)``. At least one of ``tpm`` / ``rpm`` is
    required. ``burst`` is the tolerance in tokens (in requests when only
    ``rpm`` is set); ``rpm_burst`` sets the request budget's tolerance when
    both are set (default 0). With zero burst the first call is admitted at
    once and later ones are spaced strictly. A single call may cost at most one
    minute's tokens plus the burst; a larger cost raises ``RateLimitError``
    with ``retry_after == math.inf`` at once.

    ``backend="redis://host:port/db"`` with ``key="name"`` shares the budget
    with every process using the same URL and key (all of them must configure
    the same limits).
    """

    def __init__(
        self,
        tpm: float | None = None,
        rpm: float | None = None,
        burst: float = 0,
        clock: Callable[[], float] = time.monotonic,
        backend: str | None = None,
        key: str | None = None,
        *,
        rpm_burst: float | None = None,
    ) -> None:
        if tpm is None and rpm is None:
            raise ConfigurationError("Limiter needs tpm=, rpm= or both")
        budgets: list[_gcra.Budget] = []
        self._request_index: int | None = None
        self._token_index: int | None = None
        try:
            if rpm is not None:
                request_burst = (
                    rpm_burst if rpm_burst is not None else (burst if tpm is None else 0)
                )
                request_budget = _gcra.Budget.per_period("rpm", rpm, PERIOD, request_burst)
                if request_budget.capacity < 1:
                    raise ConfigurationError(
                        f"rpm={rpm!r} with burst {request_burst!r} can never admit one request; "
                        "raise rpm or the burst to at least 1"
                    )
                self._request_index = len(budgets)
                budgets.append(request_budget)
            if tpm is not None:
                self._token_index = len(budgets)
                budgets.append(_gcra.Budget.per_period("tpm", tpm, PERIOD, burst))
        except ValueError as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(str(exc)) from exc
        self.tpm = tpm
        self.rpm = rpm
        self.burst = burst
        self._budgets = tuple(budgets)
        self._clock = clock
        clock_sleep = getattr(clock, "sleep", None)
        self._clock_sleep: Callable[[float], Awaitable[Any]] | None = (
            clock_sleep
            if clock is not time.monotonic and inspect.iscoroutinefunction(clock_sleep)
            else None
        )
        # Held only for GCRA arithmetic and queue bookkeeping (microseconds),
        # never across I/O or a wait: see the module docstring.
        self._lock = threading.Lock()
        self._state = _gcra.initial_state(len(budgets))
        self._queue: deque[_Queued] = deque()
        self._admitted = 0
        self._rejected = 0
        self._waited = 0.0
        self._remote: RedisBudgetStore | None = None
        if backend is not None:
            if not backend.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigurationError(
                    f"unsupported limiter backend {backend!r}; use a redis:// URL"
                )
            if not key:
                raise ConfigurationError("a shared limiter backend needs key= to name the budget")
            from ._limiter_redis import RedisBudgetStore

            self._remote = RedisBudgetStore(backend, key, self._budgets)
        elif key is not None:
            raise ConfigurationError("key= names a shared budget and needs backend=")

    def __repr__(self) -> str:
        return f"Limiter(tpm={self.tpm!r}, rpm={self.rpm!r}, burst={self.burst!r})"

    # -- costs -------------------------------------------------------------

    def _costs(self, cost: float) -> tuple[float, ...]:
        if isinstance(cost, bool) or not isinstance(cost, int | float):
            raise TypeError(f"a cost must be a number, got {type(cost).__name__}")
        if not (cost >= 0 and math.isfinite(cost)):
            raise ValueError(f"a cost must be a finite number >= 0, got {cost!r}")
        costs = [0.0] * len(self._budgets)
        if self._request_index is not None:
            costs[self._request_index] = 1.0
        if self._token_index is not None:
            costs[self._token_index] = float(cost)
        for budget, c in zip(self._budgets, costs, strict=True):
            if c > budget.capacity:
                with self._lock:
                    self._rejected += 1
                raise RateLimitError(
                    f"a cost of {c:g} can never be admitted: the {budget.name} budget admits "
                    f"at most {budget.capacity:g} per call",
                    retry_after=math.inf,
                )
        return tuple(costs)

    def _token_deltas(self, delta: float) -> tuple[float, ...]:
        deltas = [0.0] * len(self._budgets)
        if self._token_index is not None:
            deltas[self._token_index] = delta
        return tuple(deltas)

    # -- state changes (all under the lock; wake-ups fired after) --------------

    def _wake_head(self) -> None:
        """Serve the head of the queue; drop waiters whose event loop has gone away."""
        while True:
            with self._lock:
                granted, head = self._serve_locked()
            for waiter in granted:
                waiter.wakeup.fire()  # on the caller's own loop: cannot fail
            if head is None or head.wakeup.fire():
                return
            with self._lock:
                if self._queue and self._queue[0] is head:
                    self._queue.popleft()

    def _serve_locked(self) -> tuple[list[_Queued], _Queued | None]:
        """Admit due timed heads and arm the next one's timer (lock held).

        A timed waiter at the head does not step itself: whoever changes the
        head or the state on that waiter's own loop decides for it here and
        either admits it (it is fired once, with its grant) or arms one loop
        timer for its deadline, which calls back here. Per admission that is
        one timer and one task switch, the admitted caller's. Returns the
        waiters admitted here, and the head that must step itself (untimed, or
        timed on another thread) and so needs firing, if any.
        """
        granted: list[_Queued] = []
        while self._queue:
            head = self._queue[0]
            if not (head.timed and head.wakeup.on_own_loop()):
                return granted, head
            now = self._clock()
            verdict = _gcra.decide(self._budgets, self._state, now, head.costs)
            if isinstance(verdict, _gcra.Wait):
                head.deadline = verdict.until
                head.wakeup.call_after(max(0.0, verdict.until - now), self._wake_head)
                break
            self._state = verdict.state
            head.wakeup.cancel_timer()
            self._grant(head, verdict.marks, now)
            granted.append(head)
        return granted, None

    def _settle(self, marks: tuple[_gcra.Mark, ...], deltas: tuple[float, ...]) -> None:
        if self._remote is not None:
            self._remote.settle_soon(marks, deltas, on_done=self._wake_head)
            return
        with self._lock:
            self._state = _gcra.settle(self._budgets, self._state, self._clock(), marks, deltas)
        self._wake_head()

    def penalize(self, seconds: float) -> None:
        """Pause every admission for ``seconds`` from now (e.g. a 429's Retry-After).

        Books nothing: once the pause is over the budgets are where they
        were. Overlapping penalties do not add up; the later end wins.
        """
        if self._remote is not None:
            self._remote.penalize_soon(seconds, on_done=self._wake_head)
            return
        with self._lock:
            self._state = _gcra.penalize(self._state, self._clock(), seconds)
        self._wake_head()

    def statistics(self) -> LimiterStatistics:
        """Counters and the current debt; see :class:`LimiterStatistics`."""
        with self._lock:
            now = self._clock()
            if self._remote is None:
                debts: tuple[float, ...] = _gcra.debt(self._budgets, self._state, now)
                paused_for = max(0.0, self._state.paused_until - now)
            else:
                debts = (math.nan,) * len(self._budgets)
                paused_for = math.nan
            return LimiterStatistics(
                admitted=self._admitted,
                rejected=self._rejected,
                waited=self._waited,
                queue_depth=len(self._queue),
                requests_debt=math.nan
                if self._request_index is None
                else debts[self._request_index],
                tokens_debt=math.nan if self._token_index is None else debts[self._token_index],
                paused_for=paused_for,
            )

    # -- admission ---------------------------------------------------------

    def acquire(self, cost: float = 1) -> _Acquisition:
        """Wait until one request and ``cost`` tokens are admitted.

        ``await limiter.acquire(cost)`` and ``async with limiter.acquire(cost)
        as reservation`` both return a :class:`Reservation`. Raises
        ``RateLimitError`` at once for a cost that can never be admitted.
        """
        return _Acquisition(self, cost)

    def acquire_nowait(self, cost: float = 1) -> Reservation:
        """Admit now or raise ``RateLimitError`` with ``retry_after`` in seconds.

        Never overtakes queued waiters: with a queue, ``retry_after`` estimates
        when this call's turn would come. With a Redis backend this makes one
        blocking round trip to the server.
        """
        costs = self._costs(cost)
        if self._remote is not None:
            with self._lock:
                queued = len(self._queue)
            if not queued:
                admitted, retry_after, marks = self._remote.attempt(costs)
                if admitted:
                    with self._lock:
                        self._admitted += 1
                    return Reservation(self, float(cost), marks)
            else:
                retry_after = math.nan
            with self._lock:
                self._rejected += 1
            raise RateLimitError(
                f"rate limited; retry after {retry_after:.3f}s", retry_after=retry_after
            )
        with self._lock:
            now = self._clock()
            if not self._queue:
                verdict = _gcra.decide(self._budgets, self._state, now, costs)
                if isinstance(verdict, _gcra.Admit):
                    self._state = verdict.state
                    self._admitted += 1
                    return Reservation(self, float(cost), verdict.marks)
            times = _gcra.schedule(
                self._budgets, self._state, now, [w.costs for w in self._queue] + [costs]
            )
            self._rejected += 1
        retry_after = max(0.0, times[-1] - now)
        raise RateLimitError(
            f"rate limited; retry after {retry_after:.3f}s", retry_after=retry_after
        )

    def _enqueue(self, costs: tuple[float, ...], wakeup: Wakeup) -> _Queued:
        # A fake clock's sleep and Redis round trips need a waiting task, and
        # trio has no loop timers: those waiters step themselves.
        timed = wakeup.has_timer and self._clock_sleep is None and self._remote is None
        waiter = _Queued(costs, self._clock(), wakeup, timed)
        self._queue.append(waiter)
        return waiter

    def _fast_path(self, cost: float, costs: tuple[float, ...]) -> Reservation | None:
        """Admit at once when nobody is queued and the budgets allow (lock held)."""
        if self._queue or self._remote is not None:
            return None
        verdict = _gcra.decide(self._budgets, self._state, self._clock(), costs)
        if isinstance(verdict, _gcra.Wait):
            return None
        self._state = verdict.state
        self._admitted += 1
        return Reservation(self, float(cost), verdict.marks)

    def _step(self, waiter: _Queued) -> None:
        """Let the head waiter try the local budgets (lock held).

        Sets ``waiter.grant`` on admission, else ``waiter.deadline`` (None
        while it is not at the head).
        """
        if waiter.grant is not None:
            return
        if not self._queue or self._queue[0] is not waiter:
            waiter.deadline = None
            return
        now = self._clock()
        verdict = _gcra.decide(self._budgets, self._state, now, waiter.costs)
        if isinstance(verdict, _gcra.Wait):
            waiter.deadline = verdict.until
            return
        self._state = verdict.state
        self._grant(waiter, verdict.marks, now)

    def _grant(self, waiter: _Queued, marks: tuple[_gcra.Mark, ...], now: float) -> None:
        """Record an admission and pop the waiter off the queue (lock held)."""
        waiter.grant = marks
        waiter.deadline = None
        self._admitted += 1
        self._waited += max(0.0, now - waiter.enqueued_at)
        if self._queue and self._queue[0] is waiter:
            self._queue.popleft()

    def _abandon(self, waiter: _Queued) -> None:
        """Undo a waiter that is leaving because of an exception (cancellation)."""
        with self._lock:
            grant = waiter.grant
            was_head = False
            if grant is None:
                if self._queue and self._queue[0] is waiter:
                    self._queue.popleft()
                    was_head = True
                else:
                    with contextlib.suppress(ValueError):  # already dropped as dead
                        self._queue.remove(waiter)
            else:
                self._admitted -= 1
        if grant is not None:
            # Admitted in the instant before the cancellation arrived: the
            # caller never saw the reservation, so hand the booking back.
            self._settle(grant, tuple(-c for c in waiter.costs))
        elif was_head:
            # Only the head watches the clock; a waiter leaving from behind it
            # changes nobody's deadline, so nobody needs waking.
            self._wake_head()

    async def _acquire(self, cost: float) -> Reservation:
        costs = self._costs(cost)
        with self._lock:
            reservation = self._fast_path(cost, costs)
            if reservation is not None:
                return reservation
            waiter = self._enqueue(costs, Wakeup.for_async())
            at_head = self._queue[0] is waiter
        try:
            if waiter.timed:
                grant = await self._wait_timed(waiter, at_head)
            else:
                grant = await self._wait_stepping(waiter)
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            if waiter.wakeup.has_timer:
                waiter.wakeup.cancel_timer()
        return Reservation(self, float(cost), grant)

    async def _wait_timed(self, waiter: _Queued, at_head: bool) -> tuple[_gcra.Mark, ...]:
        """Wait to be admitted by ``_serve_locked`` (asyncio, local, real clock)."""
        wakeup = waiter.wakeup
        while True:
            if at_head:
                # New at the head, or woken from another thread: serve from
                # this loop, where the head's timer can be armed.
                self._wake_head()
            grant = waiter.grant
            if grant is None:
                await wakeup.wait()
                grant = waiter.grant
            if grant is not None:
                return grant
            # Woken without a grant: by a change made on another thread.
            with self._lock:
                wakeup.renew()
                at_head = waiter.grant is None and bool(self._queue) and self._queue[0] is waiter

    async def _wait_stepping(self, waiter: _Queued) -> tuple[_gcra.Mark, ...]:
        """Wait as a head that watches the clock itself (trio, fake clock, Redis)."""
        wakeup = waiter.wakeup
        while True:
            if self._remote is not None:
                await self._step_remote_async(waiter)
            else:
                with self._lock:
                    wakeup.renew()
                    self._step(waiter)
            if waiter.grant is not None:
                self._wake_head()
                return waiter.grant
            deadline = waiter.deadline
            if deadline is None:
                await wakeup.wait()
            else:
                await self._wait_until(wakeup, deadline)

    async def _wait_until(self, wakeup: Wakeup, deadline: float) -> None:
        """Return at ``deadline`` (limiter clock) or earlier when woken."""
        delay = deadline - self._clock()
        if self._clock_sleep is None and wakeup.has_timer:
            # asyncio: one loop timer on the waiter's own future, no cancel
            # scope (see _wakeup). A late or early return is re-checked by
            # the caller's next step.
            wakeup.wake_after(max(0.0, delay))
            await wakeup.wait()
            return
        if delay <= 0:
            await anyio.lowlevel.checkpoint()
            return
        if self._clock_sleep is None:
            with anyio.move_on_after(delay):
                await wakeup.wait()
            return
        clock_sleep = self._clock_sleep
        async with anyio.create_task_group() as tg:

            async def sleeper() -> None:
                await clock_sleep(delay)
                tg.cancel_scope.cancel()

            tg.start_soon(sleeper)
            await wakeup.wait()
            tg.cancel_scope.cancel()

    async def _step_remote_async(self, waiter: _Queued) -> None:
        assert self._remote is not None
        wakeup = waiter.wakeup
        with self._lock:
            wakeup.renew()
            is_head = bool(self._queue) and self._queue[0] is waiter
        if not is_head:
            waiter.deadline = None
            return
        # The thread records the grant itself, so a cancellation that arrives
        # while Redis answers still finds (and hands back) the booking.
        await anyio.to_thread.run_sync(self._attempt_remote, waiter)

    def _attempt_remote(self, waiter: _Queued) -> None:
        assert self._remote is not None
        admitted, retry_after, marks = self._remote.attempt(waiter.costs)
        with self._lock:
            now = self._clock()
            if admitted:
                self._grant(waiter, marks, now)
            else:
                waiter.deadline = now + retry_after

    def acquire_blocking(self, cost: float = 1) -> Reservation:
        """Like ``await acquire(cost)`` for sync code: blocks the calling thread.

        Queues in the same FIFO as async waiters. Waits in real time for the
        clock difference (a fake clock's ``sleep`` is not used here). On a
        thread running an event loop it blocks that loop while it waits.
        """
        costs = self._costs(cost)
        with self._lock:
            reservation = self._fast_path(cost, costs)
            if reservation is not None:
                return reservation
            wakeup = Wakeup.for_sync()
            waiter = self._enqueue(costs, wakeup)
        try:
            while True:
                if self._remote is not None:
                    with self._lock:
                        wakeup.renew()
                        is_head = bool(self._queue) and self._queue[0] is waiter
                    if is_head:
                        self._attempt_remote(waiter)
                    else:
                        waiter.deadline = None
                else:
                    with self._lock:
                        wakeup.renew()
                        self._step(waiter)
                if waiter.grant is not None:
                    self._wake_head()
                    return Reservation(self, float(cost), waiter.grant)
                deadline = waiter.deadline
                timeout = None if deadline is None else max(0.0, deadline - self._clock())
                wakeup.wait_sync(timeout)
        except BaseException:
            self._abandon(waiter)
            raise

    # -- decorator ---------------------------------------------------------

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def __call__(
        self, fn: None = None, /, *, cost: Cost = 1
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def __call__(
        self, fn: Callable[P, R] | None = None, /, *, cost: Cost = 1
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function so each call first acquires ``cost``.

        ``@limiter`` or ``@limiter(cost=...)``; ``cost`` is a number or a
        callable receiving the call's arguments. Async functions await
        ``acquire``; sync functions block their own thread in
        ``acquire_blocking``. Under ``@spot.mark`` (placed above), cache hits
        and single-flight joiners never reach the limiter, and with
        ``@spot.mark(usage=...)`` the reservation is settled to the call's
        actual usage once it returns.
        """
        if fn is None:
            return functools.partial(self._decorate, cost=cost)
        return self._decorate(fn, cost=cost)

    def _decorate(self, fn: Callable[P, R], *, cost: Cost) -> Callable[P, R]:
        if not callable(fn):
            raise TypeError(f"@limiter decorates a callable, got {type(fn).__name__}")
        if not callable(cost):
            self._costs(cost)  # refuse an impossible constant cost at decoration time
        limiter = self

        def cost_of(*args: Any, **kwargs: Any) -> float:
            return cost(*args, **kwargs) if callable(cost) else cost

        if inspect.isasyncgenfunction(fn):
            # A stream: admitted once, before its first item.
            @functools.wraps(fn)
            async def stream_wrapper(*args: Any, **kwargs: Any) -> Any:
                collect_reservation(await limiter.acquire(cost_of(*args, **kwargs)))
                async with contextlib.aclosing(fn(*args, **kwargs)) as items:
                    async for item in items:
                        yield item

            stream_wrapper.__beautyspot_limiter__ = limiter  # type: ignore[attr-defined]
            return cast(Callable[P, R], stream_wrapper)

        if is_async_callable(fn):
            async_fn = cast(Callable[..., Coroutine[Any, Any, Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                collect_reservation(await limiter.acquire(cost_of(*args, **kwargs)))
                return await async_fn(*args, **kwargs)

            async_wrapper.__beautyspot_limiter__ = limiter  # type: ignore[attr-defined]
            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            collect_reservation(limiter.acquire_blocking(cost_of(*args, **kwargs)))
            return fn(*args, **kwargs)

        sync_wrapper.__beautyspot_limiter__ = limiter  # type: ignore[attr-defined]
        return sync_wrapper

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Wait for pending Redis corrections and release the connection (idempotent)."""
        if self._remote is not None:
            self._remote.close()

    async def aclose(self) -> None:
        """``close`` from async code, without blocking the event loop."""
        if self._remote is not None:
            await anyio.to_thread.run_sync(self._remote.close)


for _public in (Limiter, LimiterStatistics, Reservation):
    _public.__module__ = __name__
del _public
