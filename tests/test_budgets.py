"""Size budgets: ``Spot(max_bytes=, max_entries=)``, last-use tracking, ``gc`` eviction.

Every backend (memory, SQLite, PostgreSQL, Redis, and custom backends
written without the budget methods) keeps the least recently used order
(a recently hit entry survives), records a hit's last use at most once per
entry per hour, and is within its budget after ``flush()``, blobs deleted
with their rows. PostgreSQL and Redis run under asyncio only (their
fixtures talk to the servers directly); the others under asyncio and trio.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import beautyspot_async as bs
from beautyspot_async._budget import TOUCH_INTERVAL, check_budget, parse_age, parse_size
from beautyspot_async._gc import collect_garbage
from beautyspot_async._portal import io_loop
from beautyspot_async.cli import app
from beautyspot_async.db import MemoryTaskDB, SQLiteTaskDB, TaskDB
from beautyspot_async.storage import LocalStorage
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
    ("custom+", "asyncio"),
    ("custom+", "trio"),
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
    return case[1]


@pytest.fixture
def clock() -> FakeClock:
    # Ahead of real time: the servers stamp writes with their own clock, and
    # a hit must count as a later use than the write it reads.
    return FakeClock(time.time() + 100.0)


@pytest.fixture
def make_db(
    case: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest, clock: FakeClock
) -> Callable[[], TaskDB]:
    kind = case[0]
    if kind == "postgres":
        factory: Callable[[], TaskDB] = request.getfixturevalue("make_postgres")
        return factory
    if kind == "redis":
        return request.getfixturevalue("make_redis")
    if kind == "sqlite":
        return lambda: SQLiteTaskDB(tmp_path / "b.db", clock=clock)
    shared = MemoryTaskDB(clock=clock) if kind == "memory" else FullerTaskDB()
    return lambda: shared


class TouchSpy:
    """Counts the keys each ``touch`` batch carries, then touches for real."""

    def __init__(self, db: TaskDB) -> None:
        self.batches: list[list[str]] = []
        self._touch = db.touch
        db.touch = self  # type: ignore[method-assign]

    async def __call__(self, keys: Sequence[str], now: float) -> None:
        self.batches.append(list(keys))
        await self._touch(keys, now)

    def count(self, key: str) -> int:
        return sum(batch.count(key) for batch in self.batches)


async def on_io(spot: bs.Spot, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a database method where the Spot's backends live (its I/O loop if loop-bound)."""
    await spot.open()
    if spot.db.loop_bound:
        return await io_loop.run(fn, *args)
    return await fn(*args)


async def _stored(spot: bs.Spot, keys: list[str]) -> list[bool]:
    found = await on_io(spot, spot.db.get_many, keys)
    return [key in found for key in keys]


async def test_a_recently_hit_entry_survives(
    make_db: Callable[[], TaskDB], tmp_path: Path, clock: FakeClock, case: tuple[str, str]
) -> None:
    """Over max_entries, the least recently used go: a hit counts as a use."""
    db = make_db()
    spot = bs.Spot("lru", db=db, storage=tmp_path / "blobs", clock=clock, max_entries=3)
    calls: list[int] = []
    try:

        @spot.mark
        async def f(x: int) -> str:
            calls.append(x)
            return f"value {x}"

        keys = [f.key(x) for x in range(4)]
        for x in range(3):
            await f(x)
            await spot.flush()
            clock.advance(5.0)
            if case[0] == "custom+":
                time.sleep(0.002)  # its updated_at is the real clock
        assert await f(0) == "value 0"  # a hit: 0 is now the most recently used
        assert calls == [0, 1, 2]
        clock.advance(5.0)
        await spot.flush()
        await f(3)
        await spot.flush()
        if case[0] == "custom+":
            # Without touch(), last use is the last write: 0 is the oldest.
            assert await _stored(spot, keys) == [False, True, True, True]
        else:
            assert await _stored(spot, keys) == [True, False, True, True]
            assert await f(1) == "value 1"  # evicted from the memory tier too
            assert calls == [0, 1, 2, 3, 1]
    finally:
        await spot.aclose()


async def test_a_hit_writes_last_use_at_most_once_an_hour(
    make_db: Callable[[], TaskDB], tmp_path: Path, clock: FakeClock
) -> None:
    db = make_db()
    spy = TouchSpy(db)
    spot = bs.Spot("touch", db=db, storage=tmp_path / "blobs", clock=clock)
    try:

        @spot.mark
        async def f(x: int) -> int:
            return x * 2

        await f(1)
        await spot.flush()
        assert spy.count(f.key(1)) == 0, "a write is a use already: no touch"
        for _ in range(5):
            assert await f(1) == 2
        await spot.flush()
        assert spy.count(f.key(1)) == 1
        clock.advance(TOUCH_INTERVAL / 2)
        for _ in range(5):
            await f(1)
        await spot.flush()
        assert spy.count(f.key(1)) == 1, "within the hour: no second write"
        clock.advance(TOUCH_INTERVAL / 2 + 1)
        await spot.flush()  # the writer sweeps stamps older than an hour
        await f(1)
        await spot.flush()
        assert spy.count(f.key(1)) == 2
        assert len(spy.batches) == 2, "touches are written in batches, by the writer"
    finally:
        await spot.aclose()


