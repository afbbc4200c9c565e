"""A call that failed for good, as the task database records it.

The batch runner records one :class:`FailureRecord` per item that exhausted
its retries; ``spot.failures()`` and the ``failures`` command read them back.
Pure: no I/O, no backend. The default storage for custom backends (a record
under a reserved key, see :meth:`TaskDB.save_failure`) is encoded here too,
so the base class and every reader agree on what such a row looks like.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

from ._record import TaskRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FAILURE_COLUMNS",
    "FAILURE_KEY_PREFIX",
    "MAX_FAILURE_TEXT",
    "FailureRecord",
    "checked_failure",
    "exception_type_name",
    "failure_from_record",
    "failure_record_key",
    "failures_to_frame",
    "is_failure_key",
    "record_of_failure",
]

#: Longest ``message`` (and ``args`` preview) a failure keeps, in characters:
#: a traceback-sized message per failed item would dwarf the results.
MAX_FAILURE_TEXT: Final = 2000

#: Prefix of the record key under which the default implementation keeps a
#: failure. Cache keys are hex digests, so none can start with ``!``: such a
#: row is never looked up as a result.
FAILURE_KEY_PREFIX: Final = "!failure:"
#: ``result_type`` of such a row (neither inline nor blob).
FAILURE_RESULT_TYPE: Final = "failure"

#: Columns of ``spot.failures()``, in order.
FAILURE_COLUMNS: Final = (
    "cache_key",
    "func_name",
    "version",
    "exc_type",
    "message",
    "attempts",
    "failed_at",
    "args",
)


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One call that failed for good: the last exception and how often it was tried.

    ``exc_type`` is the exception's qualified name (``"openai.RateLimitError"``,
    see :func:`exception_type_name`); ``failed_at`` is POSIX seconds (UTC);
    ``args`` a short JSON preview of the arguments, or ``None``. ``message``
    and ``args`` are cut to :data:`MAX_FAILURE_TEXT` characters.
    """

    cache_key: str
    func_name: str
    input_id: str
    version: str | None
    exc_type: str
    message: str
    attempts: int
    failed_at: float
    args: str | None = None

    def __post_init__(self) -> None:
        # Bounded here, so no backend can be handed an unbounded message.
        if len(self.message) > MAX_FAILURE_TEXT:
            object.__setattr__(self, "message", self.message[:MAX_FAILURE_TEXT])
        if self.args is not None and len(self.args) > MAX_FAILURE_TEXT:
            object.__setattr__(self, "args", self.args[:MAX_FAILURE_TEXT])


def failure_row(failure: FailureRecord) -> tuple[Any, ...]:
    """Every field of ``failure`` in declaration order: the SQL backends' row."""
    return tuple(getattr(failure, f.name) for f in dataclasses.fields(failure))


def exception_type_name(exc: BaseException) -> str:
    """``exc``'s class as users import it: ``ValueError``, ``openai.RateLimitError``.

    Private submodules (``openai._exceptions``) are dropped, since packages
    re-export their exceptions from the public parent.
    """
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    public: list[str] = []
    for part in module.split("."):
        if part.startswith("_"):
            break
        public.append(part)
    return ".".join([*(public or [module]), cls.__qualname__])


def _text(value: Any, *, optional: bool) -> str | None:
    if value is None:
        return None if optional else ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def checked_failure(
    cache_key: Any,
    func_name: Any,
    input_id: Any,
    version: Any,
    exc_type: Any,
    message: Any,
    attempts: Any,
    failed_at: Any,
    args: Any = None,
) -> FailureRecord | None:
    """A :class:`FailureRecord` from a stored row's raw fields, or ``None`` if unreadable.

    Backends call this where a row becomes a record. A row damaged by hand
    (a text where a number belongs) is coerced where it can be, and skipped
    where it cannot (no key, no time): one bad row never hides the others.
    """
    if not isinstance(cache_key, str) or not cache_key:
        return None
    try:
        seconds = float(failed_at)
        count = int(attempts)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(seconds):
        return None
    return FailureRecord(
        cache_key=cache_key,
        func_name=_text(func_name, optional=False) or "",
        input_id=_text(input_id, optional=False) or "",
        version=_text(version, optional=True),
        exc_type=_text(exc_type, optional=False) or "",
        message=_text(message, optional=False) or "",
        attempts=count,
        failed_at=seconds,
        args=_text(args, optional=True),
    )


# -- the default storage: a record under a reserved key ----------------------------------


def is_failure_key(key: object) -> bool:
    """Whether a record key is one the default failure storage uses."""
    return isinstance(key, str) and key.startswith(FAILURE_KEY_PREFIX)


def failure_record_key(cache_key: str) -> str:
    """The record key under which the default storage keeps ``cache_key``'s failure."""
    return FAILURE_KEY_PREFIX + cache_key


def record_of_failure(failure: FailureRecord) -> TaskRecord:
    """The record the default storage saves for ``failure`` (never expires)."""
    data = json.dumps(asdict(failure), ensure_ascii=False).encode()
    return TaskRecord(
        cache_key=failure_record_key(failure.cache_key),
        func_name=failure.func_name,
        input_id=failure.input_id,
        version=failure.version,
        result_type=FAILURE_RESULT_TYPE,
        content_type="application/json",
        result_data=data,
        size_bytes=len(data),
    )


def tombstone(row_key: str) -> TaskRecord:
    """What replaces a failure row on a backend without ``delete()``: no data, expired."""
    return TaskRecord(
        cache_key=row_key,
        func_name="",
        input_id="",
        version=None,
        result_type=FAILURE_RESULT_TYPE,
        content_type=None,
        expires_at=0.0,
    )


def failure_from_record(record: TaskRecord) -> FailureRecord | None:
    """The failure a default-storage row holds, or ``None`` (a tombstone, garbage)."""
    if not is_failure_key(record.cache_key) or not record.result_data:
        return None
    try:
        fields = json.loads(record.result_data)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    return checked_failure(
        record.cache_key.removeprefix(FAILURE_KEY_PREFIX),
        fields.get("func_name"),
        fields.get("input_id"),
        fields.get("version"),
        fields.get("exc_type"),
        fields.get("message"),
        fields.get("attempts"),
        fields.get("failed_at"),
        fields.get("args"),
    )


# -- the DataFrame ---------------------------------------------------------------------------


def failures_to_frame(failures: Iterable[FailureRecord]) -> pd.DataFrame:
    """``spot.failures()``'s frame: :data:`FAILURE_COLUMNS`, ``failed_at`` as aware UTC."""
    import numpy as np
    import pandas as pd

    from .db._history import to_ns

    rows = list(failures)
    columns: dict[str, Any] = {}
    for name in FAILURE_COLUMNS:
        values = [getattr(f, name) for f in rows]
        if name == "failed_at":
            ns = np.array([to_ns(v) for v in values], dtype=np.int64)
            columns[name] = pd.Series(ns.view("datetime64[ns]")).dt.tz_localize("UTC")
        elif name == "attempts":
            columns[name] = pd.Series(values, dtype="int64")
        else:
            columns[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(columns, columns=list(FAILURE_COLUMNS))
