"""SQLiteTaskDB: the conformance suite plus what only SQLite promises.

Runs under asyncio only: aiosqlite drives its worker thread through asyncio
futures, so the database is ``loop_bound`` and the Spot calls it from its own
asyncio I/O loop. (``get_nowait`` is plain ``sqlite3`` and is exercised from
plain threads as well.)
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from beautyspot_async._record import BLOB, TaskRecord
from beautyspot_async.db._sqlite import SCHEMA_VERSION, SQLiteTaskDB
from beautyspot_async.exceptions import BackendError, ConfigurationError
from beautyspot_async.testing import FakeClock, check_taskdb, check_taskdb_pair

pytestmark = pytest.mark.anyio

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteTaskDB]:
    database = SQLiteTaskDB(tmp_path / "cache" / "tasks.db")
    await database.init_schema()
    yield database
    await database.aclose()


async def _save(
    db: SQLiteTaskDB, key: str, data: bytes | None = b"payload", **extra: object
) -> None:
    fields: dict[str, object] = {
        "cache_key": key,
        "func_name": "mod.fn",
        "input_id": "input",
        "version": None,
        "result_type": "inline",
        "content_type": None,
        "result_data": data,
    }
    fields.update(extra)
    await db.save(**fields)  # type: ignore[arg-type]


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


class TestConformance:
    """SQLiteTaskDB passes the shared TaskDB suite, alone and when instances share a file."""

    async def test_fresh_file_per_check(self, tmp_path: Path) -> None:
        clock = FakeClock()
        counter = itertools.count()
        await check_taskdb(
            lambda: SQLiteTaskDB(tmp_path / f"db{next(counter)}.sqlite", clock=clock),
            clock=clock,
        )

    async def test_shared_file(self, tmp_path: Path) -> None:
        clock = FakeClock()
        await check_taskdb(lambda: SQLiteTaskDB(tmp_path / "shared.db", clock=clock), clock=clock)

    async def test_two_instances_one_file(self, tmp_path: Path) -> None:
        clock = FakeClock()
        path = tmp_path / "pair.db"
        await check_taskdb_pair(
            lambda: (SQLiteTaskDB(path, clock=clock), SQLiteTaskDB(path, clock=clock)), clock=clock
        )


class TestSchema:
    """The file is created lazily in WAL mode with the versioned schema."""

    async def test_lazy_open_creates_parent_and_file(self, tmp_path: Path) -> None:
        path = tmp_path / "a" / "b" / "tasks.db"
        database = SQLiteTaskDB(path)
        assert not path.parent.exists()
        assert await database.get("missing") is None
        assert path.exists()
        await database.aclose()

    async def test_wal_and_version(self, db: SQLiteTaskDB) -> None:
        raw = _raw(db.path)
        try:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            sql = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks'").fetchone()[0]
            assert "WITHOUT ROWID" not in sql.upper()  # see _sqlite_layout
            indexes = {
                r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
            assert {"tasks_func_name", "tasks_expires_at", "tasks_updated_at"} <= indexes
        finally:
            raw.close()

    async def test_expiry_sweep_and_history_use_indexes(self, db: SQLiteTaskDB) -> None:
        raw = _raw(db.path)
        try:
            sweep = raw.execute(
                "EXPLAIN QUERY PLAN DELETE FROM tasks"
                " WHERE expires_at IS NOT NULL AND expires_at <= 1"
            ).fetchall()
            assert any("tasks_expires_at" in row[-1] for row in sweep), sweep
            history = raw.execute(
                "EXPLAIN QUERY PLAN SELECT cache_key FROM tasks ORDER BY updated_at DESC LIMIT 5"
            ).fetchall()
            assert any("tasks_updated_at" in row[-1] for row in history), history
        finally:
            raw.close()

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "future.db"
        raw = _raw(path)
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        raw.close()
        database = SQLiteTaskDB(path)
        with pytest.raises(ConfigurationError, match="upgrade"):
            await database.init_schema()
        await database.aclose()
        raw = _raw(path)
        assert raw.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        raw.close()

    @pytest.mark.slow
    def test_processes_initialise_concurrently(self, tmp_path: Path) -> None:
        path = tmp_path / "multi.db"
        script = textwrap.dedent(
            """
            import asyncio, sys, time
            from beautyspot_async.db._sqlite import SQLiteTaskDB

            async def main(index, start):
                while time.time() < start:
                    pass
                db = SQLiteTaskDB(sys.argv[1])
                await db.init_schema()
                await db.save(cache_key=f"proc{index}", func_name="f", input_id="i",
                              version=None, result_type="inline", content_type=None)
                won = await db.acquire_lease("shared", f"owner{index}", 60.0)
                await db.aclose()
                print("won" if won else "lost")

            asyncio.run(main(int(sys.argv[2]), float(sys.argv[3])))
            """
        )
        start = time.time() + 1.5
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(path), str(i), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i in range(4)
        ]
        results = [p.communicate(timeout=60) for p in procs]
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err
        assert sorted(out.strip() for out, _ in results) == ["lost", "lost", "lost", "won"]
        raw = _raw(path)
        keys = {r[0] for r in raw.execute("SELECT cache_key FROM tasks")}
        raw.close()
        assert keys == {f"proc{i}" for i in range(4)}


class TestDurability:
    """Rows survive closing and a new instance; a failed batch leaves nothing."""

    async def test_survives_reopen_by_new_instance(self, db: SQLiteTaskDB) -> None:
        await _save(db, "kept", b"\x00data")
        await db.aclose()
        again = SQLiteTaskDB(db.path)
        record = await again.get("kept")
        await again.aclose()
        assert record is not None
        assert record.result_data == b"\x00data"

    async def test_save_many_is_one_transaction(self, db: SQLiteTaskDB) -> None:
        good = TaskRecord("good", "f", "i", None, "inline", None, result_data=b"x")
        bad = TaskRecord("bad", None, "i", None, "inline", None)  # type: ignore[arg-type]
        with pytest.raises(BackendError) as info:
            await db.save_many([good, bad])
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        assert info.value.backend == "sqlite"
        assert await db.get("good") is None
        await db.save_many([good])
        assert await db.get("good") is not None

    async def test_get_many_chunks_into_few_queries(self, db: SQLiteTaskDB) -> None:
        keys = [f"k{i:05d}" for i in range(1500)]
        await db.save_many(TaskRecord(k, "f", "i", None, "inline", None) for k in keys)
        statements: list[str] = []
        conn = db._conn.peek()
        assert conn is not None
        await conn.set_trace_callback(statements.append)
        found = await db.get_many(keys)
        await conn.set_trace_callback(None)  # type: ignore[arg-type]  # None clears it
        assert len(found) == 1500
        assert len([s for s in statements if "IN (" in s]) == 2


class TestHistory:
    """History reads metadata columns only, never the payload."""

    async def test_payload_column_is_never_read(self, db: SQLiteTaskDB) -> None:
        await _save(db, "big", os.urandom(1 << 16))
        reads: set[tuple[str | None, str | None]] = set()

        def authorizer(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
            if action == sqlite3.SQLITE_READ:
                reads.add((arg1, arg2))
            return sqlite3.SQLITE_OK

        conn = db._conn.peek()
        assert conn is not None
        await conn.set_authorizer(authorizer)
        frame = await db.get_history()
        assert list(frame["cache_key"]) == ["big"]
        assert ("tasks", "result_data") not in reads
        assert ("tasks", "size_bytes") in reads
        # The same probe sees the payload read when a record is fetched.
        await db.get("big")
        assert ("tasks", "result_data") in reads
        await conn.set_authorizer(None)


class TestGetNowait:
    """The sync fast path answers at once, or raises WouldBlock instead of waiting."""

    async def test_missing_file(self, tmp_path: Path) -> None:
        database = SQLiteTaskDB(tmp_path / "nothing.db")
        with pytest.raises(anyio.WouldBlock):
            database.get_nowait("k")
        assert not (tmp_path / "nothing.db").exists()

    async def test_schema_not_initialised(self, tmp_path: Path) -> None:
        _raw(tmp_path / "empty.db").close()
        database = SQLiteTaskDB(tmp_path / "empty.db")
        with pytest.raises(anyio.WouldBlock):
            database.get_nowait("k")

    async def test_hit_and_miss(self, db: SQLiteTaskDB) -> None:
        await _save(db, "k", b"\x00\x01", expires_at=12.5, version="v3")
        assert db.get_nowait("k") == await db.get("k")
        assert db.get_nowait("absent") is None

    async def test_blob_record_without_payload(self, db: SQLiteTaskDB) -> None:
        await _save(db, "b", None, result_type=BLOB, result_value="ab/cd/b.bin", size_bytes=10**7)
        record = db.get_nowait("b")
        assert record is not None
        assert record.result_value == "ab/cd/b.bin"
        assert record.result_data is None

    async def test_large_payload_goes_async(self, tmp_path: Path) -> None:
        database = SQLiteTaskDB(tmp_path / "big.db", nowait_max_bytes=1024)
        try:
            await _save(database, "small", b"s" * 1024)
            await _save(database, "large", b"l" * 1025)
            small = database.get_nowait("small")
            assert small is not None
            assert small.result_data == b"s" * 1024
            with pytest.raises(anyio.WouldBlock):
                database.get_nowait("large")
            large = await database.get("large")
            assert large is not None
            assert large.result_data == b"l" * 1025
        finally:
            await database.aclose()

    async def test_reserved_write_lock_does_not_block_wal_readers(self, db: SQLiteTaskDB) -> None:
        await _save(db, "k")
        other = _raw(db.path)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE tasks SET func_name = 'uncommitted'")
            record = db.get_nowait("k")
            assert record is not None
            assert record.func_name == "mod.fn"
        finally:
            other.execute("ROLLBACK")
            other.close()

    async def test_exclusive_lock_raises_wouldblock(self, db: SQLiteTaskDB) -> None:
        await _save(db, "k")
        await db.aclose()  # an exclusive lock needs every other connection closed
        other = _raw(db.path)
        try:
            other.execute("PRAGMA locking_mode = EXCLUSIVE")
            other.execute("BEGIN EXCLUSIVE")
            other.execute("UPDATE tasks SET func_name = 'locked'")
            with pytest.raises(anyio.WouldBlock):
                db.get_nowait("k")
            impatient = SQLiteTaskDB(db.path, busy_timeout=0.0)
            with pytest.raises(BackendError) as info:
                await impatient.get("k")
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            await impatient.aclose()
        finally:
            other.execute("ROLLBACK")
            other.close()
        record = db.get_nowait("k")
        assert record is not None
        assert record.func_name == "mod.fn"

    async def test_any_thread_and_after_aclose(self, db: SQLiteTaskDB) -> None:
        await _save(db, "k", b"v")
        seen: list[TaskRecord | None] = []
        thread = threading.Thread(target=lambda: seen.append(db.get_nowait("k")))
        thread.start()
        thread.join()
        assert seen[0] is not None
        assert seen[0].result_data == b"v"
        await db.aclose()
        again = db.get_nowait("k")
        assert again is not None
        assert again.result_data == b"v"
