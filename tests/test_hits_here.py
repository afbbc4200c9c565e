"""Hits on PostgreSQL and Redis read on the caller's own loop (``TaskDB.get_many_here``).

A hit that misses the memory tier reads the server on the calling asyncio
loop, on a connection of that loop's own, instead of crossing to the Spot's
I/O loop: these tests pin what that read must keep -- the same records as
``get()``, each caller its own, corrupt rows still a miss that is rewritten,
deadlines, connections closed with their loop -- and that trio callers and
everything else still take the usual path. Against the real servers, each
test in its own schema / key prefix.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest

import beautyspot_async as bs
from beautyspot_async._store import ResultStore
from beautyspot_async.db import TaskDB
from tests import _backends
from tests._backends import save_row
from tests._proxy import FreezableProxy, freezable_proxy
from tests._services import POSTGRES_URL, REDIS_URL, require_module, require_service

pytestmark = [pytest.mark.anyio, pytest.mark.services]

postgres_schema = _backends.postgres_schema
make_postgres = _backends.make_postgres
redis_client = _backends.redis_client
redis_prefix = _backends.redis_prefix
make_redis = _backends.make_redis

_DRIVERS = {"postgresql": ("asyncpg", "postgres"), "redis": ("redis", "redis")}
_PORTS = {"postgresql": 5432, "redis": 6379}


@pytest.fixture(params=["postgresql", "redis"])
def make_db(request: pytest.FixtureRequest) -> Iterator[Callable[..., TaskDB]]:
    """A factory of databases on a fresh namespace of either server.

    Sync, and its cleanup runs in a thread of its own: the Spot-level tests
    run under trio too, where no asyncio driver may run on the test's loop.
    """
    name = request.param
    url = POSTGRES_URL if name == "postgresql" else REDIS_URL
    parts = urlsplit(url)
    module, extra = _DRIVERS[name]
    require_module(module, extra=extra)
    require_service(name, parts.hostname or "127.0.0.1", parts.port or _PORTS[name])
    namespace = f"bs_here_{uuid.uuid4().hex[:10]}"

    def factory(**options: Any) -> TaskDB:
        return _server_db(name, url, namespace, **options)

    yield factory
    _in_thread(_drop(name, namespace))


def _server_db(name: str, url: str, namespace: str, **options: Any) -> TaskDB:
    if name == "postgresql":
        from beautyspot_async.db import PostgresTaskDB

        return PostgresTaskDB(url, schema=namespace, retry_delays=(0.05,), **options)
    from beautyspot_async.db import RedisTaskDB

    return RedisTaskDB(url, prefix=namespace, **options)


def _in_thread(coro: Any) -> None:
    """Run ``coro`` to completion on an asyncio loop of its own thread."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(params=["postgresql", "redis"])
def make_async_db(request: pytest.FixtureRequest) -> Callable[..., TaskDB]:
    """The shared fixtures' databases (asyncio tests only: they close them on its loop)."""
    fixture = "make_postgres" if request.param == "postgresql" else "make_redis"
    factory: Callable[..., TaskDB] = request.getfixturevalue(fixture)
    return factory


def _spot(db: TaskDB, tmp_path: Path, **options: Any) -> bs.Spot:
    return bs.Spot("here", db=db, storage=tmp_path / "blobs", **options)


def _payload(x: str) -> dict[str, Any]:
    return {"x": x, "items": [x] * 5, "n": 1.5, "raw": x.encode()}


async def _fill(make_db: Callable[..., TaskDB], tmp_path: Path, keys: list[str]) -> None:
    spot = _spot(make_db(), tmp_path)

    @spot.mark(name="tests.here.f")
    async def f(x: str) -> dict[str, Any]:
        return _payload(x)

    async with spot, anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(f, key)


