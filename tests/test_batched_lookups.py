"""Concurrent reads are answered by batched queries, and each caller still gets its own row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from beautyspot_async.db import SQLiteTaskDB, TaskRecord

from ._spots import open_spot


def _as_async(fn: Any) -> Any:
    async def wrapper(x: int) -> Any:
        return fn(x)

    wrapper.__qualname__ = fn.__qualname__
    return wrapper


@pytest.mark.anyio
class TestBatchedReadsThroughSpot:
    """Many concurrent calls on a cold Spot: hits and misses each get their own result."""

    async def test_gather_of_mixed_keys_in_a_fresh_spot(self, tmp_path: Path) -> None:
        calls: list[int] = []

        def body(x: int) -> Any:
            calls.append(x)
            return {"x": x, "blob": "z" * (5000 if x % 3 == 0 else 1)}

        async with open_spot("sqlite", tmp_path, blob_threshold=1000) as spot:
            first = spot.mark(name="f")(_as_async(body))
            results: dict[int, Any] = {}

            async def run(x: int) -> None:
                results[x] = await first(x)

            async with anyio.create_task_group() as tg:
                for x in range(0, 60, 2):  # even keys stored first
                    tg.start_soon(run, x)
        assert len(calls) == 30
        calls.clear()
        # A fresh Spot: nothing in memory, so every read goes to SQLite at once.
        async with open_spot("sqlite", tmp_path, blob_threshold=1000) as spot:
            again = spot.mark(name="f")(_as_async(body))
            results = {}

            async def run2(x: int) -> None:
                results[x] = await again(x)

            async with anyio.create_task_group() as tg:
                for x in range(60):
                    tg.start_soon(run2, x)
            assert spot.statistics().hits == 30
        assert sorted(calls) == list(range(1, 60, 2))
        for x in range(60):
            assert results[x] == {"x": x, "blob": "z" * (5000 if x % 3 == 0 else 1)}


async def _save(db: SQLiteTaskDB, key: str, data: bytes) -> None:
    await db.save(
        cache_key=key,
        func_name="f",
        input_id=key,
        version=None,
        result_type="inline",
        content_type=None,
        result_data=data,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # SQLiteTaskDB used directly: aiosqlite
class TestSQLiteBatches:
    """SQLite's batch methods: a bounded non-waiting read, and read-and-lease as one step."""

    async def test_sqlite_get_many_nowait(self, tmp_path: Path) -> None:
        """Rows over nowait_max_bytes are left out, to be read off the loop thread."""
        db = SQLiteTaskDB(tmp_path / "n.db", nowait_max_bytes=100)
        await db.init_schema()
        for key, size in (("small", 10), ("large", 1000)):
            await _save(db, key, b"d" * size)
        found = db.get_many_nowait(["small", "large", "absent"])
        await db.aclose()
        small = found["small"]
        assert isinstance(small, TaskRecord)
        assert small.result_data == b"d" * 10
        assert found["absent"] is None
        assert "large" not in found  # too large to read on the loop thread

    async def test_lookup_or_lease_is_atomic_per_batch(self, tmp_path: Path) -> None:
        """A second connection sees every lease the first one's batch took."""
        a = SQLiteTaskDB(tmp_path / "l.db")
        b = SQLiteTaskDB(tmp_path / "l.db")
        await a.init_schema()
        await _save(a, "stored", b"v")
        first = await a.lookup_or_lease(["stored", "k1", "k2"], "owner-a", 60)
        second = await b.lookup_or_lease(["k1", "k2", "k3"], "owner-b", 60)
        await a.aclose()
        await b.aclose()
        assert not isinstance(first["stored"], bool)
        assert first["k1"] is True
        assert first["k2"] is True
        assert second == {"k1": False, "k2": False, "k3": True}