@pytest.mark.parametrize("budget", ["entries", "bytes"])
async def test_within_budget_after_flush_blobs_deleted_with_rows(
    make_db: Callable[[], TaskDB], tmp_path: Path, clock: FakeClock, budget: str
) -> None:
    db = make_db()
    blobs = tmp_path / "blobs"
    limits: dict[str, Any] = {"max_entries": 5} if budget == "entries" else {"max_bytes": 2000}
    spot = bs.Spot(
        "budget",
        db=db,
        storage=blobs,
        clock=clock,
        blob_threshold=100,
        default_wait=False,
        **limits,
    )
    try:

        @spot.mark
        async def f(x: int) -> bytes:
            # Every other result is a blob (over blob_threshold).
            return bytes([x]) * (300 if x % 2 else 20)

        for x in range(30):
            await f(x)
        await spot.flush()
        entries, total = await on_io(spot, db.usage_totals)
        if budget == "entries":
            assert entries <= 5
        else:
            assert total <= 2000
        found = await _stored(spot, [f.key(x) for x in range(30)])
        stored = [x for x in range(30) if found[x]]
        assert stored, "the newest entries stay"
        assert max(stored) == 29
        big = [x for x in stored if x % 2]
        assert len(list(blobs.rglob("*.bin"))) == len(big), "evicted blobs go with their rows"
        assert spot._engine.budget.evicted >= 30 - len(stored)
    finally:
        await spot.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_old_sqlite_file_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with SQLiteTaskDB(path) as db:
        await db.save(
            cache_key="k" * 32,
            func_name="f",
            input_id="i",
            version=None,
            result_type="inline",
            content_type=None,
            result_data=b"x",
        )
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE last_used")
    async with SQLiteTaskDB(path) as db:
        assert await db.usage_totals() == (1, 1)
        await db.touch(["k" * 32], time.time() + 50)
        (candidate,) = await db.eviction_candidates(10)
        assert candidate.used_at > time.time() + 40
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM last_used").fetchone() == (1,)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_custom_backend_without_the_methods(tmp_path: Path) -> None:
    """Hits and writes work on a bare custom backend; a budget needs delete()."""
    spot = bs.Spot("bare", db=CustomTaskDB(), storage=tmp_path / "b")
    try:

        @spot.mark
        async def f(x: int) -> int:
            return x

        await f(1)
        await f(1)
        await spot.flush()
        assert spot._engine.budget.pending == 0
    finally:
        await spot.aclose()
    with pytest.raises(bs.ConfigurationError, match="delete"):
        bs.Spot("bare", db=CustomTaskDB(), storage=tmp_path / "b", max_entries=3)


def test_options_are_validated(tmp_path: Path) -> None:
    assert check_budget("max_bytes", "10GB") == 10**10
    assert check_budget("max_bytes", "512MiB") == 512 * 2**20
    assert check_budget("max_entries", None) is None
    for name, bad in [
        ("max_entries", 0),
        ("max_entries", -1),
        ("max_entries", True),
        ("max_entries", 1.5),
        ("max_entries", "10"),
        ("max_bytes", "ten"),
    ]:
        with pytest.raises(bs.ConfigurationError):
            check_budget(name, bad)
    with pytest.raises(bs.ConfigurationError, match="max_entries"):
        bs.Spot("x", db=":memory:", storage=tmp_path, max_entries=0)
    assert parse_age("90d") == 90 * 86400
    assert parse_age("12h") == 12 * 3600
    assert parse_size("2000") == 2000


# -- gc ----------------------------------------------------------------------------


def _build(tmp_path: Path, n: int = 6) -> tuple[Path, Path, list[str]]:
    """A SQLite store of ``n`` blob entries of 1000 bytes, written a second apart."""
    import asyncio

    db_path, blobs = tmp_path / "gc.db", tmp_path / "blobs"

    async def write() -> list[str]:
        spot = bs.Spot("gc", db=db_path, storage=blobs, blob_threshold=10)

        @spot.mark
        async def f(x: int) -> bytes:
            return bytes([x]) * 1000

        try:
            for x in range(n):
                await f(x)
            return [f.key(x) for x in range(n)]
        finally:
            await spot.aclose()

    keys = asyncio.run(write())
    with sqlite3.connect(db_path) as conn:
        base = time.time() - 10 * 86400
        for i, key in enumerate(keys):
            conn.execute(
                "UPDATE tasks SET updated_at = ? WHERE cache_key = ?", (base + i * 86400, key)
            )
    return db_path, blobs, keys


