# Over 500 lines: one script so every library runs the same phases in the same harness.
"""beautyspot-async against its peers on one workload (issues 5 and 15).

Run by hand from the repository root (peers from ``bench/requirements.txt``)::

    python bench/bench_peers.py           # 10 000 keys, median of 3 interleaved runs
    python bench/bench_peers.py --quick   # 1 000 keys, 1 run, under a minute

Workload: a memoized ``f(x: str) -> dict`` returning a ~2 KB dict (see
``bench_core.payload``). Every library runs in its own subprocess, in a fresh
temporary directory, interleaved (A run 1, B run 1, ..., A run 2, ...). One
"warm" subprocess per library and run measures, on N distinct keys each:

1. misses, one call at a time (durable before return where the library can);
2. hits on the same keys in the same process (warm: memory tiers answer);
3. misses in write-behind mode, where the library has one, then a flush;
4. ``asyncio.gather`` over N new misses (async libraries; write-behind mode
   where available), then a timed flush; beautyspot-async's rows are then
   counted through an independent ``sqlite3`` connection ("all durable");
5. beautyspot-async only: the memory per pending miss, ``tracemalloc``'s
   peak during a second gather over N new write-behind misses divided by N.

Then, for persistent libraries, a "fresh" subprocess measures hits on the
phase-1 keys one at a time (nothing in memory: the data is only on disk) and
``asyncio.gather`` over the phase-4 keys; it also counts how many function
bodies ran, which must be zero (every result written before was durable).
For beautyspot-async a second fresh subprocess marks a plain ``def`` and
calls it from sync code (no event loop running) on the same keys.

Also: ``spot.map`` against ``asyncio.gather`` over ``--map-n`` cached items
(100 000 by default, through ``bench_map.py``'s fresh-process workers), four
processes writing into one SQLite file at the same time, and with
``--servers`` the PostgreSQL/Redis rows of ``bench_servers.py`` if present.

Prints the issue-15 table (measure, beautyspot-async, peer, ratio, target,
met?) from the medians, then the per-library table it is computed from. A
library that is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    BODY_CALLS,
    TASK_NAME,
    WARMUP,
    count_rows,
    fmt_rate,
    fmt_us,
    keys,
    make_task,
    open_spot,
    payload,
    percentile,
    timed_gather,
    timed_sequential,
)
from profile_gc import GcTimer

#: Seconds one worker subprocess may take before it is reported as timed out.
WORKER_TIMEOUT = 900


# -- the libraries ---------------------------------------------------------------------


@dataclass
class Lib:
    """One library set up in a worker: its memoized calls and how to settle them.

    ``call`` is durable where the library can be (or its only mode);
    ``call_wb`` is its write-behind mode, ``None`` when it has none. Both are
    coroutine functions for async libraries and plain functions for sync ones.
    """

    is_async: bool
    persistent: bool
    call: Callable[[str], Any]
    call_wb: Callable[[str], Any] | None = None
    flush: Callable[[], Any] | None = None
    close: Callable[[], Any] | None = None
    #: Rows in the library's own database, read through an independent connection.
    rows: Callable[[], int] | None = None
    notes: list[str] = field(default_factory=list)


def _counted(x: str) -> dict[str, Any]:
    BODY_CALLS[0] += 1
    return payload(x)


async def _acounted(x: str) -> dict[str, Any]:
    BODY_CALLS[0] += 1
    return payload(x)


def joblib_body(x: str) -> dict[str, Any]:
    """joblib keys on a function's module, name and source, so it lives at module level."""
    BODY_CALLS[0] += 1
    return payload(x)


async def _setup_beautyspot_async(workdir: Path) -> Lib:
    durable = open_spot(workdir, default_wait=True)
    write_behind = open_spot(workdir, default_wait=False)
    await durable.open()
    await write_behind.open()

    async def close() -> None:
        await durable.aclose()
        await write_behind.aclose()

    def rows() -> int:
        with sqlite3.connect(workdir / "core.db") as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()
        return int(count)

    return Lib(
        is_async=True,
        persistent=True,
        call=make_task(durable),
        call_wb=make_task(write_behind),
        flush=write_behind.flush,
        close=close,
        rows=rows,
    )


async def _setup_diskcache(workdir: Path) -> Lib:
    from diskcache import Cache  # type: ignore[import-untyped]

    cache = Cache(str(workdir / "diskcache"))
    return Lib(
        is_async=False,
        persistent=True,
        call=cache.memoize(name="bench.f")(_counted),
        close=cache.close,
    )


async def _setup_aiocache(workdir: Path) -> Lib:
    from aiocache import Cache, cached  # type: ignore[import-untyped]

    return Lib(is_async=True, persistent=False, call=cached(cache=Cache.MEMORY)(_acounted))


