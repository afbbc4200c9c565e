"""The limiter with its budgets in a real Redis (127.0.0.1:6379).

The Redis store uses the synchronous redis-py client from worker threads, so
these tests run under asyncio and trio alike. Time is Redis server time, so
no fake clock can drive them: bounds that depend on how fast this machine is
are measured, not assumed (a retry-after is checked against the time that
really passed), and waits the limiter imposes are checked from below only,
with a ceiling far above them. Every test uses its own key and deletes it
afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import anyio
import pytest

import beautyspot_async.limiter as limiter_module
from beautyspot_async.exceptions import BackendError, RateLimitError
from beautyspot_async.limiter import Limiter
from tests._services import REDIS_URL, require_module, require_service

pytestmark = [pytest.mark.anyio, pytest.mark.services]


@pytest.fixture
def redis_key() -> Iterator[str]:
    redis = require_module("redis", extra="redis")
    require_service("Redis", "127.0.0.1", 6379)

    key = f"test-{uuid.uuid4().hex}"
    yield key
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(f"beautyspot:limiter:{key}")
    client.close()


def max_in_window(stamps: list[float], width: float) -> int:
    stamps = sorted(stamps)
    return max(sum(1 for t in stamps[i:] if t < s + width) for i, s in enumerate(stamps))


class TestSharedBudget:
    """Two limiters on one key share one budget on the server's clock."""

    async def test_two_limiters_share_the_spacing(self, redis_key: str) -> None:
        a = Limiter(rpm=600, backend=REDIS_URL, key=redis_key)  # 10/s together
        b = Limiter(rpm=600, backend=REDIS_URL, key=redis_key)
        start = time.monotonic()
        for _ in range(3):
            await a.acquire()
            await b.acquire()
        elapsed = time.monotonic() - start
        assert 0.5 - 0.02 <= elapsed < 10.0  # five gaps of 0.1 s; the ceiling only catches a hang
        await a.aclose()
        await b.aclose()

    async def test_nowait_reports_retry_after(self, redis_key: str) -> None:
        """The wait reported is what is left of the other limiter's spend, no more."""
        a = Limiter(tpm=600, backend=REDIS_URL, key=redis_key)  # 10 tokens/s
        b = Limiter(tpm=600, backend=REDIS_URL, key=redis_key)
        start = time.monotonic()
        a.acquire_nowait(50)  # 5 s of budget: a slow machine cannot outlast it
        with pytest.raises(RateLimitError) as info:
            b.acquire_nowait(1)
        passed = time.monotonic() - start
        assert 5.0 - passed - 0.05 < info.value.retry_after <= 5.0
        a.close()
        b.close()

    async def test_concurrent_tasks_are_spaced(self, redis_key: str) -> None:
        limiter = Limiter(rpm=1200, backend=REDIS_URL, key=redis_key)  # 20/s
        stamps: list[float] = []

        async def one() -> None:
            await limiter.acquire()
            stamps.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
        assert stamps[-1] - stamps[0] >= 7 * 0.05 - 0.02
        await limiter.aclose()


class TestCorrections:
    """settle and penalize reach the shared state."""

    async def test_refund_is_visible_to_another_limiter(self, redis_key: str) -> None:
        a = Limiter(tpm=600, backend=REDIS_URL, key=redis_key)
        reservation = a.acquire_nowait(50)  # 5 s of budget
        reservation.settle(0)
        a.close()  # waits for the background correction
        b = Limiter(tpm=600, backend=REDIS_URL, key=redis_key)
        b.acquire_nowait(1)  # would wait ~5 s without the refund
        b.close()

    async def test_penalize_pauses_other_limiters(self, redis_key: str) -> None:
        """Another limiter on the key waits out what is left of the penalty."""
        a = Limiter(rpm=600, backend=REDIS_URL, key=redis_key)
        start = time.monotonic()
        a.penalize(10.0)  # long enough that a slow machine cannot outlast it
        a.close()
        b = Limiter(rpm=600, backend=REDIS_URL, key=redis_key)
        with pytest.raises(RateLimitError) as info:
            b.acquire_nowait()
        passed = time.monotonic() - start
        assert 10.0 - passed - 0.05 < info.value.retry_after <= 10.0
        b.close()

    async def test_impossible_cost_raises_without_a_round_trip(self, redis_key: str) -> None:
        limiter = Limiter(tpm=60, backend="redis://127.0.0.1:1/0", key=redis_key)
        with pytest.raises(RateLimitError):
            await limiter.acquire(61)


class TestErrors:
    """Connection failures surface as BackendError with the driver error chained."""

    async def test_unreachable_server(self) -> None:
        limiter = Limiter(rpm=60, backend="redis://127.0.0.1:1/0", key="nobody")
        with pytest.raises(BackendError) as info:
            await limiter.acquire()
        assert info.value.__cause__ is not None
        assert limiter.statistics().queue_depth == 0  # the failed waiter left the queue
        with pytest.raises(BackendError):
            limiter.acquire_nowait()


WORKER = textwrap.dedent(
    """
    import json, sys, time
    import anyio
    from beautyspot_async.limiter import Limiter

    url, key, until = sys.argv[1], sys.argv[2], float(sys.argv[3])
    limiter = Limiter(rpm=1200, backend=url, key=key)  # 20/s shared by every worker
    stamps = []

    async def worker():
        while True:
            await limiter.acquire()
            now = time.time()
            if now >= until:
                return
            stamps.append(now)

    async def main():
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(worker)

    anyio.run(main)
    limiter.close()
    print(json.dumps(stamps))
    """
)


class TestProcesses:
    """Several real processes sharing one key never exceed the budget together."""

    @pytest.mark.slow
    @pytest.mark.timeout(300)  # four interpreters, each may take its 30 s
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    def test_four_processes(self, redis_key: str, anyio_backend: str) -> None:
        src = os.path.dirname(os.path.dirname(os.path.abspath(limiter_module.__file__)))
        env = {**os.environ, "PYTHONPATH": src}
        until = time.time() + 4.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, REDIS_URL, redis_key, repr(until)],
                stdout=subprocess.PIPE,
                env=env,
            )
            for _ in range(4)
        ]
        stamps: list[float] = []
        per_process = []
        for proc in procs:
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0
            mine = json.loads(out)
            per_process.append(len(mine))
            stamps += mine
        # Workers start at different times (interpreter start-up); look at
        # the span where all were running and at the whole run.
        assert all(n > 0 for n in per_process), per_process
        # 20/s, zero burst: at most 20 * W + 1 per window; +1 for the jitter
        # between the server's admission and the client's timestamp.
        assert max_in_window(stamps, 1.0) <= 20 + 2
        assert max_in_window(stamps, 0.25) <= 5 + 2
        span = max(stamps) - min(stamps)
        assert len(stamps) <= 20 * span + 2
        assert len(stamps) >= 0.8 * 20 * span  # and the budget is actually used
