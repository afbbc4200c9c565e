"""The size-budget checks of :func:`check_taskdb`: last use, totals, eviction order."""

from __future__ import annotations

import time

from beautyspot_async.db._base import TaskDB

from ._clock import FakeClock
from ._common import Check, new_key, overrides, save

__all__ = ["BUDGET_CHECKS"]


async def _ours(db: TaskDB, keys: list[str]) -> list[str]:
    """Our keys among every eviction candidate, in the order the backend lists them."""
    entries, _ = await db.usage_totals()
    wanted = set(keys)
    return [
        c.cache_key for c in await db.eviction_candidates(entries + 10) if c.cache_key in wanted
    ]


async def _check_usage_totals(db: TaskDB, clock: FakeClock | None) -> None:
    """usage_totals counts stored entries and sums their ``size_bytes``; deletes count down."""
    entries, total = await db.usage_totals()
    key = new_key("usage")
    await save(db, key, result_data=b"x" * 100)
    after = await db.usage_totals()
    assert after == (entries + 1, total + 100), (
        f"after saving 100 bytes usage_totals must grow by (1, 100): {(entries, total)} -> {after}"
    )
    if overrides(db, "delete"):
        await db.delete(key)
        assert await db.usage_totals() == (entries, total), "a deleted entry must not count"


async def _check_eviction_order(db: TaskDB, clock: FakeClock | None) -> None:
    """eviction_candidates: least recently used first, a touch counting as a use.

    Each candidate carries what deleting it needs (size, type, blob
    location) and its last use: the later of its last touch and its
    ``updated_at``. ``limit`` bounds the list. The touch part runs only when
    ``touch`` is overridden (the default tracks nothing).
    """
    keys = [new_key(f"lru{i}") for i in range(3)]
    for key in keys:
        await save(db, key, result_type="blob", result_value=f"ab/cd/{key}.bin", result_data=None)
        if clock is not None:
            clock.advance(1.0)
    ordered = await _ours(db, keys)
    assert ordered == keys, f"candidates must be oldest write first: {ordered} vs {keys}"
    limited = await db.eviction_candidates(1)
    assert len(limited) == 1, "limit must bound the candidates"
    (first,) = [c for c in await db.eviction_candidates(10**6) if c.cache_key == keys[0]]
    assert first.result_type == "blob", f"a candidate must carry its type, got {first!r}"
    assert first.result_value == f"ab/cd/{keys[0]}.bin", (
        f"a candidate must carry its blob location, got {first!r}"
    )
    if not overrides(db, "touch"):
        return
    # Later than any clock (the backend's or the test's) stamped the writes.
    later = max(time.time(), clock() if clock is not None else 0.0) + 3600.0
    await db.touch([keys[0], new_key("never-stored")], later)
    ordered = await _ours(db, keys)
    assert ordered == [keys[1], keys[2], keys[0]], (
        f"a touched entry must come after the untouched ones, got {ordered}"
    )
    (touched,) = [c for c in await db.eviction_candidates(10**6) if c.cache_key == keys[0]]
    assert abs(touched.used_at - later) < 1e-3, f"used_at must be the touch time: {touched!r}"
    await db.touch([keys[0]], later - 10.0)
    (kept,) = [c for c in await db.eviction_candidates(10**6) if c.cache_key == keys[0]]
    assert abs(kept.used_at - later) < 1e-3, "an older touch must not move last use back"
    if overrides(db, "delete"):
        await db.delete(keys[0])
        await save(db, keys[0])
        (fresh,) = [c for c in await db.eviction_candidates(10**6) if c.cache_key == keys[0]]
        assert fresh.used_at < later - 1.0, "delete() must drop the entry's last use with it"


BUDGET_CHECKS: tuple[Check, ...] = (_check_usage_totals, _check_eviction_order)
