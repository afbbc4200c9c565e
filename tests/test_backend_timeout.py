"""A frozen backend fails a call within ``backend_timeout``; it never hangs it.

"Frozen" is a server that accepts connections and answers nothing, as a
SIGSTOPped process does. PostgreSQL and Redis are frozen through a
:class:`~tests._proxy.FreezableProxy` in front of the shared servers (which
are never stopped); S3 is a moto server of our own, in a subprocess we
SIGSTOP and SIGCONT by its PID. Each test checks the three promises: the
call raises ``BackendError`` naming the backend and the operation (or, with
``on_backend_error="bypass"``, runs uncached), it does so well within a
generous bound, and the Spot works again once the server answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest

import beautyspot_async as bs
from beautyspot_async._record import BLOB, TaskRecord
from beautyspot_async._store import ResultStore, WriteItem
from beautyspot_async.db import MemoryTaskDB, TaskDB
from beautyspot_async.storage import LocalStorage
from tests._proxy import FreezableProxy, freezable_proxy
from tests._services import POSTGRES_URL, REDIS_URL, require_module, require_service

pytestmark = [pytest.mark.anyio]

#: The deadline under test (long enough for a loaded machine to answer the
#: calls made while nothing is frozen), and the bound a frozen call must fail
#: within: generous, because a hang lasts forever.
TIMEOUT = 2.0
S3_TIMEOUT = 3.0  # moto answers its first requests slowly
BOUND = 15.0


@pytest.fixture
def anyio_backend() -> str:
    # The backends live on the Spot's own (asyncio) I/O loop whatever the
    # caller runs; one caller flavour is enough here.
    return "asyncio"


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fail the test, instead of hanging it, when the block takes too long."""
    start = time.monotonic()
    with anyio.fail_after(seconds + 10):  # the test's own guard against a hang
        yield
    elapsed = time.monotonic() - start
    assert elapsed < seconds, f"took {elapsed:.1f} s, bound {seconds} s"


def _via(url: str, proxy: FreezableProxy) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{proxy.address}"))


# -- PostgreSQL and Redis behind a freezable proxy ------------------------------------


def _postgres(proxy: FreezableProxy) -> tuple[TaskDB, Callable[[], None]]:
    from beautyspot_async.db import PostgresTaskDB

    schema = f"bs_to_{uuid.uuid4().hex[:12]}"
    db = PostgresTaskDB(_via(POSTGRES_URL, proxy), schema=schema, retry_delays=(0.05,))

    def cleanup() -> None:
        import asyncpg

        async def drop() -> None:
            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        anyio.run(drop)

    return db, cleanup


def _redis(proxy: FreezableProxy) -> tuple[TaskDB, Callable[[], None]]:
    import redis

    from beautyspot_async.db import RedisTaskDB

    prefix = f"bs-to-{uuid.uuid4().hex[:12]}"
    db = RedisTaskDB(_via(REDIS_URL, proxy), prefix=prefix)

    def cleanup() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    return db, cleanup


_SERVERS = {"postgresql": (POSTGRES_URL, 5432, _postgres), "redis": (REDIS_URL, 6379, _redis)}
#: The driver module each server's backend needs, and the extra that installs it.
_DRIVERS = {"postgresql": ("asyncpg", "postgres"), "redis": ("redis", "redis")}


@pytest.fixture(params=sorted(_SERVERS))
def frozen_db(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, FreezableProxy, TaskDB]]:
    """``(backend name, proxy, db)``: a database reached through a freezable proxy."""
    name = request.param
    url, port, make = _SERVERS[name]
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or port
    module, extra = _DRIVERS[name]
    require_module(module, extra=extra)
    require_service(name, host, port)
    with freezable_proxy(host, port) as proxy:
        db, cleanup = make(proxy)
        try:
            yield name, proxy, db
        finally:
            proxy.thaw()
            cleanup()


def _spot(db: TaskDB, tmp_path: Path, **options: Any) -> bs.Spot:
    return bs.Spot(
        "frozen",
        db=db,
        storage=tmp_path / "blobs",
        memory_cache_entries=0,
        backend_timeout=TIMEOUT,
        **options,
    )


