"""What ``spot.map`` costs on top of ``asyncio.gather`` (the batch runner's targets).

Run by hand from the repository root::

    python bench/bench_map.py            # 100 000 items
    python bench/bench_map.py --quick    # 10 000 items
    python bench/bench_map.py --n 50000 --concurrency 64

Workload: ``async def f(x: str) -> dict`` returning a small dict, marked on a
Spot with the default SQLite backend in a temporary directory. Measured:

- hits: N keys written beforehand, then read back in a fresh process (the
  data only on disk) once by ``asyncio.gather(*(f(x) for x in keys))`` and
  once by ``spot.map(f, keys)``, each in its own process so each has its own
  peak memory. Throughput ratio map / gather (target >= 0.8x) and the growth
  of the peak RSS during the phase: gather holds N tasks at once, map only
  ``concurrency`` of them plus the results, so its growth should stay flat.
- the runner's overhead per executed item: misses with ``default_wait=False``
  (write-behind) in chunks of 500 new keys, each chunk run by gather and by
  map (alternating which goes first), ``flush()`` between them, unmeasured.
  Overhead = (map time - gather time) / chunk size; p50 over the chunks
  (target <= 20 us).

Prints one Markdown table. Until the runner exists, the ``spot.map`` cells
read "not available" and the gather cells still run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import fmt_rate, fmt_us, keys, percentile
from profile_gc import GcTimer, apply_gc

#: Every memoized body bumps this, so a hit phase can prove it ran none.
BODY_CALLS = [0]
TASK_NAME = "bench.map.f"
WARMUP = 20
#: Items per overhead sample: large enough that timer resolution and the
#: per-call fixed costs of gather and map wash out, small enough for many samples.
CHUNK = 500
#: Throughput of map over hits relative to gather, and overhead per executed item.
TARGET_RATIO = 0.8
TARGET_OVERHEAD = 20e-6


def open_spot(workdir: Path, *, default_wait: bool) -> Any:
    import beautyspot_async as bs

    return bs.Spot(
        "bench_map",
        db=str(workdir / "map.db"),
        storage=str(workdir / "blobs"),
        default_wait=default_wait,
    )


def make_task(spot: Any) -> Callable[[str], Awaitable[dict[str, Any]]]:
    async def f(x: str) -> dict[str, Any]:
        BODY_CALLS[0] += 1
        return {"input": x, "length": len(x), "score": 0.5}

    marked: Callable[[str], Awaitable[dict[str, Any]]] = spot.mark(name=TASK_NAME)(f)
    return marked


def has_map(spot: Any) -> bool:
    return callable(getattr(spot, "map", None))


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Start a new peak-RSS measurement; the resident set size now.

    On Linux, writing 5 to ``clear_refs`` resets the peak (``VmHWM``) to the
    current size, so the peak read afterwards belongs to the phase alone and
    not to, say, the imports. Elsewhere the lifetime peak is all there is.
    """
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass
    now = _status_kb("VmRSS")
    return now if now is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The peak resident set size since the last reset (Linux) or ever."""
    peak = _status_kb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


async def fill(workdir: Path, n: int) -> None:
    """Write the hit phase's keys (and the warm-up keys), write-behind, in chunks."""
    spot = open_spot(workdir, default_wait=False)
    f = make_task(spot)
    async with spot:
        args = keys("w", WARMUP) + keys("h", n)
        for start in range(0, len(args), 10_000):
            await asyncio.gather(*(f(x) for x in args[start : start + 10_000]))
            await spot.flush()


