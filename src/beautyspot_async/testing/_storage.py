"""The blob storage checks: :func:`check_blob_storage`."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from beautyspot_async.exceptions import CacheCorruptedError, ConfigurationError
from beautyspot_async.storage._base import BlobStorageBase

from ._common import naming, opened

__all__ = ["check_blob_storage"]

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
    """save returns a str location; load returns exactly the bytes saved, as bytes.

    Empty, one-byte, binary and 5 MiB blobs round-trip.
    """
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
    """Saving a key again replaces its blob."""
    key = _blob_key()
    first = await storage.save(key, b"first version")
    second = await storage.save(key, b"second")
    assert await storage.load(second) == b"second", "saving a key again must replace the blob"
    if first == second:
        assert await storage.load(first) == b"second"
    await storage.delete(second)


async def _check_blob_delete(storage: BlobStorageBase) -> None:
    """delete is idempotent; loading a deleted blob raises CacheCorruptedError."""
    location = await storage.save(_blob_key(), b"doomed")
    await storage.delete(location)
    await storage.delete(location)
    await _assert_corrupted(storage, location, "a deleted blob")


async def _check_blob_list(storage: BlobStorageBase) -> None:
    """list_locations lists every stored blob and no deleted one."""
    kept = {await storage.save(_blob_key(), bytes([i])) for i in range(3)}
    gone = await storage.save(_blob_key(), b"gone")
    await storage.delete(gone)
    listed = {loc async for loc in storage.list_locations()}
    assert kept <= listed, f"list_locations missed {kept - listed}"
    assert gone not in listed, "list_locations must not list a deleted blob"
    for location in kept:
        await storage.delete(location)


async def _check_blob_list_with_times(storage: BlobStorageBase) -> None:
    """list_blobs lists what list_locations does, each with its modification time or None.

    A time must be when the blob was written (give or take a clock skew of a
    few minutes): gc keeps orphans younger than a grace period by it.
    """
    before = time.time()
    kept = {await storage.save(_blob_key(), bytes([i])) for i in range(2)}
    after = time.time()
    try:
        listed = dict([blob async for blob in storage.list_blobs()])
    except NotImplementedError:
        return  # no listing at all: list_locations' check says so
    assert kept <= listed.keys(), f"list_blobs missed {kept - listed.keys()}"
    for location in kept:
        modified = listed[location]
        assert modified is None or before - 300 <= modified <= after + 300, (
            f"list_blobs gave {location!r} the time {modified!r}, written at {before:.0f}"
        )
        await storage.delete(location)


async def _check_blob_hostile(storage: BlobStorageBase) -> None:
    """Keys and locations that could escape the storage raise ConfigurationError.

    ``..``, absolute paths, empty keys and ``/`` in a key are refused by
    ``save``; ``..`` in a location by ``load`` and ``delete``. Nothing is
    written outside.
    """
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


async def _check_blob_stale_temp_files(storage: BlobStorageBase) -> None:
    """remove_stale_temp_files lists temporary files only, never a stored blob.

    It returns a list of names; nothing is older than the epoch, so
    ``older_than=0`` removes nothing; a dry run removes nothing either, and
    a stored blob is never among the names. (Not exercised: removing a real
    leftover, which only the storage itself can fake.)
    """
    location = await storage.save(_blob_key(), b"kept")
    assert await storage.remove_stale_temp_files(older_than=0.0) == [], (
        "remove_stale_temp_files(older_than=0) must find nothing"
    )
    names = await storage.remove_stale_temp_files(older_than=time.time() + 3600, dry_run=True)
    assert isinstance(names, list), f"remove_stale_temp_files must return a list, not {names!r}"
    assert all(isinstance(name, str) for name in names), f"names must be str: {names!r}"
    assert location not in names, "a stored blob is not a temporary file"
    assert await storage.load(location) == b"kept", "a dry run must remove nothing"
    await storage.delete(location)


_BLOB_CHECKS: tuple[_BlobCheck, ...] = (
    _check_blob_round_trip,
    _check_blob_overwrite,
    _check_blob_delete,
    _check_blob_list,
    _check_blob_list_with_times,
    _check_blob_hostile,
    _check_blob_stale_temp_files,
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
        async with opened(factory) as storage:
            with naming("check_blob_storage", check, prefix="_check_blob_"):
                await check(storage)
