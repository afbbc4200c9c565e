"""Task databases: where the metadata (and small payloads) of cached calls live.

``TaskDB`` is the protocol; ``MemoryTaskDB`` and ``SQLiteTaskDB`` ship with
the core install. ``PostgresTaskDB`` (extra ``[postgres]``) and
``RedisTaskDB`` (extra ``[redis]``) are imported on first access so that
``import beautyspot_async`` never imports their drivers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._failure import FailureRecord
from .._record import BLOB, HISTORY_COLUMNS, INLINE, TaskRecord
from ._base import EvictionCandidate, LeaseHolder, TaskDB
from ._common import WaitStatistics
from ._history import records_to_frame
from ._memory import MemoryTaskDB
from ._sqlite import SQLiteTaskDB

if TYPE_CHECKING:
    from ._postgres import PostgresTaskDB
    from ._redis import RedisTaskDB

__all__ = [
    "BLOB",
    "EvictionCandidate",
    "FailureRecord",
    "HISTORY_COLUMNS",
    "INLINE",
    "LeaseHolder",
    "MemoryTaskDB",
    "PostgresTaskDB",
    "RedisTaskDB",
    "SQLiteTaskDB",
    "TaskDB",
    "TaskRecord",
    "WaitStatistics",
    "records_to_frame",
]

for _cls in (
    EvictionCandidate,
    FailureRecord,
    LeaseHolder,
    TaskDB,
    MemoryTaskDB,
    SQLiteTaskDB,
    TaskRecord,
    WaitStatistics,
):
    _cls.__module__ = __name__
del _cls

_LAZY = {"PostgresTaskDB": "._postgres", "RedisTaskDB": "._redis"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
