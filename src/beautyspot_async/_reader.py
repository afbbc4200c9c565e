"""The reader: coalesces the backend lookups of concurrent misses.

A ``gather`` of 10 000 new keys would otherwise cost 10 000 round trips to
the database (and, with cross-process leases, 10 000 write transactions).
Lookups queue here and the I/O loop answers everything queued so far with
one ``lookup_or_lease`` (or ``get_many``) call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ._drain import QueueDrain
from ._portal import Abandoned, Outcome, Waiter, settle_all
from ._record import TaskRecord
from ._store import ResultStore

__all__ = ["Absent", "Lookup", "ReadAnswer", "Reader", "lease_returner", "read_answer"]


class Absent(Enum):
    """A key that is not stored, and who may execute it."""

    #: This caller: the key's lease is now ours (or leases are off).
    OURS = "ours"
    #: Another process holds the key's lease and is executing it.
    THEIRS = "theirs"


#: What a read-and-lease answers: the stored record, or who executes the key.
ReadAnswer = TaskRecord | Absent


def read_answer(found: TaskRecord | bool) -> ReadAnswer:
    """Name one answer of ``TaskDB.lookup_or_lease`` (True: leased, False: held elsewhere)."""
    if found is True:
        return Absent.OURS
    if found is False:
        return Absent.THEIRS
    return found


@dataclass(slots=True)
class Lookup:
    key: str
    owner: str | None
    ttl: float
    waiter: Waiter


class Reader(QueueDrain[Lookup]):
    """Batched ``lookup_or_lease`` on the I/O loop."""

    def __init__(
        self,
        store: ResultStore,
        release: Callable[[str, str], None],
        *,
        batch_size: int = 2000,
    ) -> None:
        super().__init__()
        self._store = store
        self._release = release
        self._batch_size = batch_size

    def submit(self, key: str, owner: str | None, ttl: float, waiter: Waiter) -> None:
        """Queue a lookup of ``key``; callable from any thread, never waits."""
        self._enqueue(Lookup(key, owner, ttl, waiter))

    def _answer(self, found: dict[str, TaskRecord | bool], key: str) -> ReadAnswer:
        # A key the backend left out needs no lease and is not stored.
        return read_answer(found.get(key, True))

    async def _drain_once(self) -> None:
        while self._queue:
            batch: list[Lookup] = []
            while self._queue and len(batch) < self._batch_size:
                batch.append(self._queue.popleft())
            groups: dict[tuple[str | None, float], list[Lookup]] = {}
            for lookup in batch:
                groups.setdefault((lookup.owner, lookup.ttl), []).append(lookup)
            for (owner, ttl), lookups in groups.items():
                keys = [lookup.key for lookup in lookups]
                try:
                    found = await self._store.lookup_many(keys, owner, ttl)
                except BaseException as exc:
                    settle_all([(lookup.waiter, None, exc) for lookup in lookups])
                    if not isinstance(exc, Exception):
                        raise
                    continue
                outcomes: list[Outcome] = [
                    (lookup.waiter, self._answer(found, lookup.key), None) for lookup in lookups
                ]
                on_abandoned = None
                if owner is not None:
                    key_of = {id(lookup.waiter): lookup.key for lookup in lookups}
                    on_abandoned = lease_returner(self._release, owner, key_of)
                settle_all(outcomes, on_abandoned=on_abandoned)


def lease_returner(
    release: Callable[[str, str], None], owner: str, key_of: dict[int, str]
) -> Abandoned:
    """What to do with an answer that reaches a cancelled caller (``settle_all``'s hook).

    ``key_of`` maps ``id(waiter)`` to the waiter's key. A lease granted to a
    caller that is gone is given back at once, instead of making other
    processes wait it out.
    """

    def returned(waiter: Waiter, answer: Any) -> None:
        if answer is Absent.OURS:
            release(key_of[id(waiter)], owner)

    return returned
