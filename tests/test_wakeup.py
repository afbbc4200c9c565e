"""The shared wake-up primitives: ``_wakeup.Wakeup`` and ``_callables.is_async_callable``.

The limiter's queue and the I/O portal wake their waiters the same way, and
the decorator and the limiter decide "async or sync" by the same rule.
"""

from __future__ import annotations

import asyncio
import functools
import threading

import anyio
import pytest

from beautyspot_async._callables import is_async_callable
from beautyspot_async._wakeup import Wakeup


class TestWakeup:
    """A Wakeup wakes an asyncio task, a trio task or a thread, fired from any thread."""

    @pytest.mark.anyio
    async def test_fired_from_another_thread_wakes_the_task(self) -> None:
        wakeup = Wakeup.for_async()
        fired: list[bool] = []
        thread = threading.Thread(target=lambda: fired.append(wakeup.fire()))
        with anyio.fail_after(5):
            thread.start()
            await wakeup.wait()
        thread.join()
        assert fired == [True]

    @pytest.mark.anyio
    async def test_fired_on_its_own_loop(self) -> None:
        wakeup = Wakeup.for_async()
        assert wakeup.fire()
        with anyio.fail_after(5):
            await wakeup.wait()

    @pytest.mark.anyio
    async def test_a_fire_before_renew_is_not_lost_after_it(self) -> None:
        # A fire that races the renewal costs at most one spurious wake-up,
        # never a missed one: the waiter re-checks after renew().
        wakeup = Wakeup.for_async()
        wakeup.fire()
        wakeup.renew()
        wakeup.fire()
        with anyio.fail_after(5):
            await wakeup.wait()

    @pytest.mark.anyio
    async def test_timers_are_for_asyncio_waiters_only(self, anyio_backend: str) -> None:
        assert Wakeup.for_async().has_timer is (anyio_backend == "asyncio")
        assert not Wakeup.for_sync().has_timer

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_a_timer_fires_and_a_new_one_replaces_it(self, anyio_backend: str) -> None:
        wakeup = Wakeup.for_async()
        calls: list[str] = []
        wakeup.call_after(3600, lambda: calls.append("replaced"))
        wakeup.call_after(0, lambda: calls.append("due"))
        wakeup.wake_after(0)
        with anyio.fail_after(5):
            await wakeup.wait()
        await asyncio.sleep(0)
        assert calls == []  # wake_after replaced the callback timer too
        wakeup.call_after(0, lambda: calls.append("due"))
        await asyncio.sleep(0.01)
        assert calls == ["due"]

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_a_cancelled_timer_never_fires(self, anyio_backend: str) -> None:
        wakeup = Wakeup.for_async()
        calls: list[int] = []
        wakeup.call_after(0, lambda: calls.append(1))
        wakeup.cancel_timer()
        wakeup.cancel_timer()  # idempotent
        await asyncio.sleep(0.01)
        assert calls == []

    @pytest.mark.anyio
    async def test_on_own_loop(self) -> None:
        wakeup = Wakeup.for_async()
        assert wakeup.on_own_loop()
        seen: list[bool] = []
        thread = threading.Thread(target=lambda: seen.append(wakeup.on_own_loop()))
        thread.start()
        thread.join()
        assert seen == [False]

    def test_sync_waiter_blocks_until_fired(self) -> None:
        wakeup = Wakeup.for_sync()
        assert not wakeup.wait_sync(0)
        threading.Timer(0.01, wakeup.fire).start()
        assert wakeup.wait_sync(5)
        wakeup.renew()
        assert not wakeup.wait_sync(0)

    def test_fire_reports_a_closed_loop(self) -> None:
        async def make() -> Wakeup:
            return Wakeup.for_async()

        wakeup = asyncio.run(make())
        done: list[bool] = []
        thread = threading.Thread(target=lambda: done.append(wakeup.fire()))
        thread.start()
        thread.join()
        assert done == [False]


async def _coro() -> None: ...


def _plain() -> None: ...


class _AsyncCall:
    async def __call__(self) -> None: ...


class _SyncCall:
    def __call__(self) -> None: ...


class TestIsAsyncCallable:
    """One rule decides async or sync, for ``@spot.mark`` and ``@limiter`` alike."""

    @pytest.mark.parametrize(
        ("fn", "expected"),
        [
            (_coro, True),
            (_plain, False),
            (functools.partial(_coro), True),
            (functools.partial(functools.partial(_coro)), True),
            (functools.partial(_plain), False),
            (_AsyncCall(), True),
            (functools.partial(_AsyncCall()), True),
            (_SyncCall(), False),
            # Calling the class builds an instance; it does not return a coroutine.
            (_AsyncCall, False),
            (_AsyncCall().__call__, True),
        ],
    )
    def test_rule(self, fn: object, expected: bool) -> None:
        assert is_async_callable(fn) is expected
