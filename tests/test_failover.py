"""Failure recovery at the Spot level: lost connections, and backends that stay down.

A lost connection (the server terminated it) is recovered by the backend
and never reaches the caller; a backend that stays unreachable fails calls
with ``BackendError`` naming it, or, with ``on_backend_error="bypass"``,
runs them uncached with a RuntimeWarning.

Connections are killed selectively: PostgreSQL ones by the unique
``application_name`` the test gives its Spot (``pg_terminate_backend``),
Redis ones by their unique client name (``CLIENT KILL ID``), never every
client of the shared servers. The Spot itself runs under asyncio and trio
(its loop-bound backends live on its own I/O loop); the test's admin
connections are made from a worker thread with their own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import pytest

import beautyspot_async as bs
from beautyspot_async.db import MemoryTaskDB, SQLiteTaskDB
from tests._services import POSTGRES_URL, REDIS_URL, require_module, require_service

pytestmark = [pytest.mark.anyio]

ROUND = 20


def _require(name: str, url: str, port: int) -> None:
    parts = urlsplit(url)
    require_service(name, parts.hostname or "127.0.0.1", parts.port or port)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- admin access to the servers (from a thread: any anyio backend) ----------------------


async def pg_admin(query: str, *args: Any) -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return await anyio.to_thread.run_sync(asyncio.run, run())


async def pg_terminate(application_name: str) -> int:
    """Terminate every server connection opened under ``application_name``."""
    rows = await pg_admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        application_name,
    )
    return sum(1 for row in rows if row[0])


async def pg_connection_count(application_name: str) -> int:
    rows = await pg_admin(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    return int(rows[0][0])


def _redis_clients(client_name: str) -> list[dict[str, Any]]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [c for c in client.client_list() if c.get("name") == client_name]
    finally:
        client.close()


def _redis_kill(client_name: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        killed = 0
        for info in client.client_list():
            if info.get("name") == client_name:
                killed += int(client.client_kill_filter(_id=info["id"]))
        return killed
    finally:
        client.close()


async def redis_kill(client_name: str) -> int:
    """Kill every Redis connection that carries ``client_name``."""
    return await anyio.to_thread.run_sync(_redis_kill, client_name)


async def redis_connection_count(client_name: str) -> int:
    return len(await anyio.to_thread.run_sync(_redis_clients, client_name))


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
async def pg_spot(tmp_path: Path) -> AsyncIterator[tuple[bs.Spot, str]]:
    """A Spot on PostgreSQL in a unique schema whose connections carry a unique name."""
    require_module("asyncpg", extra="postgres")
    _require("PostgreSQL", POSTGRES_URL, 5432)
    from beautyspot_async.db import PostgresTaskDB

    tag = uuid.uuid4().hex[:12]
    schema, app = f"bs_fo_{tag}", f"bs-failover-{tag}"
    db = PostgresTaskDB(
        POSTGRES_URL,
        schema=schema,
        max_size=4,
        retry_delays=(0.05, 0.2),
        server_settings={"application_name": app},
    )
    # memory_cache_entries=0: every hit is read from the database itself.
    spot = bs.Spot("failover", db=db, storage=tmp_path / "blobs", memory_cache_entries=0)
    try:
        yield spot, app
    finally:
        await spot.aclose()
        await pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def redis_spot(tmp_path: Path) -> AsyncIterator[tuple[bs.Spot, str]]:
    """A Spot on Redis under a unique prefix whose connections carry a unique name."""
    require_module("redis", extra="redis")
    _require("Redis", REDIS_URL, 6379)
    from beautyspot_async.db import RedisTaskDB

    tag = uuid.uuid4().hex[:12]
    prefix, name = f"bs-fo-{tag}", f"bs-failover-{tag}"
    db = RedisTaskDB(REDIS_URL, prefix=prefix, client_name=name)
    spot = bs.Spot("failover", db=db, storage=tmp_path / "blobs", memory_cache_entries=0)
    try:
        yield spot, name
    finally:
        await spot.aclose()
        await anyio.to_thread.run_sync(_redis_delete_prefix, prefix)


def _redis_delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# -- the scenario ---------------------------------------------------------------------------


async def survive_connection_loss(
    spot: bs.Spot,
    kill: Callable[[], Awaitable[int]],
    count: Callable[[], Awaitable[int]],
) -> None:
    """Kill the Spot's connections in the middle of a gather; every call still succeeds.

    The kill happens inside the function of one call, while the other calls
    of the batch are looking up, leasing and saving. Afterwards every key is
    read back from the database (hits, no re-execution) through new
    connections.
    """
    executed: list[int] = []
    killed: list[int] = []

    @spot.mark(name="failover.square")
    async def square(x: int) -> int:
        executed.append(x)
        if x == ROUND // 2:
            killed.append(await kill())
        return x * x

    expected = [x * x for x in range(ROUND)]
    assert await gather(square, range(ROUND)) == expected
    assert killed[0] >= 1, "no connection of the Spot was found to kill"

    # A second kill between batches: a pool of idle, now-dead connections.
    assert await kill() >= 1
    assert await gather(square, range(ROUND)) == expected
    assert sorted(executed) == list(range(ROUND)), "a stored key was executed again"
    assert spot.statistics().hits >= ROUND
    assert await count() >= 1, "the Spot did not reconnect"


async def gather(fn: Callable[[int], Awaitable[int]], xs: range) -> list[int]:
    results: dict[int, int] = {}

    async def one(x: int) -> None:
        results[x] = await fn(x)

    async with anyio.create_task_group() as tg:
        for x in xs:
            tg.start_soon(one, x)
    return [results[x] for x in xs]


@pytest.mark.services
class TestConnectionLoss:
    """Calls keep working when the server drops the Spot's connections mid-run."""

    async def test_postgres_terminated_backends(self, pg_spot: tuple[bs.Spot, str]) -> None:
        spot, app = pg_spot
        await survive_connection_loss(
            spot, lambda: pg_terminate(app), lambda: pg_connection_count(app)
        )

    async def test_redis_killed_clients(self, redis_spot: tuple[bs.Spot, str]) -> None:
        spot, name = redis_spot
        await survive_connection_loss(
            spot, lambda: redis_kill(name), lambda: redis_connection_count(name)
        )


