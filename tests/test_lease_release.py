"""Every exit path of an executing call gives its cross-process lease up at once.

A call that misses takes a lease on its key (so other processes wait for its
result instead of executing it too). Whatever way the execution ends --
return, exception, cancellation on asyncio or trio, KeyboardInterrupt or
SystemExit in a sync function, ``aclose()`` or leaving ``async with`` /
``with`` while it runs -- the lease row must be gone at once, not when
``lease_ttl`` runs out. A lease whose holder process is dead (same host)
must not block anyone, and waiting for a live holder's lease is one wait per
call, not a busy poll.

The leases are inspected in the ``leases`` table of the Spot's SQLite file.
A lease owner is ``<hostname>:<pid>:<token>`` (what ``Engine.lease_owner``
writes); the tests that plant a lease of another process write that format.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from beautyspot_async._portal import Waiter, settle_all, settle_here

from ._spots import make_spot

#: How long a released lease may take to disappear from the table.
RELEASE_WITHIN = 5.0  # generous: a loaded CI box delays the I/O loop, never a correct release
#: A bound for anything that should take well under a second.
STEP = 5.0

Row = tuple[str, str, float]


def lease_rows(db: Path) -> list[Row]:
    """The rows of the ``leases`` table (none when it does not exist yet)."""
    with contextlib.closing(sqlite3.connect(db, timeout=5.0)) as conn:
        try:
            return conn.execute("SELECT cache_key, owner, expires_at FROM leases").fetchall()
        except sqlite3.OperationalError:
            return []


def plant_leases(db: Path, cache_keys: list[str], owner: str, expires_at: float) -> None:
    """Write ``owner``'s leases on ``cache_keys`` as another process would."""
    with contextlib.closing(sqlite3.connect(db, timeout=5.0)) as conn, conn:
        conn.executemany(
            "INSERT OR REPLACE INTO leases (cache_key, owner, expires_at) VALUES (?, ?, ?)",
            [(key, owner, expires_at) for key in cache_keys],
        )


def stored_keys(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db, timeout=5.0)) as conn:
        return [row[0] for row in conn.execute("SELECT cache_key FROM tasks ORDER BY cache_key")]


def leases_left_sync(db: Path) -> list[Row]:
    """Poll until the leases table is empty (at most RELEASE_WITHIN s); return what is left."""
    deadline = time.monotonic() + RELEASE_WITHIN
    while (rows := lease_rows(db)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return rows


async def leases_left(db: Path) -> list[Row]:
    deadline = time.monotonic() + RELEASE_WITHIN
    while (rows := lease_rows(db)) and time.monotonic() < deadline:
        await anyio.sleep(0.02)
    return rows


def owner_of(pid: int) -> str:
    """A lease owner string for process ``pid`` on this host."""
    return f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:12]}"


