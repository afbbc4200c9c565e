"""Quick start: persist every result of an ``async def``; a rerun executes only what is missing.

Run it twice: the first run takes about a second (three distinct documents,
one simulated second each, concurrently); the second executes nothing, every
answer comes from ./my_experiment.db.
"""

import asyncio
import time

import beautyspot_async as bs

spot = bs.Spot("my_experiment")  # ./my_experiment.db and ./my_experiment_blobs/


@spot.mark(version="v1")
async def summarize(doc: str) -> dict[str, object]:
    await asyncio.sleep(1)  # an LLM call, a scrape, a heavy computation...
    return {"doc": doc, "words": len(doc.split()), "tags": ("demo", "async")}


async def main() -> None:
    docs = ["the quick brown fox", "jumps over", "the lazy dog", "the quick brown fox"]
    async with spot:
        started = time.perf_counter()
        results = await asyncio.gather(*(summarize(d) for d in docs))
        elapsed = time.perf_counter() - started  # the calls only, not what follows
        history = await spot.history(limit=5)
    for result in results:
        print(result)
    print(f"{len(results)} results in {elapsed:.2f}s; stored entries:")
    print(history[["func_name", "args", "result_type", "size_bytes"]].to_string(index=False))


if __name__ == "__main__":
    asyncio.run(main())
