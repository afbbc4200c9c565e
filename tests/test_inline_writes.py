"""A miss on SQLite takes its lease, and stores a durable result, on the caller's thread.

Before, both went to the I/O loop and from there to aiosqlite's thread: four
thread hops per miss. Now a small transaction runs at once on the caller's
own connection and never waits; a write lock held elsewhere, a large row or
too many keys send it back to the I/O thread. These tests pin where the work
happens (counted, never timed) and that nothing about the result changes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import beautyspot_async as bs
from beautyspot_async._store import ResultStore
from beautyspot_async.db import SQLiteTaskDB, _sqlite_inline
from beautyspot_async.db._sqlite_inline import MAX_KEYS, InlineWriter

from ._spots import open_spot

pytestmark = pytest.mark.anyio


@pytest.fixture
def io_lookups(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every batch of keys looked up through the I/O loop (the fallback path)."""
    seen: list[list[str]] = []
    original = ResultStore.lookup_many

    async def spy(self: ResultStore, keys: list[str], owner: str | None, ttl: float) -> Any:
        seen.append(list(keys))
        return await original(self, keys, owner, ttl)

    monkeypatch.setattr(ResultStore, "lookup_many", spy)
    return seen


@pytest.fixture
def transactions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    """(statements' keys, seconds) of every transaction committed on a caller's thread."""
    done: list[tuple[int, float]] = []
    original = InlineWriter._transaction

    def timed(self: InlineWriter, work: Callable[[sqlite3.Connection], Any]) -> Any:
        started = time.perf_counter()
        result = original(self, work)  # a declined one raises: not counted
        size = len(result) if isinstance(result, dict) else 0
        done.append((size, time.perf_counter() - started))
        return result

    monkeypatch.setattr(InlineWriter, "_transaction", timed)
    return done


