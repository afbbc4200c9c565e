"""RedisTaskDB against the real server on loopback.

asyncio only: redis.asyncio runs on asyncio and nothing else, so this module
overrides ``anyio_backend``. Every test uses a fresh key prefix and deletes
every key under it at the end. Connection loss is simulated by killing only
the test's own client connections (``CLIENT KILL ID``), never every client of
the shared server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from beautyspot_async.exceptions import BackendError, ConfigurationError
from beautyspot_async.testing import check_taskdb, check_taskdb_pair
from tests import _backends
from tests._backends import closed_port, save_row
from tests._services import REDIS_URL, require_module

aioredis = require_module("redis.asyncio", extra="redis")

from beautyspot_async.db._redis import SCHEMA_VERSION, RedisTaskDB  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.services]

Factory = Callable[..., RedisTaskDB]


#: The shared fixtures (``make_db`` builds databases on ``redis_prefix``).
redis_client = _backends.redis_client
redis_prefix = _backends.redis_prefix
make_db = _backends.make_redis


@pytest.fixture
def anyio_backend() -> str:
    """redis.asyncio is asyncio-only."""
    return "asyncio"


class TestConformance:
    """RedisTaskDB passes the TaskDB suite, alone and as two instances on one prefix."""

    async def test_check_taskdb(self, make_db: Factory) -> None:
        await check_taskdb(make_db)

    async def test_check_taskdb_pair(self, make_db: Factory) -> None:
        await check_taskdb_pair(lambda: (make_db(), make_db()))


class TestLayout:
    """Records are hashes, indexed by updated_at and expires_at sorted sets."""

    async def test_hash_and_indexes(
        self, make_db: Factory, redis_client: aioredis.Redis, redis_prefix: str
    ) -> None:
        db = make_db()
        await db.init_schema()
        await save_row(db, "k", expires_at=123.5)
        assert await redis_client.type(f"{redis_prefix}:rec:k") == b"hash"
        assert await redis_client.hget(f"{redis_prefix}:rec:k", "result_data") == b"\x00payload\xff"
        record = await db.get("k")
        assert record is not None
        assert await redis_client.zscore(f"{redis_prefix}:idx:updated", "k") == pytest.approx(
            record.updated_at
        )
        assert await redis_client.zscore(f"{redis_prefix}:idx:expires", "k") == 123.5
        await save_row(db, "k", expires_at=None)
        assert await redis_client.zscore(f"{redis_prefix}:idx:expires", "k") is None
        assert await db.delete("k")
        assert await redis_client.zcard(f"{redis_prefix}:idx:updated") == 0

    async def test_none_fields_are_cleared_on_overwrite(self, make_db: Factory) -> None:
        db = make_db()
        await save_row(db, "k", version="v1", content_type="text/plain", result_value="x")
        await save_row(db, "k", version=None, content_type=None, result_value=None)
        record = await db.get("k")
        assert record is not None
        assert (record.version, record.content_type, record.result_value) == (None, None, None)

    async def test_history_is_served_from_the_index(
        self, make_db: Factory, redis_client: aioredis.Redis, redis_prefix: str
    ) -> None:
        db = make_db()
        await save_row(db, "indexed")
        # A record hash missing from the index is invisible to history: no SCAN.
        await redis_client.hset(f"{redis_prefix}:rec:stray", mapping={"func_name": "f"})
        frame = await db.get_history()
        assert list(frame["cache_key"]) == ["indexed"]

    async def test_prefixes_isolate(self, make_db: Factory, redis_client: aioredis.Redis) -> None:
        other_prefix = f"bs-test-{uuid.uuid4().hex[:12]}"
        a, b = make_db(), make_db(prefix=other_prefix)
        try:
            await save_row(a, "k")
            assert await b.get("k") is None
            assert len(await b.get_history()) == 0
        finally:
            keys = [k async for k in redis_client.scan_iter(match=f"{other_prefix}:*")]
            if keys:
                await redis_client.delete(*keys)

    async def test_newer_version_is_refused(
        self, make_db: Factory, redis_client: aioredis.Redis, redis_prefix: str
    ) -> None:
        await redis_client.set(f"{redis_prefix}:schema", str(SCHEMA_VERSION + 1))
        with pytest.raises(ConfigurationError, match="newer"):
            await make_db().init_schema()

    @pytest.mark.parametrize("bad", ["", "a b", "x\r\nFLUSHALL"])
    def test_hostile_prefix(self, bad: str) -> None:
        with pytest.raises(ConfigurationError):
            RedisTaskDB(REDIS_URL, prefix=bad)


class TestConnectionLoss:
    """Killed connections are retried; an unreachable server raises BackendError."""

    async def test_killed_connection_recovers(
        self, make_db: Factory, redis_client: aioredis.Redis
    ) -> None:
        name = f"bs-test-{uuid.uuid4().hex[:8]}"
        db = make_db(client_name=name)
        await save_row(db, "before")
        clients = await redis_client.client_list()
        mine = [c["id"] for c in clients if c.get("name") == name]
        assert mine, "no connection of the database under test was found to kill"
        for client_id in mine:
            await redis_client.client_kill_filter(_id=client_id)
        assert await db.get("before") is not None
        await save_row(db, "after")
        assert await db.get("after") is not None

    async def test_down_server_raises_backend_error(self) -> None:
        db = RedisTaskDB(f"redis://127.0.0.1:{closed_port()}/0", retries=2, backoff_base=0.01)
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


class TestScriptsInPipelines:
    """Batched scripts run by SHA1 in one pipeline, loading themselves when missing."""

    async def test_lookup_or_lease_in_one_script(
        self, make_db: Factory, redis_client: aioredis.Redis
    ) -> None:
        db, other = make_db(), make_db()
        await db.init_schema()
        await save_row(db, "stored")
        assert await other.lookup_or_lease(["held"], "them", 30) == {"held": True}
        found = await db.lookup_or_lease(["stored", "missing", "held", "missing"], "me", 30)
        assert found == {"stored": await db.get("stored"), "missing": True, "held": False}
        assert await redis_client.get(db._lease + b"missing") == b"me"
        assert 0 < await redis_client.pttl(db._lease + b"missing") <= 30_000
        # Our own lease is renewed, not refused; a stored key takes no lease.
        assert await db.lookup_or_lease(["missing"], "me", 60) == {"missing": True}
        assert await redis_client.pttl(db._lease + b"missing") > 30_000
        assert await redis_client.get(db._lease + b"stored") is None

    async def test_a_damaged_record_comes_back_as_get_reads_it(
        self, make_db: Factory, redis_client: aioredis.Redis
    ) -> None:
        db = make_db()
        await save_row(db, "k")
        await redis_client.hset(db._rec + b"k", "created_at", "garbage")
        found = await db.lookup_or_lease(["k"], "me", 30)
        record = found["k"]
        assert not isinstance(record, bool)
        assert record.problem is not None
        assert record == await db.get("k")

    async def test_scripts_missing_on_the_server_are_loaded(
        self, make_db: Factory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import hashlib

        from beautyspot_async.db import _redis

        # A source the server has never seen (a unique comment), so its SHA1
        # is unknown there: the first EVALSHA answers NOSCRIPT.
        source = f"-- {uuid.uuid4().hex}\n" + _redis._LOOKUP_OR_LEASE
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        monkeypatch.setitem(_redis._PIPELINED, "lookup_or_lease", source)
        monkeypatch.setitem(_redis._SHA1, "lookup_or_lease", sha)
        db = make_db()
        await save_row(db, "stored")
        found = await db.lookup_or_lease(["stored", "new"], "me", 30)
        assert found == {"stored": await db.get("stored"), "new": True}
        assert await db.lookup_or_lease(["new"], "you", 30) == {"new": False}
