"""The row a task database stores for one cached call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["HISTORY_COLUMNS", "INLINE", "BLOB", "TaskRecord"]

#: ``result_type`` of a record whose serialized payload is in ``result_data``.
INLINE: Final = "inline"
#: ``result_type`` of a record whose payload lives in blob storage; ``result_value``
#: holds the location returned by :meth:`BlobStorageBase.save`.
BLOB: Final = "blob"

#: Columns of :meth:`TaskDB.get_history`, in order. Payloads are never loaded.
HISTORY_COLUMNS: Final = (
    "cache_key",
    "func_name",
    "input_id",
    "version",
    "result_type",
    "content_type",
    "size_bytes",
    "created_at",
    "updated_at",
    "expires_at",
)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One cached result as a task database stores it.

    Timestamps are POSIX seconds (UTC). ``expires_at`` is ``None`` for entries
    that never expire. ``size_bytes`` is the size of the serialized payload,
    wherever it lives.
    """

    cache_key: str
    func_name: str
    input_id: str
    version: str | None
    result_type: str
    content_type: str | None
    result_value: str | None = None
    result_data: bytes | None = None
    expires_at: float | None = None
    size_bytes: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    def is_expired(self, now: float) -> bool:
        """Whether the record is past its expiry at wall-clock time ``now``."""
        return self.expires_at is not None and self.expires_at <= now
