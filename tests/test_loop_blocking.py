"""Nothing on the caller's event loop waits for SQLite, even when it is busy.

The probe is a heartbeat task that records the longest gap between its
ticks while cache calls run against a database another connection holds
locked. A blocked loop shows up as a gap as long as the lock is held. The lock
is held long enough that the bound on a healthy loop's gap can be generous (a
loaded machine stalls the heartbeat for a few hundred milliseconds at worst)
and still tell the two apart.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from ._spots import open_spot

pytestmark = pytest.mark.anyio

#: How long the other connection holds the write lock (SQLite's busy timeout is 5 s).
LOCK_HELD = 2.0
#: Far above a healthy (even a loaded) loop's jitter, half the time the lock is held.
MAX_GAP = LOCK_HELD / 2


async def _max_gap_while(busy: threading.Event, stop: anyio.Event) -> float:
    worst = 0.0
    last = time.perf_counter()
    while not stop.is_set():
        await anyio.sleep(0.001)
        now = time.perf_counter()
        if busy.is_set():
            worst = max(worst, now - last)
        last = now
    return worst


def _hold_write_lock(
    path: Path, held: threading.Event, release_after: float, errors: list[BaseException]
) -> None:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        # A second writer holding the write lock: our writes must wait for it
        # (busy timeout), and must do so off the caller's event loop.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE tasks SET version = version")
    except BaseException as exc:  # surface it instead of hanging the test
        errors.append(exc)
        held.set()
        return
    held.set()
    time.sleep(release_after)
    conn.execute("COMMIT")
    conn.close()


class TestLoopNeverBlocks:
    """Cache calls on a locked SQLite database leave the event loop free."""

    @pytest.mark.slow
    async def test_hit_and_miss_while_locked(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, memory_cache_entries=0) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            await f(1)  # stored: the next call of f(1) is a disk hit
            held = threading.Event()
            errors: list[BaseException] = []
            locker = threading.Thread(
                target=_hold_write_lock, args=(tmp_path / "t.db", held, LOCK_HELD, errors)
            )
            locker.start()
            await anyio.to_thread.run_sync(held.wait)
            assert not errors
            stop = anyio.Event()
            gap = 0.0
            results: list[int] = []

            async def probe() -> None:
                nonlocal gap
                gap = await _max_gap_while(held, stop)

            async with anyio.create_task_group() as tg:
                tg.start_soon(probe)
                results.append(await f(1))  # hit while another connection writes
                started = time.perf_counter()
                results.append(await f(2))  # miss: the write waits for the lock, off-loop
                waited = time.perf_counter() - started
                stop.set()
            await anyio.to_thread.run_sync(locker.join)
        assert results == [1, 2]
        assert waited > LOCK_HELD / 2, "the miss did not actually wait for the lock"
        assert gap < MAX_GAP, f"the event loop was blocked for {gap * 1000:.0f} ms"