class Counting:
    """Counts the lookups that went to the I/O loop (the usual path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[str] = []
        original = ResultStore.lookup_many

        async def lookup_many(
            store: ResultStore, keys: list[str], owner: str | None, ttl: float
        ) -> Any:
            self.keys.extend(keys)
            return await original(store, keys, owner, ttl)

        monkeypatch.setattr(ResultStore, "lookup_many", lookup_many)


def _count_reads(db: Any) -> list[list[str]]:
    """Record every round trip of ``db``'s reads on the caller's loop."""
    trips: list[list[str]] = []
    read = db._here._read

    async def counted(conn: Any, keys: list[str]) -> Any:
        trips.append(list(keys))
        return await read(conn, keys)

    db._here._read = counted
    return trips


class TestGetManyHere:
    """The read itself, asyncio only: the same records as ``get()``."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_same_records_as_get(self, make_async_db: Callable[..., TaskDB]) -> None:
        db = make_async_db()
        await db.init_schema()
        await save_row(db, "a")
        await save_row(db, "b", result_data=None, result_type="blob", result_value="loc/b")
        await save_row(db, "c", expires_at=time.time() + 60, content_type="text/plain")
        found = await db.get_many_here(["a", "b", "c", "missing"], 5.0)
        assert found == {
            "a": await db.get("a"),
            "b": await db.get("b"),
            "c": await db.get("c"),
            "missing": None,
        }
        assert await db.get_many_here(["b"], None) == {"b": await db.get("b")}

    async def test_concurrent_reads_share_round_trips(
        self, make_async_db: Callable[..., TaskDB]
    ) -> None:
        db = make_async_db()
        await db.init_schema()
        keys = [f"k{i:03d}" for i in range(300)]
        for key in keys[::3]:
            await save_row(db, key, input_id=key)
        await db.get_many_here(["warm"], 5.0)  # opens this loop's connection
        trips = _count_reads(db)
        answers = await asyncio.gather(*(db.get_many_here([key], 5.0) for key in keys))
        for key, answer in zip(keys, answers, strict=True):
            record = answer[key]
            if keys.index(key) % 3 == 0:
                assert record is not None
                assert record.input_id == key
            else:
                assert record is None
        assert len(trips) <= 3, [len(t) for t in trips]

    async def test_never_touches_the_io_loop_connections(
        self, make_async_db: Callable[..., TaskDB]
    ) -> None:
        """Reads on two loops at once, while the db is used from a third."""
        db = make_async_db()
        await db.init_schema()
        await save_row(db, "k")
        errors: list[BaseException] = []

        def reader() -> None:
            async def main() -> None:
                for _ in range(50):
                    record = (await db.get_many_here(["k"], 5.0))["k"]
                    assert record is not None
                    assert record.cache_key == "k"

            try:
                asyncio.run(main())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for thread in threads:
            thread.start()
        for _ in range(50):
            assert await db.get("k") is not None
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(db._here._lanes) == 0  # type: ignore[attr-defined]  # closed with their loops

    async def test_corrupt_fields_come_back_as_get_reads_them(
        self,
        make_async_db: Callable[..., TaskDB],
        request: pytest.FixtureRequest,
    ) -> None:
        db = make_async_db()
        await db.init_schema()
        await save_row(db, "k")
        if db.backend_name == "redis":
            client = request.getfixturevalue("redis_client")
            name = db._rec + b"k"  # type: ignore[attr-defined]
            await client.hset(name, mapping={"created_at": "soon", "func_name": b"\xff\xfe"})
        else:
            import asyncpg

            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                await conn.execute(f"UPDATE {db._tasks} SET expires_at = 'NaN'")  # type: ignore[attr-defined]
            finally:
                await conn.close()
        here = (await db.get_many_here(["k"], 5.0))["k"]
        assert here is not None
        assert here.problem is not None
        assert here == await db.get("k")


