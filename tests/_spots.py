"""Helpers to build Spots on each embedded backend for the behaviour tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import beautyspot_async as bs
from beautyspot_async.db import MemoryTaskDB, SQLiteTaskDB
from beautyspot_async.storage import LocalStorage

EMBEDDED = ["memory", "sqlite"]


def make_spot(kind: str, tmp_path: Path, name: str = "t", **options: Any) -> bs.Spot:
    """A Spot on ``kind`` ("memory" or "sqlite") with blobs under ``tmp_path``."""
    if kind == "memory":
        db: bs.TaskDB = MemoryTaskDB()
    elif kind == "sqlite":
        db = SQLiteTaskDB(tmp_path / f"{name}.db")
    else:  # pragma: no cover
        raise AssertionError(kind)
    return bs.Spot(name, db=db, storage=LocalStorage(tmp_path / f"{name}_blobs"), **options)


@asynccontextmanager
async def open_spot(
    kind: str, tmp_path: Path, name: str = "t", **options: Any
) -> AsyncIterator[bs.Spot]:
    spot = make_spot(kind, tmp_path, name, **options)
    try:
        yield spot
    finally:
        await spot.aclose()
