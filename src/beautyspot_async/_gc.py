"""Garbage collection of blob storage: orphaned blobs and stale temp files.

A blob is an orphan when no record points at it (its row was deleted or
expired, or a crash fell between the blob write and the row write). A temp
file is stale when a write was killed before its rename and the file has not
been touched for a grace period. Both are found through the
:class:`~beautyspot_async.storage.BlobStorageBase` protocol only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ._portal import io_loop
from ._record import BLOB, as_record
from .exceptions import CacheCorruptedError, ConfigurationError

if TYPE_CHECKING:
    from ._spot import Spot
    from .db import EvictionCandidate, TaskDB
    from .storage import BlobStorageBase

__all__ = [
    "DEFAULT_ORPHAN_GRACE",
    "DEFAULT_TEMP_GRACE",
    "GcReport",
    "collect_garbage",
    "orphan_blobs",
]

logger = logging.getLogger("beautyspot_async")

#: Seconds a temp file must sit untouched before gc takes it for a dead write.
DEFAULT_TEMP_GRACE: Final = 3600.0
#: Seconds an orphaned blob is kept: its row may be on its way (an upload in progress).
DEFAULT_ORPHAN_GRACE: Final = 3600.0


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one garbage collection found (and, unless a dry run, removed)."""

    #: Orphaned blob locations, sorted: deleted, or to delete in a dry run.
    orphans: list[str] = field(default_factory=list)
    #: ``(location, reason)`` of orphans the storage refused to delete.
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: Stale temp files of interrupted writes: removed, or to remove.
    temp_files: list[str] = field(default_factory=list)
    #: ``(cache_key, size_bytes)`` of entries evicted by ``max_age``/``max_bytes``
    #: (with their blobs), least recently used first: deleted, or to delete.
    evicted: list[tuple[str, int]] = field(default_factory=list)
    #: Orphans younger than the grace period, left alone.
    young_orphans: int = 0


def _cannot(storage: BlobStorageBase, action: str) -> ConfigurationError:
    return ConfigurationError(
        f"{type(storage).__name__} cannot {action} (it does not implement it), "
        "so gc cannot find orphaned blobs"
    )


async def _referenced(db: TaskDB) -> set[str]:
    found: set[str] = set()
    async for row in db.iter_records():
        # A custom backend may yield mappings of TaskRecord's fields.
        key = row.get("cache_key", "") if isinstance(row, Mapping) else ""
        record = as_record(row, key, backend=db.backend_name)
        if record is not None and record.result_type == BLOB and record.result_value:
            found.add(record.result_value)
    return found


async def orphan_blobs(spot: Spot, *, grace: float = 0.0, now: float | None = None) -> list[str]:
    """Locations in the Spot's blob storage that no record points at, sorted.

    Blobs are listed before records are read: a result being written right
    now stores its blob before its row, so its blob is either not listed yet
    or its row is already readable -- unless the write straddles both scans.
    With a ``grace`` (seconds), blobs modified less than that before ``now``
    are left out: the row of a blob being uploaded is not written yet.
    """
    return (await _orphans(spot, grace, now))[0]


async def _orphans(spot: Spot, grace: float, now: float | None) -> tuple[list[str], int]:
    """(old orphans, sorted; how many younger ones were spared)."""
    await spot.flush()
    await spot.open()
    listed = await io_loop.run(_all_blobs, spot.storage)
    referenced = await io_loop.run(_referenced, spot.db)
    cutoff = (time.time() if now is None else now) - grace
    orphans: list[str] = []
    young = 0
    for location, modified in listed:
        if location in referenced:
            continue
        # Unknown age counts as old: a storage that cannot tell keeps the
        # behaviour it had before grace periods (see BlobStorageBase.list_blobs).
        if modified is not None and grace > 0 and modified > cutoff:
            young += 1
        else:
            orphans.append(location)
    return sorted(orphans), young


