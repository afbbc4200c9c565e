"""The checks between two instances of one store: :func:`check_taskdb_pair`.

Two instances over one store stand for two processes. Within one instance a
lease is exclusive; between two, reading a key and leasing it must also be
atomic, or both would execute it. Like trio's ``check_two_way_stream``, which
takes a pair of connected streams, the suite takes a factory of pairs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel

from beautyspot_async._record import TaskRecord
from beautyspot_async.db._base import TaskDB

from ._clock import FakeClock
from ._common import (
    TTL,
    aclose_all,
    assert_matches,
    get,
    make,
    naming,
    new_key,
    overrides,
    record,
    save,
)
from ._leases import assert_exclusive

__all__ = ["check_taskdb_pair"]


_PairCheck = Callable[[TaskDB, TaskDB, "FakeClock | None"], Awaitable[None]]


async def _check_pair_one_store(a: TaskDB, b: TaskDB, clock: FakeClock | None) -> None:
    """What one instance saves, the other reads; what one deletes, the other misses."""
    k = new_key("pair")
    saved = await save(a, k)
    assert_matches(await get(b, k), saved)
    batch = [new_key(f"pair-batch{i}") for i in range(3)]
    await b.save_many([record(x) for x in batch])
    assert set(await a.get_many(batch)) == set(batch), (
        "a batch saved by one was not read by the other"
    )
    if overrides(a, "delete"):
        assert await a.delete(k) is True
        assert await b.get(k) is None, "a key deleted through one instance is gone for the other"


async def _check_pair_leases_exclusive(a: TaskDB, b: TaskDB, clock: FakeClock | None) -> None:
    """A lease taken through one instance is refused through the other until released.

    ``release_lease`` through the other instance by a non-holder changes
    nothing. Run when ``supports_leases`` is true.
    """
    if not a.supports_leases:
        return
    k = new_key("pair-lease")
    await assert_exclusive(a, b, k, TTL)
    await b.release_lease(k, "owner-b")


async def _check_pair_lease_expiry(a: TaskDB, b: TaskDB, clock: FakeClock | None) -> None:
    """A lease taken through one instance expires after ttl for the other.

    Without a clock the check waits about half a second in real time. Run
    when ``supports_leases`` is true.
    """
    if not a.supports_leases:
        return
    k = new_key("pair-expiry")
    assert await a.acquire_lease(k, "owner-a", TTL) is True
    assert await b.acquire_lease(k, "owner-b", TTL) is False
    if clock is not None:
        clock.advance(TTL - 1)
        assert await b.acquire_lease(k, "owner-b", TTL) is False, "expired too early"
        clock.advance(2)
    else:
        # A server-side lease clock cannot be faked: re-take the lease with a
        # short ttl and let it run out in real time.
        assert await a.acquire_lease(k, "owner-a", 0.3) is True
        await anyio.sleep(0.5)
    assert await b.acquire_lease(k, "owner-b", TTL) is True, (
        "an expired lease must go to the next owner"
    )
    await b.release_lease(k, "owner-b")


async def _check_pair_one_winner(a: TaskDB, b: TaskDB, clock: FakeClock | None) -> None:
    """Of six owners racing acquire_lease for one key through both instances, one wins.

    Run when ``supports_leases`` is true.
    """
    if not a.supports_leases:
        return
    k = new_key("pair-race")
    granted: dict[str, bool] = {}

    async def take(db: TaskDB, owner: str) -> None:
        granted[owner] = await db.acquire_lease(k, owner, TTL)

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(take, (a, b)[i % 2], f"owner-{i}")
    winners = [owner for owner, won in granted.items() if won]
    assert len(winners) == 1, f"exactly one racing owner must win the lease, {winners} did"
    await a.release_lease(k, winners[0])


async def _check_pair_lookup_or_lease_race(a: TaskDB, b: TaskDB, clock: FakeClock | None) -> None:
    """Both instances racing lookup_or_lease for the same missing keys: one owner per key.

    Each key comes back ``True`` to exactly one of the two owners and
    ``False`` to the other (``lease_holders``, when overridden, names that
    owner). Run when ``supports_leases`` is true.
    """
    if not a.supports_leases:
        return
    for round_ in range(3):
        keys = [new_key(f"pair-lol{round_}-{i}") for i in range(16)]
        results: dict[str, dict[str, TaskRecord | bool]] = {}

        async def race(
            db: TaskDB, owner: str, order: list[str], results: dict[str, Any] = results
        ) -> None:
            results[owner] = await db.lookup_or_lease(order, owner, TTL)

        async with anyio.create_task_group() as tg:
            tg.start_soon(race, a, "owner-a", keys)
            tg.start_soon(race, b, "owner-b", keys[::-1])
        for owner, found in results.items():
            assert set(found) == set(keys), (
                f"{owner} got answers for {len(found)} of {len(keys)} keys"
            )
        owners: dict[str, str] = {}
        for k in keys:
            winners = [owner for owner, found in results.items() if found[k] is True]
            losers = [owner for owner, found in results.items() if found[k] is False]
            assert len(winners) == 1, f"key {k} must be leased to one owner, not {winners}"
            assert len(losers) == 1, f"key {k} must be refused to the other owner, not {losers}"
            owners[k] = winners[0]
        if overrides(a, "lease_holders"):
            holders = await b.lease_holders(keys)
            seen = {k: holder.owner for k, holder in holders.items()}
            assert seen == owners, "lease_holders must name the owner each key was granted to"
        for owner in ("owner-a", "owner-b"):
            await a.release_leases([k for k in keys if owners[k] == owner], owner)


async def _check_pair_saved_is_a_record(a: TaskDB, b: TaskDB, clock: FakeClock | None) -> None:
    """A key saved with save_and_release through one instance is a record to the other.

    The other's ``lookup_or_lease`` returns the stored record and takes no
    lease. With ``supports_leases``, it never returns ``True`` for a key the
    first holds, also while the save races with its reads: between its read
    and its lease, the key can be stored and its lease released.
    """
    k = new_key("handoff")
    assert await a.lookup_or_lease([k], "owner-a", TTL) == {k: True}
    if a.supports_leases:
        assert await b.lookup_or_lease([k], "owner-b", TTL) == {k: False}
    await a.save_and_release([record(k, result_data=b"done")], {"owner-a": [k]})
    seen = (await b.lookup_or_lease([k], "owner-b", TTL))[k]
    assert isinstance(seen, TaskRecord), f"a saved key must come back as its record, not {seen!r}"
    assert seen.result_data == b"done"
    if a.supports_leases:
        assert await a.acquire_lease(k, "owner-c", TTL) is True, (
            "save_and_release must have freed the lease, and lookup_or_lease taken none"
        )
        await a.release_lease(k, "owner-c")

    if not a.supports_leases:
        return  # without leases, a key not stored yet is granted to everyone
    keys = [new_key(f"handoff{i}") for i in range(12)]
    taken = await a.lookup_or_lease(keys, "owner-a", TTL)
    assert all(v is True for v in taken.values()), "missing keys must be leased"
    pending = set(keys)

    async def store() -> None:
        for k in keys:
            await a.save_and_release([record(k, result_data=k.encode())], {"owner-a": [k]})
            await anyio.lowlevel.checkpoint()

    async def poll() -> None:
        while pending:
            found = await b.lookup_or_lease(sorted(pending), "owner-b", TTL)
            for k, value in found.items():
                assert value is not True, (
                    f"{k} was granted to a second owner while its first stored it"
                )
                if isinstance(value, TaskRecord):
                    assert value.result_data == k.encode()
                    pending.discard(k)
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            tg.start_soon(store)


async def _check_pair_take_over_race(a: TaskDB, b: TaskDB, clock: FakeClock | None) -> None:
    """Two instances taking over the same dead owner's lease: exactly one gets it.

    Run when ``supports_leases`` is true and ``take_over_leases`` is overridden.
    """
    if not (a.supports_leases and overrides(a, "take_over_leases")):
        return
    k = new_key("take-over")
    assert await a.acquire_lease(k, "owner-dead", TTL) is True
    taken: dict[str, list[str]] = {}

    async def take(db: TaskDB, owner: str) -> None:
        taken[owner] = await db.take_over_leases({k: "owner-dead"}, owner, TTL)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, a, "owner-a")
        tg.start_soon(take, b, "owner-b")
    winners = [owner for owner, keys in taken.items() if keys == [k]]
    assert len(winners) == 1, f"one dead lease must be taken over once, by {winners}"
    await a.release_lease(k, winners[0])


async def _check_pair_wait_for_result(a: TaskDB, b: TaskDB, clock: FakeClock | None) -> None:
    """wait_for_result returns by its timeout, and once the other instance saves the key.

    A waiter on a key whose result another instance stores returns well
    before its own (long) timeout, whether it started waiting before or
    after the save.
    """
    k = new_key("wait")
    assert await a.lookup_or_lease([k], "owner-a", 60.0) == {k: True}
    with anyio.fail_after(10):
        await b.wait_for_result(k, 0.05)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.wait_for_result, k, 60.0)
            await anyio.lowlevel.checkpoint()
            await a.save_and_release([record(k)], {"owner-a": [k]})
    with anyio.fail_after(10):
        await b.wait_for_result(k, 60.0)


_PAIR_CHECKS: tuple[_PairCheck, ...] = (
    _check_pair_one_store,
    _check_pair_leases_exclusive,
    _check_pair_lease_expiry,
    _check_pair_one_winner,
    _check_pair_lookup_or_lease_race,
    _check_pair_saved_is_a_record,
    _check_pair_take_over_race,
    _check_pair_wait_for_result,
)


async def check_taskdb_pair(
    factory: Callable[[], tuple[TaskDB, TaskDB] | Awaitable[tuple[TaskDB, TaskDB]]],
    *,
    clock: FakeClock | None = None,
) -> None:
    """Run the contract between two instances of one store: what two processes see.

    ``factory`` returns a fresh pair of unopened databases over the same
    underlying store (two instances on one file, one schema, one key
    prefix...), or an awaitable of the pair; it is called once per check
    and both are closed afterwards. A database only one process can see
    may return one instance twice. ``clock`` is as for
    :func:`check_taskdb`.

    Checked: rows written through one instance are read through the other;
    leases are exclusive across them and expire; racing ``acquire_lease``
    and ``take_over_leases`` have one winner; when both race
    ``lookup_or_lease`` for the same missing keys, each key is granted to
    exactly one owner; a key stored with ``save_and_release`` through one is
    a record, never a grant, to the other's ``lookup_or_lease``; and
    ``wait_for_result`` returns once the other instance stores the key.
    Lease checks run when ``supports_leases`` is true.

    Raises :class:`AssertionError` naming the first check that failed, like
    :func:`check_taskdb`.
    """
    for check in _PAIR_CHECKS:
        with naming("check_taskdb_pair", check, prefix="_check_pair_"):
            a, b = await make(factory)
            try:
                await a.init_schema()
                await b.init_schema()
                await check(a, b, clock)
            finally:
                await aclose_all([a, b] if a is not b else [a])
