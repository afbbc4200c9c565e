"""Connections to shared servers carry a name operators can find them by.

asyncio-only: asyncpg and redis.asyncio are used directly.
"""

from __future__ import annotations

import uuid

import pytest

from ._services import POSTGRES_URL, REDIS_URL, require_module, require_service

pytestmark = [pytest.mark.anyio, pytest.mark.services]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class TestDefaultName:
    """Without configuration, every server connection is named beautyspot-async."""

    async def test_postgres_application_name(self) -> None:
        asyncpg = require_module("asyncpg", extra="postgres")
        require_service("PostgreSQL", "127.0.0.1", 5432)
        from beautyspot_async.db import PostgresTaskDB

        prefix = f"names_{uuid.uuid4().hex[:8]}_"
        db = PostgresTaskDB(POSTGRES_URL, table_prefix=prefix)
        admin = await asyncpg.connect(POSTGRES_URL)
        try:
            await db.init_schema()
            count = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'beautyspot-async'"
            )
            assert count >= 1
        finally:
            await db.aclose()
            for table in ("tasks", "leases", "schema_version"):
                await admin.execute(f'DROP TABLE IF EXISTS "{prefix}{table}"')
            await admin.close()

    async def test_redis_client_name(self) -> None:
        aioredis = require_module("redis.asyncio", extra="redis")
        require_service("Redis", "127.0.0.1", 6379)
        from beautyspot_async.db import RedisTaskDB

        prefix = f"names-{uuid.uuid4().hex[:8]}"
        db = RedisTaskDB(REDIS_URL, prefix=prefix)
        admin = aioredis.from_url(REDIS_URL)
        try:
            await db.init_schema()
            assert await db.get("absent") is None
            clients = await admin.client_list()
            assert any(c.get("name") == "beautyspot-async" for c in clients)
        finally:
            await db.aclose()
            async for key in admin.scan_iter(match=f"{prefix}*"):
                await admin.delete(key)
            await admin.aclose()


class TestExplicitName:
    """A name the caller sets is kept, not replaced by the default."""

    async def test_explicit_postgres_name_wins(self) -> None:
        require_module("asyncpg", extra="postgres")
        from beautyspot_async.db import PostgresTaskDB

        db = PostgresTaskDB(POSTGRES_URL, server_settings={"application_name": "mine"})
        assert db._connect_kwargs["server_settings"] == {"application_name": "mine"}
