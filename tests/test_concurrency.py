"""Single-flight across coroutines, tasks and threads; sync and async callers together."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import beautyspot_async as bs

from ._spots import EMBEDDED, make_spot, open_spot


@pytest.fixture(params=EMBEDDED)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
class TestSingleFlight:
    """Concurrent calls with one key execute the function once."""

    async def test_hundred_concurrent_calls_execute_once(self, kind: str, tmp_path: Path) -> None:
        calls = 0
        release = anyio.Event()
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            async def slow(x: int) -> dict[str, list[int]]:
                nonlocal calls
                calls += 1
                await release.wait()
                return {"x": [x]}

            results: list[Any] = [None] * 100

            async def one(i: int) -> None:
                results[i] = await slow(7)

            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(one, i)
                await anyio.wait_all_tasks_blocked()
                release.set()
        assert calls == 1
        assert all(r == {"x": [7]} for r in results)
        # equal, but no two callers share one mutable object
        assert len({id(r) for r in results}) == 100
        assert len({id(r["x"]) for r in results}) == 100

    async def test_waiters_receive_the_exception(self, kind: str, tmp_path: Path) -> None:
        calls = 0
        release = anyio.Event()
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            async def boom() -> None:
                nonlocal calls
                calls += 1
                await release.wait()
                raise ValueError("nope")

            errors: list[BaseException] = []

            async def one() -> None:
                try:
                    await boom()
                except ValueError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(one)
                await anyio.wait_all_tasks_blocked()
                release.set()
        assert calls == 1
        assert len(errors) == 10

    async def test_cancelled_leader_hands_over_to_a_waiter(self, kind: str, tmp_path: Path) -> None:
        started: list[int] = []
        first_started = anyio.Event()
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            async def work(x: int) -> int:
                started.append(x)
                if len(started) == 1:
                    first_started.set()
                    await anyio.sleep_forever()
                return x * 10

            results: list[int] = []

            async def waiter() -> None:
                results.append(await work(4))

            leader_scope = anyio.CancelScope()

            async def leader() -> None:
                with leader_scope:
                    await work(4)
                results.append(-1)  # the leader was cancelled, not answered

            async with anyio.create_task_group() as tg:
                tg.start_soon(leader)
                await first_started.wait()
                for _ in range(3):
                    tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                leader_scope.cancel()
        assert started == [4, 4], "exactly one waiter took over"
        assert sorted(results) == [-1, 40, 40, 40]

    async def test_sync_function_from_worker_threads(self, kind: str, tmp_path: Path) -> None:
        calls = 0
        entered = 0
        gate = threading.Event()
        lock = threading.Lock()

        class CountEntries(bs.HookBase):
            def pre_execute(self, context: bs.PreExecuteContext) -> None:
                nonlocal entered
                with lock:
                    entered += 1

        async with open_spot(kind, tmp_path, hooks=[CountEntries()]) as spot:

            @spot.mark
            def compute(x: int) -> list[int]:
                nonlocal calls
                calls += 1
                gate.wait(timeout=10)
                return [x, x]

            results: list[Any] = []

            async def in_thread() -> None:
                results.append(await anyio.to_thread.run_sync(compute, 3))

            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(in_thread)
                # Every thread is inside the call and the leader is executing:
                # the other five can only join its flight.
                while not (entered == 6 and calls == 1):
                    await anyio.sleep(0.001)
                gate.set()
        assert calls == 1
        assert results == [[3, 3]] * 6
        assert spot.statistics().joins == 5

    async def test_acall_joins_a_gather(self, kind: str, tmp_path: Path) -> None:
        calls: list[int] = []
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            def blocking(x: int) -> int:
                calls.append(x)
                return x + 1

            results: list[int] = []

            async def one(x: int) -> None:
                results.append(await blocking.acall(x))

            async with anyio.create_task_group() as tg:
                for x in (1, 2, 1, 2):
                    tg.start_soon(one, x)
            assert sorted(results) == [2, 2, 3, 3]
            assert blocking(1) == 2
        assert sorted(calls) == [1, 2]

    async def test_sync_call_inside_a_running_loop(self, kind: str, tmp_path: Path) -> None:
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            def plain(x: int) -> int:
                return x * 2

            # Blocks this loop briefly, but must not deadlock.
            assert plain(21) == 42
            assert plain(21) == 42


class TestManyLoops:
    """One Spot serves sync code, async code and successive event loops."""

    def test_sync_async_and_two_asyncio_runs(self, tmp_path: Path) -> None:
        spot = make_spot("sqlite", tmp_path)
        calls: list[str] = []

        @spot.mark
        def sync_f(x: int) -> int:
            calls.append(f"s{x}")
            return x

        @spot.mark
        async def async_f(x: int) -> int:
            calls.append(f"a{x}")
            return x

        assert sync_f(1) == 1

        async def main() -> tuple[int, int]:
            return await async_f(1), sync_f(1)

        assert asyncio.run(main()) == (1, 1)
        assert asyncio.run(main()) == (1, 1)
        assert sync_f(2) == 2
        with spot:
            assert sync_f(2) == 2
        assert calls == ["s1", "a1", "s2"]

    def test_sync_and_async_at_once(self, tmp_path: Path) -> None:
        spot = make_spot("sqlite", tmp_path)
        calls: list[int] = []
        lock = threading.Lock()

        @spot.mark
        def sync_f(x: int) -> int:
            with lock:
                calls.append(x)
            return x

        @spot.mark
        async def async_f(x: int) -> int:
            with lock:
                calls.append(-x)
            return x

        def thread_body() -> None:
            for i in range(50):
                sync_f(i)

        async def main() -> None:
            t = threading.Thread(target=thread_body)
            t.start()
            await asyncio.gather(*(async_f(i) for i in range(50)))
            await anyio.to_thread.run_sync(t.join)
            await spot.aclose()

        asyncio.run(main())
        assert sorted(calls) == sorted([*range(50), *(-i for i in range(50))])
        assert spot.statistics().written == 100