async def _setup_cashews(workdir: Path) -> Lib:
    from cashews import Cache

    cache = Cache()
    cache.setup(f"disk://?directory={workdir / 'cashews'}")
    await cache.init()
    return Lib(
        is_async=True,
        persistent=True,
        call=cache(ttl="1d", key="bench.f:{x}")(_acounted),
        close=cache.close,
    )


async def _setup_joblib(workdir: Path) -> Lib:
    from joblib import Memory  # type: ignore[import-untyped]

    memory = Memory(location=str(workdir / "joblib"), verbose=0)
    return Lib(is_async=False, persistent=True, call=memory.cache(joblib_body))


def _original_spot(workdir: Path) -> Any:
    import beautyspot  # type: ignore[import-untyped]
    from beautyspot import LocalStorage, SQLiteTaskDB

    return beautyspot.Spot(
        "bench",
        db=SQLiteTaskDB(workdir / "original.db"),
        storage_backend=LocalStorage(workdir / "original_blobs"),
    )


async def _setup_original_async(workdir: Path) -> Lib:
    spot = _original_spot(workdir)

    async def f(x: str) -> dict[str, Any]:
        BODY_CALLS[0] += 1
        return payload(x)

    async def f_wb(x: str) -> dict[str, Any]:
        BODY_CALLS[0] += 1
        return payload(x)

    return Lib(
        is_async=True,
        persistent=True,
        call=spot.mark(f),
        call_wb=spot.mark(save_sync=False)(f_wb),
        flush=spot.flush,
        close=spot.shutdown,
    )


async def _setup_original_sync(workdir: Path) -> Lib:
    spot = _original_spot(workdir)

    def f(x: str) -> dict[str, Any]:
        BODY_CALLS[0] += 1
        return payload(x)

    def f_wb(x: str) -> dict[str, Any]:
        BODY_CALLS[0] += 1
        return payload(x)

    return Lib(
        is_async=False,
        persistent=True,
        call=spot.mark(f),
        call_wb=spot.mark(save_sync=False)(f_wb),
        flush=spot.flush,
        close=spot.shutdown,
    )


async def _setup_aiosqlite(workdir: Path) -> Lib:
    """Not a cache: one SELECT round trip per call, the floor an aiosqlite design pays."""
    import aiosqlite

    conn = await aiosqlite.connect(workdir / "raw.db")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)")
    await conn.commit()

    async def call(x: str) -> Any:
        async with conn.execute("SELECT v FROM kv WHERE k = ?", (x,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            BODY_CALLS[0] += 1
            await conn.execute("INSERT INTO kv VALUES (?, ?)", (x, json.dumps(payload(x)).encode()))
            await conn.commit()
            return payload(x)
        return json.loads(row[0])

    return Lib(is_async=True, persistent=True, call=call, close=conn.close)


@dataclass(frozen=True)
class Spec:
    """A library in the comparison: its row label, import name and setup."""

    label: str
    module: str
    setup: Callable[[Path], Awaitable[Lib]]


LIBRARIES: dict[str, Spec] = {
    "bs-async": Spec(
        "beautyspot-async (this project)", "beautyspot_async", _setup_beautyspot_async
    ),
    "diskcache": Spec("diskcache `memoize` (sync, SQLite)", "diskcache", _setup_diskcache),
    "aiocache": Spec("aiocache (memory only, not persistent)", "aiocache", _setup_aiocache),
    "cashews": Spec("cashews `disk://`", "cashews", _setup_cashews),
    "joblib": Spec("joblib `Memory` (sync)", "joblib", _setup_joblib),
    "bs-original-async": Spec(
        "beautyspot 2.7.7, async `@spot.mark`", "beautyspot", _setup_original_async
    ),
    "bs-original-sync": Spec(
        "beautyspot 2.7.7, sync `@spot.mark`", "beautyspot", _setup_original_sync
    ),
    "aiosqlite": Spec("one aiosqlite round trip, for reference", "aiosqlite", _setup_aiosqlite),
}


# -- the worker side -------------------------------------------------------------------


def _sequential_sync(fn: Callable[[str], Any], args: list[str]) -> list[float]:
    clock = time.perf_counter
    samples: list[float] = []
    for x in args:
        start = clock()
        fn(x)
        samples.append(clock() - start)
    return samples


async def _sequential(lib: Lib, fn: Callable[[str], Any], args: list[str]) -> list[float]:
    if lib.is_async:
        return await timed_sequential(fn, args)
    return _sequential_sync(fn, args)


async def _settle(fn: Callable[[], Any] | None) -> None:
    if fn is not None:
        result = fn()
        if asyncio.iscoroutine(result):
            await result


def _summary(samples: list[float]) -> dict[str, float]:
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99)}