def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@contextlib.contextmanager
def live_process() -> Iterator[int]:
    """A process of this host that stays alive for the block; yields its pid."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


async def cache_keys_of(tmp_path: Path, name: str, args: list[int]) -> list[str]:
    """The cache keys of ``name``'s calls with ``args``, found through a scratch Spot."""
    probe = make_spot("sqlite", tmp_path, "probe")

    @probe.mark(name=name)
    async def fn(x: int) -> int:
        return x

    for x in args:
        await fn(x)
    await probe.aclose()
    return stored_keys(tmp_path / "probe.db")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The SQLite file of ``make_spot("sqlite", tmp_path)``."""
    return tmp_path / "t.db"


# -- exit paths of an executing call ---------------------------------------------------


class TestExitPathsReleaseTheLease:
    @pytest.mark.anyio
    async def test_return(self, tmp_path: Path, db: Path) -> None:
        spot = make_spot("sqlite", tmp_path)
        held: list[list[Row]] = []

        @spot.mark
        async def fine(x: int) -> int:
            held.append(lease_rows(db))
            return x

        assert await fine(1) == 1
        assert held[0], "the call held no lease while executing"
        assert await leases_left(db) == []
        await spot.aclose()

    @pytest.mark.anyio
    async def test_exception(self, tmp_path: Path, db: Path) -> None:
        spot = make_spot("sqlite", tmp_path)
        held: list[list[Row]] = []

        @spot.mark
        async def fail(x: int) -> int:
            held.append(lease_rows(db))
            raise ValueError(x)

        with pytest.raises(ValueError, match="1"):
            await fail(1)
        assert held[0], "the call held no lease while executing"
        assert await leases_left(db) == []
        await spot.aclose()

    @pytest.mark.anyio
    async def test_cancellation(self, tmp_path: Path, db: Path, anyio_backend: str) -> None:
        spot = make_spot("sqlite", tmp_path)
        started = anyio.Event()

        @spot.mark
        async def hang(x: int) -> int:
            started.set()
            await anyio.sleep_forever()
            return x  # pragma: no cover

        with anyio.fail_after(STEP):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hang, 1)
                await started.wait()
                assert lease_rows(db), "the call held no lease while executing"
                tg.cancel_scope.cancel()
        assert await leases_left(db) == []
        await spot.aclose()

    @pytest.mark.anyio
    async def test_cancellation_of_queued_calls(
        self, tmp_path: Path, db: Path, anyio_backend: str
    ) -> None:
        """Calls waiting inside the function (on a semaphore) hold leases too."""
        spot = make_spot("sqlite", tmp_path)
        limit = anyio.Semaphore(2)
        started = 0

        @spot.mark
        async def work(x: int) -> int:
            nonlocal started
            async with limit:
                started += 1
                await anyio.sleep_forever()
            return x  # pragma: no cover

        with anyio.fail_after(STEP):
            async with anyio.create_task_group() as tg:
                for x in range(50):
                    tg.start_soon(work, x)
                while started < 2 or len(lease_rows(db)) < 50:
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        assert await leases_left(db) == []
        await spot.aclose()

    @pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
    def test_sync_function_interrupted(
        self, tmp_path: Path, db: Path, error: type[BaseException]
    ) -> None:
        spot = make_spot("sqlite", tmp_path)
        held: list[list[Row]] = []

        @spot.mark
        def interrupted(x: int) -> int:
            held.append(lease_rows(db))
            raise error()

        with spot:
            with pytest.raises(error):
                interrupted(1)
            assert held[0], "the call held no lease while executing"
            assert leases_left_sync(db) == []

    @pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
    @pytest.mark.anyio
    async def test_async_function_interrupted(
        self, tmp_path: Path, db: Path, error: type[BaseException], anyio_backend: str
    ) -> None:
        if anyio_backend == "trio":
            pytest.skip("trio turns KeyboardInterrupt/SystemExit of a task into its own errors")
        spot = make_spot("sqlite", tmp_path)
        held: list[list[Row]] = []

        @spot.mark
        async def interrupted(x: int) -> int:
            held.append(lease_rows(db))
            raise error()

        with pytest.raises(error):
            await interrupted(1)
        assert held[0], "the call held no lease while executing"
        assert await leases_left(db) == []
        await spot.aclose()


class TestClosingWhileACallExecutes:
    """Closing the Spot while a call executes: the call completes, stores, releases."""

    @pytest.mark.parametrize("how", ["aclose", "async with"])
    @pytest.mark.anyio
    async def test_async(self, tmp_path: Path, db: Path, how: str, anyio_backend: str) -> None:
        spot = make_spot("sqlite", tmp_path)
        started = anyio.Event()
        gate = anyio.Event()
        results: list[int] = []

        @spot.mark(name="lease.slow")
        async def slow(x: int) -> int:
            started.set()
            await gate.wait()
            return 2 * x

        async def call() -> None:
            results.append(await slow(3))

        async def open_gate_soon() -> None:
            await anyio.sleep(0.2)
            gate.set()

        with anyio.move_on_after(STEP) as scope:
            async with anyio.create_task_group() as tg:
                if how == "aclose":
                    tg.start_soon(call)
                    await started.wait()
                    assert lease_rows(db), "the call held no lease while executing"
                    tg.start_soon(open_gate_soon)
                    await spot.aclose()
                else:
                    async with spot:
                        tg.start_soon(call)
                        await started.wait()
                        assert lease_rows(db), "the call held no lease while executing"
                        tg.start_soon(open_gate_soon)
        assert not scope.cancelled_caught, (
            f"the call executing during {how} never returned (its write was never made)"
        )
        assert results == [6]
        assert await leases_left(db) == []
        await assert_stored(tmp_path, {3: 6})
        await spot.aclose()

    def test_sync_with(self, tmp_path: Path, db: Path) -> None:
        spot = make_spot("sqlite", tmp_path)
        started = threading.Event()
        gate = threading.Event()
        results: list[int] = []

        @spot.mark(name="lease.slow")
        def slow(x: int) -> int:
            started.set()
            gate.wait(STEP)
            return 2 * x

        caller = threading.Thread(target=lambda: results.append(slow(3)), daemon=True)
        with spot:
            caller.start()
            assert started.wait(STEP)
            assert lease_rows(db), "the call held no lease while executing"
            threading.Timer(0.2, gate.set).start()
        caller.join(STEP)
        assert not caller.is_alive(), "the call executing while leaving `with spot` never returned"
        assert results == [6]
        assert leases_left_sync(db) == []
        anyio.run(assert_stored, tmp_path, {3: 6})


async def assert_stored(tmp_path: Path, expected: dict[int, int]) -> None:
    """Every ``lease.slow(x)`` in ``expected`` is answered from storage by a fresh Spot."""
    fresh = make_spot("sqlite", tmp_path)

    @fresh.mark(name="lease.slow")
    async def slow(x: int) -> int:
        raise AssertionError(f"slow({x}) was not stored")

    try:
        for x, value in expected.items():
            assert await slow(x) == value
    finally:
        await fresh.aclose()


# -- leases of other processes ---------------------------------------------------------


@pytest.mark.anyio
async def test_a_dead_holders_lease_is_taken_over_at_once(tmp_path: Path, db: Path) -> None:
    """A lease whose owner process no longer exists (same host) blocks nobody."""
    (key,) = await cache_keys_of(tmp_path, "lease.dead", [1])
    spot = make_spot("sqlite", tmp_path)

    @spot.mark(name="lease.dead")
    async def fn(x: int) -> int:
        return x

    await spot.open()
    plant_leases(db, [key], owner_of(dead_pid()), time.time() + 3600)
    begin = time.monotonic()
    with anyio.move_on_after(STEP):
        assert await fn(1) == 1
    took = time.monotonic() - begin
    assert took < 1.0, (
        f"the call waited {took:.1f} s (or more) for a lease whose holder process is dead"
    )
    assert spot.statistics().misses == 1
    await spot.aclose()


@pytest.mark.anyio
async def test_default_lease_ttl_is_at_most_30_s(tmp_path: Path, db: Path) -> None:
    spot = make_spot("sqlite", tmp_path)  # no lease_ttl: the default
    held: list[list[Row]] = []

    @spot.mark
    async def fn(x: int) -> int:
        held.append(lease_rows(db))
        return x

    await fn(1)
    await spot.aclose()
    ((_, _, expires_at),) = held[0]
    assert 0 < expires_at - time.time() <= 31, (
        f"a new lease expires {expires_at - time.time():.0f} s from now (default lease_ttl)"
    )


@pytest.mark.anyio
async def test_waiting_for_a_live_holder_counts_one_wait_per_call(tmp_path: Path, db: Path) -> None:
    """A live holder's lease is respected until it expires; that is one lease_wait."""
    (key,) = await cache_keys_of(tmp_path, "lease.live", [1])
    spot = make_spot("sqlite", tmp_path)

    @spot.mark(name="lease.live")
    async def fn(x: int) -> int:
        return x

    await spot.open()
    with live_process() as pid:
        expires_at = time.time() + 1.5
        plant_leases(db, [key], owner_of(pid), expires_at)
        with anyio.fail_after(STEP):
            assert await fn(1) == 1
        finished = time.time()
    assert finished >= expires_at - 0.1, "the call did not wait for a live holder's lease"
    assert finished <= expires_at + 3.0, "the call went on waiting long after the lease expired"
    stats = spot.statistics()
    await spot.aclose()
    assert stats.misses == 1
    assert stats.lease_waits == 1, f"one waiting call counted {stats.lease_waits} lease waits"


