"""Misses on the caller's thread: latency, the longest on-loop transaction, GC in bursts.

Run by hand (never by the tests); prints one Markdown table:

* sequential durable and write-behind miss p50/p99 (2 000 misses each);
* ``asyncio.gather`` over N misses, durable and write-behind: throughput
  (with and without the final ``flush()``), how many transactions ran on the
  caller's thread, their p50 and the longest one, and the WAL's size after;
* the same write-behind ``gather`` with ``BEAUTYSPOT_GC_BURST=0`` in a
  subprocess, with the time spent in garbage collection, to show what the
  burst mode buys.

``--n`` sets N (default 10 000); ``--quick`` uses 2 000.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_core import payload


def _instrument() -> list[float]:
    """Record the duration of every transaction committed (or declined) on a caller's thread."""
    from beautyspot_async.db._sqlite_inline import InlineWriter

    durations: list[float] = []
    original = InlineWriter._transaction

    def timed(self: InlineWriter, work: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, work)
        finally:
            durations.append(time.perf_counter() - started)

    InlineWriter._transaction = timed  # type: ignore[method-assign]
    return durations


def _gc_clock() -> list[float]:
    spent: list[float] = []
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent.append(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
    return spent


def _wal_mib(db: Path) -> float:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size / 2**20 if wal.exists() else 0.0


async def _run(n: int, workdir: Path) -> dict[str, Any]:
    import beautyspot_async as bs

    durations = _instrument()
    out: dict[str, Any] = {}
    for wait in (True, False):
        mode = "durable" if wait else "write-behind"
        db = workdir / f"{mode}.db"
        async with bs.Spot("bench_inline", db=str(db), storage=str(workdir / "blobs")) as spot:

            @spot.mark(wait=wait)
            async def f(x: str) -> dict[str, Any]:
                return payload(x)

            await f("warm-up")
            await spot.flush()
            samples = []
            for i in range(2000):
                started = time.perf_counter()
                await f(f"seq{i}")
                samples.append(time.perf_counter() - started)
            samples.sort()
            out[f"{mode} miss p50"] = statistics.median(samples) * 1e6
            out[f"{mode} miss p99"] = samples[int(len(samples) * 0.99)] * 1e6
            await spot.flush()
            durations.clear()
            spent = _gc_clock()
            started = time.perf_counter()
            await asyncio.gather(*(f(f"g{i}") for i in range(n)))
            gathered = time.perf_counter() - started
            await spot.flush()
            flushed = time.perf_counter() - started
            gc.callbacks.pop()
            ordered = sorted(durations) or [0.0]
            out[f"{mode} gather"] = {
                "rate": n / gathered,
                "rate_flushed": n / flushed,
                "transactions": len(durations),
                "p50_ms": ordered[len(ordered) // 2] * 1e3,
                "max_ms": ordered[-1] * 1e3,
                "wal_mib": _wal_mib(db),
                "gc_ms": sum(spent) * 1e3,
            }
    return out


def _child(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(_run(n, Path(tmp)))))


def _measure(n: int, burst: bool) -> dict[str, Any]:
    env = dict(os.environ, BEAUTYSPOT_GC_BURST="1" if burst else "0")
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(n)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="misses per gather")
    parser.add_argument("--quick", action="store_true", help="2 000 misses per gather")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child)
        return
    n = 2000 if args.quick else args.n
    on, off = _measure(n, burst=True), _measure(n, burst=False)
    print(f"Misses on the caller's thread: SQLite, f(x: str) -> ~2 KB dict, gathers of {n:,}\n")
    print("| measure | value |")
    print("|---|---:|")
    for mode in ("durable", "write-behind"):
        print(
            f"| {mode} miss p50 / p99 | {on[f'{mode} miss p50']:.0f} / "
            f"{on[f'{mode} miss p99']:.0f} us |"
        )
    for mode in ("durable", "write-behind"):
        g = on[f"{mode} gather"]
        print(
            f"| gather over {n:,} {mode} misses | {g['rate'] / 1e3:.1f}k/s "
            f"({g['rate_flushed'] / 1e3:.1f}k/s with flush) |"
        )
        print(
            f"| ... transactions on the caller's thread: count, p50, max | "
            f"{g['transactions']}, {g['p50_ms']:.2f} ms, {g['max_ms']:.2f} ms |"
        )
        print(f"| ... WAL after, GC time | {g['wal_mib']:.1f} MiB, {g['gc_ms']:.0f} ms |")
    g_off = off["write-behind gather"]
    print(
        f"| write-behind gather with BEAUTYSPOT_GC_BURST=0 | {g_off['rate'] / 1e3:.1f}k/s, "
        f"GC {g_off['gc_ms']:.0f} ms (burst on: {on['write-behind gather']['gc_ms']:.0f} ms) |"
    )


if __name__ == "__main__":
    main()