class TestRedisPlainReads:
    """Without the packed read (a server without cmsgpack), plain HMGET reads the same."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_plain_hmget(self, make_redis: Callable[..., Any]) -> None:
        db = make_redis()
        db._here_reader.packed = False
        await db.init_schema()
        await save_row(db, "a")
        await save_row(db, "b", version="v2")
        found = await db.get_many_here(["a", "b", "c"], 5.0)
        assert found == {"a": await db.get("a"), "b": await db.get("b"), "c": None}
        assert await db.get_many_here(["b"], 5.0) == {"b": await db.get("b")}


class TestSpotHits:
    """Through a Spot: hits read here, everything else as before."""

    async def test_fresh_hits_skip_the_io_loop(
        self,
        make_db: Callable[..., TaskDB],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        anyio_backend: str,
    ) -> None:
        keys = [f"x{i}" for i in range(40)]
        await _fill(make_db, tmp_path, keys)
        counting = Counting(monkeypatch)
        db = make_db()
        spot = _spot(db, tmp_path)
        runs: list[str] = []

        @spot.mark(name="tests.here.f")
        async def f(x: str) -> dict[str, Any]:
            runs.append(x)
            return _payload(x)

        async with spot:
            assert await f(keys[0]) == _payload(keys[0])  # opens the Spot: the usual path
            before = list(counting.keys)
            for key in keys[1:20]:
                assert await f(key) == _payload(key)
            async with anyio.create_task_group() as tg:
                for key in keys[20:]:
                    tg.start_soon(f, key)
            assert await f(keys[25]) == _payload(keys[25])  # the memory tier now
        assert runs == []
        assert spot.statistics().hits == len(keys)
        if anyio_backend == "asyncio":
            assert counting.keys == before  # no lookup crossed to the I/O loop
        else:
            assert len(counting.keys) == len(keys)  # trio: every hit the usual way
            assert len(db._here._lanes) == 0  # type: ignore[attr-defined]

    async def test_misses_still_lease_and_store(
        self, make_db: Callable[..., TaskDB], tmp_path: Path
    ) -> None:
        spot = _spot(make_db(), tmp_path)
        runs: list[int] = []

        @spot.mark
        async def f(x: int) -> int:
            runs.append(x)
            await anyio.sleep(0.01)
            return x * 2

        async with spot:
            await f(0)  # open
            results = []

            async def call(x: int) -> None:
                results.append(await f(x))

            async with anyio.create_task_group() as tg:
                for x in [1, 1, 2, 2, 1]:
                    tg.start_soon(call, x)
        assert sorted(results) == [2, 2, 2, 4, 4]
        assert sorted(runs) == [0, 1, 2]  # single-flight

    async def test_corrupt_row_is_a_miss_and_rewritten(
        self,
        make_db: Callable[..., TaskDB],
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        await _fill(make_db, tmp_path, ["a", "b"])
        db = make_db()
        spot = _spot(db, tmp_path)
        runs: list[str] = []

        @spot.mark(name="tests.here.f")
        async def f(x: str) -> dict[str, Any]:
            runs.append(x)
            return _payload(x)

        key = f.key("b")  # type: ignore[attr-defined]
        _in_thread(_corrupt_payload(db, key))
        with caplog.at_level(logging.WARNING, logger="beautyspot_async"):
            async with spot:
                assert await f("a") == _payload("a")  # opens the Spot
                assert await f("b") == _payload("b")  # corrupt: runs again
        assert runs == ["b"]
        assert any("corrupt" in r.getMessage() for r in caplog.records)
        spot2 = _spot(make_db(), tmp_path)

        @spot2.mark(name="tests.here.f")
        async def g(x: str) -> dict[str, Any]:
            runs.append(x)
            return _payload(x)

        async with spot2:
            await g("a")
            assert await g("b") == _payload("b")  # rewritten: a hit now
        assert runs == ["b"]

    async def test_connections_close_with_their_loop_and_with_the_spot(
        self, make_db: Callable[..., TaskDB], tmp_path: Path
    ) -> None:
        """Successive ``asyncio.run()`` calls on one Spot, and aclose() from the I/O loop."""
        await _fill(make_db, tmp_path, ["a", "b", "c"])
        db = make_db()
        spot = _spot(db, tmp_path, memory_cache_entries=0)

        @spot.mark(name="tests.here.f")
        async def f(x: str) -> dict[str, Any]:
            raise AssertionError("all hits")

        conns: list[Any] = []

        def lane_conn() -> Any:
            lane = db._here._lanes.get()  # type: ignore[attr-defined]
            return lane.conn

        async def run(keys: str) -> None:
            for key in keys:
                assert await f(key) == _payload(key)
            conns.append(lane_conn())

        def in_new_loop(keys: str) -> None:
            thread = threading.Thread(target=lambda: asyncio.run(run(keys)))
            thread.start()
            thread.join()

        await spot.open()
        in_new_loop("ab")
        in_new_loop("bc")
        assert len(conns) == 2
        assert conns[0] is not None
        assert conns[1] is not conns[0]
        assert all(_closed(conn) for conn in conns)  # each with its loop
        assert len(db._here._lanes) == 0  # type: ignore[attr-defined]
        await spot.aclose()


async def _corrupt_payload(db: Any, key: str) -> None:
    """Overwrite the stored payload of ``key`` with bytes that do not decode."""
    garbage = b"\xc1garbage"
    if db.backend_name == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            await client.hset(db._rec + key.encode(), "result_data", garbage)
        finally:
            await client.aclose()
    else:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            query = f"UPDATE {db._tasks} SET result_data = $1 WHERE cache_key = $2"
            await conn.execute(query, garbage, key)
        finally:
            await conn.close()


def _closed(conn: Any) -> bool:
    if hasattr(conn, "is_closed"):  # asyncpg
        return bool(conn.is_closed())
    return not conn.conn.is_connected  # the Redis reader's connection


class TestAcloseFromTheIoLoop:
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_aclose_closes_this_loops_connection(
        self, make_db: Callable[..., TaskDB], tmp_path: Path
    ) -> None:
        await _fill(make_db, tmp_path, ["a"])
        db = make_db()
        spot = _spot(db, tmp_path, memory_cache_entries=0)

        @spot.mark(name="tests.here.f")
        async def f(x: str) -> dict[str, Any]:
            raise AssertionError("all hits")

        await f("a")  # opens the Spot
        assert await f("a") == _payload("a")  # read here
        conn = db._here._lanes.get().conn  # type: ignore[attr-defined]
        assert conn is not None
        assert not _closed(conn)
        await spot.aclose()  # db.aclose() runs on the I/O loop: ours closes on our loop
        with anyio.fail_after(5):
            while not _closed(conn):
                await asyncio.sleep(0.01)
        assert await f("a") == _payload("a")  # reopens
        await spot.aclose()


# -- deadlines, through a freezable proxy -----------------------------------------------


TIMEOUT = 2.0
BOUND = 15.0


@pytest.fixture(params=["postgresql", "redis"])
def frozen(request: pytest.FixtureRequest) -> Iterator[tuple[FreezableProxy, TaskDB]]:
    """A database reached through a proxy the test can freeze."""
    name = request.param
    url = POSTGRES_URL if name == "postgresql" else REDIS_URL
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or _PORTS[name]
    module, extra = _DRIVERS[name]
    require_module(module, extra=extra)
    require_service(name, host, port)
    with freezable_proxy(host, port) as proxy:
        user = f"{parts.username}@" if parts.username else ""
        via = urlunsplit(parts._replace(netloc=f"{user}{proxy.address}"))
        namespace = f"bs_here_{uuid.uuid4().hex[:10]}"
        try:
            yield proxy, _server_db(name, via, namespace)
        finally:
            proxy.thaw()
            _in_thread(_drop(name, namespace))


async def _drop(name: str, namespace: str) -> None:
    if name == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
        finally:
            await conn.close()
    else:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=f"{namespace}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


class TestDeadlines:
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def frozen_spot(
        self, frozen: tuple[FreezableProxy, TaskDB], tmp_path: Path
    ) -> AsyncIterator[tuple[FreezableProxy, bs.Spot, Any]]:
        proxy, db = frozen
        spot = _spot(db, tmp_path, memory_cache_entries=0, backend_timeout=TIMEOUT)

        @spot.mark
        async def double(x: int) -> int:
            return 2 * x

        try:
            assert await double(1) == 2
            assert await double(1) == 2  # a hit read here: this loop's connection is open
            yield proxy, spot, double
        finally:
            proxy.thaw()
            with anyio.fail_after(BOUND):
                await spot.aclose()

    async def test_frozen_hit_raises_backend_error(
        self, frozen_spot: tuple[FreezableProxy, bs.Spot, Any]
    ) -> None:
        proxy, _, double = frozen_spot
        proxy.freeze()
        gaps: list[float] = []
        stop = anyio.Event()

        async def heartbeat() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await anyio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            with anyio.fail_after(BOUND), pytest.raises(bs.BackendError) as caught:
                await double(1)
            stop.set()
        assert "lookup timed out" in str(caught.value)
        assert time.monotonic() - start < BOUND
        # The read waits on the network only: the loop kept running meanwhile.
        assert len(gaps) > 10
        assert max(gaps) < TIMEOUT / 2
        proxy.thaw()
        with anyio.fail_after(BOUND):
            assert await double(1) == 2  # a new connection for this loop

    async def test_frozen_gather_fails_within_the_bound(
        self, frozen_spot: tuple[FreezableProxy, bs.Spot, Any]
    ) -> None:
        proxy, _, double = frozen_spot
        proxy.freeze()
        start = time.monotonic()
        with anyio.fail_after(BOUND + 10):
            results = await asyncio.gather(*(double(1) for _ in range(20)), return_exceptions=True)
        assert time.monotonic() - start < BOUND
        assert all(isinstance(r, bs.BackendError) for r in results), results
        proxy.thaw()
        with anyio.fail_after(BOUND):
            assert await asyncio.gather(*(double(1) for _ in range(5))) == [2] * 5

    async def test_frozen_hit_with_bypass_runs_uncached(
        self, frozen: tuple[FreezableProxy, TaskDB], tmp_path: Path
    ) -> None:
        proxy, db = frozen
        spot = _spot(
            db,
            tmp_path,
            memory_cache_entries=0,
            backend_timeout=TIMEOUT,
            on_backend_error="bypass",
        )
        runs: list[int] = []

        @spot.mark
        async def double(x: int) -> int:
            runs.append(x)
            return 2 * x

        try:
            assert await double(1) == 2
            assert await double(1) == 2  # a hit read here
            assert runs == [1]
            proxy.freeze()
            start = time.monotonic()
            with anyio.fail_after(BOUND), pytest.warns(RuntimeWarning, match="uncached"):
                assert await double(1) == 2
            assert time.monotonic() - start < BOUND
            assert runs == [1, 1]
        finally:
            proxy.thaw()
            with anyio.fail_after(BOUND):
                await spot.aclose()
