"""A worker process for the multi-process tests: runs marked calls on a shared backend.

Run as ``python memo_worker.py '<json config>'``. The config (see
:class:`WorkerConfig`) names the task database, the blob storage, an optional
shared Redis limiter, the keys to compute and this worker's journal file.

Protocol on stdin/stdout, one line each, so the parent can line the workers
up without sleeping:

* with ``barrier``: the worker prints ``ready`` once its Spot is open and
  waits for a ``go`` line before its first call;
* the marked function appends ``<key> <time.time()> <pid>`` to the journal
  for every execution (after the limiter admitted it), so the parent can
  count executions across processes; a crash loses nothing already written;
* for the key ``hang_on`` it prints ``started <key> <t_before_call>`` and
  then never returns (the parent kills the process), or returns after
  ``hold_for`` seconds when that is set (a slow but live holder);
* with ``verify``: after its own calls it prints ``done``, waits for a
  ``verify`` line (every worker has finished), then re-reads every key
  through a fresh Spot whose function must not run;
* the last line is a JSON report: ``results``, ``reread``, ``elapsed``,
  ``finished_at`` (``time.time()``) and the Spot's ``statistics``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

import beautyspot_async as bs

#: The identity every worker marks its function with, so they share keys.
TASK_NAME = "multiprocess.work"
TASK_VERSION = "1"


def expected_value(key: int) -> dict[str, Any]:
    """What the marked function returns for ``key``.

    Even keys carry padding so their payload is above the tests' blob
    threshold (stored as blobs); odd keys stay small (stored inline).
    """
    return {"key": key, "square": key * key, "pad": "x" * (300 if key % 2 == 0 else 0)}


@dataclass
class WorkerConfig:
    """Everything one worker process needs; JSON on the command line."""

    db: dict[str, Any]
    storage: dict[str, Any]
    journal: str
    keys: list[int]
    loop: str = "asyncio"
    blob_threshold: int = 64
    lease_ttl: float = 60.0
    limiter: dict[str, Any] | None = None
    concurrency: int = 16
    barrier: bool = False
    verify: bool = False
    hang_on: int | None = None
    hold_for: float | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


def make_db(spec: dict[str, Any]) -> bs.TaskDB:
    """Build the task database a config names (a fresh instance each time)."""
    kind = spec["kind"]
    if kind == "sqlite":
        from beautyspot_async.db import SQLiteTaskDB

        return SQLiteTaskDB(spec["path"])
    if kind == "postgres":
        from beautyspot_async.db import PostgresTaskDB

        return PostgresTaskDB(spec["dsn"], schema=spec["schema"], max_size=4)
    if kind == "redis":
        from beautyspot_async.db import RedisTaskDB

        return RedisTaskDB(spec["url"], prefix=spec["prefix"])
    raise ValueError(f"unknown db kind {kind!r}")


def make_storage(spec: dict[str, Any]) -> bs.BlobStorageBase | str:
    """Build the blob storage a config names: a local directory or an ``s3://`` URL."""
    if spec["kind"] == "local":
        from beautyspot_async.storage import LocalStorage

        return LocalStorage(spec["path"])
    # s3://bucket/prefix: endpoint and credentials come from the AWS_* environment.
    return str(spec["url"])


def make_spot(config: WorkerConfig, limiter: bs.Limiter | None) -> bs.Spot:
    return bs.Spot(
        "multiprocess",
        db=make_db(config.db),
        storage=make_storage(config.storage),
        blob_threshold=config.blob_threshold,
        lease_ttl=config.lease_ttl,
        limiter=limiter,
        **config.options,
    )


class Journal:
    """Append-only execution log; one ``write`` per line, so lines never tear."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(self, key: int) -> None:
        os.write(self._fd, f"{key} {time.time():.6f} {os.getpid()}\n".encode())

    def close(self) -> None:
        os.close(self._fd)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def expect(word: str) -> None:
    """Wait for the parent to send ``word`` on stdin (in a thread: stdin blocks)."""
    line = await anyio.to_thread.run_sync(sys.stdin.readline)
    if line.strip() != word:
        raise SystemExit(f"expected {word!r} from the parent, got {line!r}")


async def main(config: WorkerConfig) -> dict[str, Any]:
    limiter = None
    if config.limiter is not None:
        spec = config.limiter
        limiter = bs.Limiter(rpm=spec["rpm"], backend=spec["url"], key=spec["key"])
    spot = make_spot(config, limiter)
    journal = Journal(config.journal)

    async def work(key: int) -> dict[str, Any]:
        journal.record(key)
        if key == config.hang_on:
            say(f"started {key} {started_at:.6f}")
            if config.hold_for is None:
                await anyio.sleep_forever()
            else:
                await anyio.sleep(config.hold_for)
        # A short await lets other calls of this process interleave.
        await anyio.lowlevel.checkpoint()
        return expected_value(key)

    if limiter is not None:
        work = spot.limiter(cost=1)(work)
    marked = spot.mark(name=TASK_NAME, version=TASK_VERSION)(work)

    keys = list(config.keys)
    random.Random(config.seed).shuffle(keys)
    results: dict[str, Any] = {}
    started_at = time.time()
    async with spot:
        if config.barrier:
            say("ready")
            await expect("go")
        begin = time.perf_counter()
        limit = anyio.Semaphore(config.concurrency)

        async def one(key: int) -> None:
            async with limit:
                results[str(key)] = await marked(key)

        started_at = time.time()
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(one, key)
        elapsed = time.perf_counter() - begin
        finished_at = time.time()
        statistics = asdict(spot.statistics())

    reread: dict[str, Any] = {}
    if config.verify:
        say("done")
        await expect("verify")
        reread = await read_back(config, sorted(set(keys)))
    journal.close()
    if limiter is not None:
        await limiter.aclose()
    return {
        "results": results,
        "reread": reread,
        "elapsed": elapsed,
        "finished_at": finished_at,
        "statistics": statistics,
    }


async def read_back(config: WorkerConfig, keys: list[int]) -> dict[str, Any]:
    """Read every key through a fresh Spot (empty memory tier) that must not execute."""
    spot = make_spot(config, None)

    async def work(key: int) -> dict[str, Any]:
        raise AssertionError(f"key {key} was not stored: read-back executed it")

    marked = spot.mark(name=TASK_NAME, version=TASK_VERSION)(work)
    async with spot:
        return {str(key): await marked(key) for key in keys}


if __name__ == "__main__":
    worker_config = WorkerConfig(**json.loads(sys.argv[1]))
    report = anyio.run(main, worker_config, backend=worker_config.loop)
    say(json.dumps(report))