@pytest.mark.anyio
async def test_waiting_for_many_leases_burns_no_cpu(tmp_path: Path, db: Path) -> None:
    """200 calls waiting ~3 s for a live holder's leases: little CPU, 200 lease_waits."""
    calls = 200
    keys = await cache_keys_of(tmp_path, "lease.many", list(range(calls)))
    spot = make_spot("sqlite", tmp_path)

    @spot.mark(name="lease.many")
    async def fn(x: int) -> int:
        return x

    await spot.open()
    results: dict[int, Any] = {}

    async def one(x: int) -> None:
        results[x] = await fn(x)

    with live_process() as pid:
        expires_at = time.time() + 3.0
        plant_leases(db, keys, owner_of(pid), expires_at)
        cpu = time.process_time()
        with anyio.fail_after(STEP):
            async with anyio.create_task_group() as tg:
                for x in range(calls):
                    tg.start_soon(one, x)
        cpu = time.process_time() - cpu
        finished = time.time()
    stats = spot.statistics()
    await spot.aclose()
    assert results == {x: x for x in range(calls)}
    assert finished >= expires_at - 0.1, "the calls did not wait for a live holder's leases"
    assert cpu < 1.0, f"waiting ~3 s for {calls} leased keys used {cpu:.2f} s of CPU"
    assert stats.lease_waits == calls, f"{calls} waiting calls counted {stats.lease_waits}"