async def hits_worker(
    workdir: Path, n: int, mode: str, concurrency: int, gc_mode: str = "default"
) -> dict[str, Any]:
    """One hit phase in this (fresh) process: throughput and peak RSS growth."""
    spot = open_spot(workdir, default_wait=True)
    f = make_task(spot)
    async with spot:
        if mode == "map" and not has_map(spot):
            return {"error": "not available (no spot.map yet)"}
        # Opens the connection and warms code paths on keys not measured below.
        await asyncio.gather(*(f(x) for x in keys("w", WARMUP)))
        args = keys("h", n)
        gc.collect()
        apply_gc(gc_mode)
        base = reset_peak_rss()
        with GcTimer() as collections:
            start = time.perf_counter()
            if mode == "gather":
                results = await asyncio.gather(*(f(x) for x in args))
                hits = n - BODY_CALLS[0]
            else:
                report = await spot.map(f, args, concurrency=concurrency)
                results = report.results
                hits = report.hits
            elapsed = time.perf_counter() - start
        growth = peak_rss_bytes() - base
    assert len(results) == n
    return {
        "seconds": elapsed,
        "growth": growth,
        "hits": hits,
        "body_calls": BODY_CALLS[0],
        "gc_seconds": collections.seconds,
        "gc_count": collections.count,
    }


