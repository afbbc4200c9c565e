"""Files from older releases (``tasks`` WITHOUT ROWID) are converted, and lose nothing.

The small ones when they are opened; larger ones keep working as they are
until ``beautyspot-async migrate`` converts them.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from typer.testing import CliRunner

import beautyspot_async as bs
from beautyspot_async.cli import app
from beautyspot_async.db import SQLiteTaskDB, _sqlite_layout

pytestmark = pytest.mark.anyio

#: What an older release created (and wrote: a result, a damaged row, a lease).
_OLD = """
CREATE TABLE tasks (
    cache_key TEXT PRIMARY KEY NOT NULL, func_name TEXT NOT NULL, input_id TEXT NOT NULL,
    version TEXT, result_type TEXT NOT NULL, content_type TEXT, result_value TEXT,
    result_data BLOB, expires_at REAL, size_bytes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, meta TEXT
) WITHOUT ROWID;
CREATE INDEX tasks_func_name ON tasks (func_name);
CREATE INDEX tasks_expires_at ON tasks (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX tasks_updated_at ON tasks (updated_at);
CREATE TABLE leases (cache_key TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL,
    expires_at REAL NOT NULL) WITHOUT ROWID;
INSERT INTO tasks VALUES ('damaged', 'f', 'i', NULL, 'inline', NULL, NULL, x'00', 'soon',
    1, 1.0, 2.0, NULL);
INSERT INTO leases VALUES ('held', 'someone', 1e12);
PRAGMA user_version = 1;
"""


def _old_file(path: Path, results: dict[str, bytes]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_OLD)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executemany(
            "INSERT INTO tasks VALUES (?, 'f', 'i', 'v1', 'inline', NULL, NULL, ?, NULL, ?,"
            " 10.0, 20.0, '{\"usage\": 1}')",
            [(key, data, len(data)) for key, data in results.items()],
        )
        conn.commit()
    finally:
        conn.close()


def _dump(path: Path) -> tuple[list[Any], list[Any], str, set[str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT * FROM tasks ORDER BY cache_key").fetchall()
        leases = conn.execute("SELECT * FROM leases").fetchall()
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks'").fetchone()[0]
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
            )
        }
        return rows, leases, str(sql), indexes
    finally:
        conn.close()


def _results() -> dict[str, bytes]:
    return {f"key-{i:03d}": bytes([i % 256]) * (100 + 37 * i) for i in range(120)}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiosqlite: asyncio only
async def test_a_small_old_file_is_converted_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_file(path, _results())
    before_rows, before_leases, before_sql, _ = _dump(path)
    assert "WITHOUT ROWID" in before_sql
    async with SQLiteTaskDB(path) as db:
        record = await db.get("key-007")
        assert record is not None
        assert record.result_data == _results()["key-007"]
        damaged = await db.get("damaged")
        assert damaged is not None
        assert damaged.problem is not None, "a damaged row stays flagged, not repaired"
    rows, leases, sql, indexes = _dump(path)
    assert "WITHOUT ROWID" not in sql.upper()
    assert rows == before_rows, "every row and column is copied as stored"
    assert leases == before_leases
    assert {"tasks_func_name", "tasks_expires_at", "tasks_updated_at"} <= indexes
    async with SQLiteTaskDB(path) as db:  # a second open has nothing to do
        assert await db.convert_layout() is False


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_converted_file_serves_hits_without_running_anything(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_file(path, {})
    async with bs.Spot("t", db=str(path), storage=str(tmp_path / "blobs")) as spot:

        @spot.mark
        async def f(x: int) -> int:
            return x * 3

        assert [await f(i) for i in range(5)] == [0, 3, 6, 9, 12]
    calls: list[int] = []
    async with bs.Spot(
        "t", db=str(path), storage=str(tmp_path / "blobs"), memory_cache_entries=0
    ) as spot:

        @spot.mark
        async def f(x: int) -> int:  # type: ignore[no-redef]
            calls.append(x)
            return -1

        assert [await f(i) for i in range(5)] == [0, 3, 6, 9, 12]
    assert calls == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_large_old_file_is_kept_until_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_sqlite_layout, "CONVERT_ON_OPEN_MAX", 0)
    path = tmp_path / "old.db"
    _old_file(path, _results())
    before_rows, _, _, _ = _dump(path)
    with caplog.at_level(logging.INFO, logger="beautyspot_async"):
        async with SQLiteTaskDB(path) as db:
            record = await db.get("key-042")
            assert record is not None
            assert record.result_data == _results()["key-042"]
            assert db.get_nowait("key-042") == record
    assert "beautyspot-async migrate" in caplog.text
    assert "WITHOUT ROWID" in _dump(path)[2], "a large file must not be converted on open"

    runner = CliRunner()
    # In a thread: the CLI runs its own event loop.
    done = await anyio.to_thread.run_sync(runner.invoke, app, ["migrate", str(path)])
    assert done.exit_code == 0, done.output
    assert "converted" in done.output
    rows, _, sql, _ = _dump(path)
    assert "WITHOUT ROWID" not in sql.upper()
    assert rows == before_rows
    again = await anyio.to_thread.run_sync(runner.invoke, app, ["migrate", str(path)])
    assert again.exit_code == 0, again.output
    assert "already" in again.output


def test_migrate_on_another_backend_says_there_is_nothing_to_do() -> None:
    done = CliRunner().invoke(app, ["migrate", "memory://"])
    assert done.exit_code == 0, done.output
    assert "nothing to migrate" in done.output
