"""The row a task database stores for one cached call."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Final

from .exceptions import BackendError

__all__ = [
    "BLOB",
    "HISTORY_COLUMNS",
    "INLINE",
    "RECORD_COLUMNS",
    "TaskRecord",
    "as_record",
    "checked_record",
    "meta_text",
    "parse_meta",
    "payload_size",
    "saved_record",
    "written_values",
]

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
    "meta",
)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One cached result as a task database stores it.

    Timestamps are POSIX seconds (UTC). ``expires_at`` is ``None`` for entries
    that never expire. ``size_bytes`` is the size of the serialized payload,
    wherever it lives. ``problem`` is set by :func:`checked_record` when the
    stored row had wrongly typed fields: they were replaced by harmless
    defaults, and the pipeline treats the entry as corrupt (a miss, a
    warning, a rewrite).

    ``meta`` is what the library knows about the call beyond its key: the
    arguments' previews and digests, its usage (a JSON-able dict, stored as
    JSON text). The reads on the hit path (``get``, ``get_many``, the
    ``nowait`` reads, ``lookup_or_lease``) of the shipped backends leave it
    out (``None``) so that hits never pay for it; ``iter_records``,
    ``get_history`` and ``get_meta`` return it.
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
    problem: str | None = field(default=None, compare=False)
    # Not compared: a backend that drops it (or a hit-path read that skips
    # it) still returns "the same record".
    meta: Mapping[str, Any] | None = field(default=None, compare=False)

    def is_expired(self, now: float) -> bool:
        """Whether the record is past its expiry at wall-clock time ``now``."""
        return self.expires_at is not None and self.expires_at <= now


#: A record's stored fields, in the order the SQL backends' tables hold them.
#: ``meta`` is not among them: it is written beside them and read only where
#: it is shown, never on the hit path.
RECORD_COLUMNS: Final = tuple(
    f.name for f in fields(TaskRecord) if f.name not in ("problem", "meta")
)

#: ``written_values(record)``: what a save writes, in :data:`RECORD_COLUMNS`
#: order up to ``size_bytes``; the timestamps are left to the backend's clock.
written_values: Final[Callable[[TaskRecord], tuple[Any, ...]]] = operator.attrgetter(
    *RECORD_COLUMNS[: RECORD_COLUMNS.index("size_bytes") + 1]
)


def payload_size(size_bytes: int | None, result_data: bytes | None) -> int:
    """The one ``size_bytes`` rule: as given; when not given (``None``), the
    length of the inline payload, or 0 without one (a blob's size is always
    given by the pipeline, which alone knows it)."""
    if size_bytes is not None:
        return size_bytes
    return 0 if result_data is None else len(result_data)


def saved_record(
    *,
    cache_key: str,
    func_name: str,
    input_id: str,
    version: str | None,
    result_type: str,
    content_type: str | None,
    result_value: str | None = None,
    result_data: bytes | None = None,
    expires_at: float | None = None,
    size_bytes: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> TaskRecord:
    """The record a :meth:`TaskDB.save` call describes, its size settled.

    Every backend's ``save()`` builds its row from this, so ``save()`` and
    ``save_many()`` store the same thing. The timestamps are left at 0: the
    backend stamps them with its own clock.
    """
    return TaskRecord(
        cache_key=cache_key,
        func_name=func_name,
        input_id=input_id,
        version=version,
        result_type=result_type,
        content_type=content_type,
        result_value=result_value,
        result_data=result_data,
        expires_at=expires_at,
        size_bytes=payload_size(size_bytes, result_data),
        meta=meta,
    )


_FIELDS: Final = frozenset(TaskRecord.__dataclass_fields__) - {"problem"}


def meta_text(meta: Mapping[str, Any] | None) -> str | None:
    """``meta`` as the JSON text a backend stores; ``None`` when there is none.

    Never raises: what cannot be written as JSON is stored as no meta, since
    meta is a description of the entry, not part of it.
    """
    if not meta:
        return None
    try:
        return json.dumps(meta, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return None


def parse_meta(value: Any) -> dict[str, Any] | None:
    """A stored meta (JSON text, bytes or a mapping) as a dict; ``None`` when unreadable.

    A malformed meta is dropped rather than reported: the entry's result is
    intact, only its description is lost.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


_REQUIRED: Final = ("func_name", "input_id", "version", "result_type", "content_type")
_TIMES: Final = ("expires_at", "created_at", "updated_at")


def _posix(value: Any) -> Any:
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
                fields[name] = _posix(fields[name])
            except (ValueError, OverflowError, OSError) as exc:  # NaT, out of range
                raise BackendError(
                    f"get({cache_key!r}) returned an unreadable {name} {fields[name]!r}: {exc}",
                    backend=backend,
                ) from exc
    for name in ("created_at", "updated_at"):
        if fields.get(name) is None:
            fields[name] = 0.0
    if fields.get("size_bytes") is None:
        fields["size_bytes"] = payload_size(None, fields.get("result_data"))
    # Wrongly typed fields make a corrupt record, never a crash.
    return checked_record(**fields)


