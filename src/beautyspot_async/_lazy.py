"""A backend's client, opened lazily and, when loop-bound, once per event loop.

asyncpg pools, redis.asyncio clients and aiobotocore clients belong to the
loop that opened them: used from another loop they fail or hang. Every
backend therefore needs the same small dance -- open on first use, never
twice when two first calls race, forget the client when a new loop (a second
``asyncio.run()``) shows up, close it idempotently. It is written once here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

__all__ = ["LazyClient"]

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
