"""Failure records: the batch runner's record of calls that failed for good.

Every backend (memory, SQLite, PostgreSQL, Redis, and a custom backend on the
base class's default storage) stores, lists and deletes them; none ever
serves one as a result or shows one in history or stats; a later success
clears them, in this process at once and from another process when they are
read. PostgreSQL and Redis run under asyncio only (their fixtures talk to the
servers directly); the others under asyncio and trio.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

import beautyspot_async as bs
from beautyspot_async import _maintenance as maint
from beautyspot_async._failure import (
    FAILURE_COLUMNS,
    MAX_FAILURE_TEXT,
    exception_type_name,
    failure_record_key,
)
from beautyspot_async._portal import io_loop
from beautyspot_async.cli import app
from beautyspot_async.db import FailureRecord, MemoryTaskDB, SQLiteTaskDB, TaskDB
from beautyspot_async.testing import FakeClock
from tests import _backends
from tests._services import require_module
from tests.test_custom_backends import FullerTaskDB
from tests.test_custom_backends import MemoryTaskDB as CustomTaskDB

pytestmark = pytest.mark.anyio

postgres_schema = _backends.postgres_schema
make_postgres = _backends.make_postgres
redis_client = _backends.redis_client
redis_prefix = _backends.redis_prefix
make_redis = _backends.make_redis

CASES = [
    ("memory", "asyncio"),
    ("memory", "trio"),
    ("sqlite", "asyncio"),
    ("sqlite", "trio"),
    ("custom", "asyncio"),
    ("custom", "trio"),
    ("custom+", "asyncio"),
    pytest.param(("postgres", "asyncio"), marks=pytest.mark.services),
    pytest.param(("redis", "asyncio"), marks=pytest.mark.services),
]


@pytest.fixture(params=CASES, ids=lambda case: "-".join(case))
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    kind, backend = request.param
    if backend == "trio":
        require_module("trio", extra="dev")
    return kind, backend


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    """asyncpg and redis.asyncio fixtures run on asyncio; the rest on both."""
    return case[1]


@pytest.fixture
def make_db(
    case: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], TaskDB]:
    """Databases of the case's kind that all see one store."""
    kind = case[0]
    if kind == "postgres":
        factory: Callable[[], TaskDB] = request.getfixturevalue("make_postgres")
        return factory
    if kind == "redis":
        return request.getfixturevalue("make_redis")
    if kind == "sqlite":
        return lambda: SQLiteTaskDB(tmp_path / "f.db")
    shared = {"memory": MemoryTaskDB, "custom": CustomTaskDB, "custom+": FullerTaskDB}[kind]()
    return lambda: shared


@pytest.fixture
async def spot(make_db: Callable[[], TaskDB], tmp_path: Path) -> AsyncIterator[bs.Spot]:
    s = bs.Spot("failing", db=make_db(), storage=tmp_path / "blobs")
    yield s
    await s.aclose()


def failure(key: str | None = None, *, func: str = "tests.fn", at: float = 1e9) -> FailureRecord:
    return FailureRecord(
        cache_key=key or uuid.uuid4().hex[:32],
        func_name=func,
        input_id="i",
        version="v1",
        exc_type="openai.RateLimitError",
        message="slow down",
        attempts=3,
        failed_at=at,
        args='["a", 1]',
    )


