"""The bounded in-process front tier: answers repeat hits without any I/O.

It holds serialized payloads, not result objects, so no two callers share a
mutable result: the first hit decodes a fresh value, and an entry hit here
keeps a private decoded copy that later hits copy (``_clone``) instead of
decoding again, when the result is made of plain dicts, lists and tuples.
Scalars that cannot be mutated (str, int, bytes...) are kept as objects too
and returned as they are.

Reads take no lock (one ``dict.get``, atomic under the GIL); inserts and
evictions take a lock held for a few dictionary operations. Eviction is by
insertion order (oldest first): cheaper than LRU bookkeeping on every hit,
and a batch script rarely re-reads its oldest results more than its newest.

Entries waiting for a write-behind commit are *pinned*: they do not count
against the bounds and cannot be evicted, so a result returned to a caller is
always visible to the next caller until it is durable.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["IMMUTABLE_TYPES", "NO_VALUE", "MemoryEntry", "MemoryTier"]

#: No value here (not held, expired, or it would not decode).
NO_VALUE: Final[Any] = object()

#: Results of these exact types are returned without decoding on a memory-tier hit.
IMMUTABLE_TYPES: Final = frozenset({str, int, float, bool, bytes, type(None), complex})


@dataclass(slots=True)
class MemoryEntry:
    payload: bytes
    expires_at: float | None
    value: Any = NO_VALUE
    #: Makes a fresh copy of the decoded result (see ``_clone``), once hit here twice.
    copy: Any = None
    #: Hit here once already (set in place: no entry is copied for it).
    seen: bool = False

    @property
    def size(self) -> int:
        # A rough per-entry overhead keeps many tiny entries from escaping the byte
        # bound; a decoded copy source weighs a few times its payload.
        return len(self.payload) * (1 if self.copy is None else 4) + 96


class MemoryTier:
    """A bounded map of cache key -> :class:`MemoryEntry`."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        if max_entries < 0 or max_bytes < 0:
            from .exceptions import ConfigurationError

            raise ConfigurationError("memory tier bounds must be >= 0 (0 disables it)")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: dict[str, MemoryEntry] = {}
        self._pinned: dict[str, MemoryEntry] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> MemoryEntry | None:
        entry = self._entries.get(key)
        if entry is None and self._pinned:
            entry = self._pinned.get(key)
        return entry

    def put(self, key: str, entry: MemoryEntry) -> None:
        size = entry.size
        if size > self.max_bytes or self.max_entries == 0:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = entry
            self._bytes += size
            self._evict_locked()

    def replace(self, key: str, old: MemoryEntry, new: MemoryEntry) -> None:
        """Put ``new`` in place of ``old`` if ``key`` still holds ``old`` (not pinned)."""
        with self._lock:
            if self._entries.get(key) is not old:
                return  # replaced, evicted or pinned meanwhile: leave it
            self._entries[key] = new
            self._bytes += new.size - old.size
            self._evict_locked()

    def pin(self, key: str, entry: MemoryEntry) -> None:
        """Hold ``entry`` until :meth:`unpin`, regardless of the bounds."""
        with self._lock:
            self._pinned[key] = entry

    def pinned(self, key: str) -> bool:
        """Whether a write-behind result for ``key`` is waiting to be written."""
        return key in self._pinned

    def unpin(self, key: str, entry: MemoryEntry) -> None:
        """Release a pinned entry into the bounded tier."""
        with self._lock:
            if self._pinned.get(key) is entry:
                del self._pinned[key]
        self.put(key, entry)

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._pinned.pop(key, None)

    def _evict_locked(self) -> None:
        entries = self._entries
        while entries and (len(entries) > self.max_entries or self._bytes > self.max_bytes):
            oldest = next(iter(entries))
            self._bytes -= entries.pop(oldest).size

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
