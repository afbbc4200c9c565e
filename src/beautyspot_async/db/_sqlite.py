# Over 500 lines: one backend; its schema, queries and error translation read together.
"""The default task database: one SQLite file, shared safely by processes.

(Over 500 lines: the schema and every statement on it must change together;
the sync fast path lives in ``_sqlite_nowait``.)

Writes go through one aiosqlite connection per instance (asyncio only, hence
``loop_bound``). Cache-hit lookups can skip the event loop hop entirely through
:meth:`SQLiteTaskDB.get_nowait`, a plain ``sqlite3`` read that never waits
(see ``_sqlite_nowait``); a miss's lease and a lone durable write can too
(``lookup_or_lease_nowait``, ``save_and_release_nowait``: ``_sqlite_inline``).
The result table's layout, and converting older files, is ``_sqlite_layout``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import aiosqlite
import anyio
import anyio.to_thread

from beautyspot_async._errormap import ErrorMap
from beautyspot_async._failure import FailureRecord, checked_failure, failure_row
from beautyspot_async._lazy import LazyClient
from beautyspot_async._record import (
    HISTORY_COLUMNS,
    TaskRecord,
    checked_record,
    parse_meta,
)
from beautyspot_async.db import _sqlite_layout as layout
from beautyspot_async.db._base import EvictionCandidate, LeaseHolder, RecordTaskDB
from beautyspot_async.db._history import records_to_frame
from beautyspot_async.db._sqlite_inline import WAL_LIMIT, InlineWriter
from beautyspot_async.db._sqlite_nowait import (
    IN_CHUNK,
    NowaitReader,
    ThreadConnections,
)
from beautyspot_async.db._sqlite_sql import (
    ACQUIRE_LEASE,
    RELEASE_LEASE,
    SELECT_RECORD,
    UPSERT,
    upsert_row,
)
from beautyspot_async.exceptions import BackendError, ConfigurationError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SCHEMA_VERSION", "SQLiteTaskDB"]

logger = logging.getLogger("beautyspot_async")

_T = TypeVar("_T")

#: Layout version kept in ``PRAGMA user_version``; bump it with a migration.
SCHEMA_VERSION: Final = 1

_SELECT_HISTORY: Final = ", ".join(HISTORY_COLUMNS)

_SCHEMA: Final = (
    layout.tasks_table("tasks"),
    *layout.INDEXES,
    """
    CREATE TABLE IF NOT EXISTS leases (
        cache_key  TEXT PRIMARY KEY NOT NULL,
        owner      TEXT NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
)

# Run at every open, whatever user_version says: a table added after version 1
# that older releases simply never touch, so files they wrote gain it and stay
# readable by them (no version bump, no migration).
_FAILURES_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS failures (
        cache_key  TEXT PRIMARY KEY NOT NULL,
        func_name  TEXT NOT NULL,
        input_id   TEXT NOT NULL,
        version    TEXT,
        exc_type   TEXT NOT NULL,
        message    TEXT NOT NULL,
        attempts   INTEGER NOT NULL,
        failed_at  REAL NOT NULL,
        args       TEXT
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS failures_failed_at ON failures (failed_at)",
)
# Also run at every open (see above): last recorded hit per key, apart from
# ``tasks`` so a hit never rewrites a result row.
_LAST_USED_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS last_used (
        cache_key TEXT PRIMARY KEY NOT NULL,
        used_at   REAL NOT NULL
    ) WITHOUT ROWID
    """,
)
# Only keys still stored: a touch racing a deletion must not leave a row behind.
_TOUCH: Final = """
    INSERT INTO last_used (cache_key, used_at)
    SELECT cache_key, ? FROM tasks WHERE cache_key = ?
    ON CONFLICT (cache_key) DO UPDATE SET used_at = max(last_used.used_at, excluded.used_at)
