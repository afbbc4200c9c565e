# Over 500 lines: the pure helpers and the thin async shell over them read as one unit.
"""Maintenance over a Spot's stored results: what the CLI and the dashboard use.

Two layers, kept apart:

* pure helpers over plain data (:class:`Summarizer`, :func:`find_orphans`,
  :func:`match_keys`, :func:`decode_lenient`, :func:`to_jsonable`,
  :func:`render_preview`), testable without an event loop or a backend;
* thin async functions over a :class:`~beautyspot_async.Spot` that fetch the
  data through the Spot's task database and blob storage.

Loop-bound backends (aiosqlite, asyncpg, redis.asyncio) belong to the Spot's
I/O loop, so every backend call here is sent there through
:data:`~beautyspot_async._portal.io_loop`; the functions can therefore be
awaited from any event loop, asyncio or trio. Nothing here speaks a backend's
query language: only the :class:`~beautyspot_async.db.TaskDB` and
:class:`~beautyspot_async.storage.BlobStorageBase` protocols.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Final, TypeVar
from uuid import UUID

import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs

from ._gc import GcReport, collect_garbage, orphan_blobs
from ._portal import io_loop
from ._record import BLOB, TaskRecord, as_record
from .exceptions import CacheCorruptedError, ConfigurationError
from .serializer import MAX_DEPTH, MsgpackSerializer

if TYPE_CHECKING:
    import pandas as pd

    from ._spot import Spot
    from .db import TaskDB
    from .serializer import Serializer

__all__ = [
    "Entry",
    "FuncSummary",
    "GcReport",
    "Summarizer",
    "UnknownExt",
    "collect_garbage",
    "decode_lenient",
    "delete",
    "entry_json",
    "find_orphans",
    "gc_blobs",
    "history",
    "history_rows",
    "iso_time",
    "match_keys",
    "orphan_blobs",
    "purge_expired",
    "render_preview",
    "resolve_key",
    "show",
    "summary",
    "summary_json",
    "to_jsonable",
]

T = TypeVar("T")

# The serializer's documented container encodings (its RESERVED_CODES table):
# decoded here by hand so that one unknown item inside a tuple or set does not
# hide the rest of the container.
_TUPLE: Final = 112
_SET: Final = 113
_FROZENSET: Final = 114

#: Shortest prefix :func:`resolve_key` searches for; shorter ones match too much.
MIN_PREFIX: Final = 4


# -- pure: per-function summary -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FuncSummary:
    """What one function has stored. Timestamps are POSIX seconds (UTC)."""

    func_name: str
    entries: int
    inline: int
    blobs: int
    size_bytes: int
    expired: int
    oldest: float | None
    newest: float | None


@dataclass(slots=True)
class _Tally:
    entries: int = 0
    inline: int = 0
    blobs: int = 0
    size_bytes: int = 0
    expired: int = 0
    oldest: float | None = None
    newest: float | None = None


class Summarizer:
    """Fold records into per-function counts, one record at a time.

    ``now`` decides which records count as expired. Memory grows with the
    number of functions, not of records.
    """

    def __init__(self, now: float) -> None:
        self._now = now
        self._tallies: dict[str, _Tally] = {}

    def add(self, record: TaskRecord) -> None:
        tally = self._tallies.setdefault(record.func_name, _Tally())
        tally.entries += 1
        if record.result_type == BLOB:
            tally.blobs += 1
        else:
            tally.inline += 1
        tally.size_bytes += record.size_bytes
        if record.is_expired(self._now):
            tally.expired += 1
        if tally.oldest is None or record.created_at < tally.oldest:
            tally.oldest = record.created_at
        if tally.newest is None or record.updated_at > tally.newest:
            tally.newest = record.updated_at

    def result(self) -> list[FuncSummary]:
        """The summaries, sorted by function name."""
        return [
            FuncSummary(func_name=name, **dataclasses.asdict(tally))
            for name, tally in sorted(self._tallies.items())
        ]


# -- pure: keys and blobs -----------------------------------------------------------------


def find_orphans(locations: Iterable[str], referenced: Iterable[str]) -> list[str]:
    """The ``locations`` that no record references, sorted."""
    used = set(referenced)
    return sorted({loc for loc in locations if loc not in used})


def match_keys(keys: Iterable[str], prefix: str) -> list[str]:
    """The keys starting with ``prefix`` (case-insensitive), sorted."""
    wanted = prefix.lower()
    return sorted(k for k in keys if k.lower().startswith(wanted))


# -- pure: decoding and previews ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnknownExt:
    """Stands in for a msgpack extension value the serializer cannot decode."""

    code: int
    size: int

    def __repr__(self) -> str:
        return f"<unknown msgpack ext code {self.code}, {self.size} bytes>"


def decode_lenient(serializer: Serializer, data: bytes) -> tuple[Any, str | None]:
    """Decode ``data`` with ``serializer``; never raise.

    Returns ``(value, problem)``. ``problem`` is ``None`` for a clean decode.
    When the serializer refuses the data (typically an ext code registered in
    the program that wrote it but not here), the data is decoded again as
    plain msgpack with each undecodable extension replaced by an
    :class:`UnknownExt`, and ``problem`` says why. When even that fails,
    ``value`` is ``None``.
    """
    try:
        return serializer.loads(data), None
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"

    level = 0

    def ext_hook(code: int, payload: bytes) -> Any:
        # Bounded like the serializer's own decoding: each nested level is a
        # nested msgpack call on the C stack (see MAX_DEPTH).
        nonlocal level
        if level >= MAX_DEPTH:
            return UnknownExt(code, len(payload))
        if code in (_TUPLE, _SET, _FROZENSET):
            level += 1
            try:
                items = msgpack.unpackb(payload, ext_hook=ext_hook, strict_map_key=False, raw=False)
            finally:
                level -= 1
            if code == _TUPLE:
                return tuple(items)
            try:
                return frozenset(items) if code == _FROZENSET else set(items)
            except TypeError:  # an unhashable stand-in item: show the items anyway
                return list(items)
        try:
            if isinstance(serializer, MsgpackSerializer):
                return serializer._decode_ext(code, payload, level)
            return serializer.loads(msgpack.packb(msgpack.ExtType(code, payload)))
        except Exception:
            return UnknownExt(code, len(payload))

    try:
        value = msgpack.unpackb(data, ext_hook=ext_hook, strict_map_key=False, raw=False)
    except Exception as exc:
        return None, f"{problem} (not readable as msgpack either: {type(exc).__name__})"
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


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored result, as :func:`show` reports it.

    ``value`` is the decoded result, with :class:`UnknownExt` stand-ins for
    extension types this process cannot decode. ``problem`` is ``None`` when
    the payload loaded and decoded cleanly, else what went wrong (a missing
    blob, an unknown ext code, garbage bytes).
    """

    record: TaskRecord
    value: Any = None
    problem: str | None = None
    payload_size: int | None = None

    def preview(self, max_chars: int = 4000) -> str:
        """The value rendered by :func:`render_preview`."""
        return render_preview(self.value, max_chars=max_chars)


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
        "value": to_jsonable(entry.value),
        "preview": entry.preview(max_chars),
    }


