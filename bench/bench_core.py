"""Latency and throughput of beautyspot-async's core paths on SQLite (issue 2).

Run by hand from the repository root::

    python bench/bench_core.py            # 10 000 keys per phase
    python bench/bench_core.py --quick    # 1 000 keys per phase

Workload: ``async def f(x: str) -> dict`` returning a ~2 KB dict, marked on a
Spot with the default SQLite backend in a temporary directory. Measured:

- hit latency in a warm process (the memory front tier answers);
- hit latency in a fresh process (a subprocess; the data is only on disk);
- miss latency with ``default_wait=True`` (durable before return) and with
  ``default_wait=False`` (write-behind);
- ``asyncio.gather`` throughput over N hits in a fresh process and over N
  misses with ``default_wait=False``, followed by ``await spot.flush()`` and a
  row count from an independent SQLite connection to prove durability.

Prints one Markdown table. Installs nothing. The helpers at the top
(``payload``, ``percentile``, ``fmt_*``) are shared with ``bench_peers.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

#: Every memoized body bumps this, so a phase can prove it was all hits.
BODY_CALLS = [0]

#: The identity the marked function gets in every process (see make_task).
TASK_NAME = "bench.f"

#: Calls made before measuring, on their own keys: they open connections and
#: warm code paths so the first measured call is not an outlier of setup cost.
WARMUP = 20


def payload(x: str) -> dict[str, Any]:
    """The benchmark result: a ~2 KB dict (2 036 bytes as msgpack) that depends on ``x``."""
    return {
        "input": x,
        "tokens": [f"{x}:{i}" for i in range(40)],
        "scores": [i / 8 for i in range(40)],
        "text": "lorem ipsum dolor sit amet " * 40,
    }


def keys(prefix: str, n: int) -> list[str]:
    """``n`` distinct argument values for one phase; prefixes keep phases disjoint."""
    return [f"{prefix}{i:06d}" for i in range(n)]


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of ``samples``."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fmt_us(seconds: float | None) -> str:
    """A latency in microseconds for the table (``-`` when not measured)."""
    if seconds is None or seconds != seconds:
        return "-"
    micros = seconds * 1e6
    return f"{micros:,.0f} us" if micros >= 100 else f"{micros:.1f} us"


def fmt_rate(per_second: float | None) -> str:
    """A throughput for the table, ``12.3k/s`` style (``-`` when not measured)."""
    if per_second is None or per_second != per_second:
        return "-"
    return f"{per_second / 1000:.1f}k/s" if per_second >= 1000 else f"{per_second:.0f}/s"


async def timed_sequential(fn: Callable[[str], Awaitable[Any]], args: Iterable[str]) -> list[float]:
    """Await ``fn(x)`` for each ``x`` in turn; per-call wall time in seconds."""
    clock = time.perf_counter
    samples: list[float] = []
    for x in args:
        start = clock()
        await fn(x)
        samples.append(clock() - start)
    return samples


async def timed_gather(fn: Callable[[str], Awaitable[Any]], args: list[str]) -> float:
    """Seconds until ``asyncio.gather`` over ``fn(x)`` for every ``x`` has returned."""
    start = time.perf_counter()
    await asyncio.gather(*(fn(x) for x in args))
    return time.perf_counter() - start


def make_task(spot: Any) -> Callable[[str], Awaitable[dict[str, Any]]]:
    """Mark the benchmark body on ``spot`` under a fixed identity.

    The explicit name keeps keys identical whether this module runs as
    ``__main__`` or is imported by ``bench_peers.py``.
    """

    async def f(x: str) -> dict[str, Any]:
        BODY_CALLS[0] += 1
        return payload(x)

    marked: Callable[[str], Awaitable[dict[str, Any]]] = spot.mark(name=TASK_NAME)(f)
    return marked


#: Where results go: "sqlite" (a file in the work dir), or a postgresql:// or
#: redis:// URL (a fresh table prefix / key prefix per run, removed afterwards).
BACKEND = {"db": "sqlite", "namespace": "bench_core"}


def make_db(workdir: Path) -> Any:
    """The task database of this run (one per Spot, same data)."""
    url = BACKEND["db"]
    if url == "sqlite":
        return str(workdir / "core.db")
    if url.startswith("postgres"):
        from beautyspot_async.db import PostgresTaskDB

        return PostgresTaskDB(url, table_prefix=f"{BACKEND['namespace']}_")
    if url.startswith("redis"):
        from beautyspot_async.db import RedisTaskDB

        return RedisTaskDB(url, prefix=BACKEND["namespace"])
    raise SystemExit(f"--db must be sqlite, postgresql://... or redis://..., got {url!r}")


async def count_rows(workdir: Path) -> int:
    """Rows the backend holds, read by a Spot of our own (a fresh connection)."""
    if BACKEND["db"] == "sqlite":
        with sqlite3.connect(workdir / "core.db") as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()
        return int(count)
    spot = open_spot(workdir, default_wait=True)
    async with spot:
        return len(await spot.history(limit=10_000_000))


async def drop_namespace() -> None:
    """Remove what a PostgreSQL or Redis run created."""
    url, ns = BACKEND["db"], BACKEND["namespace"]
    if url.startswith("postgres"):
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            for table in ("tasks", "leases", "schema_version"):
                await conn.execute(f'DROP TABLE IF EXISTS "{ns}_{table}"')
        finally:
            await conn.close()
    elif url.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)
        try:
            async for key in client.scan_iter(match=f"{ns}*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()


def open_spot(workdir: Path, *, default_wait: bool) -> Any:
    """A Spot over the benchmark's backend with otherwise default options."""
    import beautyspot_async as bs

    # Only when asked: the option does not exist before it was added, and
    # this module also benchmarks older checkouts.
    extra = {"store_args": BACKEND["store_args"]} if BACKEND.get("store_args") else {}
    return bs.Spot(
        "bench_core",
        db=make_db(workdir),
        storage=str(workdir / "blobs"),
        default_wait=default_wait,
        **extra,
    )


