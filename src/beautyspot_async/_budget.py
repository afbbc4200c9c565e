"""Size budgets: last-use tracking off the hit path, LRU eviction by the writer.

A hit only checks a dict (``Budget.touched``): a key not in it is marked
pending and queued, with no clock read, no lock and no I/O. The writer's drain
writes the queued keys' last use in one ``TaskDB.touch`` batch and stamps each
with the time of that write; stamps older than :data:`TOUCH_INTERVAL` are
swept out, so an entry's last use is written at most once per interval
however often it is hit. After its write batches the writer also enforces
``Spot(max_bytes=, max_entries=)``: when the usage estimate exceeds a budget,
it deletes least-recently-used entries (row, then blob) down to a low-water
mark, so one eviction pass covers many later writes.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from .exceptions import BeautySpotError, ConfigurationError

if TYPE_CHECKING:
    from ._store import ResultStore, WriteItem
    from .db import EvictionCandidate

__all__ = ["TOUCH_INTERVAL", "Budget", "check_budget", "parse_age", "parse_size"]

logger = logging.getLogger("beautyspot_async")

#: An entry's last use is written at most once per this many seconds.
TOUCH_INTERVAL: Final = 3600.0
#: How often (seconds, engine clock) stale stamps are swept from the touched map.
_SWEEP_EVERY: Final = 60.0
#: In ``Budget.touched``: queued, not written yet.
_PENDING: Final = math.inf
#: At most this many candidates per eviction query (each query sorts the store).
_MAX_PAGE: Final = 10_000

_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*\Z", re.IGNORECASE)
_AGE_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_AGE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*\Z", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"10GB"``, ``"512MiB"``, ``"2000"`` -> bytes (decimal and binary units)."""
    match = _SIZE.match(text)
    factor = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise ValueError(f"not a size: {text!r} (like 10GB, 512MiB or a number of bytes)")
    return int(float(match.group(1)) * factor)


def parse_age(text: str) -> float:
    """``"90d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` or seconds -> seconds."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"not an age: {text!r} (like 90d, 12h, 30m, 45s or seconds)")
    return float(match.group(1)) * _AGE_UNITS[match.group(2).lower()]


def check_budget(name: str, value: object) -> int | None:
    """A valid ``max_bytes``/``max_entries``: an int > 0 or None (sizes may be strings)."""
    if value is None:
        return None
    if isinstance(value, str) and name == "max_bytes":
        try:
            value = parse_size(value)
        except ValueError as exc:
            raise ConfigurationError(f"max_bytes: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be an int > 0 or None; got {value!r}")
    return value


def _low_water(limit: int) -> int:
    # Evicting a tenth below the limit batches the next evictions: a store at
    # its budget would otherwise pay an eviction query on every write batch.
    return limit - limit // 10


class Budget:
    """Touch tracking and eviction for one engine; every coroutine runs in the writer."""

    def __init__(
        self,
        store: ResultStore,
        clock: Callable[[], float],
        forget: Callable[[str], None],
        *,
        max_bytes: int | None = None,
        max_entries: int | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._forget = forget
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        #: key -> when its last use was written (``_PENDING``: queued). Read on the hit path.
        self.touched: dict[str, float] = {}
        self._queue: deque[str] = deque()
        self._swept = -math.inf
        #: (entries, bytes) as last counted plus what was written since: an
        #: overestimate (overwrites count as new), recounted before evicting.
        self._usage: tuple[int, int] | None = None
        #: Entries evicted so far (for tests and statistics).
        self.evicted = 0

    @property
    def enforced(self) -> bool:
        return self.max_bytes is not None or self.max_entries is not None

    def hit(self, key: str) -> None:
        """Note a hit on ``key``; callable from any thread, never waits."""
        if key not in self.touched:
            self.touched[key] = _PENDING
            self._queue.append(key)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def forget_key(self, key: str) -> None:
        self.touched.pop(key, None)

    # -- in the writer's drain -------------------------------------------------------

    def written(self, items: Sequence[WriteItem], errors: Sequence[BaseException | None]) -> None:
        if self._usage is None:
            return
        entries, total = self._usage
        for item, error in zip(items, errors, strict=True):
            if error is None:
                entries += 1
                total += max(item.record.size_bytes, 0)
        self._usage = (entries, total)

    async def settle(self) -> None:
        """Write queued touches, sweep old stamps, enforce the budgets. Never raises."""
        try:
            await self._write_touches()
            if self.enforced:
                await self._enforce()
        except BeautySpotError as exc:
            # A budget must never fail the writes it follows; the next batch retries.
            logger.warning("size budget: %s", exc)

    async def _write_touches(self) -> None:
        now = self._clock()
        if now - self._swept >= _SWEEP_EVERY:
            self._swept = now
            stale = now - TOUCH_INTERVAL
            # A copy: hits on other threads insert while this runs.
            for key in [k for k, t in self.touched.copy().items() if t <= stale]:
                self.touched.pop(key, None)
        keys: list[str] = []
        queue = self._queue
        while queue:
            keys.append(queue.popleft())
        if not keys:
            return
        try:
            await self._store.touch(keys, now)
        except BaseException:
            for key in keys:  # not written: let the next hit queue them again
                if self.touched.get(key) == _PENDING:
                    del self.touched[key]
            raise
        for key in keys:
            if self.touched.get(key) == _PENDING:
                self.touched[key] = now

    def _over(self, usage: tuple[int, int], low: bool) -> bool:
        entries, total = usage
        cap = _low_water if low else (lambda limit: limit)
        return (self.max_entries is not None and entries > cap(self.max_entries)) or (
            self.max_bytes is not None and total > cap(self.max_bytes)
        )

    async def _enforce(self) -> None:
        if self._usage is not None and not self._over(self._usage, low=False):
            return
        usage = await self._store.usage_totals()
        # Again if the recount says so: other processes write meanwhile. Bounded,
        # so writers that outpace eviction cannot hold this writer here.
        for _ in range(3):
            if not self._over(usage, low=False):
                break
            usage = await self._evict(usage)
        self._usage = usage

    async def _evict(self, usage: tuple[int, int]) -> tuple[int, int]:
        """Evict least recently used entries until ``usage`` is under the low-water marks."""
        entries, total = usage
        while self._over((entries, total), low=True):
            candidates = await self._store.eviction_candidates(self._page(entries, total))
            if not candidates:
                break
            doomed: list[EvictionCandidate] = []
            for candidate in candidates:
                if not self._over((entries, total), low=True):
                    break
                doomed.append(candidate)
                entries -= 1
                total -= max(candidate.size_bytes, 0)
            await self.evict(doomed)
        # Recount: other processes write too, and a row may have been gone already.
        return await self._store.usage_totals()

    def _page(self, entries: int, total: int) -> int:
        """How many candidates to read: about the excess, so one ordered query usually does."""
        excess = 0
        if self.max_entries is not None:
            excess = entries - _low_water(self.max_entries)
        if self.max_bytes is not None and entries > 0 and total > 0:
            average = total / entries
            excess = max(excess, math.ceil((total - _low_water(self.max_bytes)) / average))
        return min(max(excess + excess // 5 + 16, 16), _MAX_PAGE)

    async def evict(self, doomed: Sequence[EvictionCandidate]) -> int:
        """Delete ``doomed`` (row, then blob) and drop them from this process's tiers."""
        removed = await self._store.delete_candidates(doomed)
        for candidate in doomed:
            self._forget(candidate.cache_key)
            self.touched.pop(candidate.cache_key, None)
        self.evicted += removed
        return removed
