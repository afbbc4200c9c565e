"""The record checks of :func:`check_taskdb` and the suite's runner."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import anyio

from beautyspot_async._record import BLOB, HISTORY_COLUMNS, TaskRecord
from beautyspot_async.db._base import TaskDB

from ._budgets import BUDGET_CHECKS
from ._clock import FakeClock
from ._common import (
    UNOPENED,
    Check,
    assert_matches,
    get,
    naming,
    new_key,
    opened,
    overrides,
    record,
    save,
    save_fields,
    unopened,
)
from ._failures import FAILURE_CHECKS
from ._leases import LEASE_CHECKS
from ._nowait import NOWAIT_CHECKS

__all__ = ["check_taskdb"]

_TIMESTAMPS = ("created_at", "updated_at", "expires_at")


async def _check_init_schema_idempotent(db: TaskDB, clock: FakeClock | None) -> None:
    """init_schema is "create if missing": running it again keeps every row."""
    key = new_key("init")
    fields = await save(db, key)
    await db.init_schema()
    await db.init_schema()
    assert_matches(await get(db, key), fields)


async def _check_get_missing(db: TaskDB, clock: FakeClock | None) -> None:
    """get() of a key never saved returns None and does not raise."""
    assert await db.get(new_key("missing")) is None, "get() of a missing key must return None"


async def _check_round_trip(db: TaskDB, clock: FakeClock | None) -> None:
    """save() then get() returns every field as saved, of the same type.

    Payloads with NUL bytes, 1 MiB payloads, empty payloads, blob rows
    (``result_value`` is the location, no data) and non-ASCII text all
    survive. ``size_bytes`` defaults to ``len(result_data)``; an explicit
    one is stored as given.
    """
    nul = new_key("nul")
    fields = await save(db, nul, result_data=b"\x00\x01\x00\xff" * 7 + b"\x00")
    record = await get(db, nul)
    assert_matches(record, fields)
    assert record.size_bytes == 29, (
        f"size_bytes must default to len(result_data), got {record.size_bytes}"
    )

    big = new_key("large")
    payload = os.urandom(1 << 20)
    fields = await save(db, big, result_data=payload, version=None, content_type=None)
    assert_matches(await get(db, big), fields)

    blob = new_key("blob")
    fields = await save(
        db,
        blob,
        result_type=BLOB,
        result_value="ab/cd/" + blob + ".bin",
        result_data=None,
        size_bytes=5_000_000,
    )
    record = await get(db, blob)
    assert_matches(record, fields)
    assert record.size_bytes == 5_000_000, "an explicit size_bytes must be stored as given"

    empty = new_key("empty")
    fields = await save(db, empty, result_data=b"", result_value="text \u00e9\u2603")
    record = await get(db, empty)
    assert_matches(record, fields)
    assert record.size_bytes == 0


async def _check_timestamps(db: TaskDB, clock: FakeClock | None) -> None:
    """expires_at is stored exactly; the backend stamps created_at <= updated_at.

    With a clock, ``created_at`` is that clock's time.
    """
    key = new_key("ts")
    expiry = 1_234_567_890.123456
    await save(db, key, expires_at=expiry)
    record = await get(db, key)
    assert record.expires_at == expiry, (
        f"expires_at must be stored exactly: saved {expiry!r}, read {record.expires_at!r}"
    )
    assert record.created_at > 0, f"the backend must stamp created_at, got {record}"
    assert record.updated_at >= record.created_at, f"updated_at before created_at: {record}"

    if clock is not None:
        assert record.created_at == clock(), (
            f"created_at must come from the injected clock ({clock()}), got {record.created_at}"
        )


async def _check_upsert(db: TaskDB, clock: FakeClock | None) -> None:
    """Saving a key again replaces the row, keeps created_at and moves updated_at.

    One row remains (checked through ``iter_records`` when overridden).
    """
    key = new_key("upsert")
    await save(db, key, result_data=b"first", version="v1")
    first = await get(db, key)
    if clock is not None:
        clock.advance(10.5)
    second_fields = await save(db, key, result_data=b"second", version="v2", expires_at=99.5)
    second = await get(db, key)
    assert_matches(second, second_fields)
    assert second.created_at == first.created_at, (
        f"an upsert must keep created_at ({first.created_at}), got {second.created_at}"
    )
    assert second.updated_at >= first.updated_at, "an upsert must not move updated_at back"
    if clock is not None:
        assert second.updated_at == first.updated_at + 10.5, (
            f"an upsert must stamp updated_at with the clock ({clock()}), got {second.updated_at}"
        )
    if overrides(db, "iter_records"):
        rows = [r async for r in db.iter_records() if r.cache_key == key]
        assert len(rows) == 1, f"an upsert must leave one row, found {len(rows)}"


async def _check_get_many(db: TaskDB, clock: FakeClock | None) -> None:
    """get_many returns exactly the stored keys among those asked, however many."""
    assert await db.get_many([]) == {}, "get_many([]) must return {}"
    present = [new_key(f"many{i}") for i in range(1100)]
    absent = [new_key("absent") for _ in range(3)]
    await db.save_many(
        TaskRecord(**save_fields(k, result_data=k.encode(), size_bytes=len(k))) for k in present
    )
    found = await db.get_many(present[:2] + absent)
    assert set(found) == set(present[:2]), f"get_many returned keys {sorted(found)}"
    everything = await db.get_many(absent + present)
    assert set(everything) == set(present), (
        f"get_many over {len(present)} keys found {len(everything)}"
    )
    for key in present[::97]:
        assert everything[key].result_data == key.encode(), f"wrong payload for {key}"


async def _check_save_many(db: TaskDB, clock: FakeClock | None) -> None:
    """save_many stores a batch and stamps its timestamps itself, ignoring the records'."""
    keys = [new_key(f"batch{i}") for i in range(5)]
    await db.save_many([])
    records = [
        TaskRecord(
            **save_fields(
                k, result_data=bytes([i]) * (i + 1), size_bytes=i + 1, expires_at=i + 0.25
            ),
            created_at=-1.0,
            updated_at=-1.0,
        )
        for i, k in enumerate(keys)
    ]
    await db.save_many(records)
    for i, key in enumerate(keys):
        record = await get(db, key)
        assert record.result_data == bytes([i]) * (i + 1)
        assert record.size_bytes == i + 1
        assert record.expires_at == i + 0.25
        assert record.created_at > 0, "save_many must stamp timestamps itself, not copy them"
        if clock is not None:
            assert record.updated_at == clock()


