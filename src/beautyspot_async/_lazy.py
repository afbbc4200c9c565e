"""A backend's client, opened lazily and, when loop-bound, once per event loop.

asyncpg pools, redis.asyncio clients and aiobotocore clients belong to the
loop that opened them: used from another loop they fail or hang. Every
backend therefore needs the same small dance -- open on first use, never
twice when two first calls race, forget the client when a new loop (a second
``asyncio.run()``) shows up, close it idempotently. It is written once here:

* :class:`LazyClient`: one client, used from one loop at a time (the Spot's
  I/O loop, in practice), reopened when another loop shows up.
* :class:`PerLoop`: one object per running asyncio loop *at once*, for the
  few operations that run on the caller's own loop (the hit path's reads:
  ``TaskDB.get_many_here``), closed on that loop when it shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio

__all__ = ["LazyClient", "PerLoop"]

T = TypeVar("T")


def _always(_resource: object) -> bool:
    return True


class LazyClient(Generic[T]):
    """A resource made by ``open()`` on first use.

    :meth:`get` opens it behind a double-checked lock, so concurrent first
    calls share one resource. When ``loop_bound`` (the default) and called
    from a loop other than the one it was opened on, the old resource is
    forgotten without being closed (its loop is gone, or not ours to drive)
    and a new one is opened; otherwise it is kept. ``alive`` tells whether
    an open resource is still usable (a connection the server closed is
    not); a dead one is reopened.
    :meth:`aclose` closes the current resource with ``close`` and is
    idempotent; the next :meth:`get` opens a new one.
    """

    __slots__ = ("_alive", "_close", "_lock", "_loop", "_loop_bound", "_open", "_resource")

    def __init__(
        self,
        open: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]],
        *,
        alive: Callable[[T], bool] = _always,
        loop_bound: bool = True,
    ) -> None:
        self._open = open
        self._loop_bound = loop_bound
        self._close = close
        self._alive = alive
        self._resource: T | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: anyio.Lock | None = None

    def _follow_loop(self) -> anyio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            # A lock belongs to one loop, and so may the resource.
            self._loop = loop
            self._lock = anyio.Lock()
            if self._loop_bound:
                self._resource = None
        return self._lock

    def peek(self) -> T | None:
        """The open resource of the running loop, or ``None``; opens nothing."""
        self._follow_loop()
        resource = self._resource
        return resource if resource is not None and self._alive(resource) else None

    async def get(self) -> T:
        """The running loop's resource, opened now if needed."""
        lock = self._follow_loop()
        resource = self._resource
        if resource is not None and self._alive(resource):
            return resource
        async with lock:
            # Checked again: another task may have opened it while we waited.
            resource = self._resource
            if resource is None or not self._alive(resource):
                resource = self._resource = await self._open()
            return resource

    def drop(self) -> T | None:
        """Forget the resource without closing it; return it (to terminate, say)."""
        resource, self._resource = self._resource, None
        return resource

    async def aclose(self) -> None:
        """Close the resource, if one is open. Idempotent."""
        resource = self.drop()
        if resource is not None:
            await self._close(resource)


#: Closing tasks started on other loops, kept alive until they finish (a loop
#: holds its tasks only weakly).
_closing: set[asyncio.Task[Any]] = set()


class _Slot(Generic[T]):
    __slots__ = ("item", "sentinel")

    def __init__(self, item: T) -> None:
        self.item = item
        self.sentinel: AsyncGenerator[None, None] | None = None


class PerLoop(Generic[T]):
    """One ``make()`` object per running asyncio event loop, closed on that loop.

    :meth:`get` returns the calling loop's object, made on first use (``make``
    is synchronous and does no I/O: the object opens its connections itself,
    lazily). Each object is closed with ``close(obj)`` on its own loop:

    * when that loop shuts down (``asyncio.run()`` returning): an async
      generator registered with the loop is finalized by
      ``loop.shutdown_asyncgens()`` and closes it there, so no connection
      outlives its loop unclosed;
    * or on :meth:`aclose`, from any thread and any loop: the calling loop's
      object is closed at once, other loops' are closed by a task scheduled
      on their loop (which a closed loop no longer needs).

    Only asyncio loops: :meth:`get` raises ``RuntimeError`` when no asyncio
    loop runs in this thread (trio, or plain sync code). A loop closed by
    hand without ``shutdown_asyncgens()`` never closes its object, and is
    kept (the async generator refers to it) until :meth:`aclose`.
    """

    __slots__ = ("__weakref__", "_close", "_last", "_make", "_slots")

    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slot[T]] = (
            weakref.WeakKeyDictionary()
        )
        #: The last loop asked for and its object: the hit path asks on every
        #: call, and a weak dictionary's lookup costs a weak reference each.
        self._last: tuple[asyncio.AbstractEventLoop, T] | None = None

    def get(self) -> T:
        """The running loop's object, made now if needed (``RuntimeError`` off asyncio)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        slot = self._slots.get(loop)
        if slot is None:
            slot = _Slot(self._make())
            slot.sentinel = self._sentinel(weakref.ref(loop), slot)
            # Run the generator to its yield right now: its first step
            # registers it with this loop (sys.set_asyncgen_hooks), which
            # finalizes it on shutdown -- running the finally clause below.
            with contextlib.suppress(StopIteration):
                slot.sentinel.asend(None).send(None)
            self._slots[loop] = slot
        self._last = (loop, slot.item)
        return slot.item

    def __len__(self) -> int:
        return len(self._slots)

    async def _sentinel(
        self, loop_ref: weakref.ref[asyncio.AbstractEventLoop], slot: _Slot[T]
    ) -> AsyncGenerator[None, None]:
        # The loop only weakly: the slot, a value of the weak dictionary,
        # must not keep its own key alive.
        try:
            yield
        finally:
            # Forgotten first: a loop that runs on (shutdown_asyncgens() called
            # by hand) makes a new object on its next get().
            last = self._last
            if last is not None and last[1] is slot.item:
                self._last = None
            loop = loop_ref()
            if loop is not None and self._slots.get(loop) is slot:
                del self._slots[loop]
            del loop
            await self._close(slot.item)

    async def aclose(self) -> None:
        """Close every loop's object (see the class docstring); the next :meth:`get` makes anew."""
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        slots = list(self._slots.items())
        self._slots.clear()
        self._last = None
        for loop, slot in slots:
            sentinel, slot.sentinel = slot.sentinel, None
            if sentinel is None:
                continue
            if loop is current:
                await sentinel.aclose()
            elif not loop.is_closed():
                # RuntimeError: the loop closed meanwhile; so did its connections.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_close_there, sentinel)


def _close_there(sentinel: AsyncGenerator[None, None]) -> None:
    task = asyncio.get_running_loop().create_task(sentinel.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)
