"""Quick Start of the original beautyspot README, running on beautyspot-async.

Run it twice: the second run executes nothing, every answer comes from
./my_experiment.db. The first part is the seed's sync example as written (the
deprecated ``bs.Project`` / ``.task`` names still work); the second is the
same idea the async way, with ``asyncio.gather``.
"""

import asyncio
import time
import warnings

import beautyspot_async as bs

warnings.simplefilter("ignore", DeprecationWarning)  # bs.Project is the old name of bs.Spot

# Project definition (creates "./my_experiment.db" by default)
project = bs.Project("my_experiment")


@project.task
def heavy_process(text):
    # Something slow or billed per call
    time.sleep(2)
    return f"Processed: {text}"


# Batch processing
inputs = ["A", "B", "C", "A"]

for i in inputs:
    # 1. "A", "B", "C" run the first time
    # 2. the last "A" comes straight from the database (0 seconds)
    # 3. after an interruption, only unfinished inputs run next time
    print(heavy_process(i))


# -- the same, async -----------------------------------------------------------------

spot = bs.Spot("my_experiment")


@spot.mark(version="v1")
async def summarize(doc: str) -> dict[str, object]:
    await asyncio.sleep(1)  # an LLM call, a scrape...
    return {"doc": doc, "words": len(doc.split()), "tags": ("demo", "async")}


async def main() -> None:
    docs = ["the quick brown fox", "jumps over", "the lazy dog", "the quick brown fox"]
    started = time.perf_counter()
    async with spot:
        results = await asyncio.gather(*(summarize(d) for d in docs))
        history = await spot.history(limit=5)
    elapsed = time.perf_counter() - started
    for result in results:
        print(result)
    print(f"{len(results)} results in {elapsed:.2f}s; stored entries:")
    print(history[["func_name", "result_type", "size_bytes", "updated_at"]].to_string(index=False))


asyncio.run(main())
