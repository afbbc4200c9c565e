"""Streaming costs: first-item latency on a miss, and replay throughput of a hit.

By hand, never by the tests::

    python bench/bench_stream.py            # SQLite in a temporary directory
    python bench/bench_stream.py --quick

Targets (issue: streaming): first item on a miss within 100 us of the
undecorated generator's (p50); replay of a cached 1 000-item stream at
>= 200 000 items/s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import beautyspot_async as bs


async def produce(n: int, tag: str) -> AsyncIterator[str]:
    for i in range(n):
        yield f"{tag}-{i}"


async def first_item_latency(gen: AsyncIterator[str]) -> float:
    started = time.perf_counter()
    await gen.__anext__()
    elapsed = time.perf_counter() - started
    await gen.aclose()  # type: ignore[attr-defined]
    return elapsed


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spot = bs.Spot("stream_bench", db=str(Path(tmp) / "s.db"))

        @spot.mark
        async def marked(n: int, tag: str) -> AsyncIterator[str]:
            async for item in produce(n, tag):
                yield item

        async with spot:
            plain = [await first_item_latency(produce(3, f"p{i}")) for i in range(rounds)]
            missed = []
            for i in range(rounds):
                started = time.perf_counter()
                async for _ in marked(3, f"m{i}"):
                    missed.append(time.perf_counter() - started)
                    break
            await spot.flush()
            # a complete 1 000-item stream, then its replays
            [_ async for _ in marked(1000, "big")]
            await spot.flush()
            rates = []
            for _ in range(max(5, rounds // 20)):
                started = time.perf_counter()
                count = 0
                async for _item in marked(1000, "big"):
                    count += 1
                rates.append(count / (time.perf_counter() - started))
    p50_plain = statistics.median(plain) * 1e6
    p50_miss = statistics.median(missed) * 1e6
    replay = statistics.median(rates)
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| first item, undecorated generator (p50) | {p50_plain:.1f} us | - |")
    print(
        f"| first item, marked, miss on SQLite (p50) | {p50_miss:.1f} us "
        f"(+{p50_miss - p50_plain:.1f} us) | within +100 us |"
    )
    print(f"| replay of a cached 1 000-item stream | {replay:,.0f} items/s | >= 200,000/s |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="50 rounds instead of 500")
    args = parser.parse_args()
    asyncio.run(main(50 if args.quick else 500))
