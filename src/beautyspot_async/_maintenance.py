"""Queries and maintenance over a Spot's stored results, for the CLI and the dashboard.

Two layers, kept apart:

* pure helpers over plain data (:class:`Summarizer`, :func:`find_orphans`,
  :func:`match_keys`), testable without an event loop or a backend;
* thin async functions over a :class:`~beautyspot_async.Spot` (:func:`summary`,
  :func:`history`, :func:`show`, :func:`delete`, :func:`purge_expired`,
  :func:`gc_blobs`...) that fetch the data through the Spot's task database
  and blob storage.

How the results are shown (previews, JSON shapes, times) is ``_display``'s;
garbage collection of blobs is ``_gc``'s.

Loop-bound backends (aiosqlite, asyncpg, redis.asyncio) belong to the Spot's
I/O loop, so every backend call here is sent there through
:data:`~beautyspot_async._portal.io_loop`; the functions can therefore be
awaited from any event loop, asyncio or trio. Nothing here speaks a backend's
query language: only the :class:`~beautyspot_async.db.TaskDB` and
:class:`~beautyspot_async.storage.BlobStorageBase` protocols.
"""

from __future__ import annotations

import dataclasses
import math
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._display import decode_lenient, render_preview
from ._failure import is_failure_key
from ._gc import GcReport, collect_garbage, orphan_blobs
from ._portal import io_loop
from ._record import BLOB, TaskRecord, as_record, parse_meta
from .exceptions import CacheCorruptedError, ConfigurationError

if TYPE_CHECKING:
    import pandas as pd

    from ._spot import Spot
    from .db import TaskDB

__all__ = [
    "Entry",
    "convert_layout",
    "FuncSummary",
    "GcReport",
    "Summarizer",
    "collect_garbage",
    "delete",
    "failures",
    "find_orphans",
    "gc_blobs",
    "history",
    "match_keys",
    "orphan_blobs",
    "purge_expired",
    "resolve_key",
    "show",
    "summary",
]

T = TypeVar("T")

#: Shortest prefix :func:`resolve_key` searches for; shorter ones match too much.
MIN_PREFIX: Final = 6


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


def overrides_get_meta(db: TaskDB) -> bool:
    """Whether ``db`` reads meta on its own (else ``get`` already returned it, or nothing)."""
    from .db._base import TaskDB as Base

    return type(db).get_meta is not Base.get_meta


async def _get(spot: Spot, cache_key: str) -> TaskRecord | None:
    if is_failure_key(cache_key):  # a failure kept among the records is no result
        return None
    found = await _on_io_loop(spot, spot.db.get, cache_key)
    record = as_record(found, cache_key, backend=spot.db.backend_name)
    # The shipped backends' get() leaves meta out (it is on the hit path).
    if record is not None and record.meta is None and overrides_get_meta(spot.db):
        meta = await _on_io_loop(spot, spot.db.get_meta, cache_key)
        record = replace(record, meta=parse_meta(meta))
    return record


async def _records(db: TaskDB) -> AsyncIterator[TaskRecord]:
    """``db.iter_records()``, mappings from a custom backend made records."""
    async for row in db.iter_records():
        key = row.get("cache_key", "") if isinstance(row, Mapping) else ""
        record = as_record(row, key, backend=db.backend_name)
        # A backend on TaskDB's default failure storage keeps failures among
        # its records: they are no stored results.
        if record is not None and not is_failure_key(record.cache_key):
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
        from .db._history import records_to_frame, with_meta_columns

        return with_meta_columns(records_to_frame([]))
    if func_name is None:
        return await spot.history(limit=limit)
    frame = await spot.history(limit=2**62)
    matching = frame["func_name"].map(lambda name: func_matches(str(name), func_name))
    return frame[matching.astype(bool)].head(limit).reset_index(drop=True)


def func_matches(func_name: str, query: str) -> bool:
    """Whether ``query`` names ``func_name``: the identity, or its bare last part.

    ``ask`` names ``__main__.ask`` and ``app.llm.ask``; ``llm.ask`` names the
    latter. Lets the CLI take the name a user typed in their script.
    """
    return func_name == query or func_name.endswith("." + query)