async def on_io(spot: bs.Spot, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a database method where the Spot's backends live (its I/O loop if loop-bound)."""
    await spot.open()
    if spot.db.loop_bound:
        return await io_loop.run(fn, *args)
    return await fn(*args)


def mark_double(spot: bs.Spot, calls: list[int]) -> Any:
    @spot.mark(name="tests.double")
    async def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    return double


async def key_of(mark: Callable[[bs.Spot], Any], x: int) -> str:
    """The cache key of ``mark(spot)(x)``, from a scratch Spot (keys do not depend on the Spot)."""
    blobs = Path(tempfile.gettempdir()) / "bs-failures-scratch"  # never written: tiny results
    async with bs.Spot("scratch", db=MemoryTaskDB(), storage=blobs) as scratch:
        await mark(scratch)(x)
        return str((await scratch.history())["cache_key"][0])


class TestRecord:
    """FailureRecord itself: bounded text, qualified exception names."""

    def test_message_and_args_are_bounded(self) -> None:
        f = FailureRecord("k", "f", "i", None, "E", "m" * 5000, 1, 0.0, "a" * 5000)
        assert len(f.message) == MAX_FAILURE_TEXT
        assert f.args is not None
        assert len(f.args) == MAX_FAILURE_TEXT

    def test_exception_type_name_drops_private_modules(self) -> None:
        assert exception_type_name(ValueError()) == "ValueError"
        private = type("RateLimitError", (Exception,), {"__module__": "openai._exceptions"})
        assert exception_type_name(private()) == "openai.RateLimitError"
        public = type("Boom", (Exception,), {"__module__": "pkg.errors"})
        assert exception_type_name(public()) == "pkg.errors.Boom"

    def test_exported_from_db(self) -> None:
        import beautyspot_async.db as db

        assert db.FailureRecord is FailureRecord
        assert "FailureRecord" in db.__all__


class TestStorage:
    """save/get/delete on every backend, through the Spot's store."""

    async def test_save_get_upsert_delete(self, spot: bs.Spot) -> None:
        db = spot.db
        first = failure(at=100.0)
        await on_io(spot, db.save_failure, first)
        assert await on_io(spot, db.get_failures) == [first]
        again = FailureRecord(**{**_fields(first), "attempts": 7, "failed_at": 200.0})
        await on_io(spot, db.save_failure, again)
        assert await on_io(spot, db.get_failures) == [again]
        assert await on_io(spot, db.delete_failures, [first.cache_key, "0" * 32]) == 1
        assert await on_io(spot, db.get_failures) == []
        assert await on_io(spot, db.delete_failures, [first.cache_key]) == 0

    async def test_newest_first_func_filter_and_limit(self, spot: bs.Spot) -> None:
        db = spot.db
        a = [failure(func="tests.a", at=t) for t in (10.0, 30.0, 20.0)]
        b = failure(func="tests.b", at=25.0)
        for f in [*a, b]:
            await on_io(spot, db.save_failure, f)
        everything = await on_io(spot, db.get_failures)
        assert [f.failed_at for f in everything] == [30.0, 25.0, 20.0, 10.0]
        assert [f.failed_at for f in await on_io(spot, db.get_failures, "tests.a")] == [
            30.0,
            20.0,
            10.0,
        ]
        assert [f.failed_at for f in await on_io(spot, db.get_failures, "tests.a", 2)] == [
            30.0,
            20.0,
        ]
        assert await on_io(spot, db.get_failures, "tests.b") == [b]
        assert await on_io(spot, db.get_failures, "tests.none") == []

    async def test_never_a_result_nor_in_history_or_stats(self, spot: bs.Spot) -> None:
        calls: list[int] = []
        double = mark_double(spot, calls)
        await double(1)
        f = failure(func="tests.double")
        await spot._engine.record_failure(f)
        assert await on_io(spot, spot.db.get, f.cache_key) is None
        assert await on_io(spot, spot.db.get_many, [f.cache_key]) == {}
        history = await spot.history()
        assert list(history["func_name"]) == ["tests.double"]
        assert f.cache_key not in set(history["cache_key"])
        assert await maint.show(spot, failure_record_key(f.cache_key)) is None
        if type(spot.db).iter_records is not TaskDB.iter_records:
            (summary,) = await maint.summary(spot)
            assert summary.entries == 1
            assert await maint.resolve_key(spot, "!fai") == []
            assert await maint.resolve_key(spot, failure_record_key(f.cache_key)[:8]) == []
            assert await maint.orphan_blobs(spot) == []

    async def test_later_success_clears_the_record(self, spot: bs.Spot) -> None:
        calls: list[int] = []
        double = mark_double(spot, calls)
        key = await key_of(lambda s: mark_double(s, []), 4)
        await spot._engine.record_failure(failure(key, func="tests.double"))
        other = failure(func="tests.double")  # a key no call will store
        await spot._engine.record_failure(other)
        assert await double(4) == 8
        assert calls == [4]
        await spot.flush()
        assert await on_io(spot, spot.db.get_failures) == [other]

    async def test_write_behind_success_clears_the_record(self, spot: bs.Spot) -> None:
        def mark(s: bs.Spot) -> Any:
            @s.mark(name="tests.behind", wait=False)
            async def behind(x: int) -> int:
                return x

            return behind

        behind = mark(spot)
        key = await key_of(mark, 5)
        await spot._engine.record_failure(failure(key, func="tests.behind"))
        assert await behind(5) == 5
        await spot.flush()
        assert await on_io(spot, spot.db.get_failures) == []

    async def test_clear_failures(self, spot: bs.Spot) -> None:
        f, g = failure(at=1.0), failure(at=2.0)
        for x in (f, g):
            await spot._engine.record_failure(x)
        assert await spot._engine.clear_failures([f.cache_key, "nope"]) == 1
        assert await on_io(spot, spot.db.get_failures) == [g]


def _fields(f: FailureRecord) -> dict[str, Any]:
    return {name: getattr(f, name) for name in FailureRecord.__dataclass_fields__}


class TestSpotFailures:
    """``spot.failures()``: the frame, its filters, and stale records pruned."""

    async def test_frame_shape(self, spot: bs.Spot) -> None:
        await spot._engine.record_failure(failure(at=1_700_000_000.5))
        frame = await spot.failures()
        assert tuple(frame.columns) == FAILURE_COLUMNS
        assert str(frame["failed_at"].dtype) == "datetime64[ns, UTC]"
        assert str(frame["attempts"].dtype) == "int64"
        row = frame.iloc[0]
        assert row["failed_at"] == pd.Timestamp(1_700_000_000.5, unit="s", tz="UTC")
        assert row["exc_type"] == "openai.RateLimitError"
        assert row["args"] == '["a", 1]'
        assert row["version"] == "v1"
        empty = await spot.failures(limit=0)
        assert tuple(empty.columns) == FAILURE_COLUMNS
        assert len(empty) == 0
        assert str(empty["failed_at"].dtype) == "datetime64[ns, UTC]"

    async def test_filter_by_marked_function_or_name(self, spot: bs.Spot) -> None:
        calls: list[int] = []
        double = mark_double(spot, calls)

        @spot.mark
        async def plain(x: int) -> int:
            return x

        await plain(1)
        (plain_identity,) = set((await spot.history())["func_name"])
        await spot._engine.record_failure(failure(func="tests.double", at=1.0))
        await spot._engine.record_failure(failure(func="tests.double", at=3.0))
        await spot._engine.record_failure(failure(func=plain_identity, at=2.0))
        assert len(await spot.failures()) == 3
        by_fn = await spot.failures(double)
        assert list(by_fn["func_name"]) == ["tests.double", "tests.double"]
        assert len(await spot.failures("tests.double", limit=1)) == 1
        assert list((await spot.failures(plain))["func_name"]) == [plain_identity]
        with pytest.raises(bs.ConfigurationError):
            await spot.failures(limit=-1)
        with pytest.raises(bs.ConfigurationError):
            await spot.failures(42)

    async def test_success_in_another_process_prunes_the_record(
        self, make_db: Callable[[], TaskDB], tmp_path: Path
    ) -> None:
        a = bs.Spot("failing", db=make_db(), storage=tmp_path / "blobs")
        b = bs.Spot("failing", db=make_db(), storage=tmp_path / "blobs")
        try:
            calls: list[int] = []
            mark_double(a, calls)
            double_b = mark_double(b, calls)
            key = await key_of(lambda s: mark_double(s, []), 6)
            await a._engine.record_failure(failure(key, func="tests.double", at=5.0))
            keep = failure(func="tests.double", at=1.0)
            await a._engine.record_failure(keep)
            # b stores the key; it never knew of the failure, so it clears nothing.
            await double_b(6)
            await b.flush()
            assert len(await on_io(a, a.db.get_failures)) == 2
            frame = await b.failures(limit=1)
            assert list(frame["cache_key"]) == [keep.cache_key]
            assert await on_io(a, a.db.get_failures) == [keep]
        finally:
            await a.aclose()
            await b.aclose()


class TestExpiredEntry:
    """An expired stored entry does not make its failure stale (the call would rerun)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_expired_entry_keeps_the_failure(self, tmp_path: Path) -> None:
        clock = FakeClock(1_000_000.0)
        db = MemoryTaskDB(clock=clock)
        spot = bs.Spot("failing", db=db, storage=tmp_path / "b", clock=clock)
        try:

            @spot.mark(name="tests.short", ttl=10)
            async def short(x: int) -> int:
                return x

            await short(1)
            key = str((await spot.history())["cache_key"][0])
            await spot._engine.record_failure(failure(key, func="tests.short"))
            clock.advance(100)
            assert list((await spot.failures())["cache_key"]) == [key]
        finally:
            await spot.aclose()


class TestSQLiteSchema:
    """A SQLite file written before failures existed gains the table when opened."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_existing_file_gets_the_table(self, tmp_path: Path) -> None:
        path = tmp_path / "old.db"
        async with SQLiteTaskDB(path) as db:
            await _backends.save_row(db, "k")
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE failures")
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        async with SQLiteTaskDB(path) as db:
            assert await db.get_failures() == []
            await db.save_failure(failure())
            assert len(await db.get_failures()) == 1
            assert await db.get("k") is not None


class TestCustomDefault:
    """A backend without the failure methods keeps failures among its records, hidden."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_rows_are_reserved_and_deleted_as_tombstones(self, tmp_path: Path) -> None:
        db = CustomTaskDB()  # no delete(): deleting leaves an expired, empty row
        f = failure()
        await db.save_failure(f)
        assert set(db._storage) == {failure_record_key(f.cache_key)}
        assert await db.get_failures() == [f]
        assert await db.delete_failures([f.cache_key]) == 1
        assert await db.get_failures() == []
        assert await db.delete_failures([f.cache_key]) == 0
        row = db._storage[failure_record_key(f.cache_key)]
        assert row["expires_at"] == 0.0
        assert row["result_data"] is None

    async def test_history_keeps_its_limit(self, tmp_path: Path) -> None:
        db = CustomTaskDB()
        async with bs.Spot("custom", db=db, storage=tmp_path / "b") as spot:

            @spot.mark(name="tests.id")
            async def ident(x: int) -> int:
                return x

            for i in range(3):
                await ident(i)
            for i in range(4):
                await spot._engine.record_failure(failure(func="tests.id", at=float(i)))
                await asyncio.sleep(0.002)  # newer than the results in its history
            frame = await spot.history(limit=2)
            assert len(frame) == 2
            assert set(frame["func_name"]) == {"tests.id"}


class TestCli:
    """``beautyspot-async failures DB``: a table, JSON, --func and --limit."""

    @pytest.fixture
    def db_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "exp.db"

        async def main() -> None:
            async with bs.Spot("exp", db=path, storage=tmp_path / "exp_blobs") as spot:
                for i, func in enumerate(["tests.a", "tests.b", "tests.a"]):
                    f = failure(func=func, at=1_700_000_000.0 + i)
                    await spot._engine.record_failure(
                        FailureRecord(**{**_fields(f), "message": f"[red]boom {i}"})
                    )

        asyncio.run(main())
        return path

    def test_json(self, db_file: Path) -> None:
        result = CliRunner().invoke(app, ["failures", str(db_file), "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [r["message"] for r in rows] == ["[red]boom 2", "[red]boom 1", "[red]boom 0"]
        assert set(rows[0]) == set(FAILURE_COLUMNS)
        assert rows[0]["failed_at"] == "2023-11-14T22:13:22+00:00"
        assert rows[0]["attempts"] == 3

    def test_func_and_limit(self, db_file: Path) -> None:
        args = ["failures", str(db_file), "--json", "--func", "tests.a", "--limit", "1"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [(r["func_name"], r["message"]) for r in rows] == [("tests.a", "[red]boom 2")]

    def test_table(self, db_file: Path) -> None:
        result = CliRunner().invoke(app, ["failures", str(db_file)], env={"COLUMNS": "160"})
        assert result.exit_code == 0, result.output
        assert "3 failures" in result.stdout
        assert "openai.RateLimitError: [red]boom 2" in result.stdout
        assert "tests.b" in result.stdout

    def test_missing_file_is_not_created(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(app, ["failures", str(tmp_path / "nope.db")])
        assert result.exit_code == 2
        assert not (tmp_path / "nope.db").exists()


class TestServerLayout:
    """Where PostgreSQL and Redis keep failures; a schema made before them gains the table."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.mark.services
    async def test_postgres_table_created_on_an_existing_schema(
        self, make_postgres: Callable[..., TaskDB], postgres_schema: str
    ) -> None:
        asyncpg = require_module("asyncpg", extra="postgres")
        from tests._services import POSTGRES_URL

        db = make_postgres()
        await db.init_schema()
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP TABLE "{postgres_schema}"."beautyspot_failures"')
        finally:
            await conn.close()
        again = make_postgres()
        await again.init_schema()
        f = failure()
        await again.save_failure(f)
        assert await again.get_failures() == [f]

    @pytest.mark.services
    async def test_redis_hash_and_time_index(
        self, make_redis: Callable[..., TaskDB], redis_client: Any, redis_prefix: str
    ) -> None:
        db = make_redis()
        await db.init_schema()
        f = failure(at=123.5)
        await db.save_failure(f)
        key = f"{redis_prefix}:fail:{f.cache_key}"
        assert await redis_client.type(key) == b"hash"
        assert await redis_client.zscore(f"{redis_prefix}:idx:failed", f.cache_key) == 123.5
        assert await redis_client.exists(f"{redis_prefix}:rec:{f.cache_key}") == 0
        # An index entry whose hash is gone is skipped, not an error.
        await redis_client.delete(key)
        assert await db.get_failures() == []
        assert await db.delete_failures([f.cache_key]) == 0
        assert await redis_client.zcard(f"{redis_prefix}:idx:failed") == 0