class TestFrozenDatabase:
    """PostgreSQL and Redis frozen before, between and after a call's steps."""

    async def test_lookup_fails_then_recovers(
        self, frozen_db: tuple[str, FreezableProxy, TaskDB], tmp_path: Path
    ) -> None:
        """A lookup against a frozen database raises BackendError naming it and the lookup."""
        name, proxy, db = frozen_db
        spot = _spot(db, tmp_path)

        @spot.mark
        async def double(x: int) -> int:
            return 2 * x

        try:
            assert await double(1) == 2
            proxy.freeze()
            with within(BOUND), pytest.raises(bs.BackendError) as caught:
                await double(2)
            assert caught.value.backend == name
            assert "lookup timed out" in str(caught.value)
            proxy.thaw()
            with within(BOUND):
                assert await double(3) == 6
                assert await double(1) == 2
        finally:
            proxy.thaw()
            with within(BOUND):
                await spot.aclose()

    async def test_write_fails_then_recovers(
        self, frozen_db: tuple[str, FreezableProxy, TaskDB], tmp_path: Path
    ) -> None:
        """A durable write to a database frozen during execution raises BackendError."""
        name, proxy, db = frozen_db
        spot = _spot(db, tmp_path)

        @spot.mark
        async def freeze_then_double(x: int) -> int:
            if x == 1:
                proxy.freeze()  # the lookup has happened; the write has not
            return 2 * x

        try:
            with within(BOUND), pytest.raises(bs.BackendError) as caught:
                await freeze_then_double(1)
            assert caught.value.backend == name
            assert "saving results" in str(caught.value)
            proxy.thaw()
            with within(BOUND):
                assert await freeze_then_double(2) == 4
        finally:
            proxy.thaw()
            with within(BOUND):
                await spot.aclose()

    async def test_connect_fails_and_bypass_runs_uncached(
        self, frozen_db: tuple[str, FreezableProxy, TaskDB], tmp_path: Path
    ) -> None:
        """Opening a frozen database times out; bypass runs the function instead."""
        name, proxy, db = frozen_db
        spot = _spot(db, tmp_path, on_backend_error="bypass")
        runs: list[int] = []

        @spot.mark
        async def double(x: int) -> int:
            runs.append(x)
            return 2 * x

        proxy.freeze()
        try:
            with within(BOUND), pytest.warns(RuntimeWarning, match="uncached") as record:
                assert await double(1) == 2
            assert any(name in str(w.message) for w in record)
            assert runs == [1]
            proxy.thaw()
            with within(BOUND):
                assert await double(1) == 2  # not cached by the bypassed call
                assert await double(1) == 2  # cached now
            assert runs == [1, 1]
        finally:
            proxy.thaw()
            with within(BOUND):
                await spot.aclose()

    async def test_connect_raises_backend_error(
        self, frozen_db: tuple[str, FreezableProxy, TaskDB], tmp_path: Path
    ) -> None:
        """Without bypass, a first call to a frozen database raises BackendError."""
        name, proxy, db = frozen_db
        spot = _spot(db, tmp_path)

        @spot.mark
        async def double(x: int) -> int:
            return 2 * x

        proxy.freeze()
        try:
            with within(BOUND), pytest.raises(bs.BackendError) as caught:
                await double(1)
            assert caught.value.backend == name
            assert "timed out" in str(caught.value)
            proxy.thaw()
            with within(BOUND):
                assert await double(1) == 2
        finally:
            proxy.thaw()
            with within(BOUND):
                await spot.aclose()

    async def test_close_never_hangs(
        self, frozen_db: tuple[str, FreezableProxy, TaskDB], tmp_path: Path
    ) -> None:
        """Flushing and closing a Spot whose database froze with writes queued give up in time."""
        _name, proxy, db = frozen_db
        spot = _spot(db, tmp_path, default_wait=False)

        @spot.mark
        async def freeze_then_double(x: int) -> int:
            proxy.freeze()  # the lookup has happened; the write has not
            return 2 * x

        try:
            with within(BOUND):
                assert await freeze_then_double(1) == 2  # write-behind: queued
                await spot.flush()  # a failed write-behind is reported, not raised
            assert spot.statistics().write_failures == 1
            # Closing a frozen connection may itself time out (reported).
            with within(BOUND), contextlib.suppress(bs.BackendError):
                await spot.aclose()
        finally:
            proxy.thaw()
            with within(BOUND):
                await spot.aclose()


# -- S3: a moto server of our own, stopped with SIGSTOP ------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def moto_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A moto server in a subprocess (so it can be SIGSTOPped), killed afterwards."""
    require_module("moto.server", extra="dev")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("the moto server did not start")
                time.sleep(0.1)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
