"""The dashboard index over a large SQLite store (issue 13): render time per request.

Fills a SQLite Spot with N entries (default 100 000) across a few functions
and versions, some expiring, through ``TaskDB.save_many`` (no function runs),
then times full HTTP requests of the index through Starlette's TestClient:
the first page, a deep page, each filter, and a search. Prints one Markdown
table of p50/p90 in milliseconds. Needs the ``dashboard`` and ``dev`` extras.

    python bench/bench_dashboard.py            # 100 000 entries
    python bench/bench_dashboard.py --n 10000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import beautyspot_async as bs
from beautyspot_async._browse import IndexQuery, browse
from beautyspot_async._record import saved_record

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from beautyspot_async.dashboard import create_app

FUNCS = ("app.llm.ask", "app.scrape.fetch", "app.eval.score", "app.render.chart")


async def fill(db_path: Path, n: int) -> None:
    spot = bs.Spot("bench", db=db_path, storage=db_path.parent / "blobs")
    async with spot:
        db = spot.db
        batch = []
        for i in range(n):
            batch.append(
                saved_record(
                    cache_key=f"{i:032x}",
                    func_name=FUNCS[i % len(FUNCS)],
                    input_id=f"input-{i}",
                    version=f"v{i % 3}",
                    result_type="inline",
                    content_type="text/plain",
                    result_data=b"\xa5hello",
                    expires_at=1.0 if i % 10 == 0 else None,
                )
            )
            if len(batch) == 5000:
                await db.save_many(batch)
                batch = []
        if batch:
            await db.save_many(batch)


def timed(client: TestClient, params: dict[str, str], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get("/", params=params)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text[:300]
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        start = time.perf_counter()
        asyncio.run(fill(db_path, options.n))
        print(f"filled {options.n} entries in {time.perf_counter() - start:.1f} s\n")
        spot = bs.Spot("bench", db=db_path, storage=Path(tmp) / "blobs")
        cases = {
            "first page": {},
            "page 1000": {"page": "1000"},
            "func=ask": {"func": "ask"},
            "version=v1": {"version": "v1"},
            "status=expired": {"status": "expired"},
            "search (key substring)": {"q": "00000abc"},
        }
        with spot, TestClient(create_app(spot), base_url="http://localhost") as client:
            client.get("/")  # open the backends outside the timing
            print(f"| index request, {options.n} entries | p50 ms | p90 ms |")
            print("|---|---:|---:|")
            for name, params in cases.items():
                p50, p90 = timed(client, params, options.repeat)
                print(f"| {name} | {p50:.0f} | {p90:.0f} |")
            cold = []
            for _ in range(5):
                start = time.perf_counter()
                asyncio.run(browse(spot, IndexQuery()))
                cold.append((time.perf_counter() - start) * 1000)
            cold.sort()
            print(f"| first page, history not cached (browse()) | {cold[2]:.0f} | {cold[-1]:.0f} |")


if __name__ == "__main__":
    main()
