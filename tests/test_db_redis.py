"""RedisTaskDB against the real server on loopback.

asyncio only: redis.asyncio runs on asyncio and nothing else, so this module
overrides ``anyio_backend``. Every test uses a fresh key prefix and deletes
every key under it at the end. Connection loss is simulated by killing only
the test's own client connections (``CLIENT KILL ID``), never every client of
the shared server.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import anyio
import pytest

from beautyspot_async._record import TaskRecord
from beautyspot_async.exceptions import BackendError, ConfigurationError
from beautyspot_async.testing import check_taskdb
from tests._services import REDIS_URL, require_module, require_service

aioredis = require_module("redis.asyncio", extra="redis")

from beautyspot_async.db._redis import SCHEMA_VERSION, RedisTaskDB  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.services]

Factory = Callable[..., RedisTaskDB]


@pytest.fixture
def anyio_backend() -> str:
    """redis.asyncio is asyncio-only."""
    return "asyncio"


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    """A plain client for inspecting and tampering with the server."""
    url = urlsplit(REDIS_URL)
    require_service("Redis", url.hostname or "127.0.0.1", url.port or 6379)
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(raw: aioredis.Redis) -> AsyncIterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    name = f"bs-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = [k async for k in raw.scan_iter(match=f"{name}:*", count=500)]
    if keys:
        await raw.delete(*keys)


@pytest.fixture
async def make_db(prefix: str) -> AsyncIterator[Factory]:
    """Build RedisTaskDBs on the test's prefix; close them all afterwards."""
    made: list[RedisTaskDB] = []

    def factory(**kwargs: object) -> RedisTaskDB:
        options: dict[str, object] = {"prefix": prefix, "backoff_base": 0.01}
        options.update(kwargs)
        db = RedisTaskDB(REDIS_URL, **options)  # type: ignore[arg-type]
        made.append(db)
        return db

    yield factory
    for db in made:
        await db.aclose()


async def _save(db: RedisTaskDB, key: str, **extra: object) -> None:
    fields: dict[str, object] = {
        "cache_key": key,
        "func_name": "tests.fn",
        "input_id": "i",
        "version": None,
        "result_type": "inline",
        "content_type": None,
        "result_data": b"\x00payload\xff",
    }
    fields.update(extra)
    await db.save(**fields)  # type: ignore[arg-type]


async def _until_blocked(db: RedisTaskDB, key: str) -> None:
    with anyio.fail_after(10):
        while key not in db._blocked:
            await anyio.sleep(0.005)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestConformance:
    """RedisTaskDB passes the TaskDB behaviour suite."""

    async def test_check_taskdb(self, make_db: Factory) -> None:
        await check_taskdb(make_db)


class TestLayout:
    """Records are hashes, indexed by updated_at and expires_at sorted sets."""

    async def test_hash_and_indexes(
        self, make_db: Factory, raw: aioredis.Redis, prefix: str
    ) -> None:
        db = make_db()
        await db.init_schema()
        await _save(db, "k", expires_at=123.5)
        assert await raw.type(f"{prefix}:rec:k") == b"hash"
        assert await raw.hget(f"{prefix}:rec:k", "result_data") == b"\x00payload\xff"
        record = await db.get("k")
        assert record is not None
        assert await raw.zscore(f"{prefix}:idx:updated", "k") == pytest.approx(record.updated_at)
        assert await raw.zscore(f"{prefix}:idx:expires", "k") == 123.5
        await _save(db, "k", expires_at=None)
        assert await raw.zscore(f"{prefix}:idx:expires", "k") is None
        assert await db.delete("k")
        assert await raw.zcard(f"{prefix}:idx:updated") == 0

    async def test_none_fields_are_cleared_on_overwrite(self, make_db: Factory) -> None:
        db = make_db()
        await _save(db, "k", version="v1", content_type="text/plain", result_value="x")
        await _save(db, "k", version=None, content_type=None, result_value=None)
        record = await db.get("k")
        assert record is not None
        assert (record.version, record.content_type, record.result_value) == (None, None, None)

    async def test_history_is_served_from_the_index(
        self, make_db: Factory, raw: aioredis.Redis, prefix: str
    ) -> None:
        db = make_db()
        await _save(db, "indexed")
        # A record hash missing from the index is invisible to history: no SCAN.
        await raw.hset(f"{prefix}:rec:stray", mapping={"func_name": "f"})
        frame = await db.get_history()
        assert list(frame["cache_key"]) == ["indexed"]

    async def test_prefixes_isolate(self, make_db: Factory, raw: aioredis.Redis) -> None:
        other_prefix = f"bs-test-{uuid.uuid4().hex[:12]}"
        a, b = make_db(), make_db(prefix=other_prefix)
        try:
            await _save(a, "k")
            assert await b.get("k") is None
            assert len(await b.get_history()) == 0
        finally:
            keys = [k async for k in raw.scan_iter(match=f"{other_prefix}:*")]
            if keys:
                await raw.delete(*keys)

    async def test_newer_version_is_refused(
        self, make_db: Factory, raw: aioredis.Redis, prefix: str
    ) -> None:
        await raw.set(f"{prefix}:schema", str(SCHEMA_VERSION + 1))
        with pytest.raises(ConfigurationError, match="newer"):
            await make_db().init_schema()

    @pytest.mark.parametrize("bad", ["", "a b", "x\r\nFLUSHALL"])
    def test_hostile_prefix(self, bad: str) -> None:
        with pytest.raises(ConfigurationError):
            RedisTaskDB(REDIS_URL, prefix=bad)