def _rows(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def locked_db(tmp_path: Path) -> Iterator[Callable[[float], threading.Thread]]:
    """Start a thread that holds the database's write lock for some seconds."""
    threads: list[threading.Thread] = []

    def hold(seconds: float) -> threading.Thread:
        held = threading.Event()

        def run() -> None:
            conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(seconds)
            conn.execute("COMMIT")
            conn.close()

        thread = threading.Thread(target=run)
        thread.start()
        held.wait()
        threads.append(thread)
        return thread

    yield hold
    for thread in threads:
        thread.join()


class TestMissesOnTheCallersThread:
    async def test_sequential_misses_never_reach_the_io_loop(
        self, tmp_path: Path, io_lookups: list[list[str]]
    ) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x * 2

            assert [await f(i) for i in range(20)] == [i * 2 for i in range(20)]
            # Durable on return, lease given back with the row: no flush needed.
            assert _rows(tmp_path / "t.db", "tasks") == 20
            assert _rows(tmp_path / "t.db", "leases") == 0
            assert spot.statistics().written == 20
        assert io_lookups == [], "a miss took its lease through the I/O loop"

    async def test_write_behind_misses_take_leases_here(
        self, tmp_path: Path, io_lookups: list[list[str]]
    ) -> None:
        async with open_spot("sqlite", tmp_path, default_wait=False) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x + 1

            for i in range(10):
                assert await f(i) == i + 1
            await spot.flush()
            assert _rows(tmp_path / "t.db", "tasks") == 10
            assert _rows(tmp_path / "t.db", "leases") == 0
        # The writer's batches may hold the write lock now and then: those
        # few lookups fall back, the rest never leave the caller's thread.
        assert sum(map(len, io_lookups)) < 10

    def test_sync_callers_too(self, tmp_path: Path, io_lookups: list[list[str]]) -> None:
        with bs.Spot("t", db=str(tmp_path / "t.db"), storage=str(tmp_path / "blobs")) as spot:

            @spot.mark
            def g(x: int) -> int:
                return -x

            assert [g(i) for i in range(5)] == [0, -1, -2, -3, -4]
            assert _rows(tmp_path / "t.db", "tasks") == 5
        assert io_lookups == []

    async def test_a_rerun_reads_what_was_stored(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> dict[str, int]:
                return {"x": x}

            await f(1)
        calls: list[int] = []
        async with open_spot("sqlite", tmp_path, memory_cache_entries=0) as spot:

            @spot.mark
            async def f(x: int) -> dict[str, int]:  # type: ignore[no-redef]
                calls.append(x)
                return {"x": -1}

            assert await f(1) == {"x": 1}
        assert calls == []


class TestGathers:
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_a_gather_leases_in_bounded_batches(
        self,
        tmp_path: Path,
        io_lookups: list[list[str]],
        transactions: list[tuple[int, float]],
    ) -> None:
        n = MAX_KEYS * 2 + 37
        async with open_spot("sqlite", tmp_path, default_wait=False) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            await f(-1)  # opened: the gather's calls then reach their leases together
            await spot.flush()
            transactions.clear()
            io_lookups.clear()
            assert await asyncio.gather(*(f(i) for i in range(n))) == list(range(n))
            await spot.flush()
            assert _rows(tmp_path / "t.db", "tasks") == n + 1
            assert _rows(tmp_path / "t.db", "leases") == 0
        leased = sum(size for size, _ in transactions)
        assert leased + sum(map(len, io_lookups)) == n
        # Batched per loop turn, not one per call (the first call of each
        # turn leases alone; the rest of the turn go in chunks).
        assert len(transactions) <= n // 10
        assert leased > n // 2, "most leases fell back to the I/O thread"
        assert max(size for size, _ in transactions) <= MAX_KEYS
        # Generous: 500 lease rows take about a millisecond on a quiet machine.
        assert max(seconds for _, seconds in transactions) < 0.25

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_durable_gather_is_durable(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> str:
                return "v" * 100 + str(x)

            results = await asyncio.gather(*(f(i) for i in range(700)))
            assert results == ["v" * 100 + str(i) for i in range(700)]
            assert _rows(tmp_path / "t.db", "tasks") == 700
            assert _rows(tmp_path / "t.db", "leases") == 0

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_a_cancelled_caller_gives_its_lease_back(self, tmp_path: Path) -> None:
        started = asyncio.Event()
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                started.set()
                await asyncio.sleep(3600)
                return x

            tasks = [asyncio.ensure_future(f(i)) for i in range(3)]
            # The first task leases directly; the other two are batched for
            # the end of the turn. Cancel one of those before the batch runs.
            for _ in range(3):
                await asyncio.sleep(0)
            tasks[2].cancel()
            await started.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await spot.flush()
        assert _rows(tmp_path / "t.db", "leases") == 0


class TestFallbacks:
    async def test_a_locked_database_falls_back_to_the_io_thread(
        self,
        tmp_path: Path,
        io_lookups: list[list[str]],
        locked_db: Callable[[float], threading.Thread],
    ) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            await f(0)  # creates the file
            locked_db(0.3)
            assert await f(1) == 1  # waits for the lock, off this thread
            assert _rows(tmp_path / "t.db", "tasks") == 2
        assert [key for batch in io_lookups for key in batch], "the lease did not fall back"

    async def test_a_large_result_goes_through_the_writer(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, blob_threshold=10**7) as spot:

            @spot.mark
            async def f(n: int) -> bytes:
                return b"x" * n

            written_before = spot.statistics().written
            assert await f(_sqlite_inline.MAX_BYTES + 1) == b"x" * (_sqlite_inline.MAX_BYTES + 1)
            assert spot.statistics().written == written_before + 1
            assert _rows(tmp_path / "t.db", "tasks") == 1

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiosqlite: asyncio only
    async def test_not_in_wal_mode_never_writes_here(self, tmp_path: Path) -> None:
        db = SQLiteTaskDB(tmp_path / "t.db")
        await db.init_schema()
        await db.aclose()
        conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.close()
        db = SQLiteTaskDB(tmp_path / "t.db")
        try:
            # Outside WAL a writer would block every reader: decline, change nothing.
            with pytest.raises(anyio.WouldBlock):
                db.lookup_or_lease_nowait(["k"], "owner", 30.0)
            assert _rows(tmp_path / "t.db", "leases") == 0
        finally:
            await db.aclose()


class TestCheckpoints:
    async def test_the_io_thread_checkpoints_for_the_callers(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_sqlite_inline, "CHECK_EVERY", 4)
        monkeypatch.setattr(_sqlite_inline, "WAL_LIMIT", 16 * 1024)
        ran: list[bool] = []
        original = SQLiteTaskDB.housekeeping

        async def spy(self: SQLiteTaskDB) -> None:
            await original(self)
            ran.append(True)

        monkeypatch.setattr(SQLiteTaskDB, "housekeeping", spy)
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            for i in range(60):
                await f(i)
            await spot.flush()
            # The aiosqlite connection that checkpointed still commits: a
            # checkpoint statement left open there would break every write.
            await f.refresh(0)  # type: ignore[attr-defined]

            @spot.mark(wait=False)
            async def g(x: int) -> int:
                return x

            await g(1)
            await spot.flush()
            assert spot.statistics().write_failures == 0
        assert ran, "no checkpoint was asked of the I/O thread"
        # Truncated by the last checkpoint, then grown only by what followed it.
        assert (tmp_path / "t.db-wal").stat().st_size < 4 * 1024 * 1024
        assert _rows(tmp_path / "t.db", "tasks") == 61


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiosqlite: asyncio only
async def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    db = SQLiteTaskDB(tmp_path / "t.db")
    await db.init_schema()
    try:
        assert db.lookup_or_lease_nowait(["parent"], "owner-p", 30.0) == {"parent": True}
        inherited = db._connections.get()
        pid = os.fork()
        if pid == 0:  # the child: never the parent's connection (SQLite forbids it)
            code = 1
            try:
                conn = db._connections.get()
                leased = db.lookup_or_lease_nowait(["child"], "owner-c", 30.0)
                code = 0 if conn is not inherited and leased == {"child": True} else 3
            finally:
                os._exit(code)
        _, status = await anyio.to_thread.run_sync(os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert db._connections.get() is inherited, "the parent keeps its connection"
        rows = sqlite3.connect(tmp_path / "t.db").execute("SELECT cache_key FROM leases")
        assert sorted(r[0] for r in rows) == ["child", "parent"]
    finally:
        await db.aclose()
