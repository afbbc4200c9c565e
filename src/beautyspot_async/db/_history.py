"""Turn task-database rows into the history DataFrame.

Shared by every backend so that ``get_history`` has one shape everywhere:
exactly :data:`~beautyspot_async.db.HISTORY_COLUMNS`, text columns as
``object`` (``None`` stays ``None``), ``meta`` as dicts (or ``None``),
``size_bytes`` as ``int64`` and the three
timestamps as ``datetime64[ns, UTC]`` with ``NaT`` for "never expires".
Times past 2262-04-11 (the end of ``datetime64[ns]``) show as that date, and
a field that is not a number (a damaged row) as ``NaT`` or size 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from beautyspot_async._record import HISTORY_COLUMNS, TaskRecord, parse_meta

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TIMESTAMP_COLUMNS", "records_to_frame", "to_ns", "with_meta_columns"]

logger = logging.getLogger("beautyspot_async")

#: History columns holding POSIX seconds that become aware UTC datetimes.
TIMESTAMP_COLUMNS: Final = ("created_at", "updated_at", "expires_at")

_TEXT_COLUMNS: Final = tuple(
    c for c in HISTORY_COLUMNS if c not in TIMESTAMP_COLUMNS and c not in ("size_bytes", "meta")
)
# numpy's NaT is the smallest int64 when a datetime64 array is viewed as integers.
_NAT: Final = -(2**63)

HistoryRow: TypeAlias = TaskRecord | Mapping[str, Any] | Sequence[Any]


def _as_tuple(row: HistoryRow) -> tuple[Any, ...]:
    if isinstance(row, TaskRecord):
        return tuple(getattr(row, c) for c in HISTORY_COLUMNS)
    if isinstance(row, Mapping):
        # meta came after the other columns: a custom backend's rows may lack it.
        return tuple(row[c] if c != "meta" else row.get(c) for c in HISTORY_COLUMNS)
    if len(row) == len(HISTORY_COLUMNS) - 1 and HISTORY_COLUMNS[-1] == "meta":
        return (*row, None)
    if len(row) != len(HISTORY_COLUMNS):
        raise ValueError(
            f"a history row needs {len(HISTORY_COLUMNS)} values "
            f"in HISTORY_COLUMNS order, got {len(row)}"
        )
    return tuple(row)


# The last representable nanosecond (2262-04-11): later expiries are shown as
# this, since datetime64[ns] cannot hold them.
_MAX_NS: Final = 2**63 - 1
_MIN_NS: Final = -(2**63) + 1


def to_ns(seconds: Any) -> int:
    # Rounding to whole microseconds first keeps what a float of POSIX seconds
    # can actually carry; going straight to ns shows float noise (...123456001).
    # A row's field may hold anything (a damaged or hand-edited row): what is
    # not a number shows as NaT rather than failing the whole history.
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return _NAT
    try:
        value = float(seconds)
    except (TypeError, ValueError, OverflowError):
        logger.warning("history: unreadable timestamp %r shown as unknown", seconds)
        return _NAT
    if math.isnan(value):
        return _NAT
    if not -9.2e9 < value < 9.2e9:  # seconds beyond datetime64[ns], incl. +-inf
        return _MAX_NS if value > 0 else _MIN_NS
    return max(_MIN_NS, min(_MAX_NS, round(value * 1_000_000) * 1_000))


def _text(value: Any) -> Any:
    # Text that was not valid UTF-8 reaches us as bytes (see checked_record);
    # show it, replaced, rather than hand JSON writers a bytes object.
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    if value is not None:
        logger.warning("history: unreadable size_bytes %r shown as 0", value)
    return 0


def records_to_frame(rows: Iterable[HistoryRow]) -> pd.DataFrame:
    """Build the history frame from records or metadata rows.

    ``rows`` may hold :class:`TaskRecord` objects, mappings keyed by column
    name, or sequences in :data:`HISTORY_COLUMNS` order (what a SQL driver
    returns for ``SELECT <HISTORY_COLUMNS> ...``); timestamps are POSIX
    seconds or ``None``. Row order is kept. Payload fields of records are
    ignored, so callers should not fetch them in the first place. A value
    that cannot be read (a damaged row) becomes ``NaT`` or 0 with a warning,
    so one bad row never hides the others.
    """
    import numpy as np
    import pandas as pd

    tuples = [_as_tuple(r) for r in rows]
    columns: dict[str, Any] = {}
    for index, name in enumerate(HISTORY_COLUMNS):
        values = [t[index] for t in tuples]
        if name in TIMESTAMP_COLUMNS:
            ns = np.array([to_ns(v) for v in values], dtype=np.int64)
            columns[name] = pd.Series(ns.view("datetime64[ns]")).dt.tz_localize("UTC")
        elif name == "size_bytes":
            columns[name] = pd.Series([_size(v) for v in values], dtype="int64")
        elif name == "meta":
            columns[name] = pd.Series([parse_meta(v) for v in values], dtype=object)
        else:
            columns[name] = pd.Series([_text(v) for v in values], dtype=object)
    return pd.DataFrame(columns, columns=list(HISTORY_COLUMNS))


def with_meta_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``args`` and ``usage`` columns read from its ``meta`` column.

    A frame without ``meta`` (a custom backend's own) gets them as ``None``.
    """
    import pandas as pd

    metas = (
        [parse_meta(m) for m in frame["meta"]] if "meta" in frame.columns else [None] * len(frame)
    )
    frame = frame.copy()
    if "meta" not in frame.columns:
        frame["meta"] = pd.Series(metas, index=frame.index, dtype=object)
    frame["args"] = pd.Series(
        [m.get("args") if m else None for m in metas], index=frame.index, dtype=object
    )
    frame["usage"] = pd.Series(
        [m.get("usage") if m else None for m in metas], index=frame.index, dtype=object
    )
    return frame