async def warm_worker(name: str, workdir: Path, n: int) -> dict[str, Any]:
    """Phases 1-4 of the module docstring in this process."""
    lib = await LIBRARIES[name].setup(workdir)
    out: dict[str, Any] = {}
    try:
        await _sequential(lib, lib.call, keys("w", WARMUP))
        out["miss"] = _summary(await _sequential(lib, lib.call, keys("a", n)))
        out["hit_warm"] = _summary(await _sequential(lib, lib.call, keys("a", n)))
        if lib.call_wb is not None:
            await _sequential(lib, lib.call_wb, keys("x", WARMUP))
            await _settle(lib.flush)
            out["miss_wb"] = _summary(await _sequential(lib, lib.call_wb, keys("b", n)))
            await _settle(lib.flush)
        if lib.is_async:
            fn = lib.call_wb or lib.call
            rows_before = lib.rows() if lib.rows is not None else None
            with GcTimer() as collections:
                gather_s = await timed_gather(fn, keys("c", n))
            out["gather_misses_gc"] = sum(collections.seconds)
            start = time.perf_counter()
            await _settle(lib.flush)
            flush_s = time.perf_counter() - start
            out["gather_misses"] = n / gather_s
            out["gather_misses_flushed"] = n / (gather_s + flush_s)
            if lib.rows is not None and rows_before is not None:
                out["gather_misses_durable"] = lib.rows() - rows_before
            if name == "bs-async":
                pending, peak = await pending_bytes(fn, keys("m", n))
                out["pending_miss_bytes"] = pending
                out["gather_peak_bytes"] = peak
                await _settle(lib.flush)
            if not lib.persistent:
                out["gather_hits"] = n / await timed_gather(lib.call, keys("a", n))
    finally:
        await _settle(lib.close)
    return out


