"""beautyspot-async hits on PostgreSQL and Redis against one raw driver round trip (issue 15).

Run by hand from the repository root (never by the tests)::

    python bench/bench_servers.py                # 10 000 keys per backend
    python bench/bench_servers.py --quick        # 1 000 keys
    python bench/bench_servers.py --n 5000 --only redis
    python bench/bench_servers.py --postgres postgresql://... --redis redis://...

Workload: ``async def f(x: str) -> dict`` returning a ~2 KB dict (see
``bench_core.payload``) on a Spot whose task database is PostgreSQL or Redis,
in a namespace of its own (a table prefix / key prefix removed afterwards).
Per backend:

1. a setup process fills the cache with N keys (write-behind, then a flush)
   plus a few warm-up keys;
2. a *fresh* subprocess (nothing in memory: every hit reads the server)
   measures sequential hits on the N keys one at a time (p50/p99), then
   ``asyncio.gather`` over the same N keys in a second fresh subprocess;
3. in the same fresh subprocess as the sequential hits, and interleaved with
   them, one raw driver round trip on the same data: ``asyncpg``
   ``Connection.fetchrow`` of the row by primary key on a plain connection,
   and ``redis.asyncio`` ``GET`` of a key holding a value of the payload's
   size.

The target: a fresh hit p50 within 1.5x of the raw round trip p50.

``measure(n, quick)`` returns the table's rows as dicts, for other scripts
(``bench_peers.py``) to print.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import BODY_CALLS, WARMUP, fmt_rate, fmt_us, keys, payload, percentile

#: The target of issue 15: fresh hit p50 <= TARGET x one raw round trip p50.
TARGET = 1.5
#: Seconds one subprocess may take.
WORKER_TIMEOUT = 900

POSTGRES_URL = os.environ.get(
    "BEAUTYSPOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("BEAUTYSPOT_TEST_REDIS", "redis://127.0.0.1:6379/0")
TASK_NAME = "bench.servers.f"


# -- one Spot over one backend ------------------------------------------------------


def _make_db(backend: str, url: str, namespace: str) -> Any:
    if backend == "postgresql":
        from beautyspot_async.db import PostgresTaskDB

        return PostgresTaskDB(url, table_prefix=f"{namespace}_")
    from beautyspot_async.db import RedisTaskDB

    return RedisTaskDB(url, prefix=namespace)


def _open_spot(backend: str, url: str, namespace: str, workdir: Path, *, wait: bool) -> Any:
    import beautyspot_async as bs

    return bs.Spot(
        "bench_servers",
        db=_make_db(backend, url, namespace),
        storage=str(workdir / "blobs"),
        default_wait=wait,
    )


def _task(spot: Any) -> Any:
    async def f(x: str) -> dict[str, Any]:
        BODY_CALLS[0] += 1
        return payload(x)

    return spot.mark(name=TASK_NAME)(f)


async def _fill(backend: str, url: str, namespace: str, workdir: Path, n: int) -> None:
    spot = _open_spot(backend, url, namespace, workdir, wait=False)
    f = _task(spot)
    async with spot:
        for chunk in range(0, n, 2000):
            await asyncio.gather(*(f(x) for x in keys("h", n)[chunk : chunk + 2000]))
        await asyncio.gather(*(f(x) for x in keys("w", WARMUP)))
        await spot.flush()


async def _drop(backend: str, url: str, namespace: str) -> None:
    if backend == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            for table in ("tasks", "leases", "schema_version", "failures", "last_used"):
                await conn.execute(f'DROP TABLE IF EXISTS "{namespace}_{table}"')
        finally:
            await conn.close()
    else:
        import redis.asyncio as aioredis

        client = aioredis.from_url(url)
        try:
            async for key in client.scan_iter(match=f"{namespace}*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()


# -- the raw round trip --------------------------------------------------------------


async def _raw_postgres(url: str, namespace: str, key: str) -> Any:
    """A plain asyncpg connection and a ``fetchrow`` of ``key``'s row by primary key."""
    import asyncpg

    conn = await asyncpg.connect(url)
    query = f'SELECT * FROM "{namespace}_tasks" WHERE cache_key = $1'

    async def once() -> None:
        row = await conn.fetchrow(query, key)
        assert row is not None

    return conn, once, conn.close