# -- backends that stay down ----------------------------------------------------------------


@pytest.fixture
def down_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """``(url, backend name)`` of a database URL whose port nothing listens on."""
    port = closed_port()
    kind = request.param
    if kind == "postgresql":
        yield f"postgresql://postgres@127.0.0.1:{port}/test", "postgresql"
    else:
        yield f"redis://127.0.0.1:{port}/0", "redis"


DOWN = [pytest.param("postgresql", id="postgresql"), pytest.param("redis", id="redis")]


@pytest.mark.parametrize("down_url", DOWN, indirect=True)
class TestBackendDown:
    """A database that stays unreachable fails calls clearly, or is bypassed on request."""

    async def test_calls_raise_backend_error_naming_the_backend(
        self, down_url: tuple[str, str], tmp_path: Path
    ) -> None:
        url, backend = down_url
        spot = bs.Spot("down", db=url, storage=tmp_path / "blobs")
        executed: list[int] = []

        @spot.mark
        async def double(x: int) -> int:
            executed.append(x)
            return 2 * x

        try:
            with pytest.raises(bs.BackendError) as info:
                await double(1)
        finally:
            await close_quietly(spot)
        assert info.value.backend == backend
        assert backend in str(info.value)
        assert info.value.__cause__ is not None
        assert executed == [], "the function ran although its result could not be cached"

    async def test_bypass_runs_uncached_with_a_warning(
        self, down_url: tuple[str, str], tmp_path: Path
    ) -> None:
        url, backend = down_url
        spot = bs.Spot("down", db=url, storage=tmp_path / "blobs", on_backend_error="bypass")
        executed: list[int] = []

        @spot.mark
        async def double(x: int) -> int:
            executed.append(x)
            return 2 * x

        try:
            with pytest.warns(RuntimeWarning, match=backend):
                assert await double(1) == 2
            with pytest.warns(RuntimeWarning, match=backend):
                assert await double(1) == 2
        finally:
            await close_quietly(spot)
        # Uncached: the second call executed again.
        assert executed == [1, 1]


async def close_quietly(spot: bs.Spot) -> None:
    """Close a Spot whose backend may be down (closing must not hang or mask the test)."""
    with contextlib.suppress(bs.BackendError):
        await spot.aclose()


class TestBlobStorageDown:
    """A blob storage that stays unreachable is reported as a BackendError naming it."""

    async def test_s3_endpoint_down(self, tmp_path: Path) -> None:
        from beautyspot_async.storage import S3Storage

        storage = S3Storage(
            "bs-down-bucket",
            endpoint_url=f"http://127.0.0.1:{closed_port()}",
            max_attempts=1,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        spot = bs.Spot("down", db=MemoryTaskDB(), storage=storage)

        @spot.mark(save_blob=True)
        async def blob(x: int) -> bytes:
            return bytes([x]) * 100

        try:
            with pytest.raises(bs.BackendError) as info:
                await blob(3)
        finally:
            await close_quietly(spot)
        assert info.value.backend == "s3"
        assert "s3" in str(info.value)

    async def test_sqlite_is_unaffected_control(self, tmp_path: Path) -> None:
        # Control for the tests above: the same calls on a working backend succeed.
        spot = bs.Spot("up", db=SQLiteTaskDB(tmp_path / "up.db"), storage=tmp_path / "blobs")

        @spot.mark
        async def double(x: int) -> int:
            return 2 * x

        async with spot:
            assert await double(4) == 8
            assert await double(4) == 8
        assert spot.statistics().misses == 1
