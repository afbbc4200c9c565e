"""The statements both SQLite write paths run: aiosqlite's thread and the caller's thread."""

from __future__ import annotations

from typing import Any, Final

from beautyspot_async._record import RECORD_COLUMNS, TaskRecord, meta_text, written_values

__all__ = ["ACQUIRE_LEASE", "RELEASE_LEASE", "SELECT_RECORD", "UPSERT", "upsert_row"]

SELECT_RECORD: Final = ", ".join(RECORD_COLUMNS)

# created_at survives an overwrite, unless it is no number at all: a rewrite
# must repair a row that checked_record rejected.
UPSERT: Final = f"""
    INSERT INTO tasks ({SELECT_RECORD}, meta) VALUES ({", ".join("?" * (len(RECORD_COLUMNS) + 1))})
    ON CONFLICT (cache_key) DO UPDATE SET
        {", ".join(f"{c} = excluded.{c}" for c in RECORD_COLUMNS[1:] if c != "created_at")},
        meta = excluded.meta,
        created_at = CASE WHEN typeof(tasks.created_at) IN ('real', 'integer')
            THEN tasks.created_at ELSE excluded.created_at END
"""

# One statement: SQLite's write lock makes the check-and-take atomic across
# processes. rowcount is 0 when the conflict clause's WHERE fails.
ACQUIRE_LEASE: Final = """
    INSERT INTO leases (cache_key, owner, expires_at) VALUES (?, ?, ?)
    ON CONFLICT (cache_key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE leases.owner = excluded.owner OR leases.expires_at <= ?
"""

RELEASE_LEASE: Final = "DELETE FROM leases WHERE cache_key = ? AND owner = ?"


def upsert_row(r: TaskRecord, now: float) -> tuple[Any, ...]:
    """An upsert's parameters; both timestamps are ``now`` (the upsert keeps created_at)."""
    return (*written_values(r), now, now, meta_text(r.meta))