async def _check_delete(db: TaskDB, clock: FakeClock | None) -> None:
    """delete (when overridden) returns True for a stored key, then False: idempotent."""
    if not overrides(db, "delete"):
        return
    key = new_key("delete")
    await save(db, key)
    assert await db.delete(key) is True, "delete() of a stored key must return True"
    assert await db.get(key) is None, "a deleted key must be gone"
    assert await db.delete(key) is False, "a second delete() must return False, not raise"


async def _check_delete_expired(db: TaskDB, clock: FakeClock | None) -> None:
    """delete_expired(now) removes rows with expires_at <= now and counts them.

    Rows that expire later or never stay. Without ``now`` it uses the
    current time (the backend's clock). Run when ``delete_expired`` or
    ``iter_records`` is overridden.
    """
    if not (overrides(db, "delete_expired") or overrides(db, "iter_records")):
        return
    past, future, never = new_key("past"), new_key("future"), new_key("never")
    await save(db, past, expires_at=1000.25)
    await save(db, future, expires_at=4_000_000_000.5)
    await save(db, never, expires_at=None)
    removed = await db.delete_expired(now=1000.25)
    assert removed >= 1, f"delete_expired(now) must count the rows it removed, got {removed}"
    assert await db.get(past) is None, "a row with expires_at <= now must be removed"
    assert await db.get(future) is not None, "a row expiring later must stay"
    assert await db.get(never) is not None, "a row without expiry must stay"

    soon = new_key("soon")
    if clock is not None:
        await save(db, soon, expires_at=clock() + 5)
        clock.advance(6)
    else:
        import time

        await save(db, soon, expires_at=time.time() - 1)
    assert await db.delete_expired() >= 1
    assert await db.get(soon) is None, "delete_expired() must default to the current time"


