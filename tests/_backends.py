"""Fixtures for the server backends, shared by their test modules.

Each test gets its own PostgreSQL schema or Redis key prefix, removed with
everything in it afterwards, and a factory of databases on it that closes
every database it made. Import the fixtures into a test module by name.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import pytest

from tests._services import POSTGRES_URL, REDIS_URL, require_module, require_service

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from beautyspot_async.db import PostgresTaskDB, RedisTaskDB, TaskDB


@pytest.fixture
async def postgres_schema() -> AsyncIterator[str]:
    """A unique schema name, dropped with everything in it afterwards."""
    asyncpg = require_module("asyncpg", extra="postgres")
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
async def make_postgres(postgres_schema: str) -> AsyncIterator[Callable[..., PostgresTaskDB]]:
    """Build PostgresTaskDBs on the test's schema; close them all afterwards."""
    from beautyspot_async.db._postgres import PostgresTaskDB

    made: list[PostgresTaskDB] = []

    def factory(**kwargs: Any) -> PostgresTaskDB:
        db = PostgresTaskDB(
            POSTGRES_URL, schema=postgres_schema, retry_delays=(0.05, 0.2), **kwargs
        )
        made.append(db)
        return db

    yield factory
    for db in made:
        await db.aclose()


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    """A plain client for inspecting and tampering with the server."""
    require_module("redis", extra="redis")
    import redis.asyncio as aioredis

    url = urlsplit(REDIS_URL)
    require_service("Redis", url.hostname or "127.0.0.1", url.port or 6379)
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    name = f"bs-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = [k async for k in redis_client.scan_iter(match=f"{name}:*", count=500)]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def make_redis(redis_prefix: str) -> AsyncIterator[Callable[..., RedisTaskDB]]:
    """Build RedisTaskDBs on the test's prefix; close them all afterwards."""
    from beautyspot_async.db._redis import RedisTaskDB

    made: list[RedisTaskDB] = []

    def factory(**kwargs: Any) -> RedisTaskDB:
        options: dict[str, Any] = {"prefix": redis_prefix, "backoff_base": 0.01}
        options.update(kwargs)
        db = RedisTaskDB(REDIS_URL, **options)
        made.append(db)
        return db

    yield factory
    for db in made:
        await db.aclose()


def is_blocked(db: Any, key: str) -> bool:
    """Whether ``db.wait_for_result(key, ...)`` is waiting for a notification.

    PostgresTaskDB and RedisTaskDB report the keys their waiters are parked
    on in ``statistics().parked_keys``; this is the one place the tests read it.
    """
    return key in db.statistics().parked_keys


async def until_blocked(db: Any, key: str) -> None:
    """Return once ``db.wait_for_result(key, ...)`` waits for a notification."""
    with anyio.fail_after(10):
        while not is_blocked(db, key):
            await anyio.sleep(0.005)


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def save_row(db: TaskDB, key: str, **extra: Any) -> None:
    """Save an inline row under ``key`` (payload ``b"\\x00payload\\xff"``), ``extra`` overriding."""
    fields: dict[str, Any] = {
        "cache_key": key,
        "func_name": "tests.fn",
        "input_id": "i",
        "version": None,
        "result_type": "inline",
        "content_type": None,
        "result_data": b"\x00payload\xff",
    }
    fields.update(extra)
    await db.save(**fields)
