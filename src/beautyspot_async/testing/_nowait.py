"""The non-waiting read checks: ``get_nowait`` and ``get_many_nowait``.

These reads serve cache hits without an event-loop hop, from any thread. A
backend may answer or decline (``anyio.WouldBlock``, or a key left out), but
an answer it gives must be right, and it must never wait for one.
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
from ._common import Check, get, new_key, save, unopened

__all__ = ["NOWAIT_CHECKS"]

#: What a declined ``get_nowait`` (one that raised WouldBlock) is recorded as.
_DECLINED = object()


def _get_nowait(db: TaskDB, cache_key: str) -> object:
    try:
        return db.get_nowait(cache_key)
    except anyio.WouldBlock:
        return _DECLINED


def _assert_sync(db: TaskDB) -> None:
    for name in ("get_nowait", "get_many_nowait"):
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


NOWAIT_CHECKS: tuple[Check, ...] = (_check_nowait_reads, _check_nowait_before_open)
