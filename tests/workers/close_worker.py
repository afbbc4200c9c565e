"""A child process for the close-durability tests: write-behind calls, then exit.

Run as ``python close_worker.py <db path> <blob dir> <mode> <n>``. It makes
``n`` write-behind calls (``default_wait=False``) of ``close.fn`` on a Spot
whose task database sleeps before every write (:class:`SlowSQLiteTaskDB`),
and then simply ends -- no ``aclose()``, no ``with``: the interpreter's exit
must make every returned result durable. ``mode`` is ``async`` (the calls
run in ``asyncio.run``) or ``sync`` (a sync marked function). It prints
``returned <n>`` once every call has returned.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import anyio

import beautyspot_async as bs
from beautyspot_async.db import SQLiteTaskDB
from beautyspot_async.storage import LocalStorage

#: How long every write of the slow backend takes.
WRITE_DELAY = 0.1
BLOB_BYTES = 200 * 1024


def value_of(x: int) -> Any:
    """What ``close.fn(x)`` returns: a blob-sized bytes for even ``x``, a small dict else."""
    if x % 2 == 0:
        return x.to_bytes(4, "big") * (BLOB_BYTES // 4)
    return {"x": x, "square": x * x}


class SlowSQLiteTaskDB(SQLiteTaskDB):
    """A SQLite task database whose every write first sleeps ``WRITE_DELAY`` s."""

    async def save(self, **fields: Any) -> None:  # type: ignore[override]
        await anyio.sleep(WRITE_DELAY)
        await super().save(**fields)

    async def save_many(self, records: Iterable[Any]) -> None:
        await anyio.sleep(WRITE_DELAY)
        await super().save_many(records)

    async def save_and_release(
        self, records: Sequence[Any], leases: Mapping[str, Sequence[str]]
    ) -> None:
        await anyio.sleep(WRITE_DELAY)
        await super().save_and_release(records, leases)


def make_spot(db: str, blobs: str) -> bs.Spot:
    return bs.Spot(
        "close", db=SlowSQLiteTaskDB(db), storage=LocalStorage(blobs), default_wait=False
    )


if __name__ == "__main__":
    db_path, blob_dir, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    spot = make_spot(db_path, blob_dir)
    if mode == "async":

        @spot.mark(name="close.fn")
        async def fn(x: int) -> Any:
            return value_of(x)

        async def main() -> None:
            for x in range(count):
                assert await fn(x) == value_of(x)

        asyncio.run(main())
    else:

        @spot.mark(name="close.fn")
        def fn_sync(x: int) -> Any:
            return value_of(x)

        for x in range(count):
            assert fn_sync(x) == value_of(x)
    sys.stdout.write(f"returned {count}\n")
    sys.stdout.flush()