async def frozen_s3(
    moto_process: tuple[subprocess.Popen[bytes], str],
) -> AsyncIterator[tuple[Callable[[], None], Callable[[], None], Any]]:
    """``(freeze, thaw, storage)``: S3 storage on a moto server we can stop."""
    from beautyspot_async.storage import S3Storage
    from tests._moto import s3_client

    process, endpoint = moto_process
    bucket = f"bs-to-{uuid.uuid4().hex[:12]}"
    async with s3_client(endpoint) as client:
        await client.create_bucket(Bucket=bucket)
        await client.put_object(Bucket=bucket, Key="warm-up", Body=b"")
    stopped = False

    def freeze() -> None:
        nonlocal stopped
        os.kill(process.pid, signal.SIGSTOP)
        stopped = True

    def thaw() -> None:
        nonlocal stopped
        if stopped:
            os.kill(process.pid, signal.SIGCONT)
            stopped = False

    try:
        yield freeze, thaw, S3Storage(bucket, endpoint_url=endpoint)
    finally:
        thaw()  # the server and its bucket go away with the process


class TestFrozenS3:
    """Blob loads and saves against a stopped S3 endpoint."""

    async def test_blob_load_and_save_fail_then_recover(
        self, frozen_s3: tuple[Callable[[], None], Callable[[], None], Any]
    ) -> None:
        """Loading and saving a blob on a stopped server raise BackendError naming s3."""
        freeze, thaw, storage = frozen_s3
        spot = bs.Spot(
            "frozen",
            db=MemoryTaskDB(),
            storage=storage,
            blob_threshold=0,
            memory_cache_entries=0,
            backend_timeout=S3_TIMEOUT,
        )

        @spot.mark
        async def echo(x: int) -> int:
            return x

        try:
            assert await echo(1) == 1  # stored as a blob
            freeze()
            with within(BOUND), pytest.raises(bs.BackendError) as caught:
                await echo(1)
            assert caught.value.backend == "s3"
            assert "loading a blob" in str(caught.value)
            with within(BOUND), pytest.raises(bs.BackendError) as caught:
                await echo(2)
            assert caught.value.backend == "s3"
            assert "saving a blob" in str(caught.value)
            thaw()
            with within(BOUND):
                assert await echo(1) == 1
                assert await echo(2) == 2
        finally:
            thaw()
            with within(BOUND):
                await spot.aclose()

    async def test_bypass_runs_uncached(
        self, frozen_s3: tuple[Callable[[], None], Callable[[], None], Any]
    ) -> None:
        """With bypass, a blob that cannot be loaded or saved means running uncached."""
        freeze, thaw, storage = frozen_s3
        spot = bs.Spot(
            "frozen",
            db=MemoryTaskDB(),
            storage=storage,
            blob_threshold=0,
            memory_cache_entries=0,
            backend_timeout=S3_TIMEOUT,
            on_backend_error="bypass",
        )
        runs: list[int] = []

        @spot.mark
        async def echo(x: int) -> int:
            runs.append(x)
            return x

        try:
            assert await echo(1) == 1
            freeze()
            with within(BOUND), pytest.warns(RuntimeWarning, match="uncached"):
                assert await echo(1) == 1  # the blob cannot be loaded
            with within(BOUND), pytest.warns(RuntimeWarning, match="not cached"):
                assert await echo(2) == 2  # the blob cannot be saved
            thaw()
            with within(BOUND):
                assert await echo(2) == 2
                assert await echo(2) == 2
            assert runs == [1, 1, 2, 2]
        finally:
            thaw()
            with within(BOUND):
                await spot.aclose()


# -- in-process backends that hang (no services needed) -----------------------------------


class HangingDB(MemoryTaskDB):
    """A memory database whose lookups and writes never return while ``frozen``."""

    frozen = False

    def get_nowait(self, cache_key: str) -> Any:
        raise anyio.WouldBlock  # always ask through the store

    async def get_many(self, cache_keys: Any) -> Any:
        if self.frozen:
            await anyio.sleep_forever()
        return await super().get_many(cache_keys)

    async def lookup_or_lease(self, cache_keys: Any, owner: str, ttl: float) -> Any:
        if self.frozen:
            await anyio.sleep_forever()
        return await super().lookup_or_lease(cache_keys, owner, ttl)

    async def save_and_release(self, records: Any, owners: Any) -> None:
        if self.frozen:
            await anyio.sleep_forever()
        await super().save_and_release(records, owners)