class TestAnswersThatFindTheCallerGone:
    """A lease granted to a caller who left before reading the answer is given back.

    Whichever side finds out gives it back: the waiter, when the answer
    arrived just before its cancellation, or the settler, when the waiter
    was cancelled first (``Waiter.unclaimed``).
    """

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_answered_then_cancelled_in_the_same_turn(self) -> None:
        unclaimed: list[object] = []
        waiter = Waiter.for_async()
        waiter.unclaimed = unclaimed.append
        task = asyncio.ensure_future(waiter.wait())
        await asyncio.sleep(0)  # the task now awaits the future
        waiter.future.set_result("granted")
        task.cancel()  # before the task ran again: the answer is never read
        with pytest.raises(asyncio.CancelledError):
            await task
        assert unclaimed == ["granted"]

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_cancelled_then_answered(self) -> None:
        unclaimed: list[object] = []
        waiter = Waiter.for_async()
        waiter.unclaimed = unclaimed.append
        task = asyncio.ensure_future(waiter.wait())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        settle_here([(waiter, "granted", None)])
        assert unclaimed == ["granted"]

    @pytest.mark.anyio
    async def test_a_thread_safe_waiter_cancelled_then_answered(self) -> None:
        unclaimed: list[object] = []
        waiter = Waiter.for_sync()  # what trio and sync callers wait on
        waiter.unclaimed = unclaimed.append
        with anyio.move_on_after(0.05):
            await waiter.wait()
        await anyio.to_thread.run_sync(settle_all, [(waiter, "granted", None)])
        assert unclaimed == ["granted"]

    def test_a_sync_caller_interrupted_after_the_answer(self) -> None:
        unclaimed: list[object] = []
        waiter = Waiter.for_sync()
        waiter.unclaimed = unclaimed.append
        waiter.future.set_result("granted")
        waiter._gone()  # what wait_sync does when it is interrupted
        assert unclaimed == ["granted"]

    def test_an_answer_read_is_not_unclaimed(self) -> None:
        unclaimed: list[object] = []
        waiter = Waiter.for_sync()
        waiter.unclaimed = unclaimed.append
        settle_all([(waiter, "granted", None)])
        assert waiter.wait_sync() == "granted"
        assert unclaimed == []
