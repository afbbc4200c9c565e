"""What PostgreSQL and Redis promise alike beyond the conformance suite: woken waiters.

Both notify (LISTEN/NOTIFY, pub/sub), so a waiter in ``wait_for_result``
sleeps until the key it waits for is stored or released, and not until its
timeout. The conformance suite (``check_taskdb``, ``check_taskdb_pair``)
covers the rest of what they share, in each backend's own test module.

asyncio only: asyncpg and redis.asyncio run on asyncio and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from beautyspot_async._record import TaskRecord
from beautyspot_async.db._base import TaskDB
from tests import _backends
from tests._backends import is_blocked, save_row, until_blocked

pytestmark = [pytest.mark.anyio, pytest.mark.services]

postgres_schema = _backends.postgres_schema
make_postgres = _backends.make_postgres
redis_client = _backends.redis_client
redis_prefix = _backends.redis_prefix
make_redis = _backends.make_redis

Factory = Callable[[], TaskDB]


@pytest.fixture
def anyio_backend() -> str:
    """asyncpg and redis.asyncio are asyncio-only."""
    return "asyncio"


@pytest.fixture(params=["postgres", "redis"])
def make_db(request: pytest.FixtureRequest) -> Factory:
    """A factory of databases of each notifying backend, initialised on one store."""
    factory: Factory = request.getfixturevalue(f"make_{request.param}")
    return factory


async def _holder_and_waiter(make_db: Factory) -> tuple[TaskDB, TaskDB]:
    holder, waiter = make_db(), make_db()
    await holder.init_schema()
    assert await holder.acquire_lease("k", "holder", 60)
    return holder, waiter


class TestWaitForResult:
    """wait_for_result wakes on a notification well before its timeout."""

    async def test_woken_by_save(self, make_db: Factory) -> None:
        holder, waiter = await _holder_and_waiter(make_db)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await until_blocked(waiter, "k")
                await save_row(holder, "k")
        assert await waiter.get("k") is not None

    async def test_woken_by_save_many(self, make_db: Factory) -> None:
        holder, waiter = await _holder_and_waiter(make_db)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await until_blocked(waiter, "k")
                await holder.save_many([TaskRecord("k", "f", "i", None, "inline", None)])

    async def test_woken_by_release(self, make_db: Factory) -> None:
        holder, waiter = await _holder_and_waiter(make_db)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await until_blocked(waiter, "k")
                await holder.release_lease("k", "holder")

    async def test_other_keys_do_not_wake(self, make_db: Factory) -> None:
        holder, waiter = await _holder_and_waiter(make_db)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.wait_for_result, "k", 60.0)
            await until_blocked(waiter, "k")
            await save_row(holder, "other")
            # A notification arrives asynchronously: a round trip on each
            # side makes it likely to have been read by now.
            await holder.acquire_lease("k", "holder", 60)
            await waiter.get("other")
            assert is_blocked(waiter, "k")
            tg.cancel_scope.cancel()

    async def test_returns_at_once_when_settled(self, make_db: Factory) -> None:
        db = make_db()
        await db.init_schema()
        await save_row(db, "done")
        with anyio.fail_after(5):
            await db.wait_for_result("done", 60.0)  # row exists
            await db.wait_for_result("free", 60.0)  # no lease held

    async def test_timeout_fallback(self, make_db: Factory) -> None:
        db = make_db()
        await db.init_schema()
        assert await db.acquire_lease("k", "holder", 60)
        with anyio.fail_after(5):
            await db.wait_for_result("k", 0.05)
