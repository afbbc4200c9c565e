"""The single-instance lease checks of :func:`check_taskdb`.

A lease makes one owner (a process) the one executing a key: exclusive,
re-granted to its holder, given up by its holder only, and expiring after its
ttl. What must hold between two instances of one store is in ``_pair``.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

from beautyspot_async._record import TaskRecord
from beautyspot_async.db._base import TaskDB

from ._clock import FakeClock
from ._common import (
    TTL,
    Check,
    assert_matches,
    get,
    new_key,
    overrides,
    record,
    save,
)

__all__ = ["LEASE_CHECKS"]


async def assert_exclusive(a: TaskDB, b: TaskDB, key: str, ttl: float) -> None:
    """owner-a (through ``a``) holds ``key`` until it releases it; then owner-b gets it."""
    assert await a.acquire_lease(key, "owner-a", ttl) is True, "the holder is (re-)granted"
    assert await b.acquire_lease(key, "owner-b", ttl) is False, "a held lease is exclusive"
    await b.release_lease(key, "owner-b")
    assert await b.acquire_lease(key, "owner-b", ttl) is False, (
        "release_lease by a non-holder must not free the lease"
    )
    await a.release_lease(key, "owner-a")
    assert await b.acquire_lease(key, "owner-b", ttl) is True, "a released lease is free"


async def _check_leases(db: TaskDB, clock: FakeClock | None) -> None:
    """acquire_lease is exclusive, re-granted to its holder, and expires after ttl.

    A re-grant takes the lease again: its ttl counts from the re-grant.
    ``release_lease`` by anyone but the holder changes nothing; by the holder
    it frees the lease. ``wait_for_result`` returns by its timeout. Run when
    ``supports_leases`` is true.
    """
    if not db.supports_leases:
        return
    key = new_key("lease")
    ttl = TTL
    assert await db.acquire_lease(key, "owner-a", ttl) is True, "a free lease must be granted"
    # The holder is re-granted, and the lease stays exclusive until released.
    await assert_exclusive(db, db, key, ttl)

    # The lease just taken by owner-b must expire after ttl.
    if clock is not None:
        clock.advance(ttl - 1)
        assert await db.acquire_lease(key, "owner-c", ttl) is False, "expired too early"
        clock.advance(2)
    else:
        # Only for backends whose lease clock is server-side and cannot be
        # faked: a re-grant to the holder takes the lease again with a short
        # ttl, which then runs out in real time.
        assert await db.acquire_lease(key, "owner-b", 0.3) is True, "the holder is re-granted"
        await anyio.sleep(0.5)
    assert await db.acquire_lease(key, "owner-c", ttl) is True, (
        "an expired lease must go to the next owner"
    )
    await db.release_lease(key, "owner-c")
    with anyio.fail_after(10):
        await db.wait_for_result(key, timeout=0.01)


async def _check_release_leases(db: TaskDB, clock: FakeClock | None) -> None:
    """release_leases gives up exactly the named owner's leases on the named keys.

    Keys held by another owner, keys not held at all and an empty batch are
    left alone, without an error. Exclusivity is asserted when
    ``supports_leases`` is true; otherwise the calls must simply succeed.
    """
    keys = [new_key(f"release{i}") for i in range(3)]
    never = new_key("never-leased")
    for k in keys:
        assert await db.acquire_lease(k, "owner-a", TTL) is True
    await db.release_leases([], "owner-a")
    await db.release_leases(keys[:2], "owner-b")
    if db.supports_leases:
        for k in keys:
            assert await db.acquire_lease(k, "owner-b", TTL) is False, (
                "release_leases by a non-holder must not free a lease"
            )
    await db.release_leases([*keys[:2], never], "owner-a")
    if db.supports_leases:
        for k in keys[:2]:
            assert await db.acquire_lease(k, "owner-b", TTL) is True, (
                "release_leases by the holder must free each named lease"
            )
        assert await db.acquire_lease(keys[2], "owner-b", TTL) is False, (
            "release_leases must not free a lease it was not given"
        )
        await db.release_leases(keys[:2], "owner-b")
    await db.release_leases(keys, "owner-a")


async def _check_lookup_or_lease(db: TaskDB, clock: FakeClock | None) -> None:
    """lookup_or_lease returns a stored key's record, and leases each missing key.

    The result has one entry per distinct key asked: the stored
    :class:`TaskRecord` (as ``get`` reads it; no lease is taken for it),
    ``True`` when the key is missing and ``owner`` now holds its lease (also
    when it held it already), ``False`` when another owner holds an unexpired
    lease. ``lookup_or_lease([])`` is ``{}``. A lease granted here is a
    real lease: ``acquire_lease`` by another owner is refused until it is
    released or expires. Exclusivity is asserted when ``supports_leases`` is
    true; without leases every missing key comes back ``True``.
    """
    stored, free = new_key("stored"), new_key("free")
    saved = await save(db, stored)
    assert await db.lookup_or_lease([], "owner-a", TTL) == {}, "lookup_or_lease([]) must be {}"
    found = await db.lookup_or_lease([stored, free, free], "owner-a", TTL)
    assert set(found) == {stored, free}, f"lookup_or_lease answered for {sorted(found)}"
    got = found[stored]
    assert isinstance(got, TaskRecord), f"a stored key must come back as its record, not {got!r}"
    assert_matches(got, saved)
    assert found[free] is True, f"a missing key must be leased to the caller, got {found[free]!r}"
    if db.supports_leases:
        assert await db.lookup_or_lease([free], "owner-b", TTL) == {free: False}, (
            "a key leased to another owner must come back False"
        )
        assert await db.acquire_lease(free, "owner-b", TTL) is False, (
            "a lease granted by lookup_or_lease must hold against acquire_lease"
        )
        assert await db.lookup_or_lease([free], "owner-a", TTL) == {free: True}, (
            "the holder of a lease must be granted it again"
        )
        assert await db.acquire_lease(stored, "owner-b", TTL) is True, (
            "lookup_or_lease must take no lease on a key it found stored"
        )
        await db.release_lease(stored, "owner-b")
        if clock is not None:
            clock.advance(TTL + 1)
            assert await db.lookup_or_lease([free], "owner-b", TTL) == {free: True}, (
                "an expired lease must go to the next owner"
            )
            await db.release_leases([free], "owner-b")
    await db.release_leases([free], "owner-a")


async def _check_save_and_release(db: TaskDB, clock: FakeClock | None) -> None:
    """save_and_release saves the records like save_many, then frees the leases named.

    ``leases`` maps an owner to keys; only that owner's leases on them are
    freed (a key named under a non-holder stays held). Timestamps are the
    backend's own. An empty batch of records only releases; an empty mapping
    only saves. Lease assertions run when ``supports_leases`` is true.
    """
    done = [new_key(f"done{i}") for i in range(2)]
    other = new_key("other-holder")
    for k in done:
        assert await db.acquire_lease(k, "owner-a", TTL) is True
    assert await db.acquire_lease(other, "owner-b", TTL) is True
    records = [
        record(k, result_data=k.encode(), created_at=-1.0, updated_at=-1.0, expires_at=None)
        for k in done
    ]
    await db.save_and_release(records, {"owner-a": done, "owner-c": [other]})
    for k in done:
        found = await get(db, k)
        assert found.result_data == k.encode(), f"save_and_release stored {found.result_data!r}"
        assert found.created_at > 0, "save_and_release must stamp timestamps itself"
        if clock is not None:
            assert found.updated_at == clock(), "save_and_release must stamp with the clock"
    if db.supports_leases:
        for k in done:
            assert await db.acquire_lease(k, "owner-x", TTL) is True, (
                "save_and_release must free the leases of the owner named"
            )
        assert await db.acquire_lease(other, "owner-x", TTL) is False, (
            "save_and_release must not free a lease its owner does not hold"
        )
    await db.save_and_release([], {})
    await db.save_and_release([], {"owner-x": done})
    if db.supports_leases:
        for k in done:
            assert await db.acquire_lease(k, "owner-y", TTL) is True, (
                "save_and_release with no records must still release"
            )
        await db.release_leases(done, "owner-y")
    late = new_key("late")
    await db.save_and_release([record(late)], {})
    await get(db, late)
    await db.release_lease(other, "owner-b")


async def _check_lease_holders_and_take_over(db: TaskDB, clock: FakeClock | None) -> None:
    """lease_holders, take_over_leases and renew_leases, each when overridden.

    ``lease_holders`` reports exactly the held keys, with their owner and the
    seconds left. ``take_over_leases`` takes a lease only from the owner
    named as dead. ``renew_leases`` extends only the owner's own leases and
    takes no free one. Run when ``supports_leases`` is true.
    """
    if not db.supports_leases:
        return
    key, free = new_key("holder"), new_key("free")
    ttl = 30.0
    assert await db.acquire_lease(key, "owner-a", ttl) is True
    holders = await db.lease_holders([key, free])
    if overrides(db, "lease_holders"):
        assert set(holders) == {key}, "lease_holders reports exactly the held keys"
        assert holders[key].owner == "owner-a"
        assert 0 < holders[key].expires_in <= ttl + 1, "expires_in is the seconds left"
    if overrides(db, "take_over_leases"):
        taken = await db.take_over_leases({key: "owner-x", free: "owner-a"}, "owner-b", ttl)
        assert taken == [], "a lease is taken over only from the owner named as dead"
        assert await db.take_over_leases({key: "owner-a"}, "owner-b", ttl) == [key]
        assert await db.acquire_lease(key, "owner-a", ttl) is False, "the dead owner lost it"
        assert await db.acquire_lease(key, "owner-b", ttl) is True, "the new owner holds it"
        owner = "owner-b"
    else:
        owner = "owner-a"
    await db.renew_leases([key, free], owner, ttl)
    if overrides(db, "renew_leases"):
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


LEASE_CHECKS: tuple[Check, ...] = (
    _check_leases,
    _check_release_leases,
    _check_lookup_or_lease,
    _check_save_and_release,
    _check_lease_holders_and_take_over,
)