async def failures(spot: Spot, *, limit: int = 1000, func_name: str | None = None) -> pd.DataFrame:
    """``spot.failures(func_name, limit)``; a store never created has none."""
    if not await _readable(spot):
        from ._failure import failures_to_frame

        return failures_to_frame([])
    return await spot.failures(func_name, limit=limit)


async def purge_expired(spot: Spot, now: float | None = None) -> int:
    """Delete the records expired at ``now`` (default: the database's clock).

    Returns how many rows were removed. Their blobs, if any, become orphans
    that :func:`gc_blobs` collects.
    """
    await spot.flush()
    removed: int = await _on_io_loop(spot, spot.db.delete_expired, now)
    return removed


async def convert_layout(spot: Spot) -> bool | None:
    """Convert an older release's SQLite file to the current table layout.

    Returns True when it converted, False when the file was already
    current, None when the task database is not SQLite (nothing to do).
    """
    from .db import SQLiteTaskDB

    db = spot.db
    if not isinstance(db, SQLiteTaskDB):
        return None
    await spot.flush()
    converted: bool = await _on_io_loop(spot, db.convert_layout)
    return converted


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
    """Delete the record under ``cache_key`` and its blob; return whether it existed."""
    if is_failure_key(cache_key):  # a failure kept among the records is no result
        return False
    return await spot._engine.invalidate([cache_key]) > 0


@dataclass(frozen=True, slots=True)
class Stored:
    """What selecting entries to invalidate needs of one: no payload."""

    cache_key: str
    func_name: str
    version: str | None
    created_at: float


async def _stored(spot: Spot) -> list[Stored]:
    """Every stored entry, read from the history (payloads are never loaded)."""
    frame = await spot.history(limit=2**62)
    entries = []
    for row in frame.to_dict("records"):
        version = row.get("version")
        created = row.get("created_at")
        entries.append(
            Stored(
                cache_key=str(row["cache_key"]),
                func_name=str(row["func_name"]),
                version=version if isinstance(version, str) else None,
                created_at=_timestamp(created),
            )
        )
    return entries


def _timestamp(value: Any) -> float:
    try:
        return float(value.timestamp())
    except (AttributeError, TypeError, ValueError):  # None, NaT: no usable time
        return math.nan


def selected(
    entry: Stored,
    *,
    func_name: str | None,
    version: str | None,
    current_version: str | None,
    created_before: float | None,
) -> bool:
    """Whether ``entry`` matches the filters of ``spot.invalidate`` (see there)."""
    if func_name is not None and entry.func_name != func_name:
        return False
    if version == "stale":
        if entry.version == current_version:
            return False
    elif version is not None and entry.version != version:
        return False
    return created_before is None or entry.created_at < created_before


async def invalidate(
    spot: Spot,
    *,
    func: str | None,
    version: str | None,
    created_before: float | None,
    dry_run: bool,
) -> list[str]:
    """The CLI's ``invalidate``: the keys matching the filters, deleted unless ``dry_run``.

    ``func`` is an identity or a bare function name; ``version="stale"`` is
    every version of a function but the one it stored last.
    """
    if not await _readable(spot):
        return []
    entries = [e for e in await _stored(spot) if func is None or func_matches(e.func_name, func)]
    # The CLI cannot import the function: "stale" keeps each function's newest version.
    newest: dict[str, Stored] = {}
    for e in entries:
        if e.func_name not in newest or e.created_at > newest[e.func_name].created_at:
            newest[e.func_name] = e
    keys = [
        e.cache_key
        for e in entries
        if selected(
            e,
            func_name=None,
            version=version,
            current_version=newest[e.func_name].version,
            created_before=created_before,
        )
    ]
    if not dry_run:
        await spot._engine.invalidate(keys)
    return keys


async def select_keys(
    spot: Spot,
    *,
    func_name: str | None,
    version: str | None,
    current_version: str | None,
    created_before: float | None,
) -> list[str]:
    """The stored keys matching the filters of ``spot.invalidate``."""
    return [
        e.cache_key
        for e in await _stored(spot)
        if selected(
            e,
            func_name=func_name,
            version=version,
            current_version=current_version,
            created_before=created_before,
        )
    ]
