"""Display of stored results for the CLI and the dashboard: pure, never raises.

How a stored value is shown to a person: a lenient decode that survives
extension types this process cannot read (:func:`decode_lenient`), a bounded
JSON-compatible rendering (:func:`to_jsonable`, :func:`render_preview`), and
the JSON shapes the CLI's ``--json`` output and the dashboard's API share
(times as ISO text, sizes as ints). Everything here works on plain data; the
queries that fetch it live in ``_maintenance``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePath
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs

from ._codecs import FROZENSET_CODE, MAX_DEPTH, NAMED_CODE, SET_CODE, TUPLE_CODE
from ._record import BLOB
from .serializer import MsgpackSerializer

if TYPE_CHECKING:
    import pandas as pd

    from ._maintenance import Entry, FuncSummary
    from .serializer import Serializer

__all__ = [
    "UnknownExt",
    "decode_lenient",
    "entry_json",
    "failure_rows",
    "history_rows",
    "iso_time",
    "render_preview",
    "summary_json",
    "to_jsonable",
]

# -- pure: decoding and previews ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnknownExt:
    """Stands in for a msgpack extension value the serializer cannot decode."""

    code: int
    size: int

    def __repr__(self) -> str:
        return f"<unknown msgpack ext code {self.code}, {self.size} bytes>"


@dataclass(frozen=True, slots=True)
class NamedValue:
    """Stands in for a value of a class known by name that this process does not know."""

    name: str
    data: Any


def decode_lenient(serializer: Serializer, data: bytes) -> tuple[Any, str | None]:
    """Decode ``data`` with ``serializer``; never raise.

    Returns ``(value, problem)``. ``problem`` is ``None`` for a clean decode.
    When the serializer refuses the data (typically an ext code registered in
    the program that wrote it but not here), the data is decoded again as
    plain msgpack with each undecodable extension replaced by an
    :class:`UnknownExt`, and ``problem`` says why. A value of a class stored
    by name that this process does not know is shown as a :class:`NamedValue`
    (its name and plain data), which is no problem. When even that fails,
    ``value`` is ``None``.
    """
    try:
        return serializer.loads(data), None
    except Exception as exc:
        # A class known by name elsewhere but not here is no problem for a
        # viewer: its data is plain and shown as such (with its name).
        named_only = getattr(exc, "type_name", None) is not None
        problem: str | None = None if named_only else f"{type(exc).__name__}: {exc}"

    level = 0

    def ext_hook(code: int, payload: bytes) -> Any:
        # Bounded like the serializer's own decoding: each nested level is a
        # nested msgpack call on the C stack (see MAX_DEPTH). The containers
        # are decoded here by hand so that one unknown item inside a tuple or
        # set does not hide the rest of it.
        nonlocal level
        if level >= MAX_DEPTH:
            return UnknownExt(code, len(payload))
        if code in (TUPLE_CODE, SET_CODE, FROZENSET_CODE):
            level += 1
            try:
                items = msgpack.unpackb(payload, ext_hook=ext_hook, strict_map_key=False, raw=False)
            finally:
                level -= 1
            if code == TUPLE_CODE:
                return tuple(items)
            try:
                return frozenset(items) if code == FROZENSET_CODE else set(items)
            except TypeError:  # an unhashable stand-in item: show the items anyway
                return list(items)
        try:
            if isinstance(serializer, MsgpackSerializer):
                return serializer._decode_ext(code, payload, level)
            return serializer.loads(msgpack.packb(msgpack.ExtType(code, payload)))
        except Exception:
            pass
        if code == NAMED_CODE:
            # The class is not known here, but its data is plain: show it.
            level += 1
            try:
                item = msgpack.unpackb(payload, ext_hook=ext_hook, strict_map_key=False, raw=False)
            except Exception:
                item = None
            finally:
                level -= 1
            if type(item) is list and len(item) == 2 and type(item[0]) is str:
                return NamedValue(item[0], item[1])
        return UnknownExt(code, len(payload))

    try:
        value = msgpack.unpackb(data, ext_hook=ext_hook, strict_map_key=False, raw=False)
    except Exception as exc:
        why = problem or "cannot decode"
        return None, f"{why} (not readable as msgpack either: {type(exc).__name__})"
    return value, problem


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more chars)"


def _big_int_text(value: int) -> str:
    # Hex is exempt from the decimal conversion limit and costs linear time.
    digits = int(value.bit_length() * math.log10(2)) + 1
    head = hex(value)[: 18 if value < 0 else 17]
    return f"<int of about {digits} digits: {head}...>"


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def to_jsonable(
    value: Any,
    *,
    max_items: int = 50,
    max_depth: int = 6,
    max_str: int = 500,
) -> Any:
    """A JSON-compatible rendering of ``value`` for display; never raises.

    Containers show at most ``max_items`` items (a trailing marker says how
    many were left out) and nest at most ``max_depth`` levels. Tuples and sets
    become lists, non-string dict keys their ``repr``, bytes a short hex
    summary, dates ISO strings, anything else its (truncated) ``repr``. The
    result is for eyes, not for round trips.
    """

    def render(v: Any, depth: int) -> Any:
        try:
            return convert(v, depth)
        except Exception:  # a user type whose repr or accessors fail
            return f"<{type(v).__name__}: unrepresentable>"

    def more(total: int) -> str:
        return f"... {total - max_items} more"

    def convert(v: Any, depth: int) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, int):
            # Past ~4300 digits str() raises (CPython's int conversion limit),
            # and long before that the digits are no preview: summarise.
            return v if v.bit_length() <= max_str * 3 else _big_int_text(v)
        if isinstance(v, float):
            return v if math.isfinite(v) else repr(v)
        if isinstance(v, str):
            return _truncate(v, max_str)
        if isinstance(v, bytes | bytearray | memoryview):
            raw = bytes(v)
            head = raw[:16].hex()
            return f"<{len(raw)} bytes: {head}{'...' if len(raw) > 16 else ''}>"
        if isinstance(v, _dt.datetime | _dt.date | _dt.time):
            return v.isoformat()
        if isinstance(v, _dt.timedelta | Decimal | UUID | complex | PurePath):
            return str(v)
        if isinstance(v, enum.Enum):
            return f"{type(v).__qualname__}.{v.name}"
        if isinstance(v, UnknownExt):
            return repr(v)
        if isinstance(v, NamedValue):
            data = render(v.data, depth)
            return {"__type__": v.name, **(data if isinstance(data, dict) else {"value": data})}
        if depth >= max_depth:
            return _truncate(repr(v), max_str)
        if isinstance(v, Mapping):
            out: dict[str, Any] = {}
            for i, (k, item) in enumerate(v.items()):
                if i == max_items:
                    out["..."] = more(len(v))
                    break
                out[_key_text(k)] = render(item, depth + 1)
            return out
        if isinstance(v, list | tuple | set | frozenset):
            items = list(v) if isinstance(v, list | tuple) else sorted(v, key=repr)
            shown = [render(item, depth + 1) for item in items[:max_items]]
            if len(items) > max_items:
                shown.append(more(len(items)))
            return shown
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
            return {"__type__": type(v).__qualname__, **render(fields, depth)}
        dump = getattr(v, "model_dump", None)  # pydantic models
        if callable(dump):
            return {"__type__": type(v).__qualname__, **render(dump(), depth)}
        return _truncate(repr(v), max_str)

    return render(value, 0)


def render_preview(value: Any, *, max_chars: int = 4000) -> str:
    """``value`` as indented JSON text, cut at ``max_chars``; never raises."""
    text = json.dumps(to_jsonable(value), indent=2, ensure_ascii=False)
    return _truncate(text, max_chars)


# -- pure: JSON shapes shared by the CLI and the dashboard ----------------------------------


def _utc_iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(seconds, _dt.UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        # Past what datetime holds (year 9999): say so rather than fail the page.
        return "after 9999-12-31" if seconds > 0 else "before 0001-01-01"


def iso_time(value: Any) -> str | None:
    """A pandas timestamp as ISO text; ``None`` for ``None`` and ``NaT``."""
    if value is None or value != value:  # NaT, like NaN, is not equal to itself
        return None
    return str(value.isoformat())


def history_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """History rows as JSON-ready dicts: ISO timestamps, ``None`` for "never"."""
    rows: list[dict[str, Any]] = []
    for raw in frame.to_dict(orient="records"):
        row = {str(k): v for k, v in raw.items()}
        for column in ("created_at", "updated_at", "expires_at"):
            row[column] = iso_time(row[column])
        row["size_bytes"] = int(row["size_bytes"])
        rows.append(row)
    return rows


def failure_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Failure rows (``spot.failures()``) as JSON-ready dicts: ISO ``failed_at``."""
    rows: list[dict[str, Any]] = []
    for raw in frame.to_dict(orient="records"):
        row = {str(k): v for k, v in raw.items()}
        row["failed_at"] = iso_time(row["failed_at"])
        row["attempts"] = int(row["attempts"])
        rows.append(row)
    return rows


