"""Rate limiter accuracy: beautyspot-async against aiolimiter, pyrate-limiter, throttled-py.

For each limiter and each rate (10/s and 100/s), 50 coroutines call
``acquire`` in a loop for a fixed duration on one asyncio loop. Reported:

* grants       admissions during the run
* max 1 s      the most admissions in any sliding 1-second window; a correct
               limiter with no burst allows ``rate + 1``
* rate error   long-run rate against the configured rate: grants over the
               run's duration, relative to the limit
* CPU          process CPU seconds per 1000 grants
* fairness     one cost-``rate`` call queued right behind a warm-up call,
               then a stream of cost-1 calls arriving every 1/(2*rate) s:
               when the large call is granted and how many small calls
               overtook it (a fair limiter: none; GCRA books a cost after
               admitting it, so it grants the large call after the warm-up
               call's slot, a sliding window only after a second)

Installs nothing: ``pip install -r bench/requirements.txt`` first. Prints
one Markdown table. ``--duration`` shortens the hammering phase (default 6 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Acquire = Callable[[int], Awaitable[None]]
Factory = Callable[[int], Acquire]  # rate per second -> acquire(cost)

WORKERS = 50
FAIRNESS_TIMEOUT = 5.0


def beautyspot_factory(rate: int, burst: int = 0) -> Acquire:
    from beautyspot_async.limiter import Limiter

    # tpm counts the cost; each acquire also counts a request, unused here.
    limiter = Limiter(tpm=rate * 60, burst=burst)

    async def acquire(cost: int) -> None:
        await limiter.acquire(cost)

    return acquire


def aiolimiter_factory(rate: int) -> Acquire:
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(max_rate=rate, time_period=1.0)

    async def acquire(cost: int) -> None:
        await limiter.acquire(cost)

    return acquire


def pyrate_factory(rate: int) -> Acquire:
    from pyrate_limiter import BucketAsyncWrapper, Duration, InMemoryBucket, Limiter, Rate

    limiter = Limiter(BucketAsyncWrapper(InMemoryBucket([Rate(rate, Duration.SECOND)])))

    async def acquire(cost: int) -> None:
        ok = await limiter.try_acquire_async("bench", weight=cost)
        if not ok:
            raise RuntimeError("pyrate-limiter refused a blocking acquire")

    return acquire


def throttled_factory(rate: int) -> Acquire:
    from throttled import RateLimiterType
    from throttled.asyncio import Throttled, per_sec

    limiter = Throttled(using=RateLimiterType.GCRA.value, quota=per_sec(rate), timeout=60)

    async def acquire(cost: int) -> None:
        result = await limiter.limit("bench", cost=cost, timeout=60)
        if result.limited:
            raise RuntimeError("throttled-py refused a waiting acquire")

    return acquire


PEERS: list[tuple[str, Factory]] = [
    ("beautyspot-async", beautyspot_factory),
    # burst=1 lets the limiter absorb event-loop timer lateness (bound: rate*W + 2)
    ("beautyspot-async burst=1", lambda rate: beautyspot_factory(rate, burst=1)),
    ("aiolimiter 1.3", aiolimiter_factory),
    ("pyrate-limiter 4", pyrate_factory),
    ("throttled-py GCRA", throttled_factory),
]


@dataclass
class Row:
    name: str
    rate: int
    grants: int = 0
    max_window: int = 0
    rate_error: float = float("nan")
    cpu_per_1000: float = float("nan")
    large_after: float = float("nan")
    overtaken: int = -1
    error: str = ""


def max_in_window(stamps: list[float], width: float) -> int:
    best = 0
    j = 0
    for i, start in enumerate(stamps):
        while j < len(stamps) and stamps[j] < start + width:
            j += 1
        best = max(best, j - i)
    return best


async def hammer(acquire: Acquire, duration: float) -> list[float]:
    stamps: list[float] = []
    deadline = time.monotonic() + duration

    async def worker() -> None:
        while time.monotonic() < deadline:
            await acquire(1)
            now = time.monotonic()
            if now < deadline:
                stamps.append(now)

    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    await asyncio.sleep(duration)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        exc = task.exception() if not task.cancelled() else None
        if exc is not None:
            raise exc
    stamps.sort()
    return stamps


async def fairness(acquire: Acquire, rate: int) -> tuple[float, int]:
    """(seconds until the large call was granted, small calls granted before it)."""
    await acquire(1)
    start = time.monotonic()
    large_done: list[float] = []
    small_before = 0

    async def large() -> None:
        await acquire(rate)
        large_done.append(time.monotonic() - start)

    async def small() -> None:
        nonlocal small_before
        await acquire(1)
        if not large_done:
            small_before += 1

    tasks = [asyncio.create_task(large())]
    await asyncio.sleep(0)
    end = start + FAIRNESS_TIMEOUT
    while not large_done and time.monotonic() < end:
        tasks.append(asyncio.create_task(small()))
        await asyncio.sleep(1 / (2 * rate))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return (large_done[0] if large_done else float("inf")), small_before


async def measure(name: str, factory: Factory, rate: int, duration: float) -> Row:
    row = Row(name, rate)
    try:
        acquire = factory(rate)
        cpu0 = time.process_time()
        stamps = await hammer(acquire, duration)
        cpu = time.process_time() - cpu0
        row.grants = len(stamps)
        row.max_window = max_in_window(stamps, 1.0)
        row.rate_error = (len(stamps) / duration - rate) / rate
        row.cpu_per_1000 = cpu / max(len(stamps), 1) * 1000
        row.large_after, row.overtaken = await fairness(factory(rate), rate)
    except Exception as exc:  # a peer failing is a result, not a crash
        row.error = f"{type(exc).__name__}: {exc}"[:60]
    return row


def render(rows: list[Row], duration: float) -> str:
    lines = [
        f"| limiter | rate | grants in {duration:g} s | max in any 1 s (limit) | "
        "long-run rate error | CPU s / 1000 grants | large call granted after | "
        "small calls that overtook it |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | {r.rate}/s | error: {r.error} | | | | | |")
            continue
        large = "never (5 s)" if r.large_after == float("inf") else f"{r.large_after:.2f} s"
        lines.append(
            f"| {r.name} | {r.rate}/s | {r.grants} | {r.max_window} ({r.rate + 1}) | "
            f"{r.rate_error:+.2%} | {r.cpu_per_1000:.3f} | {large} | {r.overtaken} |"
        )
    return "\n".join(lines)


async def main(duration: float, only: set[str] | None) -> None:
    rows = []
    for rate in (10, 100):
        for name, factory in PEERS:
            if only and not any(o in name for o in only):
                continue
            print(f"running {name} at {rate}/s ...", file=sys.stderr)
            rows.append(await measure(name, factory, rate, duration))
    print(render(rows, duration))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--only", nargs="*", help="substrings of limiter names to run")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.duration, set(args.only) if args.only else None))
