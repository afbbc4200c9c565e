"""The failure-record checks of :func:`check_taskdb`."""

from __future__ import annotations

import uuid

from beautyspot_async._failure import MAX_FAILURE_TEXT, FailureRecord
from beautyspot_async._record import as_record
from beautyspot_async.db._base import TaskDB

from ._clock import FakeClock
from ._common import Check, new_key, save

__all__ = ["FAILURE_CHECKS"]


def _failure(func_name: str, failed_at: float, **overrides: object) -> FailureRecord:
    fields: dict[str, object] = {
        "cache_key": uuid.uuid4().hex,
        "func_name": func_name,
        "input_id": "i" + uuid.uuid4().hex[:8],
        "version": "v1",
        "exc_type": "builtins.ValueError",
        "message": "bad input \u00e9\u00e8",
        "attempts": 3,
        "failed_at": failed_at,
        "args": '["x", 1]',
    }
    fields.update(overrides)
    return FailureRecord(**fields)  # type: ignore[arg-type]


async def _check_failures_round_trip(db: TaskDB, clock: FakeClock | None) -> None:
    """save_failure then get_failures returns every field as saved; upserts by key.

    ``version`` and ``args`` may be None; a second save of one key replaces
    the first. A failure is never a record: ``get`` of its key stays None.
    """
    func = f"tests.conformance.failing_{uuid.uuid4().hex[:8]}"
    first = _failure(func, 1_700_000_000.25, version=None, args=None)
    await db.save_failure(first)
    found = await db.get_failures(func)
    assert found == [first], f"get_failures returned {found!r}, saved {first!r}"
    second = _failure(
        func, 1_700_000_100.5, cache_key=first.cache_key, attempts=5, message="x" * 3000
    )
    assert len(second.message) == MAX_FAILURE_TEXT, "FailureRecord bounds its message"
    await db.save_failure(second)
    found = await db.get_failures(func)
    assert found == [second], f"a second save_failure must replace the first, got {found!r}"
    record = as_record(await db.get(first.cache_key), first.cache_key, backend=db.backend_name)
    assert record is None, "a failure must never be returned by get() as a result"
    assert await db.delete_failures([first.cache_key]) == 1
    assert await db.get_failures(func) == []


async def _check_failures_order_filter_limit(db: TaskDB, clock: FakeClock | None) -> None:
    """get_failures: newest ``failed_at`` first, filtered by ``func_name``, bounded by ``limit``."""
    ours = f"tests.conformance.failing_{uuid.uuid4().hex[:8]}"
    other = f"tests.conformance.other_{uuid.uuid4().hex[:8]}"
    saved = [_failure(ours, 1_700_000_000.0 + t) for t in (5, 1, 9, 3)]
    stranger = _failure(other, 1_800_000_000.0)
    for failure in [*saved, stranger]:
        await db.save_failure(failure)
    newest = sorted(saved, key=lambda f: f.failed_at, reverse=True)
    assert await db.get_failures(ours) == newest, "get_failures must be newest first"
    assert await db.get_failures(ours, limit=2) == newest[:2], "limit must bound the rows"
    assert await db.get_failures(ours, limit=0) == []
    everything = await db.get_failures(None, limit=100_000)
    keys = [f.cache_key for f in everything]
    for failure in (stranger, saved[0]):
        assert failure.cache_key in keys, "get_failures(None) must list every function's failures"
    times = [f.failed_at for f in everything]
    assert times == sorted(times, reverse=True), "get_failures(None) must be newest first"
    mine = [f.cache_key for f in [*saved, stranger]]
    assert await db.delete_failures([*mine, mine[0], new_key("never")]) == 5, (
        "delete_failures must count each existing failure once"
    )
    assert await db.get_failures(ours) == []
    assert await db.delete_failures([]) == 0


async def _check_failures_apart_from_records(db: TaskDB, clock: FakeClock | None) -> None:
    """A failure and a stored result of one key live side by side; deleting one keeps the other."""
    func = f"tests.conformance.failing_{uuid.uuid4().hex[:8]}"
    failure = _failure(func, 1_700_000_000.0)
    await db.save_failure(failure)
    await save(db, failure.cache_key, func_name=func)
    record = as_record(await db.get(failure.cache_key), failure.cache_key)
    assert record is not None, "the result must be readable"
    assert record.result_type == "inline", "the result must be readable as saved"
    assert await db.get_failures(func) == [failure], "saving a result must not touch failures"
    assert await db.delete_failures([failure.cache_key]) == 1
    assert as_record(await db.get(failure.cache_key), failure.cache_key) is not None, (
        "delete_failures must not delete the result"
    )


FAILURE_CHECKS: tuple[Check, ...] = (
    _check_failures_round_trip,
    _check_failures_order_filter_limit,
    _check_failures_apart_from_records,
)