class HangingStorage(LocalStorage):
    """Local blobs whose loads and saves never return while ``frozen``."""

    frozen = False
    saves = 0

    async def load(self, location: str) -> bytes:
        if self.frozen:
            await anyio.sleep_forever()
        return await super().load(location)

    async def save(self, key: str, data: bytes) -> str:
        self.saves += 1
        if self.frozen:
            await anyio.sleep_forever()
        return await super().save(key, data)


class TestGuard:
    """The deadline holds on the I/O loop and on the caller's own loop (asyncio or trio)."""

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        if request.param == "trio":
            require_module("trio", extra="dev")
        return str(request.param)

    async def test_lookup_and_write_time_out(self, tmp_path: Path) -> None:
        """A database that never answers fails lookups and writes within the deadline."""
        db = HangingDB()
        spot = bs.Spot("hang", db=db, storage=tmp_path, backend_timeout=0.2)

        @spot.mark
        async def freeze_then_double(x: int) -> int:
            db.frozen = x == 1
            return 2 * x

        try:
            with within(BOUND), pytest.raises(bs.BackendError, match="saving results timed out"):
                await freeze_then_double(1)
            with within(BOUND), pytest.raises(bs.BackendError, match="lookup timed out") as caught:
                await freeze_then_double(2)
            assert caught.value.backend == "memory"
            assert isinstance(caught.value.__cause__, TimeoutError)
            db.frozen = False
            assert await freeze_then_double(3) == 6
        finally:
            await spot.aclose()

    async def test_blob_load_times_out_on_the_callers_loop(self, tmp_path: Path) -> None:
        """A blob load, awaited on the caller's loop, fails within the deadline."""
        storage = HangingStorage(tmp_path)
        spot = bs.Spot(
            "hang",
            db=MemoryTaskDB(),
            storage=storage,
            blob_threshold=0,
            memory_cache_entries=0,
            backend_timeout=0.2,
        )

        @spot.mark
        async def echo(x: int) -> int:
            return x

        try:
            assert await echo(1) == 1
            storage.frozen = True
            with within(BOUND), pytest.raises(bs.BackendError, match="loading a blob timed out"):
                await echo(1)
            storage.frozen = False
            assert await echo(1) == 1
        finally:
            await spot.aclose()

    async def test_a_batch_waits_out_a_silent_storage_once(self, tmp_path: Path) -> None:
        """After one blob save times out, the batch's other blobs fail without waiting."""
        storage = HangingStorage(tmp_path)
        storage.frozen = True
        store = ResultStore(MemoryTaskDB(), storage, timeout=0.2)
        items = [
            WriteItem(
                TaskRecord(
                    cache_key=f"k{i}",
                    func_name="f",
                    input_id=f"i{i}",
                    version=None,
                    result_type=BLOB,
                    content_type=None,
                    result_data=b"payload",
                )
            )
            for i in range(3)
        ]
        with within(BOUND):
            errors = await store.write(items)
        assert storage.saves == 1
        assert all(isinstance(e, bs.BackendError) for e in errors)
        assert all("saving a blob timed out" in str(e) for e in errors)

    async def test_driver_errors_are_translated_once(self, tmp_path: Path) -> None:
        """A driver's own error becomes BackendError with the driver's error as cause."""

        class BrokenDB(HangingDB):
            async def get_many(self, cache_keys: Any) -> Any:
                raise OSError("connection reset")

        spot = bs.Spot("broken", db=BrokenDB(), storage=tmp_path, lease_ttl=None)

        @spot.mark
        async def double(x: int) -> int:
            return 2 * x

        try:
            with pytest.raises(bs.BackendError, match="lookup failed") as caught:
                await double(1)
            assert isinstance(caught.value.__cause__, OSError)
        finally:
            await spot.aclose()


class TestOption:
    """``backend_timeout`` is validated at ``Spot(...)``."""

    @pytest.mark.parametrize("bad", [0, -1.0, "30", float("nan")])
    def test_rejects_non_positive_or_non_numbers(self, bad: Any, tmp_path: Path) -> None:
        """Zero, negatives, NaN and non-numbers are configuration errors."""
        with pytest.raises(bs.ConfigurationError, match="backend_timeout"):
            bs.Spot("x", db=MemoryTaskDB(), storage=tmp_path, backend_timeout=bad)

    def test_none_disables(self, tmp_path: Path) -> None:
        """``None`` is accepted: no deadline."""
        bs.Spot("x", db=MemoryTaskDB(), storage=tmp_path, backend_timeout=None)
