"""A child process for the crash-and-resume tests: one batch that ends abnormally.

Run as ``python crash_worker.py '<json config>'``. The config names the task
database (same spec as ``memo_worker.make_db``), a blob directory, the
journal file, the number of calls and the ``mode``:

* ``"hang"``: the first ``finish`` calls to start execute normally; every
  later one blocks forever inside the function, so the batch is still
  running (and has calls queued) when the parent kills or interrupts it;
* ``"raise"``: the first call to end its work once ``finish`` calls have
  returned raises :class:`Boom`, which propagates out of ``asyncio.gather``
  and out of ``asyncio.run`` (the process ends with a traceback);
* ``"run"``: every call executes normally (the rerun).

The Spot is built with the library's *default* ``lease_ttl`` on purpose.
``asyncio.gather`` runs every call at once; concurrency is limited inside
the function by a semaphore, so most calls are queued (holding their lease,
today) while a few execute.

The journal gets one line per event, each written with a single ``write``
so a killed process never leaves a torn line:

* ``gather <time>``: just before ``asyncio.gather``;
* ``start <arg> <time>``: the function started executing ``arg``
  (after the semaphore admitted it);
* ``done <arg> <time>``: the marked call returned ``arg``'s (correct)
  result to its caller -- with ``default_wait=True`` it is durable;
* ``end <time>``: the whole gather returned.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

import beautyspot_async as bs
from beautyspot_async.storage import LocalStorage

TASK_NAME = "crash.work"
#: Time each call spends executing.
WORK_SECONDS = 0.05
#: Calls executing at once.
CONCURRENCY = 20


class Boom(RuntimeError):
    """Raised by one call in ``raise`` mode."""


def expected_value(arg: int) -> dict[str, int]:
    return {"arg": arg, "square": arg * arg}


def make_db(spec: dict[str, Any]) -> bs.TaskDB:
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


class Journal:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, *words: object) -> None:
        line = " ".join(map(str, words)) + f" {time.time():.6f}\n"
        os.write(self._fd, line.encode())


async def main(config: dict[str, Any]) -> None:
    mode = config["mode"]
    finish = int(config.get("finish", 0))
    journal = Journal(config["journal"])
    # No lease_ttl: the default is part of what is tested.
    spot = bs.Spot("crash", db=make_db(config["db"]), storage=LocalStorage(config["blobs"]))
    limit = asyncio.Semaphore(CONCURRENCY)
    started = 0
    returned = 0
    raised = False

    @spot.mark(name=TASK_NAME, version="1")
    async def work(arg: int) -> dict[str, int]:
        nonlocal started, raised
        async with limit:
            started += 1
            journal.write("start", arg)
            if mode == "hang" and started > finish:
                await asyncio.sleep(3600)
            await asyncio.sleep(WORK_SECONDS)
            if mode == "raise" and returned >= finish and not raised:
                raised = True
                raise Boom(f"call {arg} failed")
            return expected_value(arg)

    async def one(arg: int) -> None:
        nonlocal returned
        value = await work(arg)
        if value != expected_value(arg):
            raise AssertionError(f"wrong result for {arg}: {value!r}")
        journal.write("done", arg)
        returned += 1

    journal.write("gather")
    await asyncio.gather(*(one(arg) for arg in range(config["calls"])))
    journal.write("end")
    await spot.aclose()


if __name__ == "__main__":
    # Behave like a program started from a terminal, whatever the parent
    # ignores: Ctrl+C (SIGINT) raises KeyboardInterrupt in asyncio.run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asyncio.run(main(json.loads(sys.argv[1])))
    sys.stdout.write("ok\n")
