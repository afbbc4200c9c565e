"""PostgresTaskDB against the real server on loopback.

asyncio only: asyncpg runs on asyncio and nothing else, so this module
overrides ``anyio_backend``. Every test works in its own freshly named schema
and drops it at the end.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import anyio
import pytest

from beautyspot_async.exceptions import BackendError, ConfigurationError
from beautyspot_async.testing import check_taskdb
from tests._services import POSTGRES_URL, require_module, require_service

asyncpg = require_module("asyncpg", extra="postgres")

from beautyspot_async.db._postgres import SCHEMA_VERSION, PostgresTaskDB  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.services]

Factory = Callable[..., PostgresTaskDB]


@pytest.fixture
def anyio_backend() -> str:
    """asyncpg is asyncio-only."""
    return "asyncio"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A unique schema name, dropped with everything in it afterwards."""
    url = urlsplit(POSTGRES_URL)
    require_service("PostgreSQL", url.hostname or "127.0.0.1", url.port or 5432)
    name = f"bs_test_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def make_db(schema: str) -> AsyncIterator[Factory]:
    """Build PostgresTaskDBs on the test's schema; close them all afterwards."""
    made: list[PostgresTaskDB] = []

    def factory(**kwargs: object) -> PostgresTaskDB:
        db = PostgresTaskDB(POSTGRES_URL, schema=schema, retry_delays=(0.05, 0.2), **kwargs)  # type: ignore[arg-type]
        made.append(db)
        return db

    yield factory
    for db in made:
        await db.aclose()


async def _admin(query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _save(db: PostgresTaskDB, key: str, data: bytes = b"payload") -> None:
    await db.save(
        cache_key=key,
        func_name="tests.fn",
        input_id="i",
        version=None,
        result_type="inline",
        content_type=None,
        result_data=data,
    )


async def _until_blocked(db: PostgresTaskDB, key: str) -> None:
    with anyio.fail_after(10):
        while key not in db._blocked:
            await anyio.sleep(0.005)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestConformance:
    """PostgresTaskDB passes the TaskDB behaviour suite."""

    async def test_check_taskdb(self, make_db: Factory) -> None:
        await check_taskdb(make_db)


class TestSchema:
    """init_schema creates a versioned, indexed layout and refuses newer ones."""

    async def test_indexes_exist(self, make_db: Factory, schema: str) -> None:
        await make_db().init_schema()
        rows = await _admin(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1", schema
        )
        defs = {r["indexname"]: r["indexdef"] for r in rows}
        assert "beautyspot_tasks_func_name" in defs
        assert "beautyspot_tasks_updated_at" in defs
        assert "WHERE (expires_at IS NOT NULL)" in defs["beautyspot_tasks_expires_at"]

    async def test_concurrent_init_schema(self, make_db: Factory) -> None:
        dbs = [make_db() for _ in range(4)]
        async with anyio.create_task_group() as tg:
            for db in dbs:
                tg.start_soon(db.init_schema)
        await _save(dbs[0], "k")
        assert (await dbs[3].get("k")) is not None

    async def test_newer_version_is_refused(self, make_db: Factory, schema: str) -> None:
        await make_db().init_schema()
        await _admin(
            f'UPDATE "{schema}".beautyspot_schema_version SET version = $1', SCHEMA_VERSION + 1
        )
        with pytest.raises(ConfigurationError, match="newer"):
            await make_db().init_schema()

    async def test_table_prefix_isolates(self, make_db: Factory) -> None:
        a, b = make_db(table_prefix="a_"), make_db(table_prefix="b_")
        await a.init_schema()
        await b.init_schema()
        await _save(a, "k")
        assert await b.get("k") is None

    @pytest.mark.parametrize("bad", ['x"; DROP TABLE y; --', "1abc", "a b", ""])
    def test_hostile_identifiers(self, bad: str) -> None:
        with pytest.raises(ConfigurationError):
            PostgresTaskDB(POSTGRES_URL, schema=bad)


class TestLeases:
    """Leases are exclusive across instances and expire on the server clock."""

    async def test_exclusive_across_instances(self, make_db: Factory) -> None:
        a, b = make_db(), make_db()
        await a.init_schema()
        assert await a.acquire_lease("k", "proc-a", 30)
        assert not await b.acquire_lease("k", "proc-b", 30)
        await b.release_lease("k", "proc-b")  # not the holder: no effect
        assert not await b.acquire_lease("k", "proc-b", 30)
        await a.release_lease("k", "proc-a")
        assert await b.acquire_lease("k", "proc-b", 30)

    async def test_concurrent_acquirers_one_winner(self, make_db: Factory) -> None:
        dbs = [make_db() for _ in range(5)]
        await dbs[0].init_schema()
        results: list[bool] = []

        async def take(i: int) -> None:
            results.append(await dbs[i].acquire_lease("k", f"proc-{i}", 30))

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(take, i)
        assert sorted(results) == [False] * 4 + [True]

    async def test_expiry(self, make_db: Factory) -> None:
        # The lease clock is the server's, so this uses a short real TTL.
        a, b = make_db(), make_db()
        await a.init_schema()
        assert await a.acquire_lease("k", "proc-a", 0.3)
        assert not await b.acquire_lease("k", "proc-b", 0.3)
        await anyio.sleep(0.4)
        assert await b.acquire_lease("k", "proc-b", 30)


class TestWaitForResult:
    """wait_for_result wakes on NOTIFY well before its timeout."""

    async def test_woken_by_save(self, make_db: Factory) -> None:
        holder, waiter = make_db(), make_db()
        await holder.init_schema()
        assert await holder.acquire_lease("k", "holder", 60)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await _until_blocked(waiter, "k")
                await _save(holder, "k")
        assert await waiter.get("k") is not None

    async def test_woken_by_save_many(self, make_db: Factory) -> None:
        from beautyspot_async._record import TaskRecord

        holder, waiter = make_db(), make_db()
        await holder.init_schema()
        assert await holder.acquire_lease("k", "holder", 60)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await _until_blocked(waiter, "k")
                await holder.save_many([TaskRecord("k", "f", "i", None, "inline", None)])

    async def test_woken_by_release(self, make_db: Factory) -> None:
        holder, waiter = make_db(), make_db()
        await holder.init_schema()
        assert await holder.acquire_lease("k", "holder", 60)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await _until_blocked(waiter, "k")
                await holder.release_lease("k", "holder")

    async def test_other_keys_do_not_wake(self, make_db: Factory) -> None:
        holder, waiter = make_db(), make_db()
        await holder.init_schema()
        assert await holder.acquire_lease("k", "holder", 60)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.wait_for_result, "k", 60.0)
            await _until_blocked(waiter, "k")
            await _save(holder, "other")
            await holder.acquire_lease("k", "holder", 60)  # a round trip after the NOTIFY
            assert "k" in waiter._blocked
            tg.cancel_scope.cancel()

    async def test_returns_at_once_when_settled(self, make_db: Factory) -> None:
        db = make_db()
        await db.init_schema()
        await _save(db, "done")
        with anyio.fail_after(5):
            await db.wait_for_result("done", 60.0)  # row exists
            await db.wait_for_result("free", 60.0)  # no lease held

    async def test_timeout_fallback(self, make_db: Factory) -> None:
        db = make_db()
        await db.init_schema()
        assert await db.acquire_lease("k", "holder", 60)
        with anyio.fail_after(5):
            await db.wait_for_result("k", 0.05)