async def warm_phases(workdir: Path, n: int) -> dict[str, Any]:
    """Misses, then warm hits, then write-behind misses, all in this process."""
    out: dict[str, Any] = {}
    spot = open_spot(workdir, default_wait=True)
    f = make_task(spot)
    async with spot:
        await timed_sequential(f, keys("w", WARMUP))
        out["miss_durable"] = await timed_sequential(f, keys("a", n))
        out["hit_warm"] = await timed_sequential(f, keys("a", n))

    spot_wb = open_spot(workdir, default_wait=False)
    g = make_task(spot_wb)
    async with spot_wb:
        await timed_sequential(g, keys("x", WARMUP))
        await spot_wb.flush()
        out["miss_write_behind"] = await timed_sequential(g, keys("b", n))
        await spot_wb.flush()
        out["gather_misses_s"] = await timed_gather(g, keys("c", n))
        start = time.perf_counter()
        await spot_wb.flush()
        out["flush_s"] = time.perf_counter() - start
    out["rows"] = await count_rows(workdir)
    out["rows_expected"] = 2 * WARMUP + 3 * n
    return out


async def fresh_phases(workdir: Path, n: int) -> dict[str, Any]:
    """Hits in a process that has never seen the keys: sequential, then gather."""
    spot = open_spot(workdir, default_wait=True)
    f = make_task(spot)
    async with spot:
        # Warm-up keys are on disk too, so this opens connections without
        # touching the keys measured below.
        await timed_sequential(f, keys("w", WARMUP))
        hit_fresh = await timed_sequential(f, keys("a", n))
        gather_s = await timed_gather(f, keys("c", n))
    return {"hit_fresh": hit_fresh, "gather_hits_s": gather_s, "body_calls": BODY_CALLS[0]}


def run_fresh_subprocess(workdir: Path, n: int) -> dict[str, Any]:
    """Run :func:`fresh_phases` in a new interpreter; its JSON result."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--fresh-worker",
            str(workdir),
            "--n",
            str(n),
            "--db",
            BACKEND["db"],
            "--namespace",
            BACKEND["namespace"],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fresh-process worker failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def render(n: int, warm: dict[str, Any], fresh: dict[str, Any]) -> str:
    """The Markdown table (and the durability line under it)."""

    def row(label: str, samples: list[float] | None, rate: float | None = None) -> str:
        p50 = fmt_us(percentile(samples, 50)) if samples else "-"
        p99 = fmt_us(percentile(samples, 99)) if samples else "-"
        return f"| {label} | {p50} | {p99} | {fmt_rate(rate)} |"

    lines = [
        f"beautyspot-async core benchmark: {BACKEND['db'].split('://')[0]}, "
        f"f(x: str) -> ~2 KB dict, {n:,} keys per phase",
        "",
        "| measurement | p50 | p99 | throughput |",
        "|---|---:|---:|---:|",
        row("hit, warm process (memory tier)", warm["hit_warm"]),
        row("hit, fresh process (data only in the backend)", fresh["hit_fresh"]),
        row("miss, default_wait=True (durable)", warm["miss_durable"]),
        row("miss, default_wait=False (write-behind)", warm["miss_write_behind"]),
        row(f"gather over {n:,} hits, fresh process", None, n / fresh["gather_hits_s"]),
        row(
            f"gather over {n:,} misses, default_wait=False",
            None,
            n / warm["gather_misses_s"],
        ),
        row(
            f"gather over {n:,} misses + flush() until durable",
            None,
            n / (warm["gather_misses_s"] + warm["flush_s"]),
        ),
        "",
        f"Durable rows after flush(): {warm['rows']:,} of {warm['rows_expected']:,} expected "
        f"({'all durable' if warm['rows'] == warm['rows_expected'] else 'ROWS MISSING'}); "
        f"function bodies run in the fresh process: {fresh['body_calls']} "
        f"({'all hits' if fresh['body_calls'] == 0 else 'NOT ALL HITS'}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 000 keys per phase")
    parser.add_argument("--n", type=int, default=None, help="keys per phase (default 10 000)")
    parser.add_argument(
        "--db",
        default="sqlite",
        help="sqlite (default), or a postgresql://... or redis://... URL",
    )
    parser.add_argument(
        "--store-args",
        choices=["preview", "none"],
        default=None,
        help="Spot(store_args=...) (default: the Spot's own default)",
    )
    parser.add_argument("--namespace", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fresh-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    BACKEND["db"] = args.db
    BACKEND["store_args"] = args.store_args or ""
    BACKEND["namespace"] = args.namespace or f"bench_core_{os.getpid()}"
    n = args.n if args.n is not None else (1_000 if args.quick else 10_000)

    if args.fresh_worker:
        print(json.dumps(asyncio.run(fresh_phases(Path(args.fresh_worker), n))))
        return

    with tempfile.TemporaryDirectory(prefix="bs-bench-core-") as tmp:
        workdir = Path(tmp)
        try:
            warm = asyncio.run(warm_phases(workdir, n))
            fresh = run_fresh_subprocess(workdir, n)
        finally:
            asyncio.run(drop_namespace())
    print(render(n, warm, fresh))


if __name__ == "__main__":
    main()
