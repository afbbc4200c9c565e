"""Paged, filtered, searchable listing of a Spot's entries, for the dashboard.

Pure part: :func:`filter_history`, :func:`func_totals` and :func:`index_page`
work on the frames ``history()`` and ``failures()`` return, with vectorised
pandas operations, so a listing over 100 000 entries stays well under a
second and can be tested without a backend. Async part: :func:`browse` reads
the whole history (metadata only, never payloads) and the failures through
the maintenance layer and pages them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from . import _display as display

if TYPE_CHECKING:
    import pandas as pd

    from ._spot import Spot

__all__ = [
    "FuncTotals",
    "HistoryCache",
    "IndexPage",
    "IndexQuery",
    "STATUSES",
    "args_text",
    "browse",
    "filter_failures",
    "filter_history",
    "func_totals",
    "index_page",
]

#: The values of :attr:`IndexQuery.status`.
STATUSES: Final = ("ok", "expired", "failed")
#: Most rows one page may hold.
MAX_PER_PAGE: Final = 500


@dataclass(frozen=True, slots=True)
class IndexQuery:
    """What the index shows: filters, a search text, and which page.

    ``func`` is an identity or a bare function name (as the CLI takes it);
    ``status`` one of :data:`STATUSES`; ``search`` a case-insensitive
    substring of the stored argument previews, the key or the function name.
    Pages count from 1.
    """

    func: str | None = None
    version: str | None = None
    status: str | None = None
    search: str | None = None
    page: int = 1
    per_page: int = 50

    def __post_init__(self) -> None:
        # Query strings come from a browser: bad values are clamped, never raised.
        object.__setattr__(self, "per_page", min(max(self.per_page, 1), MAX_PER_PAGE))
        object.__setattr__(self, "page", max(self.page, 1))
        if self.status not in STATUSES:
            object.__setattr__(self, "status", None)
        for name in ("func", "version", "search"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value or "").strip() or None)


@dataclass(frozen=True, slots=True)
class FuncTotals:
    """One function's stored entries, bytes, expired entries and recorded failures."""

    func_name: str
    entries: int
    size_bytes: int
    expired: int
    failures: int


@dataclass(frozen=True, slots=True)
class IndexPage:
    """One page of the index.

    ``rows`` are :func:`~beautyspot_async._display.history_rows` dicts with a
    ``status`` and an ``args`` text added (failure rows carry ``exc_type``,
    ``message`` and ``attempts`` too). ``total`` counts every row matching
    the query, ``stored`` every entry in the store.
    """

    query: IndexQuery
    rows: list[dict[str, Any]]
    total: int
    stored: int
    totals: list[FuncTotals] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.query.per_page))

    @property
    def first(self) -> int:
        """1-based position of the page's first row (0 when empty)."""
        return (self.query.page - 1) * self.query.per_page + 1 if self.rows else 0