async def _all_blobs(storage: BlobStorageBase) -> list[tuple[str, float | None]]:
    try:
        return [blob async for blob in storage.list_blobs()]
    except NotImplementedError:
        raise _cannot(storage, "list its blobs") from None


async def _delete_each(
    storage: BlobStorageBase, locations: list[str]
) -> tuple[list[str], list[tuple[str, str]]]:
    deleted: list[str] = []
    refused: list[tuple[str, str]] = []
    for location in locations:
        try:
            await storage.delete(location)
        except NotImplementedError:
            raise _cannot(storage, "delete blobs") from None
        except (ConfigurationError, CacheCorruptedError) as exc:
            # One entry the storage will not touch must not stop the rest.
            logger.warning("gc: %s refused to delete %r: %s", storage, location, exc)
            refused.append((location, str(exc)))
        else:
            deleted.append(location)
    return deleted, refused


async def collect_garbage(
    spot: Spot,
    *,
    dry_run: bool = True,
    temp_grace: float = DEFAULT_TEMP_GRACE,
    orphan_grace: float = DEFAULT_ORPHAN_GRACE,
    max_bytes: int | None = None,
    max_age: float | None = None,
    now: float | None = None,
) -> GcReport:
    """Evict over-budget entries, delete orphaned blobs and stale temp files; report them.

    With ``dry_run`` (the default) nothing is removed. First, entries not
    used (hit or written) for ``max_age`` seconds go, then least recently
    used ones until the store holds at most ``max_bytes``; each with its
    blob (:attr:`GcReport.evicted`). Then orphans: blobs no record points
    at that are older than ``orphan_grace`` seconds -- a younger one may be
    an upload whose row is not written yet. Before deleting, the records are
    read a second time and any blob referenced by then is spared, which
    narrows the window in which a concurrent writer's fresh blob could be
    taken; should it happen anyway, the pipeline treats the missing blob as
    a miss and rewrites the entry. Orphans the storage refuses to delete (a
    location it does not recognise) are reported in :attr:`GcReport.refused`
    and the rest are still deleted. Temp files untouched for ``temp_grace``
    seconds before ``now`` count as left by a killed write.
    """
    at = time.time() if now is None else now
    evicted: list[tuple[str, int]] = []
    if max_bytes is not None or max_age is not None:
        await spot.flush()
        await spot.open()
        evicted = await io_loop.run(_evict, spot, max_bytes, max_age, at, dry_run)
    orphans, young = await _orphans(spot, orphan_grace, at)
    refused: list[tuple[str, str]] = []
    if not dry_run and orphans:
        referenced = await io_loop.run(_referenced, spot.db)
        doomed = [location for location in orphans if location not in referenced]
        orphans, refused = await io_loop.run(_delete_each, spot.storage, doomed)
    cutoff = at - temp_grace
    temp_files = await io_loop.run(_remove_temp, spot.storage, cutoff, dry_run)
    return GcReport(
        orphans=orphans,
        refused=refused,
        temp_files=temp_files,
        evicted=evicted,
        young_orphans=young,
    )


async def _evict(
    spot: Spot, max_bytes: int | None, max_age: float | None, now: float, dry_run: bool
) -> list[tuple[str, int]]:
    store = spot._engine.store
    entries, total = await store.usage_totals()
    # All of them, in one ordered read: a dry run cannot page by deleting.
    candidates = await store.eviction_candidates(entries)
    doomed: list[EvictionCandidate] = []
    for candidate in candidates:
        too_old = max_age is not None and candidate.used_at < now - max_age
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            break  # least recently used first: the rest are newer and fit
        doomed.append(candidate)
        total -= max(candidate.size_bytes, 0)
    if doomed and not dry_run:
        await spot._engine.budget.evict(doomed)
    return [(c.cache_key, c.size_bytes) for c in doomed]


async def _remove_temp(storage: BlobStorageBase, cutoff: float, dry_run: bool) -> list[str]:
    return await storage.remove_stale_temp_files(older_than=cutoff, dry_run=dry_run)
