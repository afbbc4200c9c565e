"""PostgresTaskDB against the real server on loopback.

asyncio only: asyncpg runs on asyncio and nothing else, so this module
overrides ``anyio_backend``. Every test works in its own freshly named schema
and drops it at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import anyio
import pytest

from beautyspot_async.exceptions import BackendError, ConfigurationError
from beautyspot_async.testing import check_taskdb, check_taskdb_pair
from tests import _backends
from tests._backends import closed_port, save_row, until_blocked
from tests._services import POSTGRES_URL, require_module

asyncpg = require_module("asyncpg", extra="postgres")

from beautyspot_async.db._postgres import SCHEMA_VERSION, PostgresTaskDB  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.services]

Factory = Callable[..., PostgresTaskDB]


#: The shared fixtures (``make_db`` builds databases on ``postgres_schema``).
postgres_schema = _backends.postgres_schema
make_db = _backends.make_postgres


@pytest.fixture
def anyio_backend() -> str:
    """asyncpg is asyncio-only."""
    return "asyncio"


async def _admin(query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


class TestConformance:
    """PostgresTaskDB passes the TaskDB suite, alone and as two instances on one schema."""

    async def test_check_taskdb(self, make_db: Factory) -> None:
        await check_taskdb(make_db)

    async def test_check_taskdb_pair(self, make_db: Factory) -> None:
        await check_taskdb_pair(lambda: (make_db(), make_db()))


class TestSchema:
    """init_schema creates a versioned, indexed layout and refuses newer ones."""

    async def test_indexes_exist(self, make_db: Factory, postgres_schema: str) -> None:
        await make_db().init_schema()
        rows = await _admin(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1", postgres_schema
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
        await save_row(dbs[0], "k")
        assert (await dbs[3].get("k")) is not None

    async def test_newer_version_is_refused(self, make_db: Factory, postgres_schema: str) -> None:
        await make_db().init_schema()
        await _admin(
            f'UPDATE "{postgres_schema}".beautyspot_schema_version SET version = $1',
            SCHEMA_VERSION + 1,
        )
        with pytest.raises(ConfigurationError, match="newer"):
            await make_db().init_schema()

    async def test_table_prefix_isolates(self, make_db: Factory) -> None:
        a, b = make_db(table_prefix="a_"), make_db(table_prefix="b_")
        await a.init_schema()
        await b.init_schema()
        await save_row(a, "k")
        assert await b.get("k") is None

    @pytest.mark.parametrize("bad", ['x"; DROP TABLE y; --', "1abc", "a b", ""])
    def test_hostile_identifiers(self, bad: str) -> None:
        with pytest.raises(ConfigurationError):
            PostgresTaskDB(POSTGRES_URL, schema=bad)


class TestConnectionLoss:
    """Terminated connections are retried; a server that stays down raises BackendError."""

    async def test_terminated_backend_recovers(self, make_db: Factory) -> None:
        app = f"bs-test-{uuid.uuid4().hex[:8]}"
        db = make_db(server_settings={"application_name": app}, min_size=2)
        await db.init_schema()
        await save_row(db, "before")
        killed = await _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            app,
        )
        assert killed, "no connection of the database under test was found to terminate"
        assert await db.get("before") is not None
        await save_row(db, "after")
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
                await until_blocked(waiter, "k")
                await _admin(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1",
                    app,
                )
        # After the spurious wake-up the waiter re-listens and still works.
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await until_blocked(waiter, "k")
                await save_row(holder, "k")

    async def test_down_server_raises_backend_error(self) -> None:
        db = PostgresTaskDB(
            f"postgresql://postgres@127.0.0.1:{closed_port()}/test", retry_delays=(0.01, 0.01)
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


class TestLookupOrLease:
    """Read and lease in one statement, then re-read what was leased."""

    async def test_stored_missing_and_held(self, make_db: Factory) -> None:
        db, other = make_db(), make_db()
        await db.init_schema()
        await save_row(db, "stored")
        assert await other.lookup_or_lease(["held"], "them", 30) == {"held": True}
        found = await db.lookup_or_lease(["stored", "missing", "held", "missing"], "me", 30)
        assert found == {"stored": await db.get("stored"), "missing": True, "held": False}
        holders = await db.lease_holders(["stored", "missing", "held"])
        assert {k: h.owner for k, h in holders.items()} == {"missing": "me", "held": "them"}
        assert await db.lookup_or_lease(["missing"], "me", 30) == {"missing": True}  # renewed

    async def test_a_result_stored_meanwhile_is_not_leased(
        self, make_db: Factory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A holder that stores and releases right after our first statement: we see its row."""
        db, holder = make_db(), make_db()
        await db.init_schema()
        assert await holder.lookup_or_lease(["k"], "holder", 30) == {"k": True}
        original = asyncpg.Connection.fetch
        stored: list[bool] = []

        async def fetch(self: asyncpg.Connection, query: str, *args: object) -> object:
            rows = await original(self, query, *args)
            if "WITH found AS" in query and not stored:
                stored.append(True)
                # The holder's lease has just expired: we took it. Before our
                # re-read, the holder stores its result and lets go.
                await save_row(holder, "k")
                await holder.release_leases(["k"], "holder")
            return rows

        await _admin(f"UPDATE {db._leases} SET expires_at = 0")
        monkeypatch.setattr(asyncpg.Connection, "fetch", fetch)
        found = await db.lookup_or_lease(["k"], "me", 30)
        assert stored == [True]
        assert found == {"k": await holder.get("k")}
        assert await db.lease_holders(["k"]) == {}  # ours was given back