# -- the async shell -------------------------------------------------------------------------


async def _on_io_loop(spot: Spot, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Open the Spot's backends, then run ``fn(*args)`` on its I/O loop."""
    await spot.open()
    return await io_loop.run(fn, *args)


#: Spots whose store is known to exist, so the dashboard asks only once.
_initialised: weakref.WeakSet[Spot] = weakref.WeakSet()


async def _store_exists(db: TaskDB) -> bool:
    if await db.schema_exists():
        return True
    await db.aclose()  # opened only to ask; the Spot will not close it
    return False


async def _readable(spot: Spot) -> bool:
    """Open ``spot`` for a read-only look, unless its store was never created.

    Read-only commands must not create a schema, tables or keys just by
    looking (``init_schema`` would): a store that does not exist yet simply
    has nothing to show.
    """
    if spot not in _initialised:
        if not await io_loop.run(_store_exists, spot.db):
            return False
        _initialised.add(spot)
    await spot.open()
    return True


async def _get(spot: Spot, cache_key: str) -> TaskRecord | None:
    found = await _on_io_loop(spot, spot.db.get, cache_key)
    return as_record(found, cache_key, backend=spot.db.backend_name)


async def _records(db: TaskDB) -> AsyncIterator[TaskRecord]:
    """``db.iter_records()``, mappings from a custom backend made records."""
    async for row in db.iter_records():
        key = row.get("cache_key", "") if isinstance(row, Mapping) else ""
        record = as_record(row, key, backend=db.backend_name)
        if record is not None:
            yield record


async def _summarize(db: TaskDB, now: float) -> list[FuncSummary]:
    tally = Summarizer(now)
    async for record in _records(db):
        tally.add(record)
    return tally.result()


async def _all_keys(db: TaskDB) -> list[str]:
    return [r.cache_key async for r in _records(db)]


async def summary(spot: Spot, *, now: float | None = None) -> list[FuncSummary]:
    """Per-function counts, bytes and oldest/newest times, sorted by name.

    ``expired`` counts the records past their expiry at ``now`` (default:
    the current time). Walks every record with ``TaskDB.iter_records``.
    """
    await spot.flush()
    if not await _readable(spot):
        return []
    return await _on_io_loop(spot, _summarize, spot.db, time.time() if now is None else now)


async def history(spot: Spot, *, limit: int = 1000, func_name: str | None = None) -> pd.DataFrame:
    """``spot.history(limit)``, optionally only the rows of ``func_name``.

    With ``func_name`` the newest ``limit`` rows *of that function* are
    returned (the whole history is read, without payloads, and filtered).
    A store that was never created has an empty history.
    """
    if not await _readable(spot):
        from .db._history import records_to_frame

        return records_to_frame([])
    if func_name is None:
        return await spot.history(limit=limit)
    frame = await spot.history(limit=2**62)
    return frame[frame["func_name"] == func_name].head(limit).reset_index(drop=True)


async def purge_expired(spot: Spot, now: float | None = None) -> int:
    """Delete the records expired at ``now`` (default: the database's clock).

    Returns how many rows were removed. Their blobs, if any, become orphans
    that :func:`gc_blobs` collects.
    """
    await spot.flush()
    removed: int = await _on_io_loop(spot, spot.db.delete_expired, now)
    return removed


async def gc_blobs(spot: Spot, *, dry_run: bool = True) -> list[str]:
    """Delete the blobs no record points at; return their locations.

    :func:`collect_garbage` without the temp files: orphans the storage
    refuses to delete are logged and left out of the result.
    """
    report = await collect_garbage(spot, dry_run=dry_run, temp_grace=math.inf)
    return report.orphans


async def resolve_key(spot: Spot, key_or_prefix: str) -> list[str]:
    """The stored keys ``key_or_prefix`` names: itself when stored, else by prefix.

    An exact key is one lookup; a prefix (at least :data:`MIN_PREFIX`
    characters) walks every record. Returns all matches, sorted, so callers
    can report ambiguity.
    """
    if not await _readable(spot):
        return []
    record = await _get(spot, key_or_prefix)
    if record is not None:
        return [record.cache_key]
    if len(key_or_prefix) < MIN_PREFIX:
        return []
    return match_keys(await io_loop.run(_all_keys, spot.db), key_or_prefix)


async def show(spot: Spot, cache_key: str) -> Entry | None:
    """The record stored under ``cache_key`` and its decoded value, or ``None``.

    The payload is loaded (from the row or the blob storage) and decoded with
    the Spot's serializer. Nothing about the payload raises: a missing blob,
    garbage bytes or an unknown ext code are reported in
    :attr:`Entry.problem`. Backend failures (a database or storage that is
    down) do raise, as :class:`~beautyspot_async.BackendError`.
    """
    await spot.flush()
    if not await _readable(spot):
        return None
    record = await _get(spot, cache_key)
    if record is None:
        return None
    try:
        payload = await _load_payload(spot, record)
    except (CacheCorruptedError, ConfigurationError) as exc:
        return Entry(record=record, problem=f"payload unavailable: {exc}")
    value, problem = decode_lenient(spot.serializer, payload)
    if record.problem is not None:  # wrongly typed fields: the pipeline will rewrite it
        problem = record.problem if problem is None else f"{record.problem}; {problem}"
    return Entry(record=record, value=value, problem=problem, payload_size=len(payload))


async def _load_payload(spot: Spot, record: TaskRecord) -> bytes:
    if record.result_type == BLOB:
        if not record.result_value:
            raise CacheCorruptedError(f"blob record {record.cache_key} has no location")
        data: bytes = await io_loop.run(spot.storage.load, record.result_value)
        return data
    if record.result_data is None:
        raise CacheCorruptedError(f"record {record.cache_key} has no payload")
    return record.result_data


async def delete(spot: Spot, cache_key: str) -> bool:
    """Delete the record under ``cache_key`` and its blob; return whether it existed.

    The row goes first, so no row ever points at a deleted blob; a blob left
    behind by a crash in between is an orphan for :func:`gc_blobs`.
    """
    await spot.flush()
    record = await _get(spot, cache_key)
    existed: bool = await io_loop.run(spot.db.delete, cache_key)
    _forget_in_memory(spot, cache_key)
    if record is not None and record.result_type == BLOB and record.result_value:
        await io_loop.run(spot.storage.delete, record.result_value)
    return existed


def _forget_in_memory(spot: Spot, cache_key: str) -> None:
    # The Spot's in-process memory tier would keep answering a deleted key
    # for the rest of the process. It has no public eviction yet, so reach
    # for it defensively; a missing attribute just means nothing to evict.
    forget = getattr(getattr(spot, "_engine", None), "forget", None)
    if callable(forget):
        forget(cache_key)
