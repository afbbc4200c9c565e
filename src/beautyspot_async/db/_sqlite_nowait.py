"""SQLite's fast path: reads that never wait, on a connection per thread.

A cache hit read this way skips the hop to the event loop and to aiosqlite's
thread. When an answer would mean waiting (a lock held by a writer, a payload
too large to read inline, a file not created yet) the reader raises
:class:`anyio.WouldBlock` and the caller falls back to ``get()``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio

from beautyspot_async._record import RECORD_COLUMNS, TaskRecord, checked_record

__all__ = [
    "IN_CHUNK",
    "NowaitReader",
    "ThreadConnections",
    "record_from_row",
]

# SQLite builds before 3.32 allow 999 host parameters per statement.
IN_CHUNK: Final = 900

# One statement, so the size test and the payload read see the same row version;
# length() of a BLOB comes from the record header without reading the payload.
_SELECT: Final = f"""
    SELECT {", ".join(c for c in RECORD_COLUMNS if c != "result_data")},
           length(result_data),
           CASE WHEN length(result_data) <= ? THEN result_data END
    FROM tasks WHERE cache_key = ?
"""

_SELECT_MANY: Final = _SELECT.replace("cache_key = ?", "cache_key IN ({marks})")

_TOO_LARGE: Final[Any] = object()


class _Slot(threading.local):
    """The current thread's connection, the generation it belongs to, and its journal mode."""

    conn: sqlite3.Connection | None = None
    generation: int = -1
    wal: bool = False
    forks: int = 0


#: Forks of this process so far, as seen by the child: SQLite forbids using a
#: connection opened before a fork, and a forked child inherits the thread's slot.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class ThreadConnections:
    """Each thread's own connection to the SQLite file at ``path`` (``None``: in memory, never).

    One connection serves a thread's non-waiting reads and its non-waiting
    writes (``_sqlite_inline``): a connection keeps its page cache across its
    own commits, so a miss's lease does not make the next probe re-read the
    pages it just wrote. :meth:`reset` retires them all (each thread drops
    its stale one on its next use).
    """

    def __init__(self, path: Path | None) -> None:
        self._uri = None if path is None else path.absolute().as_uri() + "?mode=rw"
        self._slot = _Slot()
        self._generation = 0

    def get(self) -> sqlite3.Connection:
        """This thread's connection; WouldBlock when it cannot be opened without waiting."""
        slot = self._slot
        conn = slot.conn
        if conn is not None and slot.generation == self._generation and slot.forks == _forks:
            return conn
        if self._uri is None:
            raise anyio.WouldBlock
        if slot.forks != _forks:
            # The parent's connection: never used, never closed here (closing
            # would release locks and state that belong to the parent).
            slot.conn = None
        self._drop()
        try:
            # mode=rw never creates the file (a missing file is OperationalError).
            conn = sqlite3.connect(self._uri, uri=True, timeout=0.0, isolation_level=None)
        except sqlite3.Error:
            raise anyio.WouldBlock from None
        # sqlite3's own text decoding (C, not lenient_text): a row that is
        # not valid UTF-8 raises OperationalError here, which declines to the
        # I/O thread's lenient connection -- and the hit path saves a Python
        # call per text column.
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            # Memory-mapped reads skip a copy through SQLite's page cache: the
            # hit path's single-row read gets measurably cheaper.
            conn.execute("PRAGMA mmap_size = 268435456")
            # A checkpoint copies the whole WAL and can take milliseconds: never
            # on a caller's thread (the I/O thread is asked for them instead).
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            # Per connection, not per file: as durable as the database's own writes.
            conn.execute("PRAGMA synchronous = NORMAL")
            mode = conn.execute("PRAGMA journal_mode").fetchone()
        except sqlite3.Error:
            conn.close()
            raise anyio.WouldBlock from None
        except BaseException:
            conn.close()
            raise
        slot.conn, slot.generation, slot.forks = conn, self._generation, _forks
        slot.wal = mode is not None and str(mode[0]).lower() == "wal"
        return conn

    def wal(self) -> bool:
        """Whether this thread's connection (from :meth:`get`) sees the file in WAL mode."""
        return self._slot.wal

    def reset(self) -> None:
        """Retire every thread's connection (the database was closed)."""
        self._generation += 1
        self._drop()

    def _drop(self) -> None:
        slot = self._slot
        conn, slot.conn = slot.conn, None
        if conn is not None:
            conn.close()


class NowaitReader:
    """Never-waiting reads through each thread's own connection (:class:`ThreadConnections`).

    Payloads up to ``max_bytes`` are read inline; larger rows are left to
    ``get()``.
    """

    def __init__(self, connections: ThreadConnections, max_bytes: int) -> None:
        self._connections = connections
        self._max_bytes = max_bytes

    def get(self, cache_key: str) -> TaskRecord | None:
        """The record of ``cache_key`` or ``None``; WouldBlock when it cannot say now."""
        try:
            conn = self._connections.get()
            row = conn.execute(_SELECT, (self._max_bytes, cache_key)).fetchone()
        except sqlite3.OperationalError:
            # Locked, busy, missing table, missing file: all mean "ask get()".
            raise anyio.WouldBlock from None
        if row is None:
            return None
        length, data = row[11], row[12]
        if length is not None and data is None:
            raise anyio.WouldBlock
        return record_from_row(row, data)

    def get_many(self, cache_keys: Sequence[str]) -> dict[str, TaskRecord | None]:
        """Records (or ``None`` for absent keys) of the keys it can answer now."""
        keys = list(dict.fromkeys(cache_keys))
        found: dict[str, TaskRecord | None] = {}
        try:
            conn = self._connections.get()
            for start in range(0, len(keys), IN_CHUNK):
                chunk = keys[start : start + IN_CHUNK]
                rows = conn.execute(
                    _SELECT_MANY.format(marks=",".join("?" * len(chunk))),
                    (self._max_bytes, *chunk),
                ).fetchall()
                for row in rows:
                    length, data = row[11], row[12]
                    if length is not None and data is None:
                        found[row[0]] = _TOO_LARGE
                    else:
                        found[row[0]] = record_from_row(row, data)
                for key in chunk:
                    found.setdefault(key, None)
        except (sqlite3.OperationalError, anyio.WouldBlock):
            return {}  # locked or not created yet: nothing can be answered now
        return {key: value for key, value in found.items() if value is not _TOO_LARGE}


def record_from_row(row: Sequence[Any], data: bytes | None) -> TaskRecord:
    """A checked record from a row of the payload-bounded selects (payload passed apart)."""
    return checked_record(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        data,
        row[7],
        row[8],
        row[9],
        row[10],
    )
