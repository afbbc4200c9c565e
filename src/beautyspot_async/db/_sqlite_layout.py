"""The result table's physical layout, and converting files written in the old one.

Until this release ``tasks`` was a ``WITHOUT ROWID`` table: the rows live in
the primary-key B-tree itself. That suits small rows, but a cached result is
usually a kilobyte or more, and such a B-tree keeps only about a kilobyte of
a row in its page and chains the rest into overflow pages. Inserting 10 000
rows of 2 KB took 41-47 us per row (and 14 MiB of WAL) against 11-12 us (4
MiB) for an ordinary rowid table with a unique index on ``cache_key``, and
reading them back in batches 7.5-9 us per row against 4.2.

The layout is invisible to SQL: every statement, ours and older releases',
reads and writes both the same way, so converting a file needs no schema
version bump and older releases keep working on it. A small file is
converted when it is opened (one transaction); a larger one would hold the
write lock for seconds, so it is kept as it is, with a log line pointing to
``beautyspot-async migrate``.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from beautyspot_async._record import RECORD_COLUMNS

__all__ = ["CONVERT_ON_OPEN_MAX", "INDEXES", "convert", "is_old", "tasks_table", "upgrade_on_open"]

#: Files up to this size are converted when opened; larger ones by ``migrate``.
CONVERT_ON_OPEN_MAX: Final = 64 * 1024 * 1024

_COLUMNS: Final = (*RECORD_COLUMNS, "meta")


def tasks_table(name: str) -> str:
    """The ``CREATE TABLE`` of the result table, in the current layout, as ``name``."""
    return f"""
    CREATE TABLE IF NOT EXISTS {name} (
        cache_key    TEXT PRIMARY KEY NOT NULL,
        func_name    TEXT NOT NULL,
        input_id     TEXT NOT NULL,
        version      TEXT,
        result_type  TEXT NOT NULL,
        content_type TEXT,
        result_value TEXT,
        result_data  BLOB,
        expires_at   REAL,
        size_bytes   INTEGER NOT NULL DEFAULT 0,
        created_at   REAL NOT NULL,
        updated_at   REAL NOT NULL,
        meta         TEXT
    )
    """


INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS tasks_func_name ON tasks (func_name)",
    # Partial: most rows never expire, and the sweep only looks at those that do.
    "CREATE INDEX IF NOT EXISTS tasks_expires_at ON tasks (expires_at)"
    " WHERE expires_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS tasks_updated_at ON tasks (updated_at)",
)


def is_old(raw: sqlite3.Connection) -> bool:
    """Whether ``tasks`` exists in the old ``WITHOUT ROWID`` layout."""
    row = raw.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'")
    found = row.fetchone()
    return found is not None and "WITHOUT ROWID" in str(found[0]).upper()


def convert(raw: sqlite3.Connection) -> bool:
    """Rewrite ``tasks`` in the current layout, inside the caller's transaction.

    Returns whether there was anything to convert. Every row and column is
    copied as stored (damaged rows included: readers flag those).
    """
    if not is_old(raw):
        return False
    columns = ", ".join(_COLUMNS)
    raw.execute("DROP TABLE IF EXISTS tasks_converting")
    raw.execute(tasks_table("tasks_converting"))
    raw.execute(f"INSERT INTO tasks_converting ({columns}) SELECT {columns} FROM tasks")
    raw.execute("DROP TABLE tasks")  # and its indexes
    raw.execute("ALTER TABLE tasks_converting RENAME TO tasks")
    for statement in INDEXES:
        raw.execute(statement)
    return True


def upgrade_on_open(raw: sqlite3.Connection) -> str:
    """Convert a small old file; ``"converted"``, ``"kept"`` (too large) or ``"current"``."""
    if not is_old(raw):
        return "current"
    pages = raw.execute("PRAGMA page_count").fetchone()[0]
    page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    if int(pages) * int(page_size) > CONVERT_ON_OPEN_MAX:
        return "kept"
    convert(raw)
    return "converted"
