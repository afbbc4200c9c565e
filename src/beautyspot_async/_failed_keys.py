"""Which keys have failure records, and deleting those records once a result lands.

"A later success clears the record": after every durable write the engine
tests the key against :attr:`FailedKeys.keys` -- one set-membership test,
nothing more on the normal miss path -- and calls :meth:`FailedKeys.cleared`
for a hit. Keys are known from this process's own
``record_failure`` calls and from failures it has read; a success in another
process is caught when failures are read (``Engine.failures`` checks for live
entries). Deletions run in batches on the I/O loop; callers never wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from ._drain import QueueDrain
from ._store import ResultStore

__all__ = ["FailedKeys"]

logger = logging.getLogger("beautyspot_async")


class FailedKeys(QueueDrain[str]):
    """The keys known to have failure records, and a queue of records to delete."""

    def __init__(self, store: ResultStore) -> None:
        super().__init__()
        self._store = store
        #: Keys believed to have a failure record (a superset is harmless:
        #: deleting a record that is not there is a no-op). Only ever changed
        #: in place: the engine's write callbacks hold this very set.
        self.keys: set[str] = set()
        self._lock: asyncio.Lock | None = None

    def note(self, keys: Iterable[str]) -> None:
        self.keys.update(keys)

    def forget(self, keys: Iterable[str]) -> None:
        self.keys.difference_update(keys)

    def cleared(self, key: str) -> None:
        """A result for ``key`` is durable: queue the deletion of its failure record."""
        self.keys.discard(key)
        self._enqueue(key)

    async def flush(self) -> None:
        """Return once every deletion queued so far is done (call on the I/O loop)."""
        await self._drain_once()

    async def _drain_once(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        # Held across the batch, so flush() also waits for one in flight.
        async with self._lock:
            while self._queue:
                keys = list(dict.fromkeys(self._queue.popleft() for _ in range(len(self._queue))))
                try:
                    await self._store.delete_failures(keys)
                except Exception as exc:  # the record lingers; reading failures prunes it
                    logger.warning(
                        "deleting the failure records of %d stored result(s) failed: %s",
                        len(keys),
                        exc,
                    )
