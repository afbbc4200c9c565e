"""The one seam between callers and the Spot's own I/O loop.

Database drivers such as aiosqlite, asyncpg and redis.asyncio tie their
connections to the event loop that opened them, yet one Spot is used from
plain threads, from ``asyncio.run()`` after ``asyncio.run()``, from trio, and
from all of them at once. Rather than opening a connection per loop, every
loop-bound backend lives on a single asyncio loop in a daemon thread of this
process -- the *I/O loop* -- and is only ever touched from there.

* Sync callers reach it through an anyio :class:`~anyio.from_thread.BlockingPortal`
  (they block their own thread, which is what a sync call means).
* Async callers, on any loop and any anyio backend, submit a coroutine with
  ``call_soon_threadsafe`` (never waiting on the submission) and await its
  completion without blocking their loop.

The thread is a daemon so that a forgotten Spot never keeps the interpreter
alive; pending writes are flushed by an ``atexit`` handler instead, which runs
while daemon threads are still alive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._wakeup import Wakeup

__all__ = [
    "IOLoop",
    "Waiter",
    "io_loop",
    "on_asyncio",
    "settle",
    "settle_all",
    "settle_here",
    "wait_future",
]

T = TypeVar("T")


class IOLoop:
    """An asyncio loop running in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    # -- lifecycle -----------------------------------------------------------

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        # After fork() the thread is gone but the attributes survive: the pid
        # check makes a child process start its own I/O loop.
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._start_locked()
            assert self._loop is not None
            return self._loop

    def _start_locked(self) -> None:
        ready = threading.Event()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                self._portal = portal
                self._loop = asyncio.get_running_loop()
                ready.set()
                await portal.sleep_until_stopped()

        def main() -> None:
            anyio.run(serve, backend="asyncio")

        thread = threading.Thread(target=main, name="beautyspot-io", daemon=True)
        thread.start()
        ready.wait()
        self._thread = thread
        self._pid = os.getpid()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The I/O loop itself (started if needed), for ``call_soon_threadsafe``."""
        return self._ensure_started()

    @property
    def running(self) -> bool:
        """Whether this process's I/O loop thread has been started and is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def in_loop_thread(self) -> bool:
        """Whether the current thread is the I/O loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    # -- entry points --------------------------------------------------------

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the I/O loop and block this thread for the result."""
        self._ensure_started()
        if self.in_loop_thread():
            raise RuntimeError(
                "a synchronous beautyspot call was made from the Spot's own I/O loop "
                "(for example inside a hook); call the async API there instead"
            )
        assert self._portal is not None
        # An empty context: the caller's context variables (sniffio's "which
        # async library am I in", above all) must not leak into the I/O loop.
        return contextvars.Context().run(self._portal.call, fn, *args)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the I/O loop without waiting for anything."""
        loop = self._ensure_started()
        # Scheduled from an empty context, for the reason given in call().
        return contextvars.Context().run(asyncio.run_coroutine_threadsafe, coro, loop)

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Await ``fn(*args)`` executed on the I/O loop, from any event loop.

        When already on the I/O loop the coroutine runs inline. Cancelling the
        caller does not cancel the operation: a save that was started
        completes, so a result is never half-written because its caller left.
        """
        if self.in_loop_thread():
            return await fn(*args)
        return await wait_future(self.submit(fn(*args)))


async def wait_future(future: concurrent.futures.Future[T]) -> T:
    """Await a thread-safe future from asyncio or trio without blocking the loop."""
    if future.done():
        return future.result()
    if on_asyncio():
        # shield: cancelling the waiter must not cancel the shared operation
        return await asyncio.shield(asyncio.wrap_future(future))
    wakeup = Wakeup.for_async()
    future.add_done_callback(lambda _f: wakeup.fire())
    await wakeup.wait()
    return future.result()


def on_asyncio() -> bool:
    """Whether the calling thread runs an asyncio event loop (else trio, or none)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Waiter:
    """One caller waiting for a value that another thread will provide.

    An asyncio caller waits on a plain asyncio future of its own loop, woken
    by :func:`settle_all` with one ``call_soon_threadsafe`` per loop for a
    whole batch; sync callers block on a thread-safe future, and trio callers
    await one through :func:`wait_future` (a ``_wakeup.Wakeup``).
    Settling twice is harmless: the first outcome wins.

    ``unclaimed(value)``, when set, receives a value that reached a caller who
    had already gone (cancelled, interrupted) -- from whichever side finds
    out: the waiter, if the value arrived just before its cancellation, or
    the settler, if the waiter was cancelled first. A granted lease is given
    back that way instead of being left to expire.
    """

    __slots__ = ("future", "loop", "unclaimed")

    def __init__(self, loop: asyncio.AbstractEventLoop | None, future: Any) -> None:
        self.loop = loop
        self.future = future
        self.unclaimed: Callable[[Any], None] | None = None

    @classmethod
    def for_async(cls) -> Waiter:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio
            return cls(None, concurrent.futures.Future())
        return cls(loop, loop.create_future())

    @classmethod
    def for_sync(cls) -> Waiter:
        return cls(None, concurrent.futures.Future())

    async def wait(self) -> Any:
        try:
            if self.loop is not None:
                return await self.future
            return await wait_future(self.future)
        except BaseException:
            self._gone()
            raise

    def wait_sync(self) -> Any:
        try:
            return self.future.result()
        except BaseException:
            self._gone()
            raise

    def _gone(self) -> None:
        # cancel() and set_result() exclude each other: either the settler
        # finds the future cancelled (and calls unclaimed), or it is done here.
        future = self.future
        if future.cancel() or not future.done() or future.cancelled():
            return
        if self.unclaimed is not None and future.exception() is None:
            self.unclaimed(future.result())


Outcome = tuple[Waiter, Any, BaseException | None]
#: Called with (waiter, value) when a value reaches a caller that went away.
Abandoned = Callable[[Waiter, Any], None]


def _unclaimed(waiter: Waiter, value: Any, on_abandoned: Abandoned | None) -> None:
    if on_abandoned is not None:
        on_abandoned(waiter, value)
    elif waiter.unclaimed is not None:
        waiter.unclaimed(value)


def settle_here(outcomes: list[Outcome], on_abandoned: Abandoned | None = None) -> None:
    """Deliver outcomes to waiters of the running loop (or thread-safe ones), at once."""
    for waiter, value, error in outcomes:
        future = waiter.future
        if future.done():
            if future.cancelled() and error is None:
                _unclaimed(waiter, value, on_abandoned)
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def settle_all(outcomes: list[Outcome], on_abandoned: Abandoned | None = None) -> None:
    """Deliver outcomes from any thread, one wake-up per asyncio loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    local: list[Outcome] = []
    for outcome in outcomes:
        loop = outcome[0].loop
        if loop is None:
            local.append(outcome)
        else:
            by_loop.setdefault(loop, []).append(outcome)
    for waiter, value, error in local:
        future = waiter.future
        try:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
        except concurrent.futures.InvalidStateError:  # settled already, or the caller left
            if future.cancelled() and error is None:
                _unclaimed(waiter, value, on_abandoned)
    for loop, batch in by_loop.items():
        # RuntimeError: that loop is closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle_here, batch, on_abandoned)


def settle(waiter: Waiter, value: Any = None, error: BaseException | None = None) -> None:
    settle_all([(waiter, value, error)])


io_loop = IOLoop()
"""The process-wide I/O loop shared by every Spot."""
