"""Conformance suites and test helpers for backend authors.

(Over 500 lines: one public module holds both suites, so third parties import one name.)

Every backend shipped with beautyspot-async passes the same suites, and so can
yours. Call one from your own test, under any runner::

    from beautyspot_async.testing import FakeClock, check_taskdb

    async def test_my_db_conforms(tmp_path):
        clock = FakeClock()
        await check_taskdb(lambda: MyTaskDB(tmp_path / "x.db", clock=clock), clock=clock)

A suite raises :class:`AssertionError` naming the check that failed. Each
check runs against a fresh instance from ``factory`` (a callable returning the
backend or an awaitable of it) and closes it afterwards. Keys are random, so a
suite can run against a shared server database or bucket; it leaves its own
rows behind only when a check fails midway.

This module imports no test runner: it uses plain ``assert`` and works under
asyncio and trio alike (as far as the backend under test does).
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import anyio
import anyio.lowlevel

from beautyspot_async._record import BLOB, HISTORY_COLUMNS, INLINE, TaskRecord, as_record
from beautyspot_async.db._base import TaskDB
from beautyspot_async.exceptions import CacheCorruptedError, ConfigurationError
from beautyspot_async.storage._base import BlobStorageBase

__all__ = ["FakeClock", "check_blob_storage", "check_taskdb"]

_T = TypeVar("_T")
Factory: TypeAlias = Callable[[], _T | Awaitable[_T]]

_TIMESTAMPS = ("created_at", "updated_at", "expires_at")


class FakeClock:
    """A clock that moves only when told to.

    Calling it returns the current fake time in float seconds, so it can be
    passed wherever a ``clock=`` is accepted: as a wall clock (TTLs, expiry,
    ``created_at``) and as a monotonic clock (the rate limiter). It starts at
    ``start`` -- by default a plausible POSIX time, so code that treats it as
    wall-clock time sees a recent date.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds!r}))")
        self._now += seconds

    def set(self, now: float) -> None:
        """Jump to ``now``. Going backwards is allowed, for wall-clock tests."""
        self._now = float(now)

    async def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` at once, then yield to the event loop once.

        A stand-in for ``anyio.sleep`` in code under test that takes an
        injectable sleep: the sleeper returns immediately with the clock moved,
        so tests never wait in real time.
        """
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()


async def _make(factory: Factory[_T]) -> _T:
    made = factory()
    if inspect.isawaitable(made):
        return await made
    return made


def _key(tag: str) -> str:
    return f"conformance-{tag}-{uuid.uuid4().hex}"


# -- task databases --------------------------------------------------------------

_Check: TypeAlias = Callable[[TaskDB, "FakeClock | None"], Awaitable[None]]


def _fields(key: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "cache_key": key,
        "func_name": "tests.conformance.fn",
        "input_id": key[-16:],
        "version": "v1",
        "result_type": INLINE,
        "content_type": "application/msgpack",
        "result_value": None,
        "result_data": b"\x00payload\x00",
        "expires_at": None,
    }
    fields.update(overrides)
    return fields


async def _save(db: TaskDB, key: str, **overrides: Any) -> dict[str, Any]:
    fields = _fields(key, **overrides)
    await db.save(**fields)
    return fields


def _overrides(db: TaskDB, name: str) -> bool:
    return getattr(type(db), name) is not getattr(TaskDB, name)


async def _get(db: TaskDB, key: str) -> TaskRecord:
    record = as_record(await db.get(key), key, backend=db.backend_name)
    assert record is not None, f"get({key!r}) returned None right after save"
    return record


def _assert_matches(record: TaskRecord, fields: dict[str, Any]) -> None:
    for name, expected in fields.items():
        if name == "size_bytes" and expected is None:
            continue
        actual = getattr(record, name)
        assert actual == expected, f"{name}: saved {expected!r}, read back {actual!r}"
        assert type(actual) is type(expected), (
            f"{name}: saved a {type(expected).__name__}, read back a {type(actual).__name__}"
        )


async def _check_init_schema_idempotent(db: TaskDB, clock: FakeClock | None) -> None:
    key = _key("init")
    fields = await _save(db, key)
    await db.init_schema()
    await db.init_schema()
    _assert_matches(await _get(db, key), fields)


async def _check_get_missing(db: TaskDB, clock: FakeClock | None) -> None:
    assert await db.get(_key("missing")) is None, "get() of a missing key must return None"


async def _check_round_trip(db: TaskDB, clock: FakeClock | None) -> None:
    nul = _key("nul")
    fields = await _save(db, nul, result_data=b"\x00\x01\x00\xff" * 7 + b"\x00")
    record = await _get(db, nul)
    _assert_matches(record, fields)
    assert record.size_bytes == 29, (
        f"size_bytes must default to len(result_data), got {record.size_bytes}"
    )

    big = _key("large")
    payload = os.urandom(1 << 20)
    fields = await _save(db, big, result_data=payload, version=None, content_type=None)
    _assert_matches(await _get(db, big), fields)

    blob = _key("blob")
    fields = await _save(
        db,
        blob,
        result_type=BLOB,
        result_value="ab/cd/" + blob + ".bin",
        result_data=None,
        size_bytes=5_000_000,
    )
    record = await _get(db, blob)
    _assert_matches(record, fields)
    assert record.size_bytes == 5_000_000, "an explicit size_bytes must be stored as given"

    empty = _key("empty")
    fields = await _save(db, empty, result_data=b"", result_value="text \u00e9\u2603")
    record = await _get(db, empty)
    _assert_matches(record, fields)
    assert record.size_bytes == 0


async def _check_timestamps(db: TaskDB, clock: FakeClock | None) -> None:
    key = _key("ts")
    expiry = 1_234_567_890.123456
    await _save(db, key, expires_at=expiry)
    record = await _get(db, key)
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
    key = _key("upsert")
    await _save(db, key, result_data=b"first", version="v1")
    first = await _get(db, key)
    if clock is not None:
        clock.advance(10.5)
    second_fields = await _save(db, key, result_data=b"second", version="v2", expires_at=99.5)
    second = await _get(db, key)
    _assert_matches(second, second_fields)
    assert second.created_at == first.created_at, (
        f"an upsert must keep created_at ({first.created_at}), got {second.created_at}"
    )
    assert second.updated_at >= first.updated_at, "an upsert must not move updated_at back"
    if clock is not None:
        assert second.updated_at == first.updated_at + 10.5, (
            f"an upsert must stamp updated_at with the clock ({clock()}), got {second.updated_at}"
        )
    if _overrides(db, "iter_records"):
        rows = [r async for r in db.iter_records() if r.cache_key == key]
        assert len(rows) == 1, f"an upsert must leave one row, found {len(rows)}"


async def _check_get_many(db: TaskDB, clock: FakeClock | None) -> None:
    assert await db.get_many([]) == {}, "get_many([]) must return {}"
    present = [_key(f"many{i}") for i in range(1100)]
    absent = [_key("absent") for _ in range(3)]
    await db.save_many(
        TaskRecord(**_fields(k, result_data=k.encode(), size_bytes=len(k))) for k in present
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
    keys = [_key(f"batch{i}") for i in range(5)]
    await db.save_many([])
    records = [
        TaskRecord(
            **_fields(k, result_data=bytes([i]) * (i + 1), size_bytes=i + 1, expires_at=i + 0.25),
            created_at=-1.0,
            updated_at=-1.0,
        )
        for i, k in enumerate(keys)
    ]
    await db.save_many(records)
    for i, key in enumerate(keys):
        record = await _get(db, key)
        assert record.result_data == bytes([i]) * (i + 1)
        assert record.size_bytes == i + 1
        assert record.expires_at == i + 0.25
        assert record.created_at > 0, "save_many must stamp timestamps itself, not copy them"
        if clock is not None:
            assert record.updated_at == clock()


async def _check_delete(db: TaskDB, clock: FakeClock | None) -> None:
    if not _overrides(db, "delete"):
        return
    key = _key("delete")
    await _save(db, key)
    assert await db.delete(key) is True, "delete() of a stored key must return True"
    assert await db.get(key) is None, "a deleted key must be gone"
    assert await db.delete(key) is False, "a second delete() must return False, not raise"


async def _check_delete_expired(db: TaskDB, clock: FakeClock | None) -> None:
    if not (_overrides(db, "delete_expired") or _overrides(db, "iter_records")):
        return
    past, future, never = _key("past"), _key("future"), _key("never")
    await _save(db, past, expires_at=1000.25)
    await _save(db, future, expires_at=4_000_000_000.5)
    await _save(db, never, expires_at=None)
    removed = await db.delete_expired(now=1000.25)
    assert removed >= 1, f"delete_expired(now) must count the rows it removed, got {removed}"
    assert await db.get(past) is None, "a row with expires_at <= now must be removed"
    assert await db.get(future) is not None, "a row expiring later must stay"
    assert await db.get(never) is not None, "a row without expiry must stay"

    soon = _key("soon")
    if clock is not None:
        await _save(db, soon, expires_at=clock() + 5)
        clock.advance(6)
    else:
        import time

        await _save(db, soon, expires_at=time.time() - 1)
    assert await db.delete_expired() >= 1
    assert await db.get(soon) is None, "delete_expired() must default to the current time"


async def _check_iter_records(db: TaskDB, clock: FakeClock | None) -> None:
    if not _overrides(db, "iter_records"):
        return
    keys = {_key(f"iter{i}"): os.urandom(i + 3) for i in range(3)}
    for key, payload in keys.items():
        await _save(db, key, result_data=payload)
    seen = {r.cache_key: r for r in [r async for r in db.iter_records()] if r.cache_key in keys}
    assert set(seen) == set(keys), f"iter_records missed {set(keys) - set(seen)}"
    for key, payload in keys.items():
        assert seen[key].result_data == payload, "iter_records must include payloads"


async def _check_history(db: TaskDB, clock: FakeClock | None) -> None:
    import pandas as pd

    keys = [_key(f"hist{i}") for i in range(3)]
    for i, key in enumerate(keys):
        if clock is not None:
            clock.advance(1.0)
        await _save(db, key, result_data=b"x" * (i + 1), expires_at=None if i else 2e9 + 0.5)
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
    frame = await db.get_history(limit=0)
    assert len(frame) == 0, "get_history(limit=0) must be empty"
    assert tuple(frame.columns) == HISTORY_COLUMNS
    for name in _TIMESTAMPS:
        assert str(frame[name].dtype) == "datetime64[ns, UTC]", (
            f"empty history column {name} has dtype {frame[name].dtype}"
        )


async def _check_aclose_reopen(db: TaskDB, clock: FakeClock | None) -> None:
    key = _key("reopen")
    fields = await _save(db, key)
    await db.aclose()
    await db.aclose()
    _assert_matches(await _get(db, key), fields)
    await db.aclose()
    await db.init_schema()
    again = _key("reopen2")
    await _save(db, again)
    await _get(db, again)


async def _check_leases(db: TaskDB, clock: FakeClock | None) -> None:
    if not db.supports_leases:
        return
    key = _key("lease")
    ttl = 30.0 if clock is not None else 0.3
    assert await db.acquire_lease(key, "owner-a", ttl) is True, "a free lease must be granted"
    assert await db.acquire_lease(key, "owner-b", ttl) is False, "a held lease is exclusive"
    assert await db.acquire_lease(key, "owner-a", ttl) is True, "the holder is re-granted"
    await db.release_lease(key, "owner-b")
    assert await db.acquire_lease(key, "owner-b", ttl) is False, (
        "release_lease by a non-holder must not free the lease"
    )
    await db.release_lease(key, "owner-a")
    assert await db.acquire_lease(key, "owner-b", ttl) is True, "a released lease is free"

    # The lease just taken by owner-b must expire after ttl.
    if clock is not None:
        clock.advance(ttl - 1)
        assert await db.acquire_lease(key, "owner-c", ttl) is False, "expired too early"
        clock.advance(2)
    else:
        # Only for backends whose lease clock is server-side and cannot be faked.
        await anyio.sleep(ttl + 0.2)
    assert await db.acquire_lease(key, "owner-c", ttl) is True, (
        "an expired lease must go to the next owner"
    )
    await db.release_lease(key, "owner-c")
    with anyio.fail_after(10):
        await db.wait_for_result(key, timeout=0.01)


async def _check_lease_holders_and_take_over(db: TaskDB, clock: FakeClock | None) -> None:
    if not db.supports_leases:
        return
    key, free = _key("holder"), _key("free")
    ttl = 30.0
    assert await db.acquire_lease(key, "owner-a", ttl) is True
    holders = await db.lease_holders([key, free])
    if type(db).lease_holders is not TaskDB.lease_holders:
        assert set(holders) == {key}, "lease_holders reports exactly the held keys"
        assert holders[key].owner == "owner-a"
        assert 0 < holders[key].expires_in <= ttl + 1, "expires_in is the seconds left"
    if type(db).take_over_leases is not TaskDB.take_over_leases:
        taken = await db.take_over_leases({key: "owner-x", free: "owner-a"}, "owner-b", ttl)
        assert taken == [], "a lease is taken over only from the owner named as dead"
        assert await db.take_over_leases({key: "owner-a"}, "owner-b", ttl) == [key]
        assert await db.acquire_lease(key, "owner-a", ttl) is False, "the dead owner lost it"
        assert await db.acquire_lease(key, "owner-b", ttl) is True, "the new owner holds it"
        owner = "owner-b"
    else:
        owner = "owner-a"
    await db.renew_leases([key, free], owner, ttl)
    if type(db).renew_leases is not TaskDB.renew_leases:
        assert await db.acquire_lease(free, "owner-c", ttl) is True, "renewing takes no lease"
    else:  # the default renews through acquire_lease, which may take a free one
        await db.release_lease(free, owner)
        assert await db.acquire_lease(free, "owner-c", ttl) is True
    if clock is not None:
        clock.advance(ttl - 1)
        await db.renew_leases([key], owner, ttl)
        clock.advance(2)
        assert await db.acquire_lease(key, "owner-d", ttl) is False, "renewal extends a lease"
    await db.release_leases([key], owner)
    await db.release_leases([free], "owner-c")
    assert await db.acquire_lease(key, "owner-d", ttl) is True
    await db.release_lease(key, "owner-d")


async def _check_concurrent_saves(db: TaskDB, clock: FakeClock | None) -> None:
    keys = [_key(f"conc{i}") for i in range(40)]

    async def write(key: str) -> None:
        await _save(db, key, result_data=key.encode())

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(write, key)
    found = await db.get_many(keys)
    assert set(found) == set(keys), f"{len(keys) - len(found)} concurrent saves were lost"


_TASKDB_CHECKS: tuple[_Check, ...] = (
    _check_init_schema_idempotent,
    _check_get_missing,
    _check_round_trip,
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
    _check_leases,
    _check_lease_holders_and_take_over,
    _check_concurrent_saves,
)


@asynccontextmanager
async def _opened(factory: Factory[_T]) -> AsyncIterator[_T]:
    backend = await _make(factory)
    try:
        yield backend
    finally:
        with anyio.CancelScope(shield=True):
            await backend.aclose()  # type: ignore[attr-defined]


async def check_taskdb(
    factory: Callable[[], TaskDB | Awaitable[TaskDB]],
    *,
    clock: FakeClock | None = None,
) -> None:
    """Run the :class:`~beautyspot_async.db.TaskDB` behaviour contract.

    ``factory`` returns a fresh, unopened database (or an awaitable of one);
    it is called once per check. Pass ``clock`` when the databases it makes
    stamp rows and expire leases with that :class:`FakeClock`: timestamps are
    then checked exactly and lease expiry is tested without waiting. Without
    it, the lease-expiry check sleeps about half a second in real time --
    meant for backends whose lease clock is server-side.

    Optional methods a backend leaves to the base class (``delete``,
    ``iter_records``) are not exercised; leases only when
    ``supports_leases`` is true. Raises :class:`AssertionError` naming the
    first check that failed (an unexpected exception from the backend is
    chained to it as ``__cause__``).
    """
    for check in _TASKDB_CHECKS:
        name = check.__name__.removeprefix("_check_")
        async with _opened(factory) as db:
            await db.init_schema()
            try:
                await check(db, clock)
            except AssertionError as exc:
                raise AssertionError(f"check_taskdb[{name}] failed: {exc}") from exc
            except Exception as exc:
                raise AssertionError(f"check_taskdb[{name}] raised {exc!r}") from exc


# -- blob storages ---------------------------------------------------------------

_BlobCheck: TypeAlias = Callable[[BlobStorageBase], Awaitable[None]]


def _blob_key() -> str:
    return uuid.uuid4().hex


async def _assert_corrupted(storage: BlobStorageBase, location: str, why: str) -> None:
    try:
        await storage.load(location)
    except CacheCorruptedError:
        return
    raise AssertionError(f"load() of {why} must raise CacheCorruptedError")


async def _check_blob_round_trip(storage: BlobStorageBase) -> None:
    binary = bytes(range(256)) * 3 + b"\x00\r\n\x00"
    for label, data in (
        ("empty", b""),
        ("one byte", b"\x00"),
        ("binary", binary),
        ("5 MiB", os.urandom(5 << 20)),
    ):
        location = await storage.save(_blob_key(), data)
        assert isinstance(location, str), f"save() must return a str location, not {location!r}"
        loaded = await storage.load(location)
        assert type(loaded) is bytes, f"load() must return bytes, not {type(loaded).__name__}"
        assert loaded == data, f"{label} blob did not round-trip ({len(loaded)} of {len(data)})"
        await storage.delete(location)


async def _check_blob_overwrite(storage: BlobStorageBase) -> None:
    key = _blob_key()
    first = await storage.save(key, b"first version")
    second = await storage.save(key, b"second")
    assert await storage.load(second) == b"second", "saving a key again must replace the blob"
    if first == second:
        assert await storage.load(first) == b"second"
    await storage.delete(second)


async def _check_blob_delete(storage: BlobStorageBase) -> None:
    location = await storage.save(_blob_key(), b"doomed")
    await storage.delete(location)
    await storage.delete(location)
    await _assert_corrupted(storage, location, "a deleted blob")


async def _check_blob_list(storage: BlobStorageBase) -> None:
    kept = {await storage.save(_blob_key(), bytes([i])) for i in range(3)}
    gone = await storage.save(_blob_key(), b"gone")
    await storage.delete(gone)
    listed = {loc async for loc in storage.list_locations()}
    assert kept <= listed, f"list_locations missed {kept - listed}"
    assert gone not in listed, "list_locations must not list a deleted blob"
    for location in kept:
        await storage.delete(location)


async def _check_blob_hostile(storage: BlobStorageBase) -> None:
    for key in ("../x", "/abs", "", "a/../../x", "..", "a/b"):
        try:
            await storage.save(key, b"evil")
        except ConfigurationError:
            continue
        raise AssertionError(f"save() with key {key!r} must raise ConfigurationError")
    for location in ("../outside.bin", "ab/../../../outside.bin"):
        for action in (storage.load, storage.delete):
            try:
                await action(location)
            except ConfigurationError:
                continue
            raise AssertionError(f"{action.__name__}({location!r}) must raise ConfigurationError")
    listed = [loc async for loc in storage.list_locations()]
    assert not any(".." in loc.split("/") for loc in listed), (
        f"a hostile key was written: {[loc for loc in listed if '..' in loc]}"
    )


_BLOB_CHECKS: tuple[_BlobCheck, ...] = (
    _check_blob_round_trip,
    _check_blob_overwrite,
    _check_blob_delete,
    _check_blob_list,
    _check_blob_hostile,
)


async def check_blob_storage(
    factory: Callable[[], BlobStorageBase | Awaitable[BlobStorageBase]],
) -> None:
    """Run the :class:`~beautyspot_async.storage.BlobStorageBase` contract.

    ``factory`` returns a fresh storage (or an awaitable of one); it is called
    once per check and the storage is closed afterwards. Keys are random hex
    strings like the library's own. Raises :class:`AssertionError` naming the
    first check that failed (an unexpected exception from the storage is
    chained to it as ``__cause__``).
    """
    for check in _BLOB_CHECKS:
        name = check.__name__.removeprefix("_check_blob_")
        async with _opened(factory) as storage:
            try:
                await check(storage)
            except AssertionError as exc:
                raise AssertionError(f"check_blob_storage[{name}] failed: {exc}") from exc
            except Exception as exc:
                raise AssertionError(f"check_blob_storage[{name}] raised {exc!r}") from exc