class TestConnectionLoss:
    """Terminated connections are retried; a server that stays down raises BackendError."""

    async def test_terminated_backend_recovers(self, make_db: Factory) -> None:
        app = f"bs-test-{uuid.uuid4().hex[:8]}"
        db = make_db(server_settings={"application_name": app}, min_size=2)
        await db.init_schema()
        await _save(db, "before")
        killed = await _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            app,
        )
        assert killed, "no connection of the database under test was found to terminate"
        assert await db.get("before") is not None
        await _save(db, "after")
        assert await db.get("after") is not None

    async def test_connection_dying_mid_call_is_retried(self, make_db: Factory) -> None:
        db = make_db()
        await db.init_schema()
        attempts: list[int] = []

        async def op(conn: asyncpg.Connection) -> str:
            attempts.append(conn.get_server_pid())
            if len(attempts) == 1:
                await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            return "done"

        assert await db._run(op, "probe") == "done"
        assert len(attempts) == 2
        assert attempts[0] != attempts[1], "the retry must run on a fresh connection"

    async def test_listener_loss_wakes_waiters(self, make_db: Factory) -> None:
        app = f"bs-test-{uuid.uuid4().hex[:8]}"
        holder = make_db()
        waiter = make_db(server_settings={"application_name": app})
        await holder.init_schema()
        assert await holder.acquire_lease("k", "holder", 60)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await _until_blocked(waiter, "k")
                await _admin(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    app,
                )
        # After the spurious wake-up the waiter re-listens and still works.
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await _until_blocked(waiter, "k")
                await _save(holder, "k")

    async def test_down_server_raises_backend_error(self) -> None:
        db = PostgresTaskDB(
            f"postgresql://postgres@127.0.0.1:{_closed_port()}/test", retry_delays=(0.01, 0.01)
        )
        with pytest.raises(BackendError) as info:
            await db.get("k")
        assert info.value.backend == "postgresql"
        assert isinstance(info.value.__cause__, OSError)
        await db.aclose()

    async def test_sql_errors_are_not_retried(self, make_db: Factory) -> None:
        db = make_db()  # schema never created: the table is missing
        with pytest.raises(BackendError) as info:
            await db.get("k")
        assert isinstance(info.value.__cause__, asyncpg.UndefinedTableError)
