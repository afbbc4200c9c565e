"""The one way to wake a waiting caller from any thread.

A waiter may be a task on an asyncio loop, a task in a trio run, or a plain
thread, and whoever wakes it may run on any other thread (the I/O loop, a
worker thread, another event loop). :class:`Wakeup` hides the three cases:
the waiter creates it where it will wait, and :meth:`Wakeup.fire` wakes it
with ``call_soon_threadsafe`` / ``run_sync_soon``, never a blocking call. The
rate limiter's queue and the portal's
:func:`~beautyspot_async._portal.wait_future` both wait on one.

On asyncio the signal is a bare loop future and :meth:`Wakeup.call_after`
arms a loop timer, rather than an ``anyio.Event`` and a cancel scope:
the limiter waits once per admission, and anyio's per-wait scope, event and
backend lookups cost several times the admission itself (performance issue
15). Trio and threads keep the portable primitives.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["Wakeup", "trio_token"]


def trio_token() -> Any:
    """The running trio run's token (only called inside one, so trio is installed)."""
    import trio

    return trio.lowlevel.current_trio_token()


class Wakeup:
    """A reusable wake-up signal for one waiting caller, fired from any thread.

    Build it with :meth:`for_async` inside the waiting task's event loop, or
    with :meth:`for_sync` for a thread. The waiter calls :meth:`renew` before
    it re-checks whatever it waits for, then :meth:`wait` (or
    :meth:`wait_sync`): a :meth:`fire` in between is never lost, at worst it
    causes one spurious wake-up.
    """

    __slots__ = ("_event", "_loop", "_thread", "_timer", "_token")

    def __init__(
        self,
        event: anyio.Event | threading.Event | asyncio.Future[None],
        loop: asyncio.AbstractEventLoop | None = None,
        token: Any = None,
    ) -> None:
        self._event = event
        self._loop = loop
        self._token = token  # a trio token; None unless waiting in trio
        self._thread = threading.get_ident()
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def for_async(cls) -> Wakeup:
        """A wake-up for the current task, on asyncio or trio."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return cls(anyio.Event(), token=trio_token())
        return cls(loop.create_future(), loop=loop)

    @classmethod
    def for_sync(cls) -> Wakeup:
        """A wake-up for the current thread, which will block in :meth:`wait_sync`."""
        return cls(threading.Event())

    def renew(self) -> None:
        """Re-arm after a wake-up; call it from the waiter only."""
        event = self._event
        if isinstance(event, asyncio.Future):
            # A pending future is still good: a fire already scheduled for it
            # is the harmless spurious wake-up described above.
            if event.done():
                assert self._loop is not None
                self._event = self._loop.create_future()
        elif isinstance(event, threading.Event):
            event.clear()
        else:
            # anyio events cannot be cleared; a fire already scheduled sets the
            # new one, which is the harmless spurious wake-up described above.
            self._event = anyio.Event()

    def _set(self) -> None:
        event = self._event
        if isinstance(event, asyncio.Future):
            if not event.done():
                event.set_result(None)
        else:
            event.set()

    def on_own_loop(self) -> bool:
        """Whether the caller runs on the waiter's own thread and event loop."""
        if threading.get_ident() != self._thread:
            return False
        if self._loop is not None:
            return asyncio._get_running_loop() is self._loop
        try:
            return bool(trio_token() is self._token)
        except RuntimeError:
            return False

    def fire(self) -> bool:
        """Wake the waiter; False when its event loop is gone (nobody will wake)."""
        if (self._loop is None and self._token is None) or self.on_own_loop():
            self._set()
            return True
        try:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._set)
            else:
                self._token.run_sync_soon(self._set)
        except RuntimeError:  # the loop is closed (trio: RunFinishedError)
            return False
        return True

    @property
    def has_timer(self) -> bool:
        """Whether :meth:`call_after` works here (asyncio waiters only)."""
        return self._loop is not None

    def wake_after(self, delay: float) -> None:
        """Fire after ``delay`` seconds; see :meth:`call_after`."""
        self.call_after(delay, self._set)

    def call_after(self, delay: float, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the waiter's loop after ``delay`` seconds.

        Replaces any timer armed earlier, so one waiter holds at most one.
        Only for :attr:`has_timer` wake-ups, and only on the waiter's own loop
        (:meth:`on_own_loop`): loop timers are not thread-safe.
        """
        assert self._loop is not None, "a timer needs an asyncio waiter"
        self.cancel_timer()
        self._timer = self._loop.call_later(delay, callback)

    def cancel_timer(self) -> None:
        """Drop the timer armed by :meth:`call_after`, if any (own loop only)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait(self) -> None:
        """Wait, without blocking the event loop, until fired (async waiters)."""
        event = self._event
        assert not isinstance(event, threading.Event), (
            "a for_sync() wakeup is waited with wait_sync()"
        )
        if isinstance(event, asyncio.Future):
            await event
        else:
            await event.wait()

    def wait_sync(self, timeout: float | None = None) -> bool:
        """Block this thread until fired or ``timeout`` passes (sync waiters)."""
        event = self._event
        assert isinstance(event, threading.Event), "a for_async() wakeup is awaited with wait()"
        return event.wait(timeout)