"""
_EVICTION_ORDER: Final = """
    SELECT t.cache_key, t.size_bytes, t.result_type, t.result_value,
           max(t.updated_at, coalesce(u.used_at, t.updated_at)) AS used
    FROM tasks t LEFT JOIN last_used u ON u.cache_key = t.cache_key
    WHERE t.cache_key NOT LIKE '!%'
    ORDER BY used LIMIT ?
"""
_FAILURE_COLUMNS: Final = (
    "cache_key, func_name, input_id, version, exc_type, message, attempts, failed_at, args"
)
_SAVE_FAILURE: Final = f"""
    INSERT INTO failures ({_FAILURE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (cache_key) DO UPDATE SET
        func_name = excluded.func_name, input_id = excluded.input_id,
        version = excluded.version, exc_type = excluded.exc_type,
        message = excluded.message, attempts = excluded.attempts,
        failed_at = excluded.failed_at, args = excluded.args
"""

_RENEW_LEASE: Final = "UPDATE leases SET expires_at = ? WHERE cache_key = ? AND owner = ?"
_TAKE_OVER_LEASE: Final = (
    "UPDATE leases SET owner = ?, expires_at = ? WHERE cache_key = ? AND owner = ?"
)

_ITER_PAGE: Final = 256


class SQLiteTaskDB(RecordTaskDB):
    """Task database in one SQLite file (WAL mode), safe across processes.

    ``path`` is created with its parent directory on first use; the
    connection opens lazily in :meth:`init_schema` or the first call, and a
    closed instance reopens the same way. ``busy_timeout`` bounds how long a
    write waits for another process's write lock. ``clock`` stamps
    ``created_at``/``updated_at`` and times leases (a wall clock shared by
    every process on the machine). :meth:`get_nowait` reads payloads up to
    ``nowait_max_bytes`` and leaves larger rows to :meth:`get`.
    ``poll_interval`` is how often :meth:`wait_for_result` re-checks, since
    SQLite has no change notification.
    """

    loop_bound: ClassVar[bool] = True
    backend_name: ClassVar[str] = "sqlite"
    supports_leases: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        nowait_max_bytes: int = 256 * 1024,
        poll_interval: float = 0.02,
    ) -> None:
        self._in_memory = os.fspath(path) == ":memory:"
        # Absolute from the start: an os.chdir() before the first open (or a
        # reopen at interpreter exit) must not move the database.
        self._path = Path(os.fspath(path))
        if not self._in_memory:
            self._path = self._path.absolute()
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._nowait_max_bytes = nowait_max_bytes
        self._poll_interval = poll_interval
        # Not loop-bound: aiosqlite answers each call on the caller's loop.
        self._conn = LazyClient(self._open, self._close, loop_bound=False)
        self._write_lock: asyncio.Lock | None = None
        self._connections = ThreadConnections(None if self._in_memory else self._path)
        self._nowait = NowaitReader(self._connections, nowait_max_bytes)
        self._inline = InlineWriter(
            self._connections, clock, None if self._in_memory else self._path
        )

    def __repr__(self) -> str:
        return f"SQLiteTaskDB({os.fspath(self._path)!r})"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # -- connection lifecycle -------------------------------------------------------

    async def _open(self) -> aiosqlite.Connection:
        if not self._in_memory:
            await anyio.to_thread.run_sync(self._make_parent)
        with _ERRORS.translating("open"):
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so a batch
            # is one transaction and a single upsert commits on its own.
            conn = await aiosqlite.connect(
                self._path if not self._in_memory else ":memory:",
                timeout=self._busy_timeout,
                isolation_level=None,
            )
            conn.text_factory = lenient_text
            try:
                await conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                # Switching a fresh file to WAL and creating the schema can
                # fail with "database is locked" *without* consulting the busy
                # handler when several processes open the file at once, so
                # those steps retry on their own, within the busy timeout.
                await self._retry_locked(conn, self._prepare)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await conn.close()
                raise
        self._write_lock = asyncio.Lock()
        return conn

    async def _prepare(self, conn: aiosqlite.Connection) -> None:
        # WAL lets readers (other processes, get_nowait) proceed while
        # one writer commits, instead of failing with "database is locked".
        await conn.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL skips the fsync on every commit: a commit
        # survives a crash of this process (the contract) and only the
        # last transactions may roll back on power loss, while each
        # write costs far less than with FULL.
        await conn.execute("PRAGMA synchronous = NORMAL")
        await self._ensure_schema(conn)

    async def _retry_locked(
        self,
        conn: aiosqlite.Connection,
        step: Callable[[aiosqlite.Connection], Awaitable[None]],
    ) -> None:
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.005
        while True:
            try:
                await step(conn)
                return
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() + delay > deadline:
                    raise
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _make_parent(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                f"cannot create the directory of {self._path}: {exc}", backend="sqlite"
            ) from exc

    async def _ensure_schema(self, conn: aiosqlite.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock up front, so processes starting
        # together create the schema one after the other instead of racing.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            rows = await conn.execute_fetchall("PRAGMA user_version")
            found = int(next(iter(rows))[0])
            if found > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"{self._path} uses task-database schema version {found}, but this "
                    f"beautyspot-async only knows version {SCHEMA_VERSION}: upgrade "
                    "beautyspot-async to open it"
                )
            if found < SCHEMA_VERSION:
                for statement in _SCHEMA:
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for statement in (*_FAILURES_SCHEMA, *_LAST_USED_SCHEMA):
                await conn.execute(statement)
            # Like the failures table: a column added after version 1 without a
            # bump. Older releases name their columns, so they never see it.
            columns = await conn.execute_fetchall("PRAGMA table_info(tasks)")
            if "meta" not in {row[1] for row in columns}:
                await conn.execute("ALTER TABLE tasks ADD COLUMN meta TEXT")
            state = await conn._execute(layout.upgrade_on_open, conn._conn)  # type: ignore[no-untyped-call]
            await conn.execute("COMMIT")
            if state == "kept":
                logger.info(
                    "%s keeps results in the older, slower table layout (too large to "
                    "convert while opening); `beautyspot-async migrate %s` converts it once",
                    self._path,
                    self._path,
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.execute("ROLLBACK")
            raise

    async def init_schema(self) -> None:
        """Open the database and create its tables if missing.

        Safe to run concurrently from several processes. Raises
        :class:`~beautyspot_async.ConfigurationError` for a file written by a
        newer, unknown schema version.
        """
        if self._conn.peek() is None:
            await self._conn.get()  # opening checks the schema
            return
        async with self._writing() as conn:
            with _ERRORS.translating("init_schema"):
                await self._ensure_schema(conn)

    async def convert_layout(self) -> bool:
        """Rewrite a file from an older release in the current table layout, once.

        Returns whether there was anything to convert. Holds the write lock
        while it copies every row (about a second per few hundred
        megabytes): other writers wait, up to their busy timeout. Files up
        to 64 MiB are converted when opened, without this call.
        """
        return bool(await self._transaction("convert_layout", layout.convert))

    async def aclose(self) -> None:
        """Close the connection; idempotent. The next call reopens it."""
        self._connections.reset()
        await self._conn.aclose()

    @staticmethod
    async def _close(conn: aiosqlite.Connection) -> None:
        with anyio.CancelScope(shield=True), _ERRORS.translating("close"):
            await conn.close()

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = await self._conn.get()
        with _ERRORS.translating("read"):
            return list(await conn.execute_fetchall(sql, params))

    def _writing(self) -> _Writing:
        return _Writing(self)

    # -- records -----------------------------------------------------------------

    async def get(self, cache_key: str) -> TaskRecord | None:
        rows = await self._read(
            f"SELECT {SELECT_RECORD} FROM tasks WHERE cache_key = ?", (cache_key,)
        )
        return _record(rows[0]) if rows else None

    async def get_many(self, cache_keys: Sequence[str]) -> dict[str, TaskRecord]:
        found: dict[str, TaskRecord] = {}
        unique = list(dict.fromkeys(cache_keys))
        for start in range(0, len(unique), IN_CHUNK):
            chunk = unique[start : start + IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT {SELECT_RECORD} FROM tasks WHERE cache_key IN ({marks})", chunk
            )
            for row in rows:
                found[row[0]] = _record(row)
        return found

    async def _save_record(self, record: TaskRecord) -> None:
        async with self._writing() as conn:
            now = self._clock()
            with _ERRORS.translating("save"):
                await conn.execute(UPSERT, upsert_row(record, now))

    async def save_many(self, records: Iterable[TaskRecord]) -> None:
        """Upsert every record in one transaction."""
        batch = list(records)
        if not batch:
            return
        now = self._clock()
        rows = [upsert_row(r, now) for r in batch]

        def write(raw: sqlite3.Connection) -> None:
            raw.executemany(UPSERT, rows)

        await self._transaction("save_many", write)

    async def save_and_release(
        self, records: Sequence[TaskRecord], leases: Mapping[str, Sequence[str]]
    ) -> None:
        """Upsert the records and drop the leases in one transaction."""
        now = self._clock()
        rows = [upsert_row(r, now) for r in records]
        released = [(key, owner) for owner, keys in leases.items() for key in keys]

        def write(raw: sqlite3.Connection) -> None:
            raw.executemany(UPSERT, rows)
            raw.executemany(RELEASE_LEASE, released)

        await self._transaction("save_many", write)

    async def _transaction(self, action: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one IMMEDIATE transaction, in one trip to aiosqlite's thread.

        aiosqlite sends every statement to its worker thread separately;
        BEGIN + statements + COMMIT would cost one thread round trip each.
        ``Connection._execute`` runs a whole function there instead. It is
        private, but it is how every public method of aiosqlite is built.
        """
        async with self._writing() as conn:
            with _ERRORS.translating(action):
                return await conn._execute(_in_transaction, conn._conn, work, self._busy_timeout)  # type: ignore[no-untyped-call,no-any-return]

    async def _change(self, sql: str, params: Sequence[Any], action: str) -> int:
        async with self._writing() as conn:
            with _ERRORS.translating(action):
                cursor = await conn.execute(sql, params)
                count = cursor.rowcount
                await cursor.close()
        return int(count)

    async def delete(self, cache_key: str) -> bool:
        def work(raw: sqlite3.Connection) -> bool:
            raw.execute("DELETE FROM last_used WHERE cache_key = ?", (cache_key,))
            return raw.execute("DELETE FROM tasks WHERE cache_key = ?", (cache_key,)).rowcount > 0

        return await self._transaction("delete", work)

    async def delete_expired(self, now: float | None = None) -> int:
        cutoff = self._clock() if now is None else now
        expired = "FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?"

        def work(raw: sqlite3.Connection) -> int:
            raw.execute(
                f"DELETE FROM last_used WHERE cache_key IN (SELECT cache_key {expired})", (cutoff,)
            )
            return int(raw.execute(f"DELETE {expired}", (cutoff,)).rowcount)

        return await self._transaction("delete_expired", work)

    # -- size budgets ----------------------------------------------------------------

    async def touch(self, cache_keys: Sequence[str], now: float) -> None:
        """Upsert the keys' last use in one transaction (stored keys only)."""
        params = [(now, key) for key in dict.fromkeys(cache_keys)]
        if params:
            await self._transaction("touch", lambda raw: raw.executemany(_TOUCH, params))

    async def usage_totals(self) -> tuple[int, int]:
        """One ``COUNT``/``SUM`` over the result rows (failure rows excluded)."""
        rows = await self._read(
            "SELECT count(*), coalesce(sum(max(size_bytes, 0)), 0) FROM tasks "
            "WHERE cache_key NOT LIKE '!%'"
        )
        entries, total = rows[0]
        return int(entries), int(total)

    async def eviction_candidates(self, limit: int) -> list[EvictionCandidate]:
        """Least recently used first: the later of the last touch and ``updated_at``."""
        rows = await self._read(_EVICTION_ORDER, (max(limit, 0),))
        return [
            EvictionCandidate(str(k), int(size or 0), str(kind), _text_or_none(value), float(used))
            for k, size, kind, value, used in rows
        ]

    async def iter_records(self) -> AsyncIterator[TaskRecord]:
        """Yield every record, a page of rows at a time, in key order."""
        after = ""
        while True:
            rows = await self._read(
                f"SELECT {SELECT_RECORD}, meta FROM tasks WHERE cache_key > ? "
                "ORDER BY cache_key LIMIT ?",
                (after, _ITER_PAGE),
            )
            for row in rows:
                yield _record(row)
            if len(rows) < _ITER_PAGE:
                return
            after = rows[-1][0]

    async def get_meta(self, cache_key: str) -> Mapping[str, Any] | None:
        rows = await self._read("SELECT meta FROM tasks WHERE cache_key = ?", (cache_key,))
        return parse_meta(rows[0][0]) if rows else None

    async def get_history(self, limit: int = 1000) -> pd.DataFrame:
        rows = await self._read(
            f"SELECT {_SELECT_HISTORY} FROM tasks ORDER BY updated_at DESC LIMIT ?",
            (max(limit, 0),),
        )
        return records_to_frame(rows)

    # -- failure records -------------------------------------------------------

    async def save_failure(self, failure: FailureRecord) -> None:
        """Upsert ``failure`` into the ``failures`` table."""
        row = failure_row(failure)
        async with self._writing() as conn:
            with _ERRORS.translating("save_failure"):
                await conn.execute(_SAVE_FAILURE, row)

    async def get_failures(
        self, func_name: str | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        """Up to ``limit`` failures, newest first, through the ``failed_at`` index."""
        where, params = ("", ()) if func_name is None else ("WHERE func_name = ? ", (func_name,))
        rows = await self._read(
            f"SELECT {_FAILURE_COLUMNS} FROM failures {where}ORDER BY failed_at DESC LIMIT ?",
            (*params, max(limit, 0)),
        )
        return [f for row in rows if (f := checked_failure(*row)) is not None]

    async def delete_failures(self, cache_keys: Sequence[str]) -> int:
        """Delete the failures of ``cache_keys`` in one transaction."""
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return 0

        def work(raw: sqlite3.Connection) -> int:
            removed = 0
            for start in range(0, len(keys), IN_CHUNK):
                chunk = keys[start : start + IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                sql = f"DELETE FROM failures WHERE cache_key IN ({marks})"
                removed += raw.execute(sql, chunk).rowcount
            return removed

        return await self._transaction("delete_failures", work)

    # -- leases ---------------------------------------------------------------

    async def acquire_lease(self, cache_key: str, owner: str, ttl: float) -> bool:
        now = self._clock()
        # One statement: SQLite's write lock makes the check-and-take atomic
        # across processes. rowcount is 0 when the conflict clause's WHERE fails.
        return (
            await self._change(ACQUIRE_LEASE, (cache_key, owner, now + ttl, now), "acquire_lease")
            > 0
        )

    async def release_lease(self, cache_key: str, owner: str) -> None:
        await self._change(RELEASE_LEASE, (cache_key, owner), "release_lease")

    async def release_leases(self, cache_keys: Sequence[str], owner: str) -> None:
        params = [(key, owner) for key in cache_keys]
        if params:
            await self._transaction(
                "release_leases", lambda raw: raw.executemany(RELEASE_LEASE, params)
            )

    async def renew_leases(self, cache_keys: Sequence[str], owner: str, ttl: float) -> None:
        now = self._clock()
        params = [(now + ttl, key, owner) for key in cache_keys]
        if params:
            await self._transaction(
                "renew_leases", lambda raw: raw.executemany(_RENEW_LEASE, params)
            )

    async def lease_holders(self, cache_keys: Sequence[str]) -> dict[str, LeaseHolder]:
        keys = list(dict.fromkeys(cache_keys))
        now = self._clock()
        found: dict[str, LeaseHolder] = {}
        for start in range(0, len(keys), IN_CHUNK):
            chunk = keys[start : start + IN_CHUNK]
            rows = await self._read(
                f"SELECT cache_key, owner, expires_at FROM leases "
                f"WHERE cache_key IN ({','.join('?' * len(chunk))}) AND expires_at > ?",
                (*chunk, now),
            )
            for key, holder, expires_at in rows:
                found[key] = LeaseHolder(str(holder), float(expires_at) - now)
        return found

    async def take_over_leases(self, stale: Mapping[str, str], owner: str, ttl: float) -> list[str]:
        now = self._clock()
        items = list(stale.items())

        def work(raw: sqlite3.Connection) -> list[str]:
            return [
                key
                for key, dead in items
                if raw.execute(_TAKE_OVER_LEASE, (owner, now + ttl, key, dead)).rowcount > 0
            ]

        return await self._transaction("take_over_leases", work) if items else []

    async def lookup_or_lease(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """Read, then lease what is missing, atomically: one IMMEDIATE transaction.

        Holding SQLite's write lock from the read to the lease means no other
        process can store a key in between, so no re-read is needed.
        """
        keys = list(dict.fromkeys(cache_keys))
        now = self._clock()

        def work(raw: sqlite3.Connection) -> dict[str, TaskRecord | bool]:
            found: dict[str, TaskRecord | bool] = {}
            for start in range(0, len(keys), IN_CHUNK):
                chunk = keys[start : start + IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in raw.execute(
                    f"SELECT {SELECT_RECORD} FROM tasks WHERE cache_key IN ({marks})", chunk
                ):
                    found[row[0]] = _record(row)
            for key in keys:
                if key not in found:
                    cursor = raw.execute(ACQUIRE_LEASE, (key, owner, now + ttl, now))
                    found[key] = cursor.rowcount > 0
            return found

        return await self._transaction("lookup_or_lease", work)

    # The signature is TaskDB's; the timeout bounds a poll, not a deadline.
    async def wait_for_result(self, cache_key: str, timeout: float) -> None:  # noqa: ASYNC109
        """Sleep ``poll_interval`` (at most ``timeout``): SQLite cannot notify."""
        await anyio.sleep(max(0.0, min(timeout, self._poll_interval)))

    # -- fast path ----------------------------------------------------------------

    def get_nowait(self, cache_key: str) -> TaskRecord | None:
        """Read ``cache_key`` at once on this thread, or raise :class:`anyio.WouldBlock`.

        Uses this thread's own connection (zero busy timeout). It raises
        ``WouldBlock`` -- and the caller falls back to :meth:`get` -- when the
        file or schema does not exist yet, when another connection holds a
        lock that would make it wait, when the payload is larger than
        ``nowait_max_bytes``, and for a row whose text is not valid UTF-8
        (the lenient path flags it).
        """
        return self._nowait.get(cache_key)

    def get_many_nowait(self, cache_keys: Sequence[str]) -> dict[str, TaskRecord | None]:
        """One ``IN (...)`` query per chunk on this thread's fast-path connection."""
        return self._nowait.get_many(cache_keys)

    def lookup_or_lease_nowait(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """One IMMEDIATE transaction on this thread's own connection, or WouldBlock.

        Declines (see ``_sqlite_inline``) when another connection holds the
        write lock, for a stored row larger than 64 KiB, and for more than
        250 keys.
        """
        return self._inline.lookup_or_lease(cache_keys, owner, ttl)

    def save_and_release_nowait(
        self, records: Sequence[TaskRecord], leases: Mapping[str, Sequence[str]]
    ) -> None:
        """:meth:`save_and_release` on this thread's own connection, or WouldBlock.

        Declines like :meth:`lookup_or_lease_nowait`, and for payloads over
        64 KiB in all.
        """
        self._inline.save_and_release(records, leases)

    @property
    def housekeeping_due(self) -> bool:
        """Whether the callers' connections grew the WAL enough to ask for a checkpoint."""
        return self._inline.checkpoint_due

    async def housekeeping(self) -> None:
        """Checkpoint the WAL for the callers' connections, which never checkpoint.

        Passive while the WAL is moderate: it never holds a writer back.
        Passive checkpoints alone, though, rarely get the WAL back to its
        start while writers keep appending, and it grew to hundreds of
        megabytes; past four times the limit the checkpoint truncates it,
        holding new writers back while it copies. It waits a tenth of a
        second at most for the writer of the moment (not the busy timeout:
        writers of every process queue behind it) and settles for a passive
        one otherwise.
        """
        if self._conn.peek() is None:
            return
        truncate = self._inline.wal_bytes() > 4 * WAL_LIMIT

        def checkpoint(raw: sqlite3.Connection) -> None:
            if not truncate:
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                return
            raw.execute("PRAGMA busy_timeout = 100")
            try:
                busy = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0]
                if busy:
                    raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                raw.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")

        async with self._writing() as conn:
            with _ERRORS.translating("checkpoint"):
                await conn._execute(checkpoint, conn._conn)  # type: ignore[no-untyped-call]
        self._inline.baseline = self._inline.wal_bytes()


class _Writing:
    """``async with``: the open connection, held under the write lock.

    aiosqlite runs statements one by one on its thread; without the lock,
    one task's statement could land inside another task's open transaction.
    """

    def __init__(self, db: SQLiteTaskDB) -> None:
        self._db = db
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> aiosqlite.Connection:
        conn = await self._db._conn.get()
        lock = self._db._write_lock
        assert lock is not None
        await lock.acquire()
        self._lock = lock
        return conn

    async def __aexit__(self, *exc_info: object) -> None:
        if self._lock is not None:
            self._lock.release()


def _begin_immediate(raw: sqlite3.Connection, timeout: float) -> None:
    """Take the write lock, retrying every fraction of a millisecond.

    SQLite's own busy handler backs off in steps of up to 25-100 ms, so a
    writer that found the lock taken once tends to sleep well past the moment
    it was released; with several processes writing, that is the tail of the
    write latency. Here the wait for the lock is polled finely instead (this
    runs on aiosqlite's worker thread, never on an event loop), still bounded
    by the busy timeout.
    """
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + timeout
        delay = 0.0001
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.002)
    finally:
        raw.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")


def _in_transaction(
    raw: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T], timeout: float
) -> _T:
    _begin_immediate(raw, timeout)
    try:
        result = work(raw)
    except BaseException:
        raw.execute("ROLLBACK")
        raise
    raw.execute("COMMIT")
    return result


def lenient_text(raw: bytes) -> str | bytes:
    """Text columns as str; bytes when not valid UTF-8, for checked_record to flag.

    sqlite3's default text handling raises on invalid UTF-8 before a row
    reaches us, which would turn one damaged row into an error on every call.
    """
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _record(row: Sequence[Any]) -> TaskRecord:
    # SQLite columns hold any type whatever the schema says: check them.
    return checked_record(*row)


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _closed_underneath(exc: BaseException) -> bool:
    # aiosqlite raises ValueError when its connection was closed underneath.
    return "connection" in str(exc).lower()


_ERRORS: Final = ErrorMap("sqlite", {sqlite3.Error: None, ValueError: _closed_underneath})