def run_worker(
    workdir: Path, n: int, mode: str, concurrency: int, gc_mode: str = "default"
) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            mode,
            str(workdir),
            "--n",
            str(n),
            "--concurrency",
            str(concurrency),
            "--gc",
            gc_mode,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": f"worker failed: {proc.stderr.strip().splitlines()[-1:]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def overhead(workdir: Path, n: int, concurrency: int) -> dict[str, Any]:
    """Per-item time of write-behind misses under gather and map, chunk by chunk."""
    spot = open_spot(workdir, default_wait=False)
    f = make_task(spot)
    out: dict[str, Any] = {"gather": [], "map": [], "overhead": [], "map_error": None}
    async with spot:
        mapping = has_map(spot)
        if not mapping:
            out["map_error"] = "not available (no spot.map yet)"

        async def by_gather(args: list[str]) -> float:
            start = time.perf_counter()
            await asyncio.gather(*(f(x) for x in args))
            return time.perf_counter() - start

        async def by_map(args: list[str]) -> float:
            start = time.perf_counter()
            report = await spot.map(f, args, concurrency=concurrency)
            elapsed = time.perf_counter() - start
            if report.executed != len(args):
                raise RuntimeError(f"map executed {report.executed} of {len(args)} misses")
            return elapsed

        await by_gather(keys("wg", WARMUP))
        if mapping:
            await by_map(keys("wm", WARMUP))
        await spot.flush()
        for i in range(max(1, n // CHUNK)):
            g_args, m_args = keys(f"g{i}-", CHUNK), keys(f"m{i}-", CHUNK)
            # Alternating the order spreads any drift (a growing database, a
            # write-behind backlog) evenly over both.
            order = ("gather", "map") if i % 2 == 0 else ("map", "gather")
            times: dict[str, float] = {}
            for mode in order:
                if mode == "map" and not mapping:
                    continue
                times[mode] = await (by_gather(g_args) if mode == "gather" else by_map(m_args))
                await spot.flush()
            out["gather"].append(times["gather"] / CHUNK)
            if mapping:
                out["map"].append(times["map"] / CHUNK)
                out["overhead"].append((times["map"] - times["gather"]) / CHUNK)
    return out


def _median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput (an error in any run is reported instead)."""
    for result in results:
        if "error" in result:
            return result
    ordered = sorted(results, key=lambda result: result["seconds"])
    return ordered[len(ordered) // 2]


def _gc_cell(result: dict[str, Any]) -> str:
    if "error" in result or "gc_seconds" not in result:
        return str(result.get("error", "-"))
    parts = "/".join(f"{s * 1e3:.0f}" for s in result["gc_seconds"])
    counts = "/".join(str(c) for c in result["gc_count"])
    return f"{sum(result['gc_seconds']) * 1e3:,.0f} ms ({parts} ms; {counts} runs)"


def fmt_mb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:,.1f} MB"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def render(
    n: int,
    concurrency: int,
    gather: dict[str, Any],
    mapped: dict[str, Any],
    over: dict[str, Any],
) -> str:
    def rate(result: dict[str, Any]) -> float | None:
        return None if "error" in result else n / result["seconds"]

    def cell(result: dict[str, Any], text: str) -> str:
        return str(result.get("error", text))

    g_rate, m_rate = rate(gather), rate(mapped)
    ratio = None if g_rate is None or m_rate is None else m_rate / g_rate
    g_item = percentile(over["gather"], 50)
    m_item = percentile(over["map"], 50) if over["map"] else None
    extra = percentile(over["overhead"], 50) if over["overhead"] else None
    extra99 = percentile(over["overhead"], 99) if over["overhead"] else None
    map_missing = over["map_error"] or "-"
    lines = [
        f"spot.map against asyncio.gather: SQLite, f(x: str) -> small dict, {n:,} items, "
        f"map concurrency {concurrency}",
        "",
        "| measurement | asyncio.gather | spot.map | map vs gather |",
        "|---|---:|---:|---:|",
        f"| {n:,} hits, fresh process: throughput | {cell(gather, fmt_rate(g_rate))} "
        f"| {cell(mapped, fmt_rate(m_rate))} "
        f"| {'-' if ratio is None else f'{ratio:.2f}x'} (target >= {TARGET_RATIO}x) |",
        f"| {n:,} hits: peak RSS growth | {cell(gather, fmt_mb(gather.get('growth')))} "
        f"| {cell(mapped, fmt_mb(mapped.get('growth')))} | - |",
        f"| {n:,} hits: time in the cyclic GC (gen 0/1/2) | {_gc_cell(gather)} "
        f"| {_gc_cell(mapped)} | - |",
        f"| write-behind miss, per item (p50 of chunks of {CHUNK}) | {fmt_us(g_item)} "
        f"| {fmt_us(m_item) if m_item is not None else map_missing} "
        f"| {'-' if extra is None else f'+{fmt_us(extra)} p50, +{fmt_us(extra99)} p99'} "
        f"(target <= {TARGET_OVERHEAD * 1e6:.0f} us) |",
        "",
    ]
    for name, result in (("gather", gather), ("map", mapped)):
        if "error" not in result and (result["body_calls"] or result["hits"] != n):
            lines.append(
                f"{name}: NOT ALL HITS ({result['hits']:,} hits, "
                f"{result['body_calls']:,} bodies run)."
            )
    if ratio is not None:
        lines.append(
            f"Hit throughput map / gather >= {TARGET_RATIO}x: {verdict(ratio >= TARGET_RATIO)}."
        )
    if extra is not None:
        lines.append(
            f"Runner overhead p50 <= {TARGET_OVERHEAD * 1e6:.0f} us per executed item: "
            f"{verdict(extra <= TARGET_OVERHEAD)}."
        )
    if "error" not in gather and "error" not in mapped:
        flat = mapped["growth"] <= gather["growth"]
        lines.append(
            f"Peak memory growth map <= gather: {verdict(flat)} "
            f"({mapped['growth'] / n:,.0f} vs {gather['growth'] / n:,.0f} bytes per item)."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10 000 items")
    parser.add_argument("--n", type=int, default=None, help="items (default 100 000)")
    parser.add_argument("--concurrency", type=int, default=32, help="spot.map's (default 32)")
    parser.add_argument(
        "--gc",
        choices=["default", "off", "freeze", "threshold"],
        default="default",
        help="the collector during the hit phases (profile_gc.apply_gc): measures the GC lever",
    )
    parser.add_argument("--runs", type=int, default=1, help="hit-phase runs; medians (default 1)")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else (10_000 if args.quick else 100_000)

    if args.worker:
        mode, workdir = args.worker
        result = asyncio.run(hits_worker(Path(workdir), n, mode, args.concurrency, args.gc))
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="bs-bench-map-") as tmp:
        workdir = Path(tmp)
        asyncio.run(fill(workdir, n))
        gathers, maps = [], []
        for run in range(args.runs):
            order = ("gather", "map") if run % 2 == 0 else ("map", "gather")
            for mode in order:
                result = run_worker(workdir, n, mode, args.concurrency, args.gc)
                (gathers if mode == "gather" else maps).append(result)
        gather, mapped = _median_run(gathers), _median_run(maps)
        over = asyncio.run(overhead(workdir, n, args.concurrency))
    print(render(n, args.concurrency, gather, mapped, over))


if __name__ == "__main__":
    main()
