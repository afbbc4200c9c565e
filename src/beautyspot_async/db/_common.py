"""Parts every task database shares, written once.

* :func:`lookup_then_lease`: read, lease what is missing, re-read what was
  leased -- the logic of :meth:`TaskDB.lookup_or_lease` over a backend's own
  primitives, so a backend that batches them (pipelining, one connection)
  does not rewrite the logic.
* :class:`WaitStatistics` and :class:`WaitTracker`: what
  :meth:`TaskDB.statistics` reports about waits on notifications.

Record building and the ``size_bytes`` rule live in ``_record``; error
translation in ``_errormap``; per-loop clients in ``_perloop``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from .._record import TaskRecord

__all__ = ["WaitStatistics", "WaitTracker", "lookup_then_lease"]


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
