"""PostgreSQL LISTEN/NOTIFY: one listening connection and the waits it wakes.

:class:`PostgresTaskDB` keeps one :class:`Listener` per event loop (through
``LazyClient``): its connection lives outside the pool because LISTEN state
belongs to a session and must not leak into pooled connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import asyncpg

from beautyspot_async.db._common import WaitTracker

__all__ = ["Listener"]


class Listener:
    """A LISTEN connection on one channel; wakes the waits on a notified key."""

    def __init__(self, conn: asyncpg.Connection, waits: WaitTracker) -> None:
        self._conn = conn
        self._waits = waits
        self._events: dict[str, set[anyio.Event]] = {}
        self._lost = False

    @classmethod
    async def open(
        cls, dsn: str, channel: str, waits: WaitTracker, *, connect_timeout: float, **kwargs: Any
    ) -> Listener:
        """Connect and LISTEN on ``channel``; ``kwargs`` go to ``asyncpg.connect``."""
        conn = await asyncpg.connect(dsn, timeout=connect_timeout, **kwargs)
        listener = cls(conn, waits)
        try:
            await conn.add_listener(channel, listener._on_notify)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(listener._on_lost)
        return listener

    def alive(self) -> bool:
        """Whether notifications still arrive (else a new listener is needed)."""
        return not self._lost and not self._conn.is_closed()

    @contextmanager
    def waiting(self, cache_key: str) -> Iterator[anyio.Event]:
        """An event set when ``cache_key`` is notified (or the listener is lost)."""
        event = anyio.Event()
        self._events.setdefault(cache_key, set()).add(event)
        try:
            yield event
        finally:
            events = self._events.get(cache_key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[cache_key]

    def _wake_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._waits.notified()
        for event in self._events.get(str(payload), ()):
            event.set()

    def _on_lost(self, conn: object) -> None:
        # Notifications may have been missed while the connection was down:
        # wake everyone so they re-check; the next wait listens afresh.
        self._lost = True
        self._wake_all()

    async def aclose(self) -> None:
        """Wake every wait, then close the connection; never hangs."""
        self._lost = True
        self._wake_all()
        conn = self._conn
        if conn.is_closed():
            return
        # A graceful close waits for the server to answer; when it does not
        # (a frozen server), the caller's deadline cancels it and the
        # connection is cut instead.
        try:
            await conn.close(timeout=5)
        except BaseException as exc:  # a broken connection, or the caller gave up
            conn.terminate()
            if not isinstance(exc, Exception):
                raise
