"""The row a task database stores for one cached call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from .exceptions import BackendError

__all__ = ["HISTORY_COLUMNS", "INLINE", "BLOB", "TaskRecord", "as_record"]

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


_FIELDS: Final = frozenset(TaskRecord.__dataclass_fields__)
_REQUIRED: Final = ("func_name", "input_id", "version", "result_type", "content_type")
_TIMES: Final = ("expires_at", "created_at", "updated_at")


def _seconds(value: Any) -> Any:
    # A datetime (pandas.Timestamp included) becomes POSIX seconds; a naive one
    # is read as local time, as datetime.timestamp() does.
    return value.timestamp() if isinstance(value, datetime) else value


def as_record(found: Any, cache_key: str, *, backend: str = "custom") -> TaskRecord | None:
    """What a backend's ``get`` returned for ``cache_key``, as a TaskRecord.

    Accepts ``None``, a :class:`TaskRecord`, or a mapping keyed by
    TaskRecord's field names: ``cache_key`` defaults to the key asked for,
    ``size_bytes`` to the payload's length, timestamps to 0, datetimes become
    POSIX seconds and other keys are ignored. Anything else is a
    :class:`~beautyspot_async.BackendError` saying what came back.
    """
    if found is None or isinstance(found, TaskRecord):
        return found
    if not isinstance(found, Mapping):
        raise BackendError(
            f"get({cache_key!r}) returned a {type(found).__name__}; expected a TaskRecord, "
            "a mapping with TaskRecord's field names, or None",
            backend=backend,
        )
    missing = [name for name in _REQUIRED if name not in found]
    if missing:
        raise BackendError(
            f"get({cache_key!r}) returned a mapping without {', '.join(missing)}; "
            f"a record mapping needs {', '.join(_REQUIRED)}",
            backend=backend,
        )
    fields = {name: found[name] for name in _FIELDS if name in found}
    fields.setdefault("cache_key", cache_key)
    for name in _TIMES:
        if name in fields:
            try:
                fields[name] = _seconds(fields[name])
            except (ValueError, OverflowError, OSError) as exc:  # NaT, out of range
                raise BackendError(
                    f"get({cache_key!r}) returned an unreadable {name} {fields[name]!r}: {exc}",
                    backend=backend,
                ) from exc
    for name in ("created_at", "updated_at"):
        if fields.get(name) is None:
            fields[name] = 0.0
    if fields.get("size_bytes") is None:
        data = fields.get("result_data")
        fields["size_bytes"] = 0 if data is None else len(data)
    return TaskRecord(**fields)
