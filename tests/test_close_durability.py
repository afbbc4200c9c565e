"""Nothing returned to a caller is lost on close.

With ``default_wait=False`` a call returns before its result is durable
(write-behind). Closing the Spot -- ``aclose()``, leaving ``async with``,
leaving ``with``, or the interpreter exiting -- must wait for every queued
*and in-flight* write: a result a caller got back is stored afterwards,
whatever its size and however slow the backend.

Results are checked through a fresh Spot on the same files whose function
must not run (``assert_stored``), or by counting the rows of the SQLite
``tasks`` table for the large batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import beautyspot_async as bs
from beautyspot_async.db import SQLiteTaskDB
from beautyspot_async.storage import LocalStorage
from tests.workers.close_worker import SlowSQLiteTaskDB, value_of

CLOSE_WORKER = Path(__file__).parent / "workers" / "close_worker.py"
#: Calls per slow-backend test: with a 100 ms write each, most are queued or in flight.
SLOW_CALLS = 6


def row_count(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=10.0)) as conn:
        return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])


def make_spot(tmp_path: Path, *, slow: bool = False, **options: Any) -> bs.Spot:
    db_class = SlowSQLiteTaskDB if slow else SQLiteTaskDB
    return bs.Spot(
        "close",
        db=db_class(tmp_path / "close.db"),
        storage=LocalStorage(tmp_path / "blobs"),
        default_wait=False,
        **options,
    )


async def assert_stored(tmp_path: Path, count: int) -> None:
    """``close.fn(x)`` for every ``x < count`` is answered from storage by a fresh Spot.

    The fresh Spot takes no leases: a lease left behind by the closed Spot
    must not make the check wait.
    """
    fresh = bs.Spot(
        "close",
        db=SQLiteTaskDB(tmp_path / "close.db"),
        storage=LocalStorage(tmp_path / "blobs"),
        lease_ttl=None,
    )
    missing: list[int] = []

    @fresh.mark(name="close.fn")
    async def fn(x: int) -> Any:
        missing.append(x)
        return value_of(x)

    try:
        with anyio.fail_after(30):
            for x in range(count):
                assert await fn(x) == value_of(x)
    finally:
        await fresh.aclose()
    assert missing == [], f"results returned to callers were lost on close: {missing}"


# -- many inline results -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~40 s on two busy cores
def test_100k_write_behind_results_survive_aclose(tmp_path: Path) -> None:
    """100 000 write-behind results, with an ``aclose()`` after every 5 000."""
    rounds, per_round = 20, 5_000
    db = tmp_path / "close.db"

    async def main() -> None:
        spot = make_spot(tmp_path)

        @spot.mark(name="close.small")
        async def small(x: int) -> int:
            return x

        for r in range(rounds):
            args = range(r * per_round, (r + 1) * per_round)
            assert await asyncio.gather(*(small(x) for x in args)) == list(args)
            await spot.aclose()
            stored = row_count(db)
            assert stored == (r + 1) * per_round, (
                f"after aclose() number {r + 1}: {(r + 1) * per_round - stored} of "
                f"{(r + 1) * per_round} returned results are not stored"
            )

    asyncio.run(main())


# -- blob-sized results ------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_blob_result_survives_leaving_async_with(tmp_path: Path) -> None:
    async with make_spot(tmp_path) as spot:

        @spot.mark(name="close.fn")
        async def fn(x: int) -> Any:
            return value_of(x)

        assert await fn(0) == value_of(0)  # 200 KiB: a blob
    await assert_stored(tmp_path, 1)


def test_a_blob_result_survives_leaving_with(tmp_path: Path) -> None:
    with make_spot(tmp_path) as spot:

        @spot.mark(name="close.fn")
        def fn(x: int) -> Any:
            return value_of(x)

        assert fn(0) == value_of(0)
    anyio.run(assert_stored, tmp_path, 1)


@pytest.mark.anyio
async def test_blob_results_survive_aclose(tmp_path: Path) -> None:
    spot = make_spot(tmp_path)

    @spot.mark(name="close.fn")
    async def fn(x: int) -> Any:
        return value_of(x)

    async with anyio.create_task_group() as tg:
        for x in range(SLOW_CALLS):
            tg.start_soon(fn, x)
    await spot.aclose()
    await assert_stored(tmp_path, SLOW_CALLS)


# -- a slow backend ----------------------------------------------------------------------


class TestSlowBackend:
    """Every write takes 100 ms: close finds writes queued and in flight."""

    @pytest.mark.parametrize("how", ["aclose", "async with"])
    @pytest.mark.anyio
    async def test_async_close(self, tmp_path: Path, how: str) -> None:
        spot = make_spot(tmp_path, slow=True)

        @spot.mark(name="close.fn")
        async def fn(x: int) -> Any:
            return value_of(x)

        with anyio.fail_after(30):
            if how == "aclose":
                for x in range(SLOW_CALLS):
                    assert await fn(x) == value_of(x)
                await spot.aclose()
            else:
                async with spot:
                    for x in range(SLOW_CALLS):
                        assert await fn(x) == value_of(x)
        await assert_stored(tmp_path, SLOW_CALLS)

    def test_sync_with(self, tmp_path: Path) -> None:
        with make_spot(tmp_path, slow=True) as spot:

            @spot.mark(name="close.fn")
            def fn(x: int) -> Any:
                return value_of(x)

            for x in range(SLOW_CALLS):
                assert fn(x) == value_of(x)
        anyio.run(assert_stored, tmp_path, SLOW_CALLS)

    @pytest.mark.slow
    @pytest.mark.parametrize("mode", ["async", "sync"])
    def test_interpreter_exit(self, tmp_path: Path, mode: str) -> None:
        """A script that makes its calls and just ends (no close at all)."""
        done = subprocess.run(
            [
                sys.executable,
                str(CLOSE_WORKER),
                str(tmp_path / "close.db"),
                str(tmp_path / "blobs"),
                mode,
                str(SLOW_CALLS),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.split() == ["returned", str(SLOW_CALLS)]
        anyio.run(assert_stored, tmp_path, SLOW_CALLS)
