"""SQLite's small write transactions, run at once on the caller's thread or declined.

Taking a miss's lease through aiosqlite costs a hop to the I/O loop, one to
aiosqlite's thread and two back: most of a miss's latency when the
transaction itself takes tens of microseconds. Here the caller's thread runs
it at once on its own connection, the one its non-waiting reads use
(``_sqlite_nowait.ThreadConnections``), under the same rule: it never waits.
A zero busy timeout turns a write lock held elsewhere into
:class:`anyio.WouldBlock`, and the caller falls back to the I/O thread; so do
rows too large to write inline and transactions over :data:`MAX_KEYS` keys,
which bounds the worst one.

The connection never checkpoints (``wal_autocheckpoint = 0``): a checkpoint
copies the WAL into the database and can take milliseconds, so it stays on
aiosqlite's thread. Every :data:`CHECK_EVERY` commits made here, the WAL's
size is looked at; :data:`WAL_LIMIT` past its size after the last checkpoint,
the owner asks that thread for a checkpoint (:attr:`InlineWriter.checkpoint_due`; see
``SQLiteTaskDB.housekeeping`` for which kind). Counting commits instead
would not do: one transaction may append one page or hundreds.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeVar

import anyio

from beautyspot_async._record import RECORD_COLUMNS, TaskRecord
from beautyspot_async.db._sqlite_nowait import ThreadConnections, record_from_row
from beautyspot_async.db._sqlite_sql import ACQUIRE_LEASE, RELEASE_LEASE, UPSERT, upsert_row

__all__ = ["CHECK_EVERY", "MAX_BYTES", "MAX_KEYS", "WAL_LIMIT", "InlineWriter"]

_T = TypeVar("_T")

#: Keys per transaction: leasing 250 keys takes about a millisecond.
MAX_KEYS: Final = 250
#: Payload bytes per transaction (larger writes go to the I/O thread).
MAX_BYTES: Final = 64 * 1024
#: Commits on the callers' connections between two looks at the WAL's size.
CHECK_EVERY: Final = 16
#: WAL bytes past which a checkpoint is due (SQLite's own default: 1 000 pages).
WAL_LIMIT: Final = 4 * 1024 * 1024

# length() of a BLOB comes from the record header without reading the payload.
_SELECT_MANY: Final = f"""
    SELECT {", ".join(c for c in RECORD_COLUMNS if c != "result_data")},
           length(result_data),
           CASE WHEN length(result_data) <= {MAX_BYTES} THEN result_data END
    FROM tasks WHERE cache_key IN ({{marks}})
"""


class _Declined(Exception):
    """Inside a transaction: give up and roll back (the caller gets WouldBlock)."""


class InlineWriter:
    """Never-waiting write transactions through each thread's own connection.

    ``clock`` times leases and stamps rows, as the database's own writes do.
    """

    def __init__(
        self, connections: ThreadConnections, clock: Callable[[], float], path: Path | None
    ) -> None:
        self._connections = connections
        self._clock = clock
        self._wal = None if path is None else Path(f"{path}-wal")
        #: Commits made here since the WAL's size was last looked at (racy: a hint).
        self._commits = 0
        #: The WAL file's size after the last checkpoint. A passive checkpoint
        #: does not shrink the file: the WAL restarts inside it, so only growth
        #: past this size means the checkpoints are falling behind.
        self.baseline = 0

    @property
    def checkpoint_due(self) -> bool:
        """Whether the WAL grew past :data:`WAL_LIMIT` (looked at every few commits)."""
        if self._commits < CHECK_EVERY:
            return False
        self._commits = 0
        return self.wal_bytes() > self.baseline + WAL_LIMIT

    def wal_bytes(self) -> int:
        """The WAL file's size (0 when there is none)."""
        if self._wal is None:
            return 0
        try:
            return self._wal.stat().st_size
        except OSError:
            return 0

    def lookup_or_lease(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """``TaskDB.lookup_or_lease`` at once, or :class:`anyio.WouldBlock`."""
        keys = list(dict.fromkeys(cache_keys))
        if len(keys) > MAX_KEYS:
            raise anyio.WouldBlock
        now = self._clock()

        def work(conn: sqlite3.Connection) -> dict[str, TaskRecord | bool]:
            found: dict[str, TaskRecord | bool] = {}
            sql = _SELECT_MANY.format(marks=",".join("?" * len(keys)))
            for row in conn.execute(sql, keys):
                length, data = row[11], row[12]
                if length is not None and data is None:
                    raise _Declined  # too large to read here
                found[row[0]] = record_from_row(row, data)
            for key in keys:
                if key not in found:
                    cursor = conn.execute(ACQUIRE_LEASE, (key, owner, now + ttl, now))
                    found[key] = cursor.rowcount > 0
            return found

        return self._transaction(work)

    def save_and_release(
        self, records: Sequence[TaskRecord], leases: Mapping[str, Sequence[str]]
    ) -> None:
        """``TaskDB.save_and_release`` at once, or :class:`anyio.WouldBlock`."""
        if len(records) > MAX_KEYS or sum(r.size_bytes for r in records) > MAX_BYTES:
            raise anyio.WouldBlock
        now = self._clock()
        rows = [upsert_row(r, now) for r in records]
        released = [(key, owner) for owner, keys in leases.items() for key in keys]

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(UPSERT, rows)
            if released:
                conn.executemany(RELEASE_LEASE, released)

        self._transaction(work)

    def _transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._connections.get()
        if not self._connections.wal():
            # Outside WAL a writer blocks every reader: not for a caller's thread.
            raise anyio.WouldBlock
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            raise anyio.WouldBlock from None  # another connection is writing
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            # Even on KeyboardInterrupt: an open transaction left on this
            # connection would hold the write lock for every other writer.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, (sqlite3.Error, _Declined)):
                # Whatever went wrong, the I/O thread's path tries again and
                # reports a real failure as the backend error it is.
                raise anyio.WouldBlock from None
            raise
        self._commits += 1
        return result