async def _check_iter_records(db: TaskDB, clock: FakeClock | None) -> None:
    """iter_records (when overridden) yields every row, payload included."""
    if not overrides(db, "iter_records"):
        return
    keys = {new_key(f"iter{i}"): os.urandom(i + 3) for i in range(3)}
    for key, payload in keys.items():
        await save(db, key, result_data=payload)
    seen = {r.cache_key: r for r in [r async for r in db.iter_records()] if r.cache_key in keys}
    assert set(seen) == set(keys), f"iter_records missed {set(keys) - set(seen)}"
    for key, payload in keys.items():
        assert seen[key].result_data == payload, "iter_records must include payloads"


async def _check_history(db: TaskDB, clock: FakeClock | None) -> None:
    """get_history is a DataFrame of HISTORY_COLUMNS, newest updated_at first.

    Timestamps are ``datetime64[ns, UTC]``, no expiry is ``NaT``, the
    payload is never a column, and ``limit`` bounds the rows.
    """
    import pandas as pd

    keys = [new_key(f"hist{i}") for i in range(3)]
    for i, key in enumerate(keys):
        if clock is not None:
            clock.advance(1.0)
        await save(db, key, result_data=b"x" * (i + 1), expires_at=None if i else 2e9 + 0.5)
    frame = await db.get_history(limit=1000)
    assert isinstance(frame, pd.DataFrame), f"get_history must return a DataFrame, not {frame!r}"
    assert tuple(frame.columns) == HISTORY_COLUMNS, f"history columns are {list(frame.columns)}"
    for name in _TIMESTAMPS:
        assert str(frame[name].dtype) == "datetime64[ns, UTC]", (
            f"history column {name} has dtype {frame[name].dtype}, want datetime64[ns, UTC]"
        )
    updated = list(frame["updated_at"])
    assert updated == sorted(updated, reverse=True), "history must be newest first"
    mine = frame[frame["cache_key"].isin(keys)]
    assert len(mine) == 3, f"history must list the 3 rows just written, found {len(mine)}"
    if clock is not None:
        assert list(mine["cache_key"]) == keys[::-1], "history must be newest first"
    rows = {str(r["cache_key"]): r for r in mine.to_dict("records")}
    assert rows[keys[0]]["expires_at"] == pd.Timestamp(2e9 + 0.5, unit="s", tz="UTC")
    assert rows[keys[1]]["expires_at"] is pd.NaT, "no expiry must show as NaT"
    assert rows[keys[2]]["size_bytes"] == 3
    assert "result_data" not in frame.columns

    two = await db.get_history(limit=2)
    assert len(two) == 2, f"get_history(limit=2) returned {len(two)} rows"


async def _check_history_empty_shape(db: TaskDB, clock: FakeClock | None) -> None:
    """An empty history has the same columns and dtypes as a full one."""
    frame = await db.get_history(limit=0)
    assert len(frame) == 0, "get_history(limit=0) must be empty"
    assert tuple(frame.columns) == HISTORY_COLUMNS
    for name in _TIMESTAMPS:
        assert str(frame[name].dtype) == "datetime64[ns, UTC]", (
            f"empty history column {name} has dtype {frame[name].dtype}"
        )


async def _check_aclose_reopen(db: TaskDB, clock: FakeClock | None) -> None:
    """aclose is idempotent and a closed database reopens on its next use."""
    key = new_key("reopen")
    fields = await save(db, key)
    await db.aclose()
    await db.aclose()
    assert_matches(await get(db, key), fields)
    await db.aclose()
    await db.init_schema()
    again = new_key("reopen2")
    await save(db, again)
    await get(db, again)


async def _check_concurrent_saves(db: TaskDB, clock: FakeClock | None) -> None:
    """Concurrent saves from many tasks through one instance are all kept."""
    keys = [new_key(f"conc{i}") for i in range(40)]

    async def write(key: str) -> None:
        await save(db, key, result_data=key.encode())

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(write, key)
    found = await db.get_many(keys)
    assert set(found) == set(keys), f"{len(keys) - len(found)} concurrent saves were lost"


@unopened
async def _check_schema_exists(db: TaskDB, clock: FakeClock | None) -> None:
    """schema_exists answers read-only, and True once init_schema has run.

    Before ``init_schema`` it may answer either way (the store may be shared,
    and the base class's default cannot tell and says ``True``), but it
    creates nothing: an answer of ``False`` stays ``False`` until
    ``init_schema`` runs.
    """
    before = await db.schema_exists()
    assert isinstance(before, bool), f"schema_exists must return a bool, not {before!r}"
    if before is False:
        assert await db.schema_exists() is False, "schema_exists must not create the schema"
    await db.init_schema()
    assert await db.schema_exists() is True, "schema_exists must be True after init_schema"


