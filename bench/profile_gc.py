"""Where the time of a large ``asyncio.gather`` goes: garbage collection and allocations.

Run by hand from the repository root::

    python bench/profile_gc.py                  # 10 000 calls, both workloads
    python bench/profile_gc.py --n 10000 --tracemalloc --cprofile

Two workloads, the ones of ``bench_peers.py``: ``asyncio.gather`` over N
write-behind misses (``default_wait=False``), then, in a fresh subprocess,
over N hits whose data is only in the SQLite file. For each it reports the
wall time, the time spent inside the cyclic garbage collector (measured with
``gc.callbacks``, per generation, with the collections' counts), and, with
``--tracemalloc``, the bytes still allocated per pending call at the peak,
by file; with ``--cprofile`` the top functions by own time. ``--gc`` runs the
same with the collector in another state (``off``, ``freeze`` or a
``threshold`` of 10x the default first generation) to measure the lever.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import keys, make_task, open_spot


class GcTimer:
    """Wall time spent in collections, per generation, via ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self.collected = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._start
            self.count[generation] += 1
            self.collected[generation] += info["collected"]

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def apply_gc(mode: str) -> None:
    if mode == "off":
        gc.disable()
    elif mode == "freeze":
        gc.collect()
        gc.freeze()
    elif mode == "threshold":
        first, second, third = gc.get_threshold()
        gc.set_threshold(first * 10, second, third)


def by_file(snapshot: tracemalloc.Snapshot, n: int) -> list[tuple[str, float]]:
    stats = snapshot.statistics("filename")
    out = []
    for stat in stats[:12]:
        name = stat.traceback[0].filename
        out.append(("/".join(Path(name).parts[-2:]), stat.size / n))
    return out


async def measure(fn: Any, args: list[str], opts: argparse.Namespace, flush: Any) -> dict[str, Any]:
    n = len(args)
    out: dict[str, Any] = {}
    profiler = cProfile.Profile() if opts.cprofile else None
    gc.collect()
    if opts.tracemalloc:
        tracemalloc.start(1)
    apply_gc(opts.gc)
    before = [dict(s) for s in gc.get_stats()]
    with GcTimer() as timer:
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        if opts.tracemalloc:
            # Peak of the pending calls: snapshot while all are parked.
            tasks = [asyncio.ensure_future(fn(x)) for x in args]
            await asyncio.sleep(0)
            snap = tracemalloc.take_snapshot()
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*(fn(x) for x in args))
        out["gather_s"] = time.perf_counter() - start
        if flush is not None:
            await flush()
        out["flush_s"] = time.perf_counter() - start - out["gather_s"]
        if profiler is not None:
            profiler.disable()
    after = gc.get_stats()
    gc.enable()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    out["gc_s"] = timer.seconds
    out["gc_count"] = timer.count
    out["gc_collected"] = timer.collected
    out["stats_delta"] = [
        a["collections"] - b["collections"] for a, b in zip(after, before, strict=False)
    ]
    if opts.tracemalloc:
        _current, peak = tracemalloc.get_traced_memory()
        out["traced_peak_per_call"] = peak / n
        out["by_file"] = by_file(snap, n)
        tracemalloc.stop()
    if profiler is not None:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(15)
        out["cprofile"] = buf.getvalue()
    return out


async def misses(workdir: Path, opts: argparse.Namespace) -> dict[str, Any]:
    spot = open_spot(workdir, default_wait=False)
    f = make_task(spot)
    async with spot:
        await asyncio.gather(*(f(x) for x in keys("w", 20)))
        await spot.flush()
        return await measure(f, keys("c", opts.n), opts, spot.flush)


async def hits(workdir: Path, opts: argparse.Namespace) -> dict[str, Any]:
    spot = open_spot(workdir, default_wait=True)
    f = make_task(spot)
    async with spot:
        await asyncio.gather(*(f(x) for x in keys("w", 20)))
        return await measure(f, keys("c", opts.n), opts, None)


def show(name: str, r: dict[str, Any], n: int) -> None:
    total = r["gather_s"]
    gc_total = sum(r["gc_s"])
    print(
        f"## {name}: {n / total:,.0f}/s gather ({total * 1e3:.0f} ms), "
        f"flush {r['flush_s'] * 1e3:.0f} ms"
    )
    print(
        f"   gc: {gc_total * 1e3:.0f} ms "
        f"({gc_total / (total + r['flush_s']):.0%} of gather+flush); "
        f"by generation ms {[round(s * 1e3, 1) for s in r['gc_s']]}, "
        f"count {r['gc_count']}, collected {r['gc_collected']}"
    )
    if "traced_peak_per_call" in r:
        print(
            f"   tracemalloc peak per call: {r['traced_peak_per_call']:,.0f} B; "
            "live at park, by file (B/call):"
        )
        for fname, size in r["by_file"]:
            print(f"     {size:8,.0f}  {fname}")
    if "cprofile" in r:
        print(r["cprofile"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument(
        "--gc", choices=["default", "off", "freeze", "threshold"], default="default"
    )
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--worker", metavar="DIR")
    opts = parser.parse_args()
    if opts.worker:
        print(json.dumps(asyncio.run(hits(Path(opts.worker), opts))))
        return
    with tempfile.TemporaryDirectory(prefix="bs-profile-gc-") as tmp:
        workdir = Path(tmp)
        m = asyncio.run(misses(workdir, opts))
        cmd = [sys.executable, __file__, "--worker", tmp, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        h = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"gc mode: {opts.gc}, n={opts.n}")
    show("gather over write-behind misses", m, opts.n)
    show("gather over fresh-process hits", h, opts.n)


if __name__ == "__main__":
    main()
