"""What a typed result costs on a hit: a 30-field pydantic model against the same data as a dict.

Run by hand from the repository root::

    python bench/bench_typed.py            # 10 000 keys per phase
    python bench/bench_typed.py --quick    # 1 000 keys per phase

Two marked functions on SQLite in a temporary directory, each on its own Spot
with default options, return the same data for the same key:

- ``typed(x: str) -> Record``: a pydantic v2 model of 30 fields (str, int,
  float, bool, aware datetimes, ``list[str]``, a nested ``Author`` model,
  optional fields), cached with no registration (the return annotation says
  what to rebuild);
- ``plain(x: str) -> dict``: ``Record.model_dump()`` of the same value, a
  plain dict (datetimes stay datetimes).

Measured, per call, p50 and p99:

- hit in a warm process (the memory front tier answers);
- hit in a fresh process (a subprocess per function; the data is only in the
  SQLite file);
- ``Record.model_validate_json(text)`` of the equivalent JSON (what an SDK
  does with a response body), as a reference for the cost of building the
  model at all.

Prints one Markdown table with the ratios typed hit / dict hit (target:
<= 1.5x) and typed hit / ``model_validate_json``. Until typed results are
supported the typed rows read "not supported" and the dict rows still run.
Installs nothing (pydantic comes with the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import WARMUP, fmt_us, keys, percentile, timed_sequential

#: Every memoized body bumps this, so a fresh process can prove it was all hits.
BODY_CALLS = [0]
#: The target of the table header: a typed hit costs at most this many dict hits.
TARGET_RATIO = 1.5
#: Fixed identities, so the fresh process derives the same keys.
NAMES = {"typed": "bench.typed", "dict": "bench.plain"}
EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


class Author(BaseModel):
    name: str
    email: str
    karma: int


class Record(BaseModel):
    """30 fields, shaped like a typical API object."""

    id: str
    title: str
    subtitle: str | None = None
    body: str
    url: str
    language: str
    status: str
    summary: str
    checksum: str
    views: int
    likes: int
    shares: int
    comments: int
    rank: int
    parent_id: int | None = None
    score: float
    ratio: float
    latitude: float
    longitude: float
    published: bool
    featured: bool
    archived: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    reviewed_at: dt.datetime | None = None
    tags: list[str]
    categories: list[str]
    keywords: list[str]
    author: Author
    editor: Author | None = None


def record(x: str) -> Record:
    """The benchmark result for key ``x`` (about 1 KB as JSON)."""
    n = sum(x.encode()) + len(x)
    return Record(
        id=f"rec-{x}",
        title=f"Title of {x}",
        subtitle=None if n % 2 else f"Subtitle of {x}",
        body="lorem ipsum dolor sit amet " * 8,
        url=f"https://example.com/records/{x}",
        language="en",
        status="active",
        summary=f"A short summary of record {x}.",
        checksum=f"{n * 2654435761 % 2**32:08x}",
        views=n * 13,
        likes=n % 997,
        shares=n % 89,
        comments=n % 41,
        rank=n % 1000,
        parent_id=None if n % 3 else n // 3,
        score=n / 7,
        ratio=(n % 100) / 100,
        latitude=35.6762,
        longitude=139.6503,
        published=True,
        featured=bool(n % 2),
        archived=False,
        created_at=EPOCH + dt.timedelta(seconds=n),
        updated_at=EPOCH + dt.timedelta(seconds=n, microseconds=250_000),
        reviewed_at=None if n % 5 else EPOCH + dt.timedelta(days=1),
        tags=[f"tag{i}" for i in range(8)],
        categories=["news", "tech", "science"],
        keywords=[f"{x}-kw{i}" for i in range(5)],
        author=Author(name="Ada Lovelace", email="ada@example.com", karma=n),
        editor=None if n % 2 else Author(name="Charles Babbage", email="cb@example.com", karma=7),
    )


def make_task(spot: Any, kind: str) -> Callable[[str], Awaitable[Any]]:
    """Mark the ``kind`` ("typed" or "dict") body on ``spot`` under a fixed identity."""

    async def typed(x: str) -> Record:
        BODY_CALLS[0] += 1
        return record(x)

    async def plain(x: str) -> dict[str, Any]:
        BODY_CALLS[0] += 1
        return record(x).model_dump()

    body = typed if kind == "typed" else plain
    marked: Callable[[str], Awaitable[Any]] = spot.mark(name=NAMES[kind])(body)
    return marked


def open_spot(workdir: Path, kind: str, n: int, *, default_wait: bool = True) -> Any:
    """A Spot per function; the memory tier holds every key of a phase."""
    import beautyspot_async as bs

    return bs.Spot(
        f"bench_typed_{kind}",
        db=str(workdir / f"{kind}.db"),
        storage=str(workdir / f"{kind}_blobs"),
        default_wait=default_wait,
        memory_cache_entries=max(10_000, n + 4 * WARMUP),
    )


async def warm_phase(workdir: Path, kind: str, n: int) -> dict[str, Any]:
    """Fill ``n`` keys (write-behind, then flushed), then time hits on them in this process."""
    import beautyspot_async as bs

    # One durable miss first: write-behind would only log a result it cannot store.
    probe_dir = workdir / "probe"
    probe_dir.mkdir(exist_ok=True)
    probe = open_spot(probe_dir, kind, 1)
    try:
        async with probe:
            await make_task(probe, kind)("probe")
    except bs.SerializationError as exc:
        return {"error": f"not supported ({type(exc).__name__})", "detail": str(exc)}

    spot = open_spot(workdir, kind, n, default_wait=False)
    f = make_task(spot, kind)
    async with spot:
        await timed_sequential(f, keys("w", WARMUP))
        await timed_sequential(f, keys("a", n))
        await spot.flush()
        await timed_sequential(f, keys("w", WARMUP))  # warm the hit path
        hits = await timed_sequential(f, keys("a", n))
        sample = await f("a000000")
    model = record("a000000")
    expected: Any = model if kind == "typed" else model.model_dump()
    return {"hits": hits, "correct": sample == expected and type(sample) is type(expected)}


async def fresh_phase(workdir: Path, kind: str, n: int) -> dict[str, Any]:
    """Hits in a process that has never seen the keys (the data is only in SQLite)."""
    spot = open_spot(workdir, kind, n)
    f = make_task(spot, kind)
    async with spot:
        await timed_sequential(f, keys("w", WARMUP))  # opens the connection, imports
        hits = await timed_sequential(f, keys("a", n))
        sample = await f("a000000")
    return {
        "hits": hits,
        "body_calls": BODY_CALLS[0],
        "type": f"{type(sample).__module__}.{type(sample).__qualname__}",
    }


def run_fresh_subprocess(workdir: Path, kind: str, n: int) -> dict[str, Any]:
    """Run :func:`fresh_phase` in a new interpreter; its JSON result."""
    proc = subprocess.run(
        [sys.executable, __file__, "--fresh-worker", str(workdir), "--kind", kind, "--n", str(n)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fresh-process worker ({kind}) failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def validate_json_samples(n: int) -> list[float]:
    """Per-call time of ``Record.model_validate_json`` on the JSON of ``n`` records."""
    texts = [record(x).model_dump_json() for x in keys("a", n)]
    for text in texts[:WARMUP]:
        Record.model_validate_json(text)
    clock = time.perf_counter
    samples: list[float] = []
    for text in texts:
        start = clock()
        Record.model_validate_json(text)
        samples.append(clock() - start)
    return samples


def render(n: int, results: dict[str, Any], reference: list[float]) -> str:
    """The Markdown table, the targets as met / not met, and the correctness line."""
    ref_p50 = percentile(reference, 50)

    def p50(phase: dict[str, Any]) -> float | None:
        return percentile(phase["hits"], 50) if "hits" in phase else None

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or b is None else f"{a / b:.2f}x"

    def row(label: str, phase: dict[str, Any], versus: dict[str, Any] | None) -> str:
        if "hits" not in phase:
            return f"| {label} | {phase.get('error', '-')} | - | - | - |"
        mine = p50(phase)
        return (
            f"| {label} | {fmt_us(mine)} | {fmt_us(percentile(phase['hits'], 99))} | "
            f"{ratio(mine, p50(versus)) if versus is not None else '-'} | "
            f"{ratio(mine, ref_p50) if versus is not None else '-'} |"
        )

    warm, fresh = results["warm"], results["fresh"]
    lines = [
        f"beautyspot-async typed results: SQLite, a 30-field pydantic model vs the same data "
        f"as a dict, {n:,} keys per phase; target: typed hit p50 <= {TARGET_RATIO}x dict hit p50",
        "",
        "| measurement | p50 | p99 | typed / dict | typed / model_validate_json |",
        "|---|---:|---:|---:|---:|",
        row("dict hit, warm process (memory tier)", warm["dict"], None),
        row("typed hit, warm process (memory tier)", warm["typed"], warm["dict"]),
        row("dict hit, fresh process (data only in SQLite)", fresh["dict"], None),
        row("typed hit, fresh process (data only in SQLite)", fresh["typed"], fresh["dict"]),
        f"| `Record.model_validate_json(text)` (reference) | {fmt_us(ref_p50)} | "
        f"{fmt_us(percentile(reference, 99))} | - | - |",
        "",
    ]
    for where, phases in (("warm", warm), ("fresh", fresh)):
        typed_p50, dict_p50 = p50(phases["typed"]), p50(phases["dict"])
        if typed_p50 is None or dict_p50 is None:
            lines.append(f"- {where} hit: typed results not measured")
            continue
        met = "met" if typed_p50 <= TARGET_RATIO * dict_p50 else "NOT MET"
        lines.append(
            f"- {where} hit: typed / dict = {typed_p50 / dict_p50:.2f}x "
            f"(target <= {TARGET_RATIO}x: {met})"
        )
    checks = []
    for kind in ("dict", "typed"):
        if "hits" not in warm[kind]:
            continue
        checks.append(
            f"{kind}: warm hit {'equal, same type' if warm[kind]['correct'] else 'WRONG'}, "
            f"fresh process ran {fresh[kind]['body_calls']} bodies "
            f"({'all hits' if fresh[kind]['body_calls'] == 0 else 'NOT ALL HITS'}), "
            f"returned {fresh[kind]['type']}"
        )
    lines.append("")
    lines.append("Checks: " + "; ".join(checks) + ".")
    if "detail" in warm["typed"]:
        lines.append(f"Typed results not supported by this install: {warm['typed']['detail']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 000 keys per phase")
    parser.add_argument("--n", type=int, default=None, help="keys per phase (default 10 000)")
    parser.add_argument("--fresh-worker", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["typed", "dict"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else (1_000 if args.quick else 10_000)

    if args.fresh_worker:
        print(json.dumps(asyncio.run(fresh_phase(Path(args.fresh_worker), args.kind, n))))
        return

    results: dict[str, Any] = {"warm": {}, "fresh": {}}
    with tempfile.TemporaryDirectory(prefix="bs-bench-typed-") as tmp:
        workdir = Path(tmp)
        for kind in ("dict", "typed"):
            results["warm"][kind] = asyncio.run(warm_phase(workdir, kind, n))
        for kind in ("dict", "typed"):
            if "hits" in results["warm"][kind]:
                results["fresh"][kind] = run_fresh_subprocess(workdir, kind, n)
            else:
                results["fresh"][kind] = results["warm"][kind]
    reference = validate_json_samples(n)
    print(render(n, results, reference))


if __name__ == "__main__":
    main()