_META = {
    "args": {"prompt": '"Grüße, \\"quoted\\""', "api_key": "<redacted>"},
    "digests": {"prompt": "0123456789abcdef", "api_key": "fedcba9876543210"},
    "usage": {"input_tokens": 12.0, "output_tokens": 3.5},
}


async def _check_meta_round_trip(db: TaskDB, clock: FakeClock | None) -> None:
    """A record's ``meta`` comes back as saved, or not at all; a rewrite replaces it.

    Storing meta is optional (a backend that drops it loses only the
    description of its entries), but a backend that keeps it must return
    exactly the dict saved, from ``get_meta`` and in the history's ``meta``
    column, and a rewrite without meta must not keep the old one.
    """
    key = new_key("meta")
    await db.save_many([record(key, meta=_META)])
    assert_matches(await get(db, key), save_fields(key))
    found = await db.get_meta(key)
    assert found is None or dict(found) == _META, f"get_meta() returned {found!r}"
    frame = await db.get_history(1000)
    if "meta" in frame.columns and found is not None:
        rows = frame[frame["cache_key"] == key]
        assert len(rows) == 1, "the record is missing from get_history()"
        shown = rows.iloc[0]["meta"]
        assert shown == _META, f"get_history() shows meta {shown!r}"
    await db.save_many([record(key)])
    assert await db.get_meta(key) is None, "a rewrite without meta kept the old meta"


RECORD_CHECKS: tuple[Check, ...] = (
    _check_init_schema_idempotent,
    _check_schema_exists,
    _check_get_missing,
    _check_round_trip,
    _check_meta_round_trip,
    _check_timestamps,
    _check_upsert,
    _check_get_many,
    _check_save_many,
    _check_delete,
    _check_delete_expired,
    _check_iter_records,
    _check_history,
    _check_history_empty_shape,
    _check_aclose_reopen,
    _check_concurrent_saves,
)


async def check_taskdb(
    factory: Callable[[], TaskDB | Awaitable[TaskDB]],
    *,
    clock: FakeClock | None = None,
) -> None:
    """Run the :class:`~beautyspot_async.db.TaskDB` behaviour contract on one instance at a time.

    ``factory`` returns a fresh, unopened database (or an awaitable of one);
    it is called once per check, and the database is closed afterwards.
    Pass ``clock`` when the databases it makes stamp rows and expire leases
    with that :class:`FakeClock`: timestamps are then checked exactly and
    lease expiry is tested without waiting. Without it, the lease-expiry
    checks sleep about half a second in real time -- meant for backends
    whose lease clock is server-side.

    The checks are the specification: each one's docstring states the rule
    it enforces. They cover the records (save, get, upserts, batches,
    expiry, history, ``schema_exists``), the non-waiting reads and writes
    (``get_nowait``, ``get_many_nowait``, ``lookup_or_lease_nowait``,
    ``save_and_release_nowait``), and the lease methods (``acquire_lease``,
    ``release_lease``, ``release_leases``, ``renew_leases``,
    ``lease_holders``, ``take_over_leases``, ``lookup_or_lease``,
    ``save_and_release``, ``wait_for_result``) and the failure records
    (``save_failure``, ``get_failures``, ``delete_failures``) and the size-budget
    methods (``touch``, ``usage_totals``, ``eviction_candidates``). Every method a backend may
    override is exercised -- the base class's defaults pass too -- except
    that ``delete`` and ``iter_records`` are skipped when left to the base
    class (which raises ``NotImplementedError``), and lease exclusivity is
    asserted only when ``supports_leases`` is true. What holds between two
    instances of one store is :func:`check_taskdb_pair`'s part.

    Raises :class:`AssertionError` naming the first check that failed (an
    unexpected exception from the backend is chained to it as
    ``__cause__``).
    """
    checks = (*RECORD_CHECKS, *NOWAIT_CHECKS, *LEASE_CHECKS, *FAILURE_CHECKS, *BUDGET_CHECKS)
    for check in checks:
        async with opened(factory) as db:
            with naming("check_taskdb", check):
                if check not in UNOPENED:
                    await db.init_schema()
                await check(db, clock)