def _slot_setters() -> tuple[Callable[[TaskRecord, Any], None], ...]:
    return tuple(getattr(TaskRecord, f.name).__set__ for f in fields(TaskRecord))


(_s0, _s1, _s2, _s3, _s4, _s5, _s6, _s7, _s8, _s9, _s10, _s11, _s12, _s13) = _slot_setters()
_new_record = object.__new__


def _intact(
    cache_key: str,
    func_name: str,
    input_id: str,
    version: str | None,
    result_type: str,
    content_type: str | None,
    result_value: str | None,
    result_data: bytes | None,
    expires_at: float | None,
    size_bytes: int,
    created_at: float,
    updated_at: float,
    meta: Mapping[str, Any] | None,
) -> TaskRecord:
    # TaskRecord(...) of already checked fields, through the slots directly:
    # a frozen dataclass's __init__ pays an object.__setattr__ per field, and
    # this runs once per row on every hit (half the cost of the record).
    record = _new_record(TaskRecord)
    _s0(record, cache_key)
    _s1(record, func_name)
    _s2(record, input_id)
    _s3(record, version)
    _s4(record, result_type)
    _s5(record, content_type)
    _s6(record, result_value)
    _s7(record, result_data)
    _s8(record, expires_at)
    _s9(record, size_bytes)
    _s10(record, created_at)
    _s11(record, updated_at)
    _s12(record, None)
    _s13(record, meta)
    return record


def _text(value: Any, name: str, problems: list[str], *, optional: bool) -> Any:
    if type(value) is str or (value is None and optional):
        return value
    if value is None:
        problems.append(f"{name} is missing")
        return ""
    if isinstance(value, bytes | bytearray):
        # What a lenient driver hands back for text that is not valid UTF-8.
        problems.append(f"{name} is not valid UTF-8")
        return bytes(value).decode("utf-8", "replace")
    problems.append(f"{name} is a {type(value).__name__}, not text")
    return None if optional else ""


def _seconds(value: Any, name: str, problems: list[str], *, optional: bool) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isnan(seconds):
            return seconds
    problems.append(f"{name} is {value!r}, not a time")
    return None if optional else 0.0


def checked_record(
    cache_key: Any,
    func_name: Any,
    input_id: Any,
    version: Any,
    result_type: Any,
    content_type: Any,
    result_value: Any = None,
    result_data: Any = None,
    expires_at: Any = None,
    size_bytes: Any = 0,
    created_at: Any = 0.0,
    updated_at: Any = 0.0,
    meta: Any = None,
) -> TaskRecord:
    """A :class:`TaskRecord` from a stored row's raw fields, whatever their types.

    Backends call this where a row becomes a record. A row written by this
    library passes straight through; a row with wrongly typed fields (edited
    by hand, written by other software, damaged) comes back with harmless
    values in those fields and :attr:`TaskRecord.problem` saying what was
    wrong, so no reader crashes on it and the pipeline rewrites it.
    ``meta`` (JSON text or a mapping) that cannot be read becomes ``None``
    and is no problem: the result itself is intact.
    """
    if meta is not None:
        meta = parse_meta(meta)
    if (
        type(cache_key) is str
        and type(func_name) is str
        and type(input_id) is str
        and (version is None or type(version) is str)
        and type(result_type) is str
        and (content_type is None or type(content_type) is str)
        and (result_value is None or type(result_value) is str)
        and (result_data is None or type(result_data) is bytes)
        and (expires_at is None or (type(expires_at) is float and not math.isnan(expires_at)))
        and type(size_bytes) is int
        and type(created_at) is float
        and type(updated_at) is float
    ):
        return _intact(
            cache_key,
            func_name,
            input_id,
            version,
            result_type,
            content_type,
            result_value,
            result_data,
            expires_at,
            size_bytes,
            created_at,
            updated_at,
            meta,
        )
    problems: list[str] = []
    if isinstance(result_data, bytearray | memoryview):
        result_data = bytes(result_data)
    elif result_data is not None and type(result_data) is not bytes:
        problems.append(f"result_data is a {type(result_data).__name__}, not bytes")
        result_data = None
    if isinstance(size_bytes, float) and size_bytes.is_integer():
        size_bytes = int(size_bytes)
    elif type(size_bytes) is not int:
        problems.append(f"size_bytes is {size_bytes!r}, not an integer")
        size_bytes = 0
    record = TaskRecord(
        cache_key=_text(cache_key, "cache_key", problems, optional=False),
        func_name=_text(func_name, "func_name", problems, optional=False),
        input_id=_text(input_id, "input_id", problems, optional=False),
        version=_text(version, "version", problems, optional=True),
        result_type=_text(result_type, "result_type", problems, optional=False),
        content_type=_text(content_type, "content_type", problems, optional=True),
        result_value=_text(result_value, "result_value", problems, optional=True),
        result_data=result_data,
        expires_at=_seconds(expires_at, "expires_at", problems, optional=True),
        size_bytes=size_bytes,
        created_at=_seconds(created_at, "created_at", problems, optional=False),
        updated_at=_seconds(updated_at, "updated_at", problems, optional=False),
        meta=meta,
    )
    if not problems:
        return record
    return replace(record, problem="wrongly typed row: " + "; ".join(problems))