async def _raw_redis(url: str, namespace: str, size: int) -> Any:
    """A plain redis.asyncio client and a ``GET`` of a value of ``size`` bytes."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    raw_key = f"{namespace}:raw"
    await client.set(raw_key, os.urandom(size))

    async def once() -> None:
        value = await client.get(raw_key)
        assert value is not None

    return client, once, client.aclose


async def _fresh_sequential(backend: str, url: str, namespace: str, workdir: Path, n: int) -> Any:
    """Fresh-process sequential hits, each followed by one raw round trip."""
    spot = _open_spot(backend, url, namespace, workdir, wait=True)
    f = _task(spot)
    clock = time.perf_counter
    async with spot:
        for x in keys("w", WARMUP):  # opens the Spot and its connections
            await f(x)
        if backend == "postgresql":
            key = f.key(keys("h", 1)[0])
            _conn, raw, close = await _raw_postgres(url, namespace, key)
        else:
            _conn, raw, close = await _raw_redis(url, namespace, 2036)
        try:
            for _ in range(WARMUP):
                await raw()
            hits: list[float] = []
            raws: list[float] = []
            for x in keys("h", n):
                start = clock()
                await f(x)
                hits.append(clock() - start)
                start = clock()
                await raw()
                raws.append(clock() - start)
        finally:
            await close()
    return {"hit": hits, "raw": raws, "body_calls": BODY_CALLS[0]}


async def _fresh_gather(backend: str, url: str, namespace: str, workdir: Path, n: int) -> Any:
    spot = _open_spot(backend, url, namespace, workdir, wait=True)
    f = _task(spot)
    async with spot:
        for x in keys("w", WARMUP):
            await f(x)
        start = time.perf_counter()
        await asyncio.gather(*(f(x) for x in keys("h", n)))
        elapsed = time.perf_counter() - start
    return {"gather_s": elapsed, "body_calls": BODY_CALLS[0]}


_WORKERS = {"sequential": _fresh_sequential, "gather": _fresh_gather}


def _subprocess(phase: str, backend: str, url: str, namespace: str, workdir: Path, n: int) -> Any:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            phase,
            "--backend",
            backend,
            "--url",
            url,
            "--namespace",
            namespace,
            "--workdir",
            str(workdir),
            "--n",
            str(n),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=WORKER_TIMEOUT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} {phase} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- one backend, all phases -------------------------------------------------------------


def _measure_backend(backend: str, url: str, n: int) -> dict[str, Any]:
    namespace = f"bench_servers_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="bs-bench-servers-") as tmp:
        workdir = Path(tmp)
        try:
            asyncio.run(_fill(backend, url, namespace, workdir, n))
            seq = _subprocess("sequential", backend, url, namespace, workdir, n)
            gat = _subprocess("gather", backend, url, namespace, workdir, n)
        finally:
            asyncio.run(_drop(backend, url, namespace))
    hit_p50 = percentile(seq["hit"], 50)
    raw_p50 = percentile(seq["raw"], 50)
    ratio = hit_p50 / raw_p50
    return {
        "backend": backend,
        "n": n,
        "hit_p50_s": hit_p50,
        "hit_p99_s": percentile(seq["hit"], 99),
        "raw_p50_s": raw_p50,
        "raw_p99_s": percentile(seq["raw"], 99),
        "gather_per_s": n / gat["gather_s"],
        "ratio": ratio,
        "target": TARGET,
        "met": ratio <= TARGET,
        "body_calls": seq["body_calls"] + gat["body_calls"],
    }


def measure(
    n: int = 10_000,
    quick: bool = False,
    *,
    backends: tuple[str, ...] = ("postgresql", "redis"),
    postgres_url: str = POSTGRES_URL,
    redis_url: str = REDIS_URL,
) -> list[dict[str, Any]]:
    """One row per backend: fresh hit p50/p99, gather rate, raw round trip and the ratio.

    ``quick`` caps ``n`` at 1 000. Times are in seconds, rates per second.
    """
    if quick:
        n = min(n, 1_000)
    urls = {"postgresql": postgres_url, "redis": redis_url}
    return [_measure_backend(b, urls[b], n) for b in backends]


def render(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of :func:`measure`'s rows."""
    lines = [
        "| backend | fresh hit p50 | fresh hit p99 | gather(N hits)/s | raw round trip p50 "
        "| raw p99 | hit / raw | target | met? |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        raw = "asyncpg fetchrow" if r["backend"] == "postgresql" else "redis GET"
        lines.append(
            f"| {r['backend']} (N={r['n']:,}) | {fmt_us(r['hit_p50_s'])} | "
            f"{fmt_us(r['hit_p99_s'])} | {fmt_rate(r['gather_per_s'])} | "
            f"{fmt_us(r['raw_p50_s'])} ({raw}) | {fmt_us(r['raw_p99_s'])} | "
            f"{r['ratio']:.2f}x | <= {r['target']:.1f}x | {'yes' if r['met'] else 'no'} |"
        )
    bad = [r["backend"] for r in rows if r["body_calls"]]
    lines.append("")
    lines.append(
        "Function bodies run in the fresh processes: "
        + (f"some, on {', '.join(bad)} (NOT ALL HITS)" if bad else "none (all hits).")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 000 keys")
    parser.add_argument("--n", type=int, default=10_000, help="keys (default 10 000)")
    parser.add_argument("--only", choices=["postgresql", "redis"], nargs="+", default=None)
    parser.add_argument("--postgres", default=POSTGRES_URL, help="PostgreSQL URL")
    parser.add_argument("--redis", default=REDIS_URL, help="Redis URL")
    parser.add_argument("--worker", choices=sorted(_WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker = _WORKERS[args.worker]
        result = asyncio.run(
            worker(args.backend, args.url, args.namespace, Path(args.workdir), args.n)
        )
        print(json.dumps(result))
        return
    rows = measure(
        args.n,
        args.quick,
        backends=tuple(args.only or ("postgresql", "redis")),
        postgres_url=args.postgres,
        redis_url=args.redis,
    )
    print(f"beautyspot-async hits on servers: f(x: str) -> ~2 KB dict, {os.cpu_count()} CPUs")
    print()
    print(render(rows))


if __name__ == "__main__":
    main()
