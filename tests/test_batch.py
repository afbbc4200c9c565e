"""The batch runner: spot.map / starmap / imap, retries, failures, usage, progress."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import beautyspot_async as bs
from beautyspot_async import _retry
from beautyspot_async.testing import FakeClock

from ._spots import open_spot

pytestmark = pytest.mark.anyio


class HTTPError(Exception):
    """Shaped like the openai/httpx errors: a status and a response with headers."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = SimpleNamespace(status_code=status, headers=headers or {})


def million(pulled: list[int]) -> Iterator[int]:
    """A million items, noting each one as the runner reads it."""
    for i in range(1_000_000):
        pulled.append(i)
        yield i


def counting() -> tuple[dict[Any, int], Any]:
    calls: dict[Any, int] = {}

    def bump(key: Any) -> int:
        calls[key] = calls.get(key, 0) + 1
        return calls[key]

    return calls, bump


# -- the basics --------------------------------------------------------------------------------


class TestMap:
    async def test_results_in_input_order_and_rerun_is_all_hits(self, tmp_path: Path) -> None:
        calls, bump = counting()
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def square(x: int) -> int:
                bump(x)
                await anyio.sleep(0.001 * (x % 3))  # finish out of order
                return x * x

            report = await spot.map(square, range(20), concurrency=5, progress=False)
            assert report.results == [x * x for x in range(20)]
            assert (report.hits, report.executed, report.failed, report.retried) == (0, 20, 0, 0)
            assert report.failures == []
            report.raise_for_failures()  # nothing failed: no error

            again = await spot.map(square, range(25), progress=False)
        assert again.results == [x * x for x in range(25)]
        assert (again.hits, again.executed) == (20, 5)
        assert all(n == 1 for n in calls.values())

    async def test_starmap_and_sync_functions(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            def add(a: int, b: int) -> int:  # a sync function runs in worker threads
                return a + b

            report = await spot.starmap(add, [(1, 2), (3, 4), [5, 6]], progress=False)
        assert report.results == [3, 7, 11]
        assert report.executed == 3

    async def test_async_iterable_items(self, tmp_path: Path) -> None:
        async def items() -> AsyncIterator[int]:
            for i in range(5):
                yield i

        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def double(x: int) -> int:
                return 2 * x

            report = await spot.map(double, items(), progress=False)
        assert report.results == [0, 2, 4, 6, 8]

    async def test_imap_yields_in_completion_order(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:
            gates = {i: anyio.Event() for i in range(3)}

            @spot.mark
            async def wait_for(i: int) -> int:
                await gates[i].wait()
                return i

            seen: list[tuple[int, int]] = []

            async def consume() -> None:
                async for pair in spot.imap(wait_for, [0, 1, 2], progress=False):
                    seen.append(pair)
                    if len(seen) < 3:
                        gates[[2, 1, 0][len(seen)]].set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await anyio.sleep(0.01)
                gates[2].set()
        assert seen == [(2, 2), (1, 1), (0, 0)]

    async def test_items_are_pulled_lazily(self, tmp_path: Path) -> None:
        pulled: list[int] = []

        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def echo(x: int) -> int:
                return x

            taken = 0
            async for _ in spot.imap(echo, million(pulled), concurrency=8, progress=False):
                taken += 1
                if taken == 50:
                    break
        # Only what the slots could hold beyond the 50 consumed was read.
        assert len(pulled) <= 50 + 2 * 8 + 32  # running + buffered outcomes + one chunk

    async def test_not_marked_on_this_spot(self, tmp_path: Path) -> None:
        async def plain(x: int) -> int:
            return x

        async with (
            open_spot("memory", tmp_path) as spot,
            open_spot("memory", tmp_path, "o") as other,
        ):

            @other.mark
            async def elsewhere(x: int) -> int:
                return x

            with pytest.raises(bs.ConfigurationError, match=r"@spot\.mark"):
                await spot.map(plain, [1])
            with pytest.raises(bs.ConfigurationError, match="different Spot"):
                await spot.map(elsewhere, [1])

    @pytest.mark.parametrize(
        ("option", "value"),
        [("concurrency", 0), ("retries", -1), ("max_errors", 0), ("retry_on", 3), ("progress", 1)],
    )
    async def test_bad_options(self, tmp_path: Path, option: str, value: Any) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            with pytest.raises(bs.ConfigurationError, match=option):
                await spot.map(f, [1], **{option: value})


# -- failures --------------------------------------------------------------------------------


class TestFailures:
    async def test_errors_do_not_stop_the_batch(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def picky(x: int) -> int:
                if x % 4 == 0:
                    raise ValueError(f"no {x}")
                return x

            report = await spot.map(picky, range(10), progress=False)
        assert [type(r) is bs.Failure for r in report.results] == [x % 4 == 0 for x in range(10)]
        assert report.failed == 3
        failure = report.failures[1]
        assert (failure.index, failure.item, failure.attempts) == (4, 4, 1)  # not transient
        assert str(failure.exception) == "no 4"
        with pytest.raises(bs.BatchError, match="3 of 10 items failed") as info:
            report.raise_for_failures()
        assert isinstance(info.value, ExceptionGroup)
        assert len(info.value.exceptions) == 3
        assert info.value.failures == report.failures

    async def test_max_errors_stops_scheduling(self, tmp_path: Path) -> None:
        pulled: list[int] = []

        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def broken(x: int) -> int:
                raise ValueError(x)

            report = await spot.map(
                broken, million(pulled), max_errors=5, concurrency=3, retries=0, progress=False
            )
        assert report.stopped_early
        assert 5 <= report.failed <= 5 + 3  # the ones in flight finish
        assert len(report.results) == report.failed
        assert len(pulled) <= report.failed + 3 + 32  # running + one chunk read ahead
        with pytest.raises(bs.BatchError, match="stopped early"):
            report.raise_for_failures()

    async def test_failures_are_never_cached(self, tmp_path: Path) -> None:
        _calls, bump = counting()
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def flaky(x: int) -> int:
                if bump(x) == 1:
                    raise ValueError("first time")
                return x

            first = await spot.map(flaky, [1, 2], progress=False)
            assert first.failed == 2
            second = await spot.map(flaky, [1, 2], progress=False)
        assert second.results == [1, 2]
        assert second.executed == 2


# -- retries ---------------------------------------------------------------------------------


class TestRetries:
    @pytest.mark.parametrize(
        ("exc", "expected"),
        [
            (HTTPError(429), True),
            (HTTPError(503), True),
            (HTTPError(408), True),
            (HTTPError(409), True),
            (HTTPError(400), False),
            (HTTPError(404), False),
            (SimpleNamespace(status=500), True),
            (TimeoutError(), True),
            (ConnectionResetError(), True),
            (ValueError("x"), False),
        ],
    )
    def test_default_retry_on(self, exc: Any, expected: bool) -> None:
        if not isinstance(exc, BaseException):  # only .status, on a plain exception
            error = RuntimeError("x")
            error.status = exc.status  # type: ignore[attr-defined]
            exc = error
        assert _retry.default_retry_on(exc) is expected

    def test_client_errors_by_class_name(self) -> None:
        class APIConnectionError(Exception):
            pass

        class ReadTimeout(Exception):
            pass

        assert _retry.default_retry_on(APIConnectionError())
        assert _retry.default_retry_on(ReadTimeout())

    def test_retry_after_forms(self) -> None:
        now = 1_700_000_000.0
        date = email.utils.formatdate(now + 7, usegmt=True)
        assert _retry.retry_after(HTTPError(429, {"retry-after": "3"})) == 3
        assert _retry.retry_after(HTTPError(429, {"retry-after-ms": "250"})) == 0.25
        assert _retry.retry_after(HTTPError(429, {"Retry-After": date}), lambda: now) == 7
        error = RuntimeError()
        error.retry_after = 1.5  # type: ignore[attr-defined]
        assert _retry.retry_after(error) == 1.5
        assert _retry.retry_after(HTTPError(429, {"retry-after": "soon"})) is None
        assert _retry.retry_after(ValueError()) is None

    def test_backoff_bounds(self) -> None:
        import random

        rng = random.Random(1)
        for attempt in range(1, 12):
            ceiling = min(_retry.BACKOFF_CAP, _retry.BACKOFF_BASE * 2 ** (attempt - 1))
            assert all(0 <= _retry.backoff_delay(attempt, rng) <= ceiling for _ in range(50))

    async def test_backoff_waits_on_the_clock(self, tmp_path: Path) -> None:
        clock = FakeClock()
        _calls, bump = counting()
        async with open_spot("memory", tmp_path, clock=clock) as spot:

            @spot.mark
            async def flaky(x: int) -> int:
                if bump(x) <= 3:
                    raise HTTPError(503)
                return x

            start = clock()
            report = await spot.map(flaky, [1], retries=3, progress=False)
        assert report.results == [1]
        assert report.retried == 3
        # Full jitter: at most 0.5 + 1 + 2 seconds of (fake) waiting.
        assert 0 <= clock() - start <= 3.5

    async def test_gives_up_after_retries(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path, clock=FakeClock()) as spot:

            @spot.mark
            async def down(x: int) -> int:
                raise HTTPError(500)

            report = await spot.map(down, [1], retries=2, progress=False)
        assert report.failures[0].attempts == 3
        assert report.retried == 2

    async def test_retry_after_is_honoured_and_pauses_the_limiter(self, tmp_path: Path) -> None:
        clock = FakeClock()
        limiter = bs.Limiter(rpm=6000, clock=clock)
        _calls, bump = counting()
        async with open_spot("memory", tmp_path, clock=clock, limiter=limiter) as spot:

            @spot.mark
            async def limited(x: int) -> int:
                if bump(x) == 1:
                    raise HTTPError(429, {"retry-after": "20"})
                return x

            paused: list[float] = []
            real_penalize = limiter.penalize

            def penalize(seconds: float) -> None:
                paused.append(seconds)
                real_penalize(seconds)

            limiter.penalize = penalize  # type: ignore[method-assign]
            start = clock()
            report = await spot.map(limited, [1], progress=False)
        assert report.results == [1]
        assert paused == [20.0]
        assert clock() - start == pytest.approx(20.0)

    async def test_stacked_limiter_is_penalized(self, tmp_path: Path) -> None:
        clock = FakeClock()
        async with open_spot("memory", tmp_path, clock=clock, rpm=6000) as spot:
            own = bs.Limiter(rpm=6000, clock=clock)
            _calls, bump = counting()

            @spot.mark
            @own
            async def limited(x: int) -> int:
                if bump(x) == 1:
                    raise HTTPError(429, {"retry-after-ms": "1500"})
                return x

            report = await spot.map(limited, [1], progress=False)
            assert report.results == [1]
            assert own.statistics().admitted == 2

    async def test_custom_retry_on(self, tmp_path: Path) -> None:
        _calls, bump = counting()
        async with open_spot("memory", tmp_path, clock=FakeClock()) as spot:

            @spot.mark
            async def odd(x: int) -> int:
                if bump(x) == 1:
                    raise KeyError(x)
                return x

            report = await spot.map(
                odd, [1], retry_on=lambda e: isinstance(e, KeyError), progress=False
            )
            assert report.results == [1]

            def broken(exc: BaseException) -> bool:
                raise RuntimeError("oops")

            report = await spot.map(odd, [2], retry_on=broken, progress=False)
            assert report.failed == 1


# -- usage and the limiter -------------------------------------------------------------------


class TestUsage:
    async def test_spent_and_saved(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark(usage=lambda r: r["tokens"])
            async def ask(x: int) -> dict[str, int]:
                return {"tokens": x}

            first = await spot.map(ask, [1, 2, 3], progress=False)
            second = await spot.map(ask, [1, 2, 3, 4], progress=False)
        assert (first.usage_spent, first.usage_saved) == (6, 0)
        assert (second.usage_spent, second.usage_saved) == (4, 6)

    async def test_mapping_usage(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark(usage=lambda r: {"input": r, "output": 2 * r})
            async def ask(x: int) -> int:
                return x

            report = await spot.map(ask, [1, 2], progress=False)
        assert report.usage_spent == {"input": 3.0, "output": 6.0}

    async def test_usage_settles_a_stacked_limiter(self, tmp_path: Path) -> None:
        clock = FakeClock()
        limiter = bs.Limiter(tpm=60_000, clock=clock)
        async with open_spot("memory", tmp_path, limiter=limiter) as spot:

            @spot.mark(usage=lambda r: r)
            @spot.limiter(cost=1_000)
            async def ask(x: int) -> int:
                return 10

            await ask(1)
            # Booked 1 000, settled to 10: the debt is what was used.
            assert limiter.statistics().tokens_debt == pytest.approx(10, abs=1e-3)

            @spot.mark(usage=lambda r: r)
            @spot.limiter(cost=1_000)
            def ask_sync(x: int) -> int:
                return 20

            clock.advance(60)  # the first call's 10 tokens are paid off
            await ask_sync.acall(1)  # type: ignore[attr-defined]
            assert limiter.statistics().tokens_debt == pytest.approx(20, abs=1e-3)

    async def test_a_broken_usage_function_does_not_fail_the_call(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark(usage=lambda r: r["missing"])
            async def ask(x: int) -> dict[str, int]:
                return {}

            report = await spot.map(ask, [1], progress=False)
        assert report.results == [{}]
        assert report.usage_spent == 0
        assert "usage= of" in caplog.text

    def test_spot_rpm_and_tpm(self) -> None:
        spot = bs.Spot("r", db="memory://", rpm=500, tpm=90_000)
        assert (spot.limiter.rpm, spot.limiter.tpm) == (500, 90_000)
        assert bs.Spot("r2", db="memory://", rpm=60).limiter.rpm == 60
        with pytest.raises(bs.ConfigurationError, match="not both"):
            bs.Spot("r3", db="memory://", rpm=1, limiter=bs.Limiter(rpm=1))

    def test_usage_must_be_callable(self) -> None:
        spot = bs.Spot("u", db="memory://")
        with pytest.raises(bs.ConfigurationError, match="usage"):
            spot.mark(usage=3)  # type: ignore[arg-type]


# -- progress ----------------------------------------------------------------------------------


class TestProgress:
    async def test_callback_snapshots(self, tmp_path: Path) -> None:
        snapshots: list[bs.MapProgress] = []
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            await f(0)
            await spot.map(f, range(4), progress=snapshots.append)
        last = snapshots[-1]
        assert (last.total, last.done, last.hits, last.executed, last.failed) == (4, 4, 1, 3, 0)
        assert last.eta == 0
        assert all(s.total == 4 for s in snapshots)
        assert [s.done for s in snapshots] == sorted(s.done for s in snapshots)

    async def test_unknown_total(self, tmp_path: Path) -> None:
        snapshots: list[bs.MapProgress] = []
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            await spot.map(f, (i for i in range(3)), progress=snapshots.append)
        assert snapshots[-1].total is None
        assert snapshots[-1].eta is None

    async def test_live_display_and_silence(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            await spot.map(f, range(3), progress=False)
            assert capsys.readouterr().err == ""
            await spot.map(f, range(3), progress=None)  # stderr is not a terminal here
            assert capsys.readouterr().err == ""
            await spot.map(f, range(3), progress=True)
            err = capsys.readouterr().err
        assert "3/3" in err
        assert "cached 3" in err


# -- interruption ----------------------------------------------------------------------------


class TestInterrupt:
    async def test_cancel_keeps_finished_results(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        _calls, bump = counting()
        release = anyio.Event()
        async with open_spot("sqlite", tmp_path, default_wait=False) as spot:

            @spot.mark
            async def slow(x: int) -> int:
                bump(x)
                if x >= 5:
                    await release.wait()  # never set: these are running when cancelled
                return x

            with anyio.move_on_after(0.5):
                await spot.map(slow, range(10), concurrency=10, progress=False)
        assert "interrupted" in caplog.text
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def slow(x: int) -> int:
                bump(x)
                return x

            report = await spot.map(slow, range(10), progress=False)
        assert report.hits == 5
        assert report.executed == 5
        assert report.results == list(range(10))


class TestRecordedFailures:
    async def test_recorded_then_cleared_by_a_later_success(self, tmp_path: Path) -> None:
        _calls, bump = counting()
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def flaky(prompt: str) -> str:
                if bump(prompt) == 1:
                    raise HTTPError(400)  # not transient: fails at once
                return prompt.upper()

            report = await spot.map(flaky, ["a", "b"], progress=False)
            assert report.failed == 2
            frame = await spot.failures(flaky)
            assert sorted(frame["args"]) == ['"a"', '"b"']
            assert set(frame["exc_type"]) == {"tests.test_batch.HTTPError"}
            assert set(frame["attempts"]) == {1}
            assert frame["message"].iloc[0] == "HTTP 400"

            history = await spot.history()
            assert len(history) == 0  # failures are never entries

            rerun = await spot.map(flaky, ["a", "b"], progress=False)
            assert rerun.results == ["A", "B"]
            assert len(await spot.failures()) == 0
        # A fresh Spot on the same file agrees.
        async with open_spot("sqlite", tmp_path) as spot:
            assert len(await spot.failures()) == 0


@pytest.mark.slow
class TestCtrlC:
    """A real SIGINT to a child process in the middle of spot.map."""

    def test_interrupt_then_resume(self, tmp_path: Path) -> None:
        import os
        import signal
        import subprocess
        import sys
        import time

        root = Path(__file__).resolve().parents[1]
        db = str(tmp_path / "map.db")
        command = [sys.executable, "-m", "tests.workers.map_worker", db, "200"]
        child = subprocess.Popen(
            command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        done = 0
        deadline = time.monotonic() + 60
        for line in child.stdout:
            if line.startswith("done "):
                done = int(line.split()[1])
                if done >= 20:
                    break
            assert time.monotonic() < deadline, "the child made no progress"
        os.kill(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=60)
        assert child.returncode != 0
        assert "KeyboardInterrupt" in err
        assert "interrupted" in err  # the one-line summary
        finished = max(
            [done] + [int(x.split()[1]) for x in out.splitlines() if x.startswith("done")]
        )

        rerun = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        lines = rerun.stdout.splitlines()
        report = next(x for x in lines if x.startswith("report"))
        hits = int(report.split("hits=")[1].split()[0])
        executed = int(report.split("executed=")[1])
        assert hits >= finished  # nothing a finished item returned was lost
        assert hits + executed == 200
        first_run = float(next(x for x in lines if x.startswith("first-run")).split()[1])
        # No stall on leftover leases (their ttl is 30 s): well under it, even loaded.
        assert first_run < 10