async def pending_bytes(
    fn: Callable[[str], Awaitable[Any]], args: list[str]
) -> tuple[float, float]:
    """Bytes per call of a gather over ``args``, by ``tracemalloc``: (pending, peak).

    *pending*: what is allocated, per call, once every call has started and
    is parked at its first suspension (one loop turn after the tasks were
    created; nothing has been executed or written yet):
    the task, its frames and whatever the library holds per pending call.
    *peak*: the highest point of the whole gather, per call, which also
    holds the N results the gather returns and the serialized copies of
    those still waiting to be written; it moves with how far the writer got,
    so it varies by +-10 % between runs. Both are Python-level allocations
    minus what was allocated before; RSS would add allocator slack and noise.
    """
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        tasks = [asyncio.ensure_future(fn(x)) for x in args]
        await asyncio.sleep(0)
        parked, _ = tracemalloc.get_traced_memory()
        await asyncio.gather(*tasks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (parked - base) / len(args), (peak - base) / len(args)


def sync_fresh_worker(workdir: Path, n: int) -> dict[str, Any]:
    """beautyspot-async hits from a marked plain ``def`` called from sync code.

    A fresh process, no event loop running: the call path a sync script takes.
    The keys are the ones the warm process wrote through the ``async def``
    (same name, same arguments, so the same keys).
    """
    spot = open_spot(workdir, default_wait=True)

    def f(x: str) -> dict[str, Any]:
        BODY_CALLS[0] += 1
        return payload(x)

    marked = spot.mark(name=TASK_NAME)(f)
    with spot:
        _sequential_sync(marked, keys("w", WARMUP))
        samples = _sequential_sync(marked, keys("a", n))
    return {"hit_fresh_sync": _summary(samples), "fresh_sync_body_calls": BODY_CALLS[0]}


async def fresh_worker(name: str, workdir: Path, n: int) -> dict[str, Any]:
    """Hits on keys written by another process: one at a time, then gathered."""
    lib = await LIBRARIES[name].setup(workdir)
    out: dict[str, Any] = {}
    try:
        await _sequential(lib, lib.call, keys("w", WARMUP))
        out["hit_fresh"] = _summary(await _sequential(lib, lib.call, keys("a", n)))
        if lib.is_async:
            fn = lib.call_wb or lib.call
            with GcTimer() as collections:
                out["gather_hits"] = n / await timed_gather(fn, keys("c", n))
            out["gather_hits_gc"] = sum(collections.seconds)
        out["fresh_body_calls"] = BODY_CALLS[0]
    finally:
        await _settle(lib.close)
    return out


async def writer_worker(workdir: Path, index: int, n: int) -> dict[str, Any]:
    """One of the four concurrent writers: ``n`` durable misses on its own keys."""
    spot = open_spot(workdir, default_wait=True)
    f = make_task(spot)
    latencies: list[float] = []
    failures: list[str] = []
    async with spot:
        await f(f"ready-{index}")
        print("ready", flush=True)
        # The parent releases all writers at once, so their writes overlap.
        await asyncio.to_thread(sys.stdin.readline)
        clock = time.perf_counter
        for x in keys(f"p{index}-", n):
            start = clock()
            try:
                await f(x)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            latencies.append(clock() - start)
    return {"latencies": latencies, "failures": failures}


# -- the parent side -------------------------------------------------------------------


def _worker_cmd(*args: str) -> list[str]:
    return [sys.executable, __file__, *args]


def _run_worker(mode: str, name: str, workdir: Path, n: int) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            _worker_cmd(mode, name, str(workdir), "--n", str(n)),
            capture_output=True,
            text=True,
            cwd=workdir,
            timeout=WORKER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        # The whole traceback outlives the temporary directory, for a diagnosis.
        fd, log = tempfile.mkstemp(prefix=f"bs-bench-{name}{mode}-", suffix=".log")
        with os.fdopen(fd, "w") as out:
            out.write(proc.stderr)
        return {"error": f"failed: {tail[:120]} (traceback: {log})"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_library(name: str, n: int) -> dict[str, Any]:
    """One run of one library: the warm worker, then (if persistent) the fresh one."""
    with tempfile.TemporaryDirectory(prefix=f"bs-bench-{name}-") as tmp:
        workdir = Path(tmp)
        result = _run_worker("--warm-worker", name, workdir, n)
        if "error" in result or name == "aiocache":
            return result
        fresh = _run_worker("--fresh-worker", name, workdir, n)
        if "error" in fresh:
            return fresh
        result.update(fresh)
        if name == "bs-async":
            sync_fresh = _run_worker("--sync-fresh-worker", name, workdir, n)
            if "error" in sync_fresh:
                result["sync_error"] = sync_fresh["error"]
            else:
                result.update(sync_fresh)
        return result


def _median_of(runs: list[dict[str, Any]], *path: str) -> float | None:
    values: list[float] = []
    for run in runs:
        node: Any = run
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, int | float):
            values.append(float(node))
    return statistics.median(values) if values else None


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric medians over the runs that succeeded; failed runs are listed in ``failed_runs``.

    Only when every run failed is the error reported instead of the numbers.
    """
    errors = [run["error"] for run in runs if "error" in run]
    runs = [run for run in runs if "error" not in run]
    if not runs:
        return {"error": errors[0] if errors else "no run"}
    metrics = {
        "hit_warm_p50": ("hit_warm", "p50"),
        "hit_warm_p99": ("hit_warm", "p99"),
        "hit_fresh_p50": ("hit_fresh", "p50"),
        "hit_fresh_p99": ("hit_fresh", "p99"),
        "miss_p50": ("miss", "p50"),
        "miss_wb_p50": ("miss_wb", "p50"),
        "gather_hits": ("gather_hits",),
        "gather_misses": ("gather_misses",),
        "gather_misses_flushed": ("gather_misses_flushed",),
        "hit_fresh_sync_p50": ("hit_fresh_sync", "p50"),
        "hit_fresh_sync_p99": ("hit_fresh_sync", "p99"),
        "pending_miss_bytes": ("pending_miss_bytes",),
        "gather_peak_bytes": ("gather_peak_bytes",),
        "gather_hits_gc": ("gather_hits_gc",),
        "gather_misses_gc": ("gather_misses_gc",),
    }
    out: dict[str, Any] = {key: _median_of(runs, *path) for key, path in metrics.items()}
    out["fresh_body_calls"] = max(
        int(run.get("fresh_body_calls", 0)) + int(run.get("fresh_sync_body_calls", 0))
        for run in runs
    )
    durable = [run.get("gather_misses_durable") for run in runs]
    # The fewest rows any run found durable: "all durable" must hold in every run.
    out["gather_misses_durable"] = None if None in durable else min(durable)
    out["sync_error"] = next((run["sync_error"] for run in runs if "sync_error" in run), None)
    out["failed_runs"] = errors
    out["runs"] = len(runs)
    return out


def run_four_writers(n_each: int) -> dict[str, Any]:
    """Four processes write ``n_each`` results each into one SQLite file, concurrently."""
    with tempfile.TemporaryDirectory(prefix="bs-bench-writers-") as tmp:
        workdir = Path(tmp)
        procs = [
            subprocess.Popen(
                _worker_cmd("--writer-worker", str(i), str(workdir), "--n", str(n_each)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=workdir,
            )
            for i in range(4)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line.strip() != "ready":
                    detail = proc.stderr.read()[-500:] if proc.stderr is not None else ""
                    raise RuntimeError(f"writer did not start: {detail}")
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outputs = [proc.communicate(timeout=WORKER_TIMEOUT) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        latencies: list[float] = []
        failures: list[str] = []
        for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
            if proc.returncode != 0:
                failures.append(f"writer exited {proc.returncode}: {stderr.strip()[-200:]}")
                continue
            result = json.loads(stdout.strip().splitlines()[-1])
            latencies += result["latencies"]
            failures += result["failures"]
        rows = asyncio.run(count_rows(workdir))
    return {
        "n_each": n_each,
        "failures": failures,
        "rows": rows,
        "rows_expected": 4 * (n_each + 1),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def run_map(n: int, runs: int, concurrency: int = 32) -> dict[str, Any]:
    """``spot.map`` against ``asyncio.gather`` over ``n`` cached items (bench_map's workers).

    One fill, then per run a fresh process for each (alternating which goes
    first); medians of the throughputs and of the peak RSS growths.
    """
    import bench_map

    rates: dict[str, list[float]] = {"gather": [], "map": []}
    growth: dict[str, list[float]] = {"gather": [], "map": []}
    with tempfile.TemporaryDirectory(prefix="bs-bench-map-") as tmp:
        workdir = Path(tmp)
        asyncio.run(bench_map.fill(workdir, n))
        for run in range(runs):
            order = ("gather", "map") if run % 2 == 0 else ("map", "gather")
            for mode in order:
                print(f"run {run + 1}/{runs}: spot.map vs gather ({mode})", file=sys.stderr)
                result = bench_map.run_worker(workdir, n, mode, concurrency)
                if "error" in result:
                    return {"error": f"{mode}: {result['error']}"}
                if result["body_calls"] or result["hits"] != n:
                    return {"error": f"{mode}: not all hits ({result['hits']:,} of {n:,})"}
                rates[mode].append(n / result["seconds"])
                growth[mode].append(result["growth"])
    return {
        "n": n,
        "gather": statistics.median(rates["gather"]),
        "map": statistics.median(rates["map"]),
        "gather_growth": statistics.median(growth["gather"]),
        "map_growth": statistics.median(growth["map"]),
    }


def run_servers(n: int, quick: bool) -> list[dict[str, Any]] | str:
    """The PostgreSQL/Redis rows of ``bench_servers.py``, or why there are none."""
    try:
        import bench_servers  # type: ignore[import-not-found]
    except ImportError as exc:
        return f"not available ({exc})"
    try:
        rows = bench_servers.measure(n, quick)
        if asyncio.iscoroutine(rows):
            rows = asyncio.run(rows)
    except Exception as exc:  # the rest of the table is still worth printing
        return f"failed: {type(exc).__name__}: {exc}"
    return list(rows)


# -- the report ------------------------------------------------------------------------

#: Memory per pending miss (bytes/call, the *pending* figure of ``pending_bytes``)
#: of a 10 000-miss gather, measured with this script on the commit before
#: issue 15 (d80ae41; the same in each of 3 runs): the issue asks that it gets
#: no higher.
PENDING_BYTES_BEFORE = 1_797.0
PENDING_BYTES_N = 10_000


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def ratio_lines(results: dict[str, dict[str, Any]], n: int) -> list[str]:
    """The issue's targets, each with the measured ratio and a verdict."""

    def get(name: str, metric: str) -> float | None:
        value = results.get(name, {}).get(metric)
        return float(value) if isinstance(value, int | float) else None

    def line(text: str, value: float | None, limit: float, at_most: bool, unit: str = "x") -> str:
        if value is None:
            return f"- {text}: n/a (a library or metric is missing) -- {_verdict(None)}"
        ok = value <= limit if at_most else value >= limit
        sign = "<=" if at_most else ">="
        shown = f"{value:.2f}x" if unit == "x" else fmt_rate(value)
        target = f"{limit}x" if unit == "x" else fmt_rate(limit)
        return f"- {text}: {shown} (target {sign} {target}) -- {_verdict(ok)}"

    bs = "bs-async"
    gather_misses = get(bs, "gather_misses")
    body_calls = results.get(bs, {}).get("fresh_body_calls")
    durable = None if body_calls is None else body_calls == 0
    return [
        line(
            "Hit, warm process (memory tier), p50 vs aiocache's hit",
            _ratio(get(bs, "hit_warm_p50"), get("aiocache", "hit_warm_p50")),
            0.2,
            True,
        ),
        line(
            "Hit, fresh process (SQLite), p50 vs diskcache's fresh-process hit",
            _ratio(get(bs, "hit_fresh_p50"), get("diskcache", "hit_fresh_p50")),
            1.0,
            True,
        ),
        line(
            "Hit, fresh process (SQLite), p50 vs the original's async fresh-process hit",
            _ratio(get(bs, "hit_fresh_p50"), get("bs-original-async", "hit_fresh_p50")),
            0.1,
            True,
        ),
        line(
            f"gather over {n:,} hits, fresh process, vs aiocache's gather over hits",
            _ratio(get(bs, "gather_hits"), get("aiocache", "gather_hits")),
            4,
            False,
        ),
        line(
            f"gather over {n:,} hits, fresh process, vs the original's async (fresh process)",
            _ratio(get(bs, "gather_hits"), get("bs-original-async", "gather_hits")),
            12,
            False,
        ),
        line(
            "Miss p50, durable before return, vs the original's async miss",
            _ratio(get(bs, "miss_p50"), get("bs-original-async", "miss_p50")),
            0.3,
            True,
        ),
        line(
            "Miss p50, default_wait=False, vs diskcache's miss",
            _ratio(get(bs, "miss_wb_p50"), get("diskcache", "miss_p50")),
            0.2,
            True,
        ),
        line(f"gather over {n:,} misses, default_wait=False", gather_misses, 25_000, False, "/s")
        + f"; every row durable after flush(): {_verdict(durable)}",
    ]


def _fmt_bytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} B/call"


def issue15_table(
    results: dict[str, dict[str, Any]],
    mapped: dict[str, Any] | None,
    servers: list[dict[str, Any]] | str | None,
    n: int,
) -> list[str]:
    """The issue-15 table: measure, beautyspot-async, peer, ratio, target, met?"""

    def get(name: str, metric: str) -> float | None:
        value = results.get(name, {}).get(metric)
        return float(value) if isinstance(value, int | float) else None

    rows: list[str] = [
        "| measure | beautyspot-async | peer | ratio | target | met? |",
        "|---|---:|---|---:|---|---|",
    ]

    def row(
        measure: str,
        ours: float | None,
        peer_label: str,
        peer: float | None,
        limit: float,
        at_most: bool,
        fmt: Callable[[float | None], str],
    ) -> None:
        ratio = _ratio(ours, peer)
        ok = None if ratio is None else (ratio <= limit if at_most else ratio >= limit)
        peer_cell = f"{peer_label} {fmt(peer)}" if peer is not None else f"{peer_label}: n/a"
        rows.append(
            f"| {measure} | {fmt(ours)} | {peer_cell} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {'<=' if at_most else '>='} {limit}x | {_verdict(ok)} |"
        )

    bs = "bs-async"
    row(
        "warm hit p50 (memory tier)",
        get(bs, "hit_warm_p50"),
        "aiocache",
        get("aiocache", "hit_warm_p50"),
        0.2,
        True,
        fmt_us,
    )
    row(
        "fresh-process hit p50, async def",
        get(bs, "hit_fresh_p50"),
        "diskcache",
        get("diskcache", "hit_fresh_p50"),
        1.0,
        True,
        fmt_us,
    )
    row(
        "fresh-process hit p50, sync def (called from sync code)",
        get(bs, "hit_fresh_sync_p50"),
        "diskcache",
        get("diskcache", "hit_fresh_p50"),
        1.0,
        True,
        fmt_us,
    )
    row(
        f"gather over {n:,} fresh hits",
        get(bs, "gather_hits"),
        "aiocache",
        get("aiocache", "gather_hits"),
        4,
        False,
        fmt_rate,
    )
    row(
        "durable miss p50",
        get(bs, "miss_p50"),
        "beautyspot 2.7.7 async",
        get("bs-original-async", "miss_p50"),
        0.3,
        True,
        fmt_us,
    )
    row(
        "write-behind miss p50",
        get(bs, "miss_wb_p50"),
        "diskcache miss",
        get("diskcache", "miss_p50"),
        0.2,
        True,
        fmt_us,
    )

    rate, flushed = get(bs, "gather_misses"), get(bs, "gather_misses_flushed")
    durable = results.get(bs, {}).get("gather_misses_durable")
    body_calls = results.get(bs, {}).get("fresh_body_calls")
    all_durable = None if durable is None else durable == n and body_calls == 0
    ok = None if rate is None or all_durable is None else rate >= 25_000 and all_durable
    durable_text = "-" if durable is None else f"{durable:,} of {n:,} rows durable"
    rows.append(
        f"| gather over {n:,} write-behind misses | {fmt_rate(rate)} "
        f"({fmt_rate(flushed)} including flush()) | - | - "
        f"| >= 25k/s, all durable after flush ({durable_text}) | {_verdict(ok)} |"
    )

    if mapped is None:
        rows.append("| spot.map over cached items vs plain gather | not run | | | >= 0.8x | n/a |")
    elif "error" in mapped:
        rows.append(
            f"| spot.map over cached items vs plain gather | {mapped['error']} | | | >= 0.8x "
            "| n/a |"
        )
    else:
        row(
            f"spot.map over {mapped['n']:,} cached items, fresh process",
            mapped["map"],
            "plain gather",
            mapped["gather"],
            0.8,
            False,
            fmt_rate,
        )

    per_call = get(bs, "pending_miss_bytes")
    # The baseline was measured with 10 000 calls; other sizes are not comparable.
    before = PENDING_BYTES_BEFORE if n == PENDING_BYTES_N else None
    row(
        f"memory per pending miss, {n:,}-miss gather (tracemalloc, all calls parked)",
        per_call,
        f"before (d80ae41, N={PENDING_BYTES_N:,})",
        before,
        1.0,
        True,
        _fmt_bytes,
    )

    if servers is not None:
        if isinstance(servers, str):
            rows.append(f"| PostgreSQL / Redis (`--servers`) | {servers} | | | | |")
        else:
            for server_row in servers:
                rows.append(_server_row(server_row))
    return rows


def _server_row(row: dict[str, Any]) -> str:
    """One row of ``bench_servers.measure()`` in the issue-15 table's columns."""
    raw = "asyncpg `fetchrow`" if row["backend"] == "postgresql" else "redis `GET`"
    verdict = "**met**" if row["met"] else "**not met**"
    return (
        f"| fresh-process hit p50, {row['backend']} (gather {fmt_rate(row['gather_per_s'])}) "
        f"| {fmt_us(row['hit_p50_s'])} | one raw {raw} {fmt_us(row['raw_p50_s'])} "
        f"| {row['ratio']:.2f}x | <= {row['target']:.1f}x | {verdict} |"
    )


def render(
    results: dict[str, dict[str, Any]],
    writers: dict[str, Any] | None,
    n: int,
    runs: int,
    mapped: dict[str, Any] | None = None,
    servers: list[dict[str, Any]] | str | None = None,
) -> str:
    """The issue-15 table, the per-library table, the issue-5 lines, the four writers."""
    header = (
        "| library | hit p50 (warm) | hit p99 (warm) | hit p50 (fresh process) "
        "| hit p99 (fresh process) | miss p50 (durable) | miss p50 (write-behind) "
        f"| gather({n:,} hits)/s | gather({n:,} misses)/s |"
    )
    lines = [
        f"Peers benchmark: f(x: str) -> ~2 KB dict, {n:,}-key warm cache, "
        f"median of {runs} interleaved run(s), Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPU(s), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "Issue 15:",
        "",
        *issue15_table(results, mapped, servers, n),
        "",
    ]
    bs = results.get("bs-async", {})
    if bs.get("sync_error"):
        lines += [f"sync def fresh-process worker: {bs['sync_error']}", ""]
    if bs.get("gather_hits") and bs.get("gather_misses"):
        hits_s, misses_s = n / bs["gather_hits"], n / bs["gather_misses"]
        lines += [
            "Time in the cyclic garbage collector (gc.callbacks), beautyspot-async: "
            f"{bs['gather_hits_gc'] * 1e3:,.0f} ms of the {hits_s * 1e3:,.0f} ms gather over "
            f"hits, {bs['gather_misses_gc'] * 1e3:,.0f} ms of the {misses_s * 1e3:,.0f} ms "
            "gather over write-behind misses (medians).",
            "",
        ]
    if bs.get("gather_peak_bytes"):
        lines += [
            f"Peak of that {n:,}-miss gather, results and unwritten entries included: "
            f"{bs['gather_peak_bytes']:,.0f} B/call (tracemalloc; moves +-10 % with how far "
            "the writer got).",
            "",
        ]
    for name, spec in LIBRARIES.items():
        failed = results.get(name, {}).get("failed_runs")
        if failed:
            lines += [
                f"{spec.label}: {len(failed)} run(s) failed, the medians are over the other "
                f"{results[name]['runs']}: {failed[0]}",
                "",
            ]
    if bs.get("fresh_body_calls"):
        lines += [f"NOT ALL HITS: {bs['fresh_body_calls']} bodies ran in fresh processes.", ""]
    lines += [
        "Per library (the medians the table above is computed from):",
        "",
        header,
        "|---|" + "---:|" * 8,
    ]
    for name, spec in LIBRARIES.items():
        result = results[name]
        if "error" in result:
            lines.append(f"| {spec.label} | {result['error']} |" + " |" * 7)
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    spec.label,
                    fmt_us(result["hit_warm_p50"]),
                    fmt_us(result["hit_warm_p99"]),
                    fmt_us(result["hit_fresh_p50"]),
                    fmt_us(result["hit_fresh_p99"]),
                    fmt_us(result["miss_p50"]),
                    fmt_us(result["miss_wb_p50"]),
                    fmt_rate(result["gather_hits"]),
                    fmt_rate(result["gather_misses"]),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "Gather over hits runs in a fresh process (aiocache: in the warm process, it keeps "
        "nothing on disk). Gather over misses uses write-behind where the library has it. "
        'aiocache\'s "durable" miss is a memory write.',
        "",
        "Earlier targets (issue 5):",
        "",
        *ratio_lines(results, n),
    ]
    if writers is not None:
        if "error" in writers:
            lines += ["", f"Four writers: {writers['error']}"]
        else:
            lost = writers["rows_expected"] - writers["rows"]
            ok = not writers["failures"] and lost == 0 and writers["p99"] <= 0.010
            lines += [
                "",
                f"Four processes writing {writers['n_each']:,} results each into one SQLite "
                f"file (beautyspot-async, default_wait=True): failed writes "
                f"{len(writers['failures'])}, lost {lost}, write p50 {fmt_us(writers['p50'])}, "
                f"p99 {fmt_us(writers['p99'])} (target: none fails, none lost, p99 <= 10 ms) "
                f"-- {_verdict(ok)}",
            ]
            if writers["failures"]:
                lines.append(f"  first failure: {writers['failures'][0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 000 keys, 1 run (< 1 minute)")
    parser.add_argument("--n", type=int, default=None, help="keys per phase (default 10 000)")
    parser.add_argument("--runs", type=int, default=None, help="interleaved runs (default 3)")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(LIBRARIES), help="run only these libraries"
    )
    parser.add_argument("--no-writers", action="store_true", help="skip the four-writer case")
    parser.add_argument(
        "--map-n",
        type=int,
        default=None,
        help="cached items of the spot.map vs gather row (default 100 000; --quick 10 000)",
    )
    parser.add_argument("--no-map", action="store_true", help="skip the spot.map row")
    parser.add_argument(
        "--servers",
        action="store_true",
        help="add bench_servers.py's PostgreSQL/Redis rows (when that script exists)",
    )
    parser.add_argument(
        "--sync-fresh-worker", nargs=2, metavar=("LIB", "DIR"), help=argparse.SUPPRESS
    )
    parser.add_argument("--warm-worker", nargs=2, metavar=("LIB", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--fresh-worker", nargs=2, metavar=("LIB", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--writer-worker", nargs=2, metavar=("I", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else (1_000 if args.quick else 10_000)

    if args.warm_worker:
        name, workdir = args.warm_worker
        print(json.dumps(asyncio.run(warm_worker(name, Path(workdir), n))))
        return
    if args.fresh_worker:
        name, workdir = args.fresh_worker
        print(json.dumps(asyncio.run(fresh_worker(name, Path(workdir), n))))
        return
    if args.sync_fresh_worker:
        _, workdir = args.sync_fresh_worker
        print(json.dumps(sync_fresh_worker(Path(workdir), n)))
        return
    if args.writer_worker:
        index, workdir = args.writer_worker
        print(json.dumps(asyncio.run(writer_worker(Path(workdir), int(index), n))))
        return

    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    selected = args.only or list(LIBRARIES)
    per_run: dict[str, list[dict[str, Any]]] = {name: [] for name in LIBRARIES}
    installed = {
        name: importlib.util.find_spec(spec.module) is not None for name, spec in LIBRARIES.items()
    }
    for run in range(runs):
        for name in selected:
            if installed[name]:
                print(f"run {run + 1}/{runs}: {name}", file=sys.stderr, flush=True)
                per_run[name].append(run_library(name, n))
    results: dict[str, dict[str, Any]] = {}
    for name in LIBRARIES:
        if not installed[name]:
            results[name] = {"error": "not installed"}
        elif name not in selected:
            results[name] = {"error": "not run"}
        else:
            results[name] = aggregate(per_run[name])

    writers: dict[str, Any] | None = None
    if not args.no_writers and installed["bs-async"]:
        print("four writers", file=sys.stderr, flush=True)
        try:
            writers = run_four_writers(500 if args.quick else 2_500)
        except Exception as exc:  # the table is still worth printing
            writers = {"error": f"failed: {type(exc).__name__}: {exc}"}
    mapped: dict[str, Any] | None = None
    if not args.no_map and installed["bs-async"] and "bs-async" in selected:
        map_n = args.map_n if args.map_n is not None else (10_000 if args.quick else 100_000)
        try:
            mapped = run_map(map_n, runs)
        except Exception as exc:
            mapped = {"error": f"failed: {type(exc).__name__}: {exc}"}
    servers = run_servers(n, args.quick) if args.servers else None
    print(render(results, writers, n, runs, mapped, servers))


if __name__ == "__main__":
    main()
