"""The non-waiting checks: ``get_nowait``, ``get_many_nowait`` and the two writes.

These reads serve cache hits without an event-loop hop, from any thread;
``lookup_or_lease_nowait`` and ``save_and_release_nowait`` do a miss's
lease and durable write the same way. A backend may answer or decline
(``anyio.WouldBlock``, or a key left out), but an answer it gives must be
right, and it must never wait for one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

import anyio
import anyio.to_thread

from beautyspot_async._record import BLOB, TaskRecord
from beautyspot_async.db._base import TaskDB

from ._clock import FakeClock
from ._common import Check, get, new_key, record, save, unopened

__all__ = ["NOWAIT_CHECKS"]

#: What a declined ``get_nowait`` (one that raised WouldBlock) is recorded as.
_DECLINED = object()


def _get_nowait(db: TaskDB, cache_key: str) -> object:
    try:
        return db.get_nowait(cache_key)
    except anyio.WouldBlock:
        return _DECLINED


def _assert_sync(db: TaskDB) -> None:
    for name in (
        "get_nowait",
        "get_many_nowait",
        "lookup_or_lease_nowait",
        "save_and_release_nowait",
    ):
        method = getattr(type(db), name)
        assert not inspect.iscoroutinefunction(method), (
            f"{name} must be a plain method: it answers at once or declines, never awaits"
        )


async def _in_thread(fn: Callable[[], object], other_thread: bool) -> object:
    return await anyio.to_thread.run_sync(fn) if other_thread else fn()


async def _assert_nowait_answers(
    db: TaskDB, stored: dict[str, TaskRecord], missing: str, *, other_thread: bool
) -> None:
    where = " from another thread" if other_thread else ""
    for k, expected in stored.items():
        got = await _in_thread(partial(_get_nowait, db, k), other_thread)
        if got is _DECLINED:
            continue
        assert got is not None, f"get_nowait{where} reported stored key {k} as missing"
        assert got == expected, f"get_nowait{where} answered {got!r}, get() reads {expected!r}"
    got = await _in_thread(partial(_get_nowait, db, missing), other_thread)
    assert got is None or got is _DECLINED, f"get_nowait{where} of a missing key answered {got!r}"

    asked = [*stored, missing, *stored]
    try:
        many = await _in_thread(partial(db.get_many_nowait, asked), other_thread)
    except anyio.WouldBlock:
        raise AssertionError(
            "get_many_nowait must leave out the keys it cannot answer, not raise WouldBlock"
        ) from None
    assert isinstance(many, dict), f"get_many_nowait must return a dict, not {many!r}"
    assert set(many) <= set(asked), f"get_many_nowait answered keys never asked: {set(many)}"
    for k, value in many.items():
        if k == missing:
            assert value is None, f"get_many_nowait{where} answered {value!r} for a missing key"
        else:
            assert value == stored[k], (
                f"get_many_nowait{where} answered {value!r} for {k}, get() reads {stored[k]!r}"
            )
    assert await _in_thread(partial(db.get_many_nowait, []), other_thread) == {}


async def _check_nowait_reads(db: TaskDB, clock: FakeClock | None) -> None:
    """get_nowait and get_many_nowait answer exactly what get() reads, or decline.

    Both are plain (non-async) methods, callable from any thread, that never
    wait. ``get_nowait`` returns the stored record (equal to ``get()``'s),
    ``None`` for a key certainly not stored, or raises
    :class:`anyio.WouldBlock` when it cannot answer at once.
    ``get_many_nowait`` maps each key it can answer to its record or
    ``None``, leaves out the others, and never raises ``WouldBlock``. The
    base class's defaults (always decline) conform. After ``aclose`` the
    same holds.
    """
    _assert_sync(db)
    inline, blob, missing = new_key("nowait"), new_key("nowait-blob"), new_key("nowait-missing")
    await save(db, inline, result_data=b"\x00nowait\xff", expires_at=12.5, version="v3")
    await save(
        db,
        blob,
        result_type=BLOB,
        result_value=f"ab/cd/{blob}.bin",
        result_data=None,
        size_bytes=10**7,
    )
    stored = {k: await get(db, k) for k in (inline, blob)}
    for other_thread in (False, True):
        await _assert_nowait_answers(db, stored, missing, other_thread=other_thread)
    await db.aclose()
    await _assert_nowait_answers(db, stored, missing, other_thread=False)


@unopened
async def _check_nowait_before_open(db: TaskDB, clock: FakeClock | None) -> None:
    """Before init_schema, the non-waiting reads decline or answer; they do not fail.

    A Spot may try them before the database is opened (no file, no
    connection, no schema yet): ``get_nowait`` then raises
    :class:`anyio.WouldBlock` or returns ``None``, ``get_many_nowait``
    returns ``{}`` or maps keys to ``None``.
    """
    missing = new_key("unopened")
    got = _get_nowait(db, missing)
    assert got is None or got is _DECLINED, f"get_nowait before opening answered {got!r}"
    many = db.get_many_nowait([missing])
    assert many in ({}, {missing: None}), f"get_many_nowait before opening answered {many!r}"


async def _check_nowait_writes(db: TaskDB, clock: FakeClock | None) -> None:
    """lookup_or_lease_nowait and save_and_release_nowait act fully, or decline and change nothing.

    Both are plain methods that never wait. ``lookup_or_lease_nowait``
    answers what ``lookup_or_lease`` would: a stored key's record, ``True``
    for a key now leased to the caller, ``False`` for one another owner
    holds. ``save_and_release_nowait`` stores every record and gives up the
    leases, or -- raising :class:`anyio.WouldBlock` -- stores none of them.
    The base class's defaults (always decline) conform.
    """
    _assert_sync(db)
    stored, free = new_key("nowait-w-stored"), new_key("nowait-w-free")
    await save(db, stored, result_data=b"stored")
    try:
        found = db.lookup_or_lease_nowait([stored, free], "owner-a", 30.0)
    except anyio.WouldBlock:
        found = None
    if found is not None:
        assert set(found) == {stored, free}, f"lookup_or_lease_nowait answered {sorted(found)}"
        assert found[stored] == await get(db, stored), "a stored key must come back as its record"
        assert found[free] is True, "a free missing key must be leased to the caller"
        if db.supports_leases:
            again = db.lookup_or_lease_nowait([free], "owner-b", 30.0)
            assert again == {free: False}, f"a held lease was answered {again!r}"
    written = new_key("nowait-w-written")
    try:
        db.save_and_release_nowait(
            [record(written, result_data=b"now")], {"owner-a": [free]} if found else {}
        )
    except anyio.WouldBlock:
        assert await db.get(written) is None, "a declined save_and_release_nowait wrote a row"
        return
    assert (await get(db, written)).result_data == b"now"
    if found is not None and db.supports_leases:
        assert await db.acquire_lease(free, "owner-b", 30.0) is True, (
            "save_and_release_nowait kept a lease it was given to release"
        )


NOWAIT_CHECKS: tuple[Check, ...] = (
    _check_nowait_reads,
    _check_nowait_before_open,
    _check_nowait_writes,
)