class TestLeases:
    """Leases are exclusive across instances and expire on the server clock."""

    async def test_exclusive_across_instances(self, make_db: Factory) -> None:
        a, b = make_db(), make_db()
        assert await a.acquire_lease("k", "proc-a", 30)
        assert not await b.acquire_lease("k", "proc-b", 30)
        await b.release_lease("k", "proc-b")  # not the holder: no effect
        assert not await b.acquire_lease("k", "proc-b", 30)
        await a.release_lease("k", "proc-a")
        assert await b.acquire_lease("k", "proc-b", 30)

    async def test_concurrent_acquirers_one_winner(self, make_db: Factory) -> None:
        dbs = [make_db() for _ in range(5)]
        results: list[bool] = []

        async def take(i: int) -> None:
            results.append(await dbs[i].acquire_lease("k", f"proc-{i}", 30))

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(take, i)
        assert sorted(results) == [False] * 4 + [True]

    async def test_expiry(self, make_db: Factory) -> None:
        # The lease clock is the server's (PX expiry), so this uses a short real TTL.
        a, b = make_db(), make_db()
        assert await a.acquire_lease("k", "proc-a", 0.3)
        assert not await b.acquire_lease("k", "proc-b", 0.3)
        await anyio.sleep(0.4)
        assert await b.acquire_lease("k", "proc-b", 30)


class TestWaitForResult:
    """wait_for_result wakes on pub/sub well before its timeout."""

    async def test_woken_by_save(self, make_db: Factory) -> None:
        holder, waiter = make_db(), make_db()
        assert await holder.acquire_lease("k", "holder", 60)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await _until_blocked(waiter, "k")
                await _save(holder, "k")
        assert await waiter.get("k") is not None

    async def test_woken_by_save_many(self, make_db: Factory) -> None:
        holder, waiter = make_db(), make_db()
        assert await holder.acquire_lease("k", "holder", 60)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await _until_blocked(waiter, "k")
                await holder.save_many([TaskRecord("k", "f", "i", None, "inline", None)])

    async def test_woken_by_release(self, make_db: Factory) -> None:
        holder, waiter = make_db(), make_db()
        assert await holder.acquire_lease("k", "holder", 60)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_result, "k", 60.0)
                await _until_blocked(waiter, "k")
                await holder.release_lease("k", "holder")

    async def test_other_keys_do_not_wake(self, make_db: Factory) -> None:
        holder, waiter = make_db(), make_db()
        assert await holder.acquire_lease("k", "holder", 60)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.wait_for_result, "k", 60.0)
            await _until_blocked(waiter, "k")
            await _save(holder, "other")
            # PUBLISH returns after delivery to subscribers' sockets; one more
            # round trip on the waiter's side makes it likely to have read it.
            await waiter.get("other")
            assert "k" in waiter._blocked
            tg.cancel_scope.cancel()

    async def test_returns_at_once_when_settled(self, make_db: Factory) -> None:
        db = make_db()
        await _save(db, "done")
        with anyio.fail_after(5):
            await db.wait_for_result("done", 60.0)
            await db.wait_for_result("free", 60.0)

    async def test_timeout_fallback(self, make_db: Factory) -> None:
        db = make_db()
        assert await db.acquire_lease("k", "holder", 60)
        with anyio.fail_after(5):
            await db.wait_for_result("k", 0.05)


class TestConnectionLoss:
    """Killed connections are retried; an unreachable server raises BackendError."""

    async def test_killed_connection_recovers(self, make_db: Factory, raw: aioredis.Redis) -> None:
        name = f"bs-test-{uuid.uuid4().hex[:8]}"
        db = make_db(client_name=name)
        await _save(db, "before")
        clients = await raw.client_list()
        mine = [c["id"] for c in clients if c.get("name") == name]
        assert mine, "no connection of the database under test was found to kill"
        for client_id in mine:
            await raw.client_kill_filter(_id=client_id)
        assert await db.get("before") is not None
        await _save(db, "after")
        assert await db.get("after") is not None

    async def test_down_server_raises_backend_error(self) -> None:
        db = RedisTaskDB(f"redis://127.0.0.1:{_closed_port()}/0", retries=2, backoff_base=0.01)
        with pytest.raises(BackendError) as info:
            await db.get("k")
        assert info.value.backend == "redis"
        assert info.value.__cause__ is not None
        await db.aclose()


class TestReleaseFailure:
    """A save that succeeded counts as written even when releasing its lease fails."""

    async def test_stored_row_is_not_a_failed_write(
        self, make_db: Factory, tmp_path: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        import beautyspot_async as bs

        db = make_db()

        async def broken_release(cache_keys: object, owner: str) -> None:
            raise BackendError("release failed", backend="redis")

        db.release_leases = broken_release  # type: ignore[method-assign]
        calls: list[int] = []
        async with bs.Spot("rel", db=db, storage=f"{tmp_path}/blobs") as spot:

            @spot.mark
            async def double(x: int) -> int:
                calls.append(x)
                return 2 * x

            assert await double(4) == 8
            stats = spot.statistics()
            assert stats.written == 1
            assert stats.write_failures == 0
        assert await db.get_many([k async for k in _keys(db)]) != {}
        assert "release" in caplog.text


async def _keys(db: RedisTaskDB) -> AsyncIterator[str]:
    async for record in db.iter_records():
        yield record.cache_key