def stored_args(meta: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The argument previews kept in an entry's meta; None when it has none."""
    found = meta.get("args") if isinstance(meta, Mapping) else None
    if not isinstance(found, Mapping):
        return None
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in found.items()
    }


def args_line(args: Any, limit: int = 80) -> str:
    """Stored argument previews on one line (``name=preview, ...``), cut at ``limit``."""
    if not isinstance(args, Mapping) or not args:
        return "-"
    text = ", ".join(f"{k}={' '.join(str(v).split())}" for k, v in args.items())
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def summary_json(s: FuncSummary) -> dict[str, Any]:
    """One :class:`FuncSummary` as a JSON-ready dict (ISO timestamps)."""
    data = dataclasses.asdict(s)
    data["oldest"], data["newest"] = _utc_iso(s.oldest), _utc_iso(s.newest)
    return data


def entry_json(entry: Entry, *, max_chars: int = 4000) -> dict[str, Any]:
    """One :class:`Entry` as a JSON-ready dict.

    ``value`` is :func:`to_jsonable` of the decoded value (structured,
    bounded), ``preview`` the same rendered as text and cut at ``max_chars``.
    """
    r = entry.record
    return {
        "cache_key": r.cache_key,
        "func_name": r.func_name,
        "input_id": r.input_id,
        "version": r.version,
        "result_type": r.result_type,
        "content_type": r.content_type,
        "location": r.result_value if r.result_type == BLOB else None,
        "size_bytes": r.size_bytes,
        "created_at": _utc_iso(r.created_at),
        "updated_at": _utc_iso(r.updated_at),
        "expires_at": _utc_iso(r.expires_at),
        "problem": entry.problem,
        "args": stored_args(r.meta),
        "usage": (r.meta or {}).get("usage"),
        "value": to_jsonable(entry.value),
        "preview": entry.preview(max_chars),
    }
