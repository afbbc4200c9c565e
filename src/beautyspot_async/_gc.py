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
    from .db import TaskDB
    from .storage import BlobStorageBase

__all__ = ["DEFAULT_TEMP_GRACE", "GcReport", "collect_garbage", "orphan_blobs"]

logger = logging.getLogger("beautyspot_async")

#: Seconds a temp file must sit untouched before gc takes it for a dead write.
DEFAULT_TEMP_GRACE: Final = 3600.0


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one garbage collection found (and, unless a dry run, removed)."""

    #: Orphaned blob locations, sorted: deleted, or to delete in a dry run.
    orphans: list[str] = field(default_factory=list)
    #: ``(location, reason)`` of orphans the storage refused to delete.
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: Stale temp files of interrupted writes: removed, or to remove.
    temp_files: list[str] = field(default_factory=list)


def _cannot(storage: BlobStorageBase, action: str) -> ConfigurationError:
    return ConfigurationError(
        f"{type(storage).__name__} cannot {action} (it does not implement it), "
        "so gc cannot find orphaned blobs"
    )


async def _all_locations(storage: BlobStorageBase) -> list[str]:
    try:
        return [location async for location in storage.list_locations()]
    except NotImplementedError:
        raise _cannot(storage, "list its blobs") from None


async def _referenced(db: TaskDB) -> set[str]:
    found: set[str] = set()
    async for row in db.iter_records():
        # A custom backend may yield mappings of TaskRecord's fields.
        key = row.get("cache_key", "") if isinstance(row, Mapping) else ""
        record = as_record(row, key, backend=db.backend_name)
        if record is not None and record.result_type == BLOB and record.result_value:
            found.add(record.result_value)
    return found


async def orphan_blobs(spot: Spot) -> list[str]:
    """Locations in the Spot's blob storage that no record points at, sorted.

    Blobs are listed before records are read: a result being written right
    now stores its blob before its row, so its blob is either not listed yet
    or its row is already readable -- unless the write straddles both scans.
    """
    await spot.flush()
    await spot.open()
    locations = await io_loop.run(_all_locations, spot.storage)
    referenced = await io_loop.run(_referenced, spot.db)
    return sorted(set(locations) - referenced)


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
    now: float | None = None,
) -> GcReport:
    """Delete orphaned blobs and stale temp files; report what was found.

    With ``dry_run`` (the default) nothing is removed. Before deleting, the
    records are read a second time and any blob referenced by then is
    spared, which narrows the window in which a concurrent writer's fresh
    blob could be taken; should it happen anyway, the pipeline treats the
    missing blob as a miss and rewrites the entry. Orphans the storage
    refuses to delete (a location it does not recognise) are reported in
    :attr:`GcReport.refused` and the rest are still deleted. Temp files
    untouched for ``temp_grace`` seconds before ``now`` count as left by a
    killed write.
    """
    orphans = await orphan_blobs(spot)
    refused: list[tuple[str, str]] = []
    if not dry_run and orphans:
        referenced = await io_loop.run(_referenced, spot.db)
        doomed = [location for location in orphans if location not in referenced]
        orphans, refused = await io_loop.run(_delete_each, spot.storage, doomed)
    cutoff = (time.time() if now is None else now) - temp_grace
    temp_files = await io_loop.run(_remove_temp, spot.storage, cutoff, dry_run)
    return GcReport(orphans=orphans, refused=refused, temp_files=temp_files)


async def _remove_temp(storage: BlobStorageBase, cutoff: float, dry_run: bool) -> list[str]:
    return await storage.remove_stale_temp_files(older_than=cutoff, dry_run=dry_run)
