"""A child process running ``spot.map`` over slow items, for the Ctrl+C tests.

``python -m tests.workers.map_worker DB N`` maps ``slow`` over range(N) with
concurrency 4 and prints ``done K`` after each finished item, ``first-run
S`` when the first body starts (S seconds after the process began), and
finally ``report hits=H executed=E``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import beautyspot_async as bs

STARTED = time.monotonic()


async def main(db: str, n: int) -> None:
    spot = bs.Spot("mapworker", db=db)
    first: list[float] = []

    @spot.mark(name="slow")
    async def slow(x: int) -> int:
        if not first:
            first.append(time.monotonic() - STARTED)
            print(f"first-run {first[0]:.3f}", flush=True)
        await asyncio.sleep(0.05)
        return x * 2

    def progress(p: bs.MapProgress) -> None:
        print(f"done {p.done}", flush=True)

    async with spot:
        report = await spot.map(slow, range(n), concurrency=4, progress=progress)
    print(f"report hits={report.hits} executed={report.executed}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
