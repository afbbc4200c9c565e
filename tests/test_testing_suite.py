"""The conformance suite itself: its public names, and the base class's defaults pass it.

A backend that implements only the four required methods (and, for leases,
``acquire_lease`` and ``release_lease``) inherits every other method from
:class:`~beautyspot_async.db.TaskDB`. Those defaults are part of the
specification, so they must pass the suites as they stand. The suites'
power to catch a broken backend is tested next to the backends they break
(``test_db_memory.py``, ``test_storage_local.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import anyio.lowlevel
import pandas as pd
import pytest

import beautyspot_async.testing as testing
from beautyspot_async.db import TaskDB, TaskRecord, records_to_frame
from beautyspot_async.testing import FakeClock, check_taskdb, check_taskdb_pair

pytestmark = pytest.mark.anyio


class _RequiredOnly(TaskDB):
    """The four required methods over a dict; everything else is the base class's."""

    loop_bound = False
    backend_name = "required-only"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._rows: dict[str, TaskRecord] = {}

    async def init_schema(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def get(self, cache_key: str) -> TaskRecord | None:
        await anyio.lowlevel.checkpoint()
        return self._rows.get(cache_key)

    async def save(
        self,
        *,
        cache_key: str,
        func_name: str,
        input_id: str,
        version: str | None,
        result_type: str,
        content_type: str | None,
        result_value: str | None = None,
        result_data: bytes | None = None,
        expires_at: float | None = None,
        size_bytes: int | None = None,
    ) -> None:
        await anyio.lowlevel.checkpoint()
        now = self._clock()
        old = self._rows.get(cache_key)
        self._rows[cache_key] = TaskRecord(
            cache_key,
            func_name,
            input_id,
            version,
            result_type,
            content_type,
            result_value,
            result_data,
            expires_at,
            size_bytes if size_bytes is not None else len(result_data or b""),
            created_at=old.created_at if old else now,
            updated_at=now,
        )

    async def get_history(self, limit: int = 1000) -> pd.DataFrame:
        await anyio.lowlevel.checkpoint()
        newest = sorted(self._rows.values(), key=lambda r: r.updated_at, reverse=True)
        return records_to_frame(replace(r, result_data=None) for r in newest[: max(limit, 0)])


class _RequiredAndLeases(_RequiredOnly):
    """Adds the two required lease methods; the batch lease methods stay the base class's."""

    supports_leases = True
    backend_name = "required-and-leases"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self._leases: dict[str, tuple[str, float]] = {}

    async def acquire_lease(self, cache_key: str, owner: str, ttl: float) -> bool:
        await anyio.lowlevel.checkpoint()
        held = self._leases.get(cache_key)
        if held is not None and held[0] != owner and held[1] > self._clock():
            return False
        self._leases[cache_key] = (owner, self._clock() + ttl)
        return True

    async def release_lease(self, cache_key: str, owner: str) -> None:
        await anyio.lowlevel.checkpoint()
        if self._leases.get(cache_key, ("", 0.0))[0] == owner:
            del self._leases[cache_key]


class TestBaseDefaultsConform:
    """The defaults on TaskDB pass both suites, with and without leases."""

    @pytest.mark.parametrize("cls", [_RequiredOnly, _RequiredAndLeases])
    async def test_check_taskdb(self, cls: type[_RequiredOnly]) -> None:
        clock = FakeClock()
        await check_taskdb(lambda: cls(clock=clock), clock=clock)

    @pytest.mark.parametrize("cls", [_RequiredOnly, _RequiredAndLeases])
    async def test_check_taskdb_pair(self, cls: type[_RequiredOnly]) -> None:
        clock = FakeClock()
        db = cls(clock=clock)
        await check_taskdb_pair(lambda: (db, db), clock=clock)


class TestPublicNames:
    """beautyspot_async.testing exports its suites under their public path."""

    def test_all_is_sorted_and_public(self) -> None:
        assert testing.__all__ == sorted(testing.__all__)
        assert set(testing.__all__) == {
            "FakeClock",
            "check_blob_storage",
            "check_taskdb",
            "check_taskdb_pair",
        }
        for name in testing.__all__:
            assert getattr(testing, name).__module__ == "beautyspot_async.testing", name
