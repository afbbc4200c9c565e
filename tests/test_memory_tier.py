"""The memory tier in front of the task database: bounded, and safe for unwritten results."""

from __future__ import annotations

from pathlib import Path

import beautyspot_async as bs
from beautyspot_async._memory_tier import MemoryEntry, MemoryTier
from beautyspot_async.db import MemoryTaskDB


def entry(size: int) -> MemoryEntry:
    return MemoryEntry(b"x" * size, None)


class TestBounds:
    """The tier keeps at most max_entries entries and max_bytes bytes, newest first."""

    def test_entry_bound(self) -> None:
        tier = MemoryTier(max_entries=3, max_bytes=10**6)
        for i in range(10):
            tier.put(f"k{i}", entry(10))
        assert len(tier) == 3
        assert tier.get("k9") is not None
        assert tier.get("k0") is None

    def test_byte_bound(self) -> None:
        tier = MemoryTier(max_entries=1000, max_bytes=2000)
        for i in range(50):
            tier.put(f"k{i}", entry(400))
        assert tier.nbytes <= 2000
        assert 0 < len(tier) < 50

    def test_oversized_entry_is_not_kept(self) -> None:
        tier = MemoryTier(max_entries=10, max_bytes=100)
        tier.put("big", entry(1000))
        assert tier.get("big") is None

    def test_disabled(self) -> None:
        """Bounds of zero turn the tier off: nothing is kept."""
        tier = MemoryTier(max_entries=0, max_bytes=0)
        tier.put("k", entry(1))
        assert tier.get("k") is None

    def test_spot_memory_bounds(self, tmp_path: Path) -> None:
        """Spot(memory_cache_entries=) bounds the Spot's own tier."""
        spot = bs.Spot(
            "bounded",
            db=MemoryTaskDB(),
            storage=tmp_path,
            memory_cache_entries=5,
        )

        @spot.mark
        def f(x: int) -> list[int]:
            return [x]

        for i in range(50):
            f(i)
        assert spot.statistics().memory_entries == 5


class TestPinnedEntries:
    """A result not yet written to the backends is pinned: no bound evicts it."""

    def test_pinned_entries_survive_pressure(self) -> None:
        tier = MemoryTier(max_entries=2, max_bytes=10**6)
        pinned = entry(10)
        tier.pin("pending", pinned)
        for i in range(10):
            tier.put(f"k{i}", entry(10))
        assert tier.get("pending") is pinned
        tier.unpin("pending", pinned)
        assert len(tier) == 2
