# Over 500 lines: one backend; its schema, queries and error translation read together.
"""PostgreSQL task database on asyncpg (extra ``[postgres]``).

Over 500 lines because its SQL is inline: records, leases, failure records
and the wait check share one pool, one retry wrapper and one set of table
names (the LISTEN connection lives in ``_pglisten``).

Layout, all under one schema and one table-name prefix (default
``public.beautyspot_*``)::

    <prefix>tasks           one row per cache key; payloads as bytea
    <prefix>leases          cross-process single-flight leases
    <prefix>schema_version  one row: the layout version this module wrote
    <prefix>failures        calls that failed for good (the batch runner's)
    <prefix>last_used       last recorded hit per key (size budgets' LRU order)

Timestamps come from the server clock and are stored as double precision
POSIX seconds, which map one to one onto :class:`TaskRecord` floats.
Processes waiting for another process's result LISTEN on one channel per
table; ``save``, ``save_many`` and ``release_lease`` NOTIFY it with the cache
key as payload.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio

from beautyspot_async._errormap import ErrorMap, backend_error
from beautyspot_async._extras import install_hint
from beautyspot_async._failure import FailureRecord, checked_failure, failure_row
from beautyspot_async._lazy import LazyClient
from beautyspot_async._record import (
    HISTORY_COLUMNS,
    RECORD_COLUMNS,
    TaskRecord,
    checked_record,
    meta_text,
    parse_meta,
    written_values,
)
from beautyspot_async.db._base import EvictionCandidate, LeaseHolder, RecordTaskDB
from beautyspot_async.db._common import LoopReads, WaitStatistics, WaitTracker
from beautyspot_async.exceptions import ConfigurationError

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"PostgresTaskDB needs {install_hint('postgres')}") from exc

from beautyspot_async.db._pglisten import Listener

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PostgresTaskDB"]

T = TypeVar("T")

#: Version of the table layout written by this module. A database stamped
#: with a newer version was written by a newer release; we refuse to touch it.
SCHEMA_VERSION = 1

_FAILURE_COLUMNS = (
    "cache_key, func_name, input_id, version, exc_type, message, attempts, failed_at, args"
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Identifiers (and derived index names) must fit NAMEDATALEN - 1 = 63 bytes.
_MAX_PREFIX = 40

# Errors after which a fresh connection may succeed: the connection was lost
# (class 08), the server shut it down (class 57P, e.g. pg_terminate_backend),
# or the socket failed. Anything else is a real error and is not retried.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InterfaceError,
    # Seen when the server closed an idle pooled connection and the driver
    # notices only as the next query starts.
    asyncpg.exceptions.InternalClientError,
)
_ERRORS = ErrorMap("postgresql", {asyncpg.PostgresError: None}, transient=_TRANSIENT)


def _quote(ident: str) -> str:
    return f'"{ident}"'


#: What the hit-path reads select: every column but meta, which only the
#: readers that show it (history, iter_records, get_meta) fetch.
_SELECT_RECORD = ", ".join(RECORD_COLUMNS)


def _record(row: asyncpg.Record) -> TaskRecord:
    # Typed columns, but a value can still be nonsense (a NaN expiry).
    return checked_record(
        row["cache_key"],
        row["func_name"],
        row["input_id"],
        row["version"],
        row["result_type"],
        row["content_type"],
        row["result_value"],
        None if row["result_data"] is None else bytes(row["result_data"]),
        row["expires_at"],
        row["size_bytes"],
        row["created_at"],
        row["updated_at"],
        row.get("meta"),
    )


class PostgresTaskDB(RecordTaskDB):
    """Task database on PostgreSQL, shared by every process that uses ``dsn``.

    ``schema`` (created when missing) and ``table_prefix`` name the tables, so
    several Spots or test runs can share one database. The connection pool
    (``min_size``..``max_size`` connections) opens on first use. Transient
    connection loss (a restarted server, a terminated backend) is retried
    after each delay of ``retry_delays``; when the server stays unreachable
    the call raises :class:`~beautyspot_async.BackendError`.

    ``notify=False`` disables LISTEN/NOTIFY (for poolers such as PgBouncer in
    transaction mode); :meth:`wait_for_result` then polls every
    ``poll_interval`` seconds instead.
    """

    loop_bound: ClassVar[bool] = True
    backend_name: ClassVar[str] = "postgresql"
    supports_leases: ClassVar[bool] = True

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        table_prefix: str = "beautyspot_",
        min_size: int = 1,
        max_size: int = 10,
        notify: bool = True,
        poll_interval: float = 0.5,
        connect_timeout: float = 10.0,
        retry_delays: Sequence[float] = (0.1, 0.5),
        **connect_kwargs: Any,
    ) -> None:
        if not _IDENT.match(schema):
            raise ConfigurationError(f"invalid PostgreSQL schema name {schema!r}")
        if table_prefix and not _IDENT.match(table_prefix):
            raise ConfigurationError(f"invalid PostgreSQL table prefix {table_prefix!r}")
        if len(table_prefix) > _MAX_PREFIX:
            raise ConfigurationError(f"table prefix longer than {_MAX_PREFIX} characters")
        if not 0 < min_size <= max_size:
            raise ConfigurationError("need 0 < min_size <= max_size")
        self.dsn = dsn
        self.schema = schema
        self.table_prefix = table_prefix
        self._min_size = min_size
        self._max_size = max_size
        self._notify = notify
        self._poll_interval = poll_interval
        self._connect_timeout = connect_timeout
        self._retry_delays = tuple(retry_delays)
        # Name our connections so operators can find them in pg_stat_activity
        # (an explicit application_name in server_settings wins).
        settings = dict(connect_kwargs.pop("server_settings", None) or {})
        settings.setdefault("application_name", "beautyspot-async")
        self._connect_kwargs = {**connect_kwargs, "server_settings": settings}

        s = _quote(schema)
        self._tasks = f"{s}.{_quote(table_prefix + 'tasks')}"
        self._leases = f"{s}.{_quote(table_prefix + 'leases')}"
        self._versions = f"{s}.{_quote(table_prefix + 'schema_version')}"
        self._failures = f"{s}.{_quote(table_prefix + 'failures')}"
        self._last_used = f"{s}.{_quote(table_prefix + 'last_used')}"
        qualified = f"{schema}.{table_prefix}tasks".encode()
        digest = hashlib.sha256(qualified).digest()
        # Channel names are identifiers (at most 63 bytes); a digest keeps
        # them short and distinct per schema + prefix.
        self._channel = "beautyspot_" + digest[:10].hex()
        # Advisory lock ids are bigint; derive a stable one from the tables' name.
        self._lock_id = int.from_bytes(digest[10:18], "big", signed=True)

        self._pool = LazyClient(self._open_pool, _close_pool)
        # The hit path's reads, on the caller's own loop (get_many_here).
        self._here = LoopReads(self._connect_here, _close_connection, self._read_here)
        self._select_one = f"SELECT {_SELECT_RECORD} FROM {self._tasks} WHERE cache_key = $1"
        self._select_any = (
            f"SELECT {_SELECT_RECORD} FROM {self._tasks} WHERE cache_key = ANY($1::text[])"
        )
        self._waits = WaitTracker()
        self._listener = LazyClient(self._open_listener, Listener.aclose, alive=Listener.alive)

    def __repr__(self) -> str:
        return f"PostgresTaskDB(schema={self.schema!r}, table_prefix={self.table_prefix!r})"

    # -- connection management ------------------------------------------------

    async def _open_pool(self) -> asyncpg.Pool:
        options = dict(self._connect_kwargs)
        if _POOL_TAKES_RESET:
            # asyncpg resets a connection's session (RESET ALL, UNLISTEN *,
            # advisory unlocks...) with one more round trip on every release.
            # Ours leave no session state behind (transactions are scoped,
            # advisory locks transaction-level, LISTEN on its own connection),
            # so only an open transaction is rolled back, which asyncpg does
            # itself before calling the hook (user settings via
            # server_settings/setup are kept as they are).
            options.setdefault("reset", _keep_session)
        return await asyncpg.create_pool(
            self.dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._connect_timeout,
            **options,
        )

    async def _open_listener(self) -> Listener:
        with _ERRORS.translating("LISTEN for results"):
            return await Listener.open(
                self.dsn,
                self._channel,
                self._waits,
                connect_timeout=self._connect_timeout,
                **self._connect_kwargs,
            )

    async def _run(self, op: Callable[[asyncpg.Connection], Awaitable[T]], what: str) -> T:
        """Run ``op`` on a pooled connection, retrying transient failures."""
        attempts = len(self._retry_delays) + 1
        for attempt in range(attempts):
            try:
                pool = await self._pool.get()
                async with pool.acquire() as conn:
                    try:
                        return await op(conn)
                    except _TRANSIENT:
                        # Never hand a half-dead connection back to the pool:
                        # the retry must get a fresh one.
                        conn.terminate()
                        raise
            except Exception as exc:
                if not _ERRORS.is_transient(exc):
                    with _ERRORS.translating(what):
                        raise
                if attempt == attempts - 1:
                    raise backend_error(
                        self.backend_name,
                        what,
                        exc,
                        f"{exc} (gave up after {attempts} attempts: connection lost or "
                        "server unreachable)",
                    ) from exc
                if isinstance(exc, OSError):
                    # The pool could not connect at all: start afresh.
                    await self._drop_pool()
                await anyio.sleep(self._retry_delays[attempt])
        raise AssertionError("unreachable")  # pragma: no cover

    async def _drop_pool(self) -> None:
        pool = self._pool.drop()
        if pool is not None:
            pool.terminate()

    def statistics(self) -> WaitStatistics:
        """Waits parked on LISTEN and the notifications received."""
        return self._waits.snapshot()

    async def aclose(self) -> None:
        """Close the listener connection, the pool and the per-loop readers. Idempotent."""
        await self._listener.aclose()
        await self._pool.aclose()
        await self._here.aclose()

    # -- reads on the caller's loop ----------------------------------------------

    async def _connect_here(self) -> asyncpg.Connection:
        with _ERRORS.translating("lookup"):
            return await asyncpg.connect(
                self.dsn, timeout=self._connect_timeout, **self._connect_kwargs
            )

    async def _read_here(self, conn: asyncpg.Connection, keys: list[str]) -> dict[str, TaskRecord]:
        try:
            if len(keys) == 1:
                # One key by primary key: the statement a raw fetchrow would run
                # (prepared once per connection, by asyncpg's statement cache).
                row = await conn.fetchrow(self._select_one, keys[0])
                rows = [] if row is None else [row]
            else:
                rows = await conn.fetch(self._select_any, keys)
        except Exception as exc:  # _ERRORS.translating, inlined: this is the hit path
            if not _ERRORS.translates(exc):
                raise
            raise _ERRORS.error("lookup", exc) from exc
        # The columns are RECORD_COLUMNS, in checked_record's order.
        return {row[0]: checked_record(*row) for row in rows}

    async def get_many_here(
        self,
        cache_keys: Sequence[str],
        timeout: float | None,  # noqa: ASYNC109 - a deadline without a timer per hit
    ) -> dict[str, TaskRecord | None]:
        """Read ``cache_keys`` on the calling loop, on a connection of that loop's own.

        One round trip (a prepared ``SELECT`` by primary key, cached by the
        connection); concurrent lookups of one loop share a query. No lease.
        """
        return await self._here.get_many(list(cache_keys), timeout)

    # -- schema ---------------------------------------------------------------

    async def init_schema(self) -> None:
        """Create the schema, tables and indexes when missing.

        Safe when several processes run it at once: the DDL runs in one
        transaction under a transaction-scoped advisory lock. Raises
        :class:`~beautyspot_async.ConfigurationError` when the tables were
        written by a newer layout version.
        """
        p = self.table_prefix
        s = _quote(self.schema)
        statements = [
            f"CREATE SCHEMA IF NOT EXISTS {s}",
            f"""CREATE TABLE IF NOT EXISTS {self._versions} (
                id integer PRIMARY KEY CHECK (id = 1),
                version integer NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS {self._tasks} (
                cache_key text PRIMARY KEY,
                func_name text NOT NULL,
                input_id text NOT NULL,
                version text,
                result_type text NOT NULL,
                content_type text,
                result_value text,
                result_data bytea,
                expires_at double precision,
                size_bytes bigint NOT NULL DEFAULT 0,
                created_at double precision NOT NULL,
                updated_at double precision NOT NULL,
                meta text)""",
            f"CREATE INDEX IF NOT EXISTS {_quote(p + 'tasks_func_name')} "
            f"ON {self._tasks} (func_name)",
            f"CREATE INDEX IF NOT EXISTS {_quote(p + 'tasks_updated_at')} "
            f"ON {self._tasks} (updated_at)",
            f"CREATE INDEX IF NOT EXISTS {_quote(p + 'tasks_expires_at')} "
            f"ON {self._tasks} (expires_at) WHERE expires_at IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS {self._leases} (
                cache_key text PRIMARY KEY,
                owner text NOT NULL,
                expires_at double precision NOT NULL)""",
            # Added after layout version 1 without a bump: older releases
            # never touch it, and every open creates it where it is missing.
            f"""CREATE TABLE IF NOT EXISTS {self._failures} (
                cache_key text PRIMARY KEY,
                func_name text NOT NULL,
                input_id text NOT NULL,
                version text,
                exc_type text NOT NULL,
                message text NOT NULL,
                attempts integer NOT NULL,
                failed_at double precision NOT NULL,
                args text)""",
            f"CREATE INDEX IF NOT EXISTS {_quote(p + 'failures_failed_at')} "
            f"ON {self._failures} (failed_at)",
            # Same: last recorded hit per key, apart from the result rows so a
            # hit never rewrites one.
            f"""CREATE TABLE IF NOT EXISTS {self._last_used} (
                cache_key text PRIMARY KEY,
                used_at double precision NOT NULL)""",
        ]

        async def op(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                # CREATE ... IF NOT EXISTS still races on the catalog when two
                # processes run it at once; the advisory lock serialises them.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_id)
                for statement in statements:
                    await conn.execute(statement)
                # Added after layout version 1 without a bump: older releases
                # name their columns and never see it. Asked first, since even
                # ADD COLUMN IF NOT EXISTS takes an exclusive lock on the table.
                has_meta = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) "
                    "AND attname = 'meta' AND NOT attisdropped)",
                    self._tasks,
                )
                if not has_meta:
                    await conn.execute(
                        f"ALTER TABLE {self._tasks} ADD COLUMN IF NOT EXISTS meta text"
                    )
                found = await conn.fetchval(f"SELECT version FROM {self._versions} WHERE id = 1")
                if found is None:
                    await conn.execute(
                        f"INSERT INTO {self._versions} (id, version) VALUES (1, $1)",
                        SCHEMA_VERSION,
                    )
                elif found > SCHEMA_VERSION:
                    raise ConfigurationError(
                        f"tables {self._tasks} have layout version {found}, newer than "
                        f"{SCHEMA_VERSION} which this beautyspot-async understands; upgrade it"
                    )

        await self._run(op, "init_schema")

    async def schema_exists(self) -> bool:
        """Whether the tasks table exists; creates nothing (not even the schema)."""

        async def op(conn: asyncpg.Connection) -> bool:
            return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self._tasks))

        return await self._run(op, "schema_exists")

    # -- records --------------------------------------------------------------

    async def get(self, cache_key: str) -> TaskRecord | None:
        """Return the record stored under ``cache_key``, or ``None``."""
        query = f"SELECT {_SELECT_RECORD} FROM {self._tasks} WHERE cache_key = $1"

        async def op(conn: asyncpg.Connection) -> asyncpg.Record | None:
            return await conn.fetchrow(query, cache_key)

        row = await self._run(op, "get")
        return None if row is None else _record(row)

    async def get_many(self, cache_keys: Sequence[str]) -> dict[str, TaskRecord]:
        """Return the records found among ``cache_keys`` in one round trip."""
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return {}
        query = f"SELECT {_SELECT_RECORD} FROM {self._tasks} WHERE cache_key = ANY($1::text[])"

        async def op(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetch(query, keys)
            return rows

        rows = await self._run(op, "get_many")
        return {row["cache_key"]: _record(row) for row in rows}

    @property
    def _upsert(self) -> str:
        # The CTE makes the upsert and its NOTIFY one statement; PostgreSQL
        # delivers the notification only when the write commits.
        notify = "SELECT pg_notify($12, cache_key) FROM up" if self._notify else "SELECT 1"
        return f"""
            WITH up AS (
                INSERT INTO {self._tasks} (
                    cache_key, func_name, input_id, version, result_type, content_type,
                    result_value, result_data, expires_at, size_bytes, created_at, updated_at,
                    meta)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                        extract(epoch FROM now()), extract(epoch FROM now()), $11)
                ON CONFLICT (cache_key) DO UPDATE SET
                    func_name = EXCLUDED.func_name,
                    input_id = EXCLUDED.input_id,
                    version = EXCLUDED.version,
                    result_type = EXCLUDED.result_type,
                    content_type = EXCLUDED.content_type,
                    result_value = EXCLUDED.result_value,
                    result_data = EXCLUDED.result_data,
                    expires_at = EXCLUDED.expires_at,
                    size_bytes = EXCLUDED.size_bytes,
                    meta = EXCLUDED.meta,
                    -- created_at is kept, unless it is no time at all: a
                    -- rewrite must repair the row checked_record rejected.
                    created_at = CASE WHEN {self._tasks}.created_at = 'NaN'
                        THEN EXCLUDED.created_at ELSE {self._tasks}.created_at END,
                    updated_at = EXCLUDED.updated_at
                RETURNING cache_key)
            {notify}"""

    def _upsert_args(self, r: TaskRecord) -> tuple[Any, ...]:
        args = (*written_values(r), meta_text(r.meta))
        return (*args, self._channel) if self._notify else args

    async def _save_record(self, record: TaskRecord) -> None:
        """Upsert one record (``created_at`` kept) and notify waiters."""
        args = self._upsert_args(record)
        query = self._upsert

        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(query, *args)

        await self._run(op, "save")

    async def save_many(self, records: Iterable[TaskRecord]) -> None:
        """Upsert every record in one transaction (a later duplicate wins)."""
        rows = [self._upsert_args(r) for r in records]
        if not rows:
            return
        query = self._upsert

        async def op(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.executemany(query, rows)

        await self._run(op, "save_many")

    async def save_and_release(
        self, records: Sequence[TaskRecord], leases: Mapping[str, Sequence[str]]
    ) -> None:
        """Upsert the records and drop the leases in one transaction, one round trip each."""
        rows = [self._upsert_args(r) for r in records]
        query = self._upsert
        release = self._release_many

        async def op(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                if rows:
                    await conn.executemany(query, rows)
                for owner, keys in leases.items():
                    await conn.execute(release, *self._release_args(list(keys), owner))

        await self._run(op, "save_and_release")

    @property
    def _release_many(self) -> str:
        # Waiters are woken by the release as well as by the save (which may
        # not happen: a failed write releases without saving).
        notify = "SELECT pg_notify($3, cache_key) FROM gone" if self._notify else "SELECT 1"
        return f"""
            WITH gone AS (
                DELETE FROM {self._leases} WHERE cache_key = ANY($1::text[]) AND owner = $2
                RETURNING cache_key)
            {notify}"""

    def _release_args(self, keys: list[str], owner: str) -> tuple[Any, ...]:
        return (keys, owner, self._channel) if self._notify else (keys, owner)

    async def release_leases(self, cache_keys: Sequence[str], owner: str) -> None:
        """Drop ``owner``'s leases on ``cache_keys`` in one statement."""
        if cache_keys:
            await self.save_and_release([], {owner: cache_keys})

    async def lookup_or_lease(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """Read and lease the missing keys in one statement; re-read the leased ones.

        One round trip when every key is stored, two otherwise. Under READ
        COMMITTED each statement sees what committed before it began, so the
        re-read catches a holder that stored its result and released its
        lease (one transaction) after the first statement began.
        """
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return {}
        nulls = ", ".join(
            f"NULL::{kind}"
            for kind in (
                "text", "text", "text", "text", "text", "text", "bytea",
                "double precision", "bigint", "double precision", "double precision",
            )
        )  # fmt: skip
        read_and_take = f"""
            WITH found AS (
                SELECT {_SELECT_RECORD} FROM {self._tasks} WHERE cache_key = ANY($1::text[])),
            taken AS (
                INSERT INTO {self._leases} AS l (cache_key, owner, expires_at)
                SELECT k, $2, extract(epoch FROM clock_timestamp()) + $3
                FROM unnest($1::text[]) AS k
                WHERE NOT EXISTS (SELECT 1 FROM found WHERE found.cache_key = k)
                -- One lock order for every process: two batches leasing
                -- overlapping keys in different orders would deadlock.
                ORDER BY k
                ON CONFLICT (cache_key) DO UPDATE
                    SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
                    WHERE l.expires_at <= extract(epoch FROM clock_timestamp())
                       OR l.owner = EXCLUDED.owner
                RETURNING cache_key)
            SELECT {_SELECT_RECORD} FROM found
            UNION ALL
            -- A leased key: func_name (never NULL in a stored row) is NULL.
            SELECT cache_key, {nulls} FROM taken"""
        select = f"SELECT {_SELECT_RECORD} FROM {self._tasks} WHERE cache_key = ANY($1::text[])"
        give_back = self._release_many

        async def op(conn: asyncpg.Connection) -> dict[str, TaskRecord | bool]:
            found: dict[str, TaskRecord | bool] = {}
            leased: list[str] = []
            for row in await conn.fetch(read_and_take, keys, owner, float(ttl)):
                if row[1] is None:
                    leased.append(row[0])
                else:
                    found[row[0]] = checked_record(*row)
            if leased:
                late = {row[0]: checked_record(*row) for row in await conn.fetch(select, leased)}
                if late:
                    await conn.execute(give_back, *self._release_args(list(late), owner))
                    found.update(late)
            taken = set(leased)
            for key in keys:
                found.setdefault(key, key in taken)
            return found

        return await self._run(op, "lookup_or_lease")

    async def delete(self, cache_key: str) -> bool:
        """Remove ``cache_key`` (and its last use); return whether a row existed."""
        query = f"DELETE FROM {self._tasks} WHERE cache_key = $1"
        forget = f"DELETE FROM {self._last_used} WHERE cache_key = $1"

        async def op(conn: asyncpg.Connection) -> str:
            async with conn.transaction():
                await conn.execute(forget, cache_key)
                status: str = await conn.execute(query, cache_key)
            return status

        return await self._run(op, "delete") != "DELETE 0"

    async def delete_expired(self, now: float | None = None) -> int:
        """Remove rows expired at ``now`` (default: the server clock), via the index."""
        query = f"""
            WITH gone AS (
                DELETE FROM {self._tasks} WHERE expires_at IS NOT NULL
                AND expires_at <= coalesce($1::double precision, extract(epoch FROM now()))
                RETURNING cache_key),
            forgotten AS (
                DELETE FROM {self._last_used} u USING gone WHERE u.cache_key = gone.cache_key)
            SELECT count(*) FROM gone"""

        async def op(conn: asyncpg.Connection) -> str:
            count = await conn.fetchval(query, now)
            return f"DELETE {int(count)}"

        status = await self._run(op, "delete_expired")
        return int(status.rsplit(" ", 1)[-1])

    async def iter_records(self) -> AsyncIterator[TaskRecord]:
        """Yield every record through a server-side cursor.

        The connection is held until the iteration ends; close the iterator
        (``aclosing``) when stopping early. Connection loss mid-iteration is
        not retried: it raises :class:`~beautyspot_async.BackendError`.
        """
        query = f"SELECT * FROM {self._tasks}"
        with _ERRORS.translating("iter_records"):
            pool = await self._pool.get()
            async with pool.acquire() as conn, conn.transaction():
                async for row in conn.cursor(query, prefetch=256):
                    yield _record(row)

    async def get_meta(self, cache_key: str) -> Mapping[str, Any] | None:
        """The meta column of ``cache_key``, alone."""
        query = f"SELECT meta FROM {self._tasks} WHERE cache_key = $1"

        async def op(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval(query, cache_key)

        return parse_meta(await self._run(op, "get_meta"))

    async def get_history(self, limit: int = 1000) -> pd.DataFrame:
        """Return up to ``limit`` records' metadata, newest ``updated_at`` first."""
        from beautyspot_async.db._history import records_to_frame

        columns = ", ".join(HISTORY_COLUMNS)
        query = f"SELECT {columns} FROM {self._tasks} ORDER BY updated_at DESC LIMIT $1"

        async def op(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetch(query, max(0, limit))
            return rows

        rows = await self._run(op, "get_history")
        return records_to_frame(tuple(row) for row in rows)

    # -- size budgets ----------------------------------------------------------------

    async def touch(self, cache_keys: Sequence[str], now: float) -> None:
        """Upsert the keys' last use in one statement (stored keys only)."""
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return
        query = f"""
            INSERT INTO {self._last_used} (cache_key, used_at)
            SELECT cache_key, $2 FROM {self._tasks} WHERE cache_key = ANY($1::text[])
            ON CONFLICT (cache_key) DO UPDATE
                SET used_at = greatest({self._last_used}.used_at, EXCLUDED.used_at)"""

        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(query, keys, float(now))

        await self._run(op, "touch")

    async def usage_totals(self) -> tuple[int, int]:
        """One ``COUNT``/``SUM`` over the result rows."""
        query = f"SELECT count(*), coalesce(sum(greatest(size_bytes, 0)), 0) FROM {self._tasks}"

        async def op(conn: asyncpg.Connection) -> tuple[int, int]:
            row = await conn.fetchrow(query)
            return int(row[0]), int(row[1])

        return await self._run(op, "usage_totals")

    async def eviction_candidates(self, limit: int) -> list[EvictionCandidate]:
        """Least recently used first: the later of the last touch and ``updated_at``."""
        query = f"""
            SELECT t.cache_key, t.size_bytes, t.result_type, t.result_value,
                   greatest(t.updated_at, u.used_at) AS used
            FROM {self._tasks} t LEFT JOIN {self._last_used} u ON u.cache_key = t.cache_key
            ORDER BY used LIMIT $1"""

        async def op(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetch(query, max(limit, 0))
            return rows

        return [
            EvictionCandidate(str(r[0]), int(r[1]), str(r[2]), r[3], float(r[4]))
            for r in await self._run(op, "eviction_candidates")
        ]

    # -- failure records -------------------------------------------------------

    async def save_failure(self, failure: FailureRecord) -> None:
        """Upsert ``failure`` into the failures table."""
        query = f"""
            INSERT INTO {self._failures} ({_FAILURE_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (cache_key) DO UPDATE SET
                func_name = EXCLUDED.func_name, input_id = EXCLUDED.input_id,
                version = EXCLUDED.version, exc_type = EXCLUDED.exc_type,
                message = EXCLUDED.message, attempts = EXCLUDED.attempts,
                failed_at = EXCLUDED.failed_at, args = EXCLUDED.args"""
        args = failure_row(failure)

        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(query, *args)

        await self._run(op, "save_failure")

    async def get_failures(
        self, func_name: str | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        """Up to ``limit`` failures, newest first, through the failed_at index."""
        query = f"""
            SELECT {_FAILURE_COLUMNS} FROM {self._failures}
            WHERE $1::text IS NULL OR func_name = $1
            ORDER BY failed_at DESC LIMIT $2"""

        async def op(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(query, func_name, max(0, limit)))

        rows = await self._run(op, "get_failures")
        return [f for row in rows if (f := checked_failure(*row)) is not None]

    async def delete_failures(self, cache_keys: Sequence[str]) -> int:
        """Delete the failures of ``cache_keys`` in one statement."""
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return 0
        query = f"DELETE FROM {self._failures} WHERE cache_key = ANY($1::text[])"

        async def op(conn: asyncpg.Connection) -> str:
            status: str = await conn.execute(query, keys)
            return status

        return int((await self._run(op, "delete_failures")).rsplit(" ", 1)[-1])

    # -- leases ---------------------------------------------------------------

    async def acquire_lease(self, cache_key: str, owner: str, ttl: float) -> bool:
        """Take or renew the lease on ``cache_key``; atomic on the server clock."""
        query = f"""
            INSERT INTO {self._leases} AS l (cache_key, owner, expires_at)
            VALUES ($1, $2, extract(epoch FROM clock_timestamp()) + $3)
            ON CONFLICT (cache_key) DO UPDATE
                SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
                WHERE l.expires_at <= extract(epoch FROM clock_timestamp())
                   OR l.owner = EXCLUDED.owner
            RETURNING owner"""

        async def op(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval(query, cache_key, owner, float(ttl))

        return await self._run(op, "acquire_lease") is not None

    async def release_lease(self, cache_key: str, owner: str) -> None:
        """Drop ``owner``'s lease on ``cache_key`` and wake its waiters."""
        await self.release_leases([cache_key], owner)

    async def renew_leases(self, cache_keys: Sequence[str], owner: str, ttl: float) -> None:
        """Extend ``owner``'s leases on ``cache_keys`` in one statement (server clock)."""
        if not cache_keys:
            return
        query = f"""
            UPDATE {self._leases}
            SET expires_at = extract(epoch FROM clock_timestamp()) + $3
            WHERE cache_key = ANY($1::text[]) AND owner = $2"""
        keys = list(cache_keys)

        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(query, keys, owner, float(ttl))

        await self._run(op, "renew_leases")

    async def lease_holders(self, cache_keys: Sequence[str]) -> dict[str, LeaseHolder]:
        """Owners of the unexpired leases among ``cache_keys``, with seconds left."""
        query = f"""
            SELECT cache_key, owner,
                   expires_at - extract(epoch FROM clock_timestamp()) AS expires_in
            FROM {self._leases}
            WHERE cache_key = ANY($1::text[])
              AND expires_at > extract(epoch FROM clock_timestamp())"""
        keys = list(dict.fromkeys(cache_keys))

        async def op(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(query, keys))

        rows = await self._run(op, "lease_holders") if keys else []
        return {row[0]: LeaseHolder(row[1], float(row[2])) for row in rows}

    async def take_over_leases(self, stale: Mapping[str, str], owner: str, ttl: float) -> list[str]:
        """Swap each dead owner's lease for ``owner``'s, only while the dead one holds it."""
        if not stale:
            return []
        query = f"""
            UPDATE {self._leases} AS l
            SET owner = $3, expires_at = extract(epoch FROM clock_timestamp()) + $4
            FROM unnest($1::text[], $2::text[]) AS s(cache_key, dead)
            WHERE l.cache_key = s.cache_key AND l.owner = s.dead
            RETURNING l.cache_key"""
        keys, dead = list(stale), list(stale.values())

        async def op(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(query, keys, dead, owner, float(ttl)))

        return [row[0] for row in await self._run(op, "take_over_leases")]

    async def wait_for_result(self, cache_key: str, timeout: float) -> None:  # noqa: ASYNC109 - the TaskDB signature
        """Return on a NOTIFY for ``cache_key`` (a save or a released lease).

        Returns at once when the row already exists or no lease is held, and
        after ``timeout`` at the latest. Spurious early returns are allowed
        (the caller re-checks).
        """
        if not self._notify:
            await anyio.sleep(min(timeout, self._poll_interval))
            return
        # Connecting the listener is bounded by connect_timeout, not by
        # ``timeout``: a tiny timeout must not keep cancelling the connect.
        listener = await self._listener.get()
        with listener.waiting(cache_key) as event, anyio.move_on_after(timeout):
            # Listening first, then checking, closes the window in which a
            # save between the caller's miss and our LISTEN would be lost.
            if await self._settled(cache_key):
                return
            with self._waits.parked(cache_key):
                await event.wait()

    async def _settled(self, cache_key: str) -> bool:
        query = f"""
            SELECT EXISTS (SELECT 1 FROM {self._tasks} WHERE cache_key = $1)
                OR NOT EXISTS (SELECT 1 FROM {self._leases} WHERE cache_key = $1
                               AND expires_at > extract(epoch FROM clock_timestamp()))"""

        async def op(conn: asyncpg.Connection) -> bool:
            return bool(await conn.fetchval(query, cache_key))

        return await self._run(op, "wait_for_result")


#: ``create_pool(reset=)`` exists from asyncpg 0.30 on.
_POOL_TAKES_RESET = "reset" in inspect.signature(asyncpg.create_pool).parameters


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset hook: nothing beyond asyncpg's own rollback of an open transaction."""


async def _close_connection(conn: asyncpg.Connection) -> None:
    # As _close_pool: graceful when the server answers, cut when it does not.
    if conn.is_closed():
        return
    try:
        await conn.close(timeout=2)
    except BaseException as exc:  # a broken connection, or the caller gave up
        conn.terminate()
        if not isinstance(exc, Exception):
            raise


async def _close_pool(pool: asyncpg.Pool) -> None:
    # A graceful close waits for the server to answer; when it does not (a
    # frozen server), the caller's deadline cancels it and the connections
    # are cut instead, so closing can never hang.
    try:
        await pool.close()
    except BaseException as exc:  # a broken pool, or the caller gave up
        pool.terminate()
        if not isinstance(exc, Exception):
            raise