def args_text(value: Any) -> str:
    """Stored argument previews as one line: ``name=preview, ...``; "" when none.

    Accepts what the ``args`` columns hold: a mapping of names to previews,
    JSON text of one, or plain text.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if not isinstance(decoded, Mapping):
            return value
        value = decoded
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _func_mask(names: pd.Series, func: str) -> pd.Series:
    # func_matches(), vectorised: the identity, or its bare last part.
    return (names == func) | names.str.endswith("." + func, na=False)


def _search_mask(frame: pd.DataFrame, search: str) -> pd.Series:
    needle = search.lower()
    hay = frame["func_name"].astype(str) + "\n" + frame["cache_key"].astype(str)
    if "args" in frame.columns:
        hay = hay + "\n" + frame["args"].map(args_text)
    return hay.str.lower().str.contains(needle, regex=False, na=False)


def _expired_mask(frame: pd.DataFrame, now: float) -> pd.Series:
    import pandas as pd

    cutoff = pd.Timestamp(now, unit="s", tz="UTC")
    return frame["expires_at"].notna() & (frame["expires_at"] <= cutoff)


def filter_history(frame: pd.DataFrame, query: IndexQuery, now: float) -> pd.DataFrame:
    """The rows of a history frame matching ``query``'s filters and search.

    ``status="failed"`` keeps nothing: failures are not stored entries (see
    :func:`index_page`). Order is kept (newest first).
    """
    if query.status == "failed":
        return frame.iloc[0:0]
    mask = None

    def both(extra: pd.Series) -> None:
        nonlocal mask
        mask = extra if mask is None else mask & extra

    if query.func is not None:
        both(_func_mask(frame["func_name"].astype(str), query.func))
    if query.version is not None:
        both(frame["version"].astype(str) == query.version)
    if query.status is not None:
        expired = _expired_mask(frame, now)
        both(expired if query.status == "expired" else ~expired)
    if query.search is not None:
        both(_search_mask(frame, query.search))
    return frame if mask is None else frame[mask.to_numpy(dtype=bool)]


def filter_failures(frame: pd.DataFrame, query: IndexQuery) -> pd.DataFrame:
    """The rows of a failures frame matching ``query`` (status ignored)."""
    mask = None
    if query.func is not None:
        mask = _func_mask(frame["func_name"].astype(str), query.func)
    if query.version is not None:
        extra = frame["version"].astype(str) == query.version
        mask = extra if mask is None else mask & extra
    if query.search is not None:
        hay = (
            frame["func_name"].astype(str)
            + "\n"
            + frame["cache_key"].astype(str)
            + "\n"
            + frame["args"].map(args_text)
            + "\n"
            + frame["message"].astype(str)
        )
        extra = hay.str.lower().str.contains(query.search.lower(), regex=False, na=False)
        mask = extra if mask is None else mask & extra
    return frame if mask is None else frame[mask.to_numpy(dtype=bool)]


def func_totals(history: pd.DataFrame, failures: pd.DataFrame, now: float) -> list[FuncTotals]:
    """Per-function totals over the whole store, sorted by function name."""
    expired = _expired_mask(history, now)
    grouped = (
        history.assign(_expired=expired.astype("int64"))
        .groupby("func_name", sort=False)
        .agg(entries=("cache_key", "size"), size=("size_bytes", "sum"), exp=("_expired", "sum"))
    )
    failed = failures.groupby("func_name", sort=False).size() if len(failures) else None
    names = set(grouped.index.astype(str))
    if failed is not None:
        names |= set(failed.index.astype(str))
    out = []
    for name in sorted(names):
        row = grouped.loc[name] if name in grouped.index else None
        out.append(
            FuncTotals(
                func_name=name,
                entries=0 if row is None else int(row["entries"]),
                size_bytes=0 if row is None else int(row["size"]),
                expired=0 if row is None else int(row["exp"]),
                failures=0 if failed is None or name not in failed.index else int(failed[name]),
            )
        )
    return out


def _history_page(frame: pd.DataFrame, now: float) -> list[dict[str, Any]]:
    rows = display.history_rows(frame)
    expired = _expired_mask(frame, now).to_numpy(dtype=bool)
    for row, gone in zip(rows, expired, strict=True):
        row["status"] = "expired" if gone else "ok"
        row["args"] = args_text(row.get("args"))
    return rows


def _failure_page(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = display.failure_rows(frame)
    for row in rows:
        row["status"] = "failed"
        row["args"] = args_text(row.get("args"))
        row["updated_at"] = row["failed_at"]
    return rows


def index_page(
    history: pd.DataFrame, failures: pd.DataFrame, query: IndexQuery, now: float
) -> IndexPage:
    """The page of the index ``query`` asks for, over a whole history and failures.

    With ``status="failed"`` the rows are the recorded failures (calls that
    failed for good, whose key holds no entry); otherwise stored entries.
    A page past the end is empty, with the true total.
    """
    start = (query.page - 1) * query.per_page
    end = start + query.per_page
    if query.status == "failed":
        found = filter_failures(failures, query)
        rows = _failure_page(found.iloc[start:end])
    else:
        found = filter_history(history, query, now)
        rows = _history_page(found.iloc[start:end], now)
    versions = sorted({str(v) for v in history["version"].dropna().unique()})
    return IndexPage(
        query=query,
        rows=rows,
        total=len(found),
        stored=len(history),
        totals=func_totals(history, failures, now),
        versions=versions,
    )


#: Every row: the index pages over the whole store.
_ALL: Final = 2**62


class HistoryCache:
    """The last whole history read, reused while it is young and still current.

    Reading 100 000 rows costs about half a second on SQLite, far more than
    filtering them; a person paging and searching asks for the same rows
    again and again. A cached frame is reused for at most ``max_age``
    seconds (``clock`` is injectable), and only while the store's newest row
    is the one it was read with (a one-row query): a new or rewritten entry
    shows at once, a deletion by another process within ``max_age``.
    Whoever deletes through this process calls :meth:`clear`.
    """

    def __init__(self, max_age: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self._frame: pd.DataFrame | None = None
        self._newest: tuple[Any, ...] | None = None
        self._read_at = 0.0

    def clear(self) -> None:
        self._frame = None

    @staticmethod
    def _stamp(frame: pd.DataFrame) -> tuple[Any, ...]:
        if not len(frame):
            return ()
        first = frame.iloc[0]
        return (first["cache_key"], first["updated_at"])

    async def history(self, spot: Spot) -> pd.DataFrame:
        from . import _maintenance as maint

        now = self._clock()
        if self._frame is not None and now - self._read_at < self.max_age:
            newest = await maint.history(spot, limit=1)
            if self._stamp(newest) == self._newest:
                return self._frame
        frame = await maint.history(spot, limit=_ALL)
        self._frame, self._newest, self._read_at = frame, self._stamp(frame), now
        return frame


async def browse(
    spot: Spot,
    query: IndexQuery,
    *,
    now: float | None = None,
    cache: HistoryCache | None = None,
) -> IndexPage:
    """One page of ``spot``'s entries (or failures) matching ``query``.

    Reads the whole history without payloads (one query on the SQL backends;
    through ``cache`` when given) and every recorded failure, then filters
    and pages in memory.
    """
    from . import _maintenance as maint

    if cache is None:
        history = await maint.history(spot, limit=_ALL)
    else:
        history = await cache.history(spot)
    failures = await maint.failures(spot, limit=_ALL)
    return index_page(history, failures, query, time.time() if now is None else now)