def _remaining(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        return {row[0] for row in conn.execute("SELECT cache_key FROM tasks")}


def test_gc_max_bytes_and_max_age(tmp_path: Path) -> None:
    db_path, blobs, keys = _build(tmp_path)
    runner = CliRunner()
    sizes = {key: os.path.getsize(p) for key in keys for p in blobs.rglob(f"{key}*")}
    assert len(sizes) == 6
    result = runner.invoke(app, ["gc", str(db_path), "-s", str(blobs), "--max-bytes", "3.1KB"])
    assert result.exit_code == 0, result.output
    assert "3 entries to evict" in result.stdout
    assert "dry run" in result.stdout
    for key in keys[:3]:
        assert key in result.stdout
    assert _remaining(db_path) == set(keys), "a dry run deletes nothing"
    result = runner.invoke(
        app, ["gc", str(db_path), "-s", str(blobs), "--max-bytes", "3.1KB", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert _remaining(db_path) == set(keys)
    bad = runner.invoke(app, ["gc", str(db_path), "-s", str(blobs), "--dry-run", "--yes"])
    assert bad.exit_code == 2
    result = runner.invoke(
        app, ["gc", str(db_path), "-s", str(blobs), "--max-bytes", "3.1KB", "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert "evicted 3 entries" in result.stdout
    assert _remaining(db_path) == set(keys[3:])
    assert len(list(blobs.rglob("*.bin"))) == 3, "their blobs went with them"
    # keys[3..5] were last written 7, 6 and 5 days ago.
    result = runner.invoke(
        app, ["gc", str(db_path), "-s", str(blobs), "--max-age", "6.5d", "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert _remaining(db_path) == set(keys[4:])
    with sqlite3.connect(db_path) as conn:  # a hit (touch) counts as a use
        conn.execute("INSERT INTO last_used VALUES (?, ?)", (keys[4], time.time() - 3600))
    result = runner.invoke(app, ["gc", str(db_path), "-s", str(blobs), "--max-age", "2d", "--yes"])
    assert _remaining(db_path) == {keys[4]}
    assert "nonsense" not in result.stdout
    bad = runner.invoke(app, ["gc", str(db_path), "-s", str(blobs), "--max-age", "soon"])
    assert bad.exit_code == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_gc_keeps_young_orphans(tmp_path: Path) -> None:
    """An orphan younger than the grace period may be an upload in progress: kept."""
    blobs = tmp_path / "blobs"
    storage = LocalStorage(blobs)
    old = await storage.save("a" * 32, b"old orphan")
    young = await storage.save("b" * 32, b"young orphan")
    when = time.time() - 2 * 3600
    os.utime(blobs / old, (when, when))
    spot = bs.Spot("gc", db=tmp_path / "gc.db", storage=blobs)
    try:
        report = await collect_garbage(spot, dry_run=False)
        assert report.orphans == [old]
        assert report.young_orphans == 1
        assert not (blobs / old).exists()
        assert (blobs / young).exists()
        report = await collect_garbage(spot, dry_run=False, orphan_grace=0)
        assert report.orphans == [young]
    finally:
        await spot.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_list_blobs_default_has_unknown_ages(tmp_path: Path) -> None:
    """A storage without list_blobs() lists through list_locations(), ages unknown (taken)."""

    class Listed(LocalStorage):
        list_blobs = bs.storage.BlobStorageBase.list_blobs

    storage = Listed(tmp_path / "blobs")
    location = await storage.save("c" * 32, b"x")
    assert [blob async for blob in storage.list_blobs()] == [(location, None)]
    spot = bs.Spot("gc", db=tmp_path / "gc.db", storage=storage)
    try:
        report = await collect_garbage(spot, dry_run=True)
        assert report.orphans == [location]
    finally:
        await spot.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_hits_alone_get_their_last_use_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that only reads still records last use: the writer is nudged now and then."""
    import anyio

    from beautyspot_async import _writer

    monkeypatch.setattr(_writer, "TOUCH_NUDGE", 0.02)
    db = SQLiteTaskDB(tmp_path / "n.db")
    spy = TouchSpy(db)
    spot = bs.Spot("nudge", db=db, storage=tmp_path / "blobs")
    try:

        @spot.mark
        async def f(x: int) -> int:
            return x

        await f(1)
        await spot.flush()
        await f(1)  # a hit, and no flush after it
        with anyio.fail_after(5):
            while not spy.batches:
                await anyio.sleep(0.02)
        assert spy.batches == [[f.key(1)]]
    finally:
        await spot.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_close_writes_the_last_hits(tmp_path: Path) -> None:
    db = SQLiteTaskDB(tmp_path / "c.db")
    spy = TouchSpy(db)
    spot = bs.Spot("close", db=db, storage=tmp_path / "blobs")

    @spot.mark
    async def f(x: int) -> int:
        return x

    await f(1)
    await spot.flush()
    await f(1)
    assert spy.batches == []
    await spot.aclose()
    assert spy.batches == [[f.key(1)]]
