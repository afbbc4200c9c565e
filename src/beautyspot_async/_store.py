"""The async shell around one task database and one blob storage.

It owns opening and closing them, decides which of them a payload goes to,
and translates failures of backends that are not ours into BackendError. All
of it runs on the Spot's I/O loop for loop-bound backends (see ``_portal``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ._record import BLOB, TaskRecord, as_record
from .db import LeaseHolder, TaskDB
from .exceptions import BackendError, BeautySpotError, CacheCorruptedError
from .storage import BlobStorageBase

__all__ = ["ResultStore", "WriteItem"]


@dataclass(slots=True)
class WriteItem:
    """One result on its way to durability.

    ``record.result_data`` holds the serialized payload; for BLOB placement
    the store moves it to blob storage and records the location instead.
    """

    record: TaskRecord
    lease_owner: str | None = None


def _translate(exc: Exception, backend: str, action: str) -> BeautySpotError:
    if isinstance(exc, BeautySpotError):
        return exc
    error = BackendError(f"{action} failed: {type(exc).__name__}: {exc}", backend=backend)
    error.__cause__ = exc
    return error


class ResultStore:
    """Task database + blob storage, opened lazily on the I/O loop."""

    def __init__(self, db: TaskDB, storage: BlobStorageBase) -> None:
        self.db = db
        self.storage = storage
        self.loop_bound = db.loop_bound or storage.loop_bound
        self.supports_leases = type(db).supports_leases
        self._opened = False
        self._open_lock: asyncio.Lock | None = None

    # -- lifecycle (always on the I/O loop) -----------------------------------

    @property
    def opened(self) -> bool:
        return self._opened

    async def open_on_io_loop(self) -> None:
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._opened:
                return
            try:
                await self.db.init_schema()
            except Exception as exc:
                raise _translate(exc, self.db.backend_name, "opening the task database") from exc
            self._opened = True

    async def close_on_io_loop(self) -> None:
        self._opened = False
        errors: list[BaseException] = []
        for closer in (self.db.aclose, self.storage.aclose):
            try:
                await closer()
            except Exception as exc:  # close both even if one fails
                errors.append(exc)
        if errors:
            raise _translate(errors[0], self.db.backend_name, "closing") from errors[0]  # type: ignore[arg-type]

    # -- reads -----------------------------------------------------------------

    async def get(self, cache_key: str) -> TaskRecord | None:
        try:
            found = await self.db.get(cache_key)
        except Exception as exc:
            raise _translate(exc, self.db.backend_name, "lookup") from exc
        return as_record(found, cache_key, backend=self.db.backend_name)

    async def lookup_many(
        self, cache_keys: list[str], owner: str | None, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """Records of ``cache_keys``; with an ``owner``, leases for the missing ones.

        See :meth:`TaskDB.lookup_or_lease` for the values. Without an owner,
        absent keys are simply omitted.
        """
        try:
            if owner is None:
                found: dict[str, Any] = dict(await self.db.get_many(cache_keys))
            else:
                found = dict(await self.db.lookup_or_lease(cache_keys, owner, ttl))
        except Exception as exc:
            raise _translate(exc, self.db.backend_name, "lookup") from exc
        # A custom backend's get_many may hand back mappings instead of records.
        checked: dict[str, TaskRecord | bool] = {}
        backend = self.db.backend_name
        for key, value in found.items():
            record = value if isinstance(value, bool) else as_record(value, key, backend=backend)
            if record is not None:
                checked[key] = record
        return checked

    async def release_many(self, owners: dict[str, list[str]]) -> None:
        """Give up leases (owner -> keys), one batch per owner."""
        for owner, keys in owners.items():
            try:
                await self.db.release_leases(keys, owner)
            except Exception as exc:
                raise _translate(exc, self.db.backend_name, "releasing leases") from exc

    async def renew(self, keys: list[str], owner: str, ttl: float) -> None:
        try:
            await self.db.renew_leases(keys, owner, ttl)
        except Exception as exc:
            raise _translate(exc, self.db.backend_name, "renewing leases") from exc

    async def lease_holders(self, keys: list[str]) -> dict[str, LeaseHolder]:
        try:
            return await self.db.lease_holders(keys)
        except Exception as exc:
            raise _translate(exc, self.db.backend_name, "reading lease holders") from exc

    async def take_over(self, stale: dict[str, str], owner: str, ttl: float) -> list[str]:
        try:
            return await self.db.take_over_leases(stale, owner, ttl)
        except Exception as exc:
            raise _translate(exc, self.db.backend_name, "taking over leases") from exc

    async def load_payload(self, record: TaskRecord) -> bytes:
        """Return the serialized payload of ``record`` wherever it lives.

        Raises CacheCorruptedError when it is missing or cannot be trusted.
        """
        if record.result_type == BLOB:
            if not record.result_value:
                raise CacheCorruptedError(f"blob record {record.cache_key} has no location")
            try:
                return await self.storage.load(record.result_value)
            except CacheCorruptedError:
                raise
            except Exception as exc:
                raise _translate(exc, self.storage.backend_name, "loading a blob") from exc
        if record.result_data is None:
            raise CacheCorruptedError(f"record {record.cache_key} has no payload")
        return record.result_data

    # -- writes ----------------------------------------------------------------

    async def write(self, items: Sequence[WriteItem]) -> list[BaseException | None]:
        """Make ``items`` durable; return, per item, the error that stopped it.

        Blobs are written first, so a row never points at a blob that is not
        there yet. Rows are written, and this process's leases on them given
        up, in one ``save_and_release`` batch.
        """
        errors: list[BaseException | None] = [None] * len(items)
        rows: list[TaskRecord] = []
        row_index: list[int] = []
        for i, item in enumerate(items):
            record = item.record
            if record.result_type == BLOB:
                try:
                    location = await self.storage.save(record.cache_key, record.result_data or b"")
                except Exception as exc:
                    errors[i] = _translate(exc, self.storage.backend_name, "saving a blob")
                    continue
                record = replace(record, result_value=location, result_data=None)
            rows.append(record)
            row_index.append(i)
        owners: dict[str, list[str]] = {}
        for item in items:
            if item.lease_owner is not None:
                owners.setdefault(item.lease_owner, []).append(item.record.cache_key)
        try:
            if rows:
                # Leases of failed blob writes go too: another process may retry.
                await self.db.save_and_release(rows, owners)
            else:
                await self._release_quietly(owners)
        except Exception as exc:
            error = _translate(exc, self.db.backend_name, "saving results")
            for i in row_index:
                errors[i] = error
            # Released even after a failed write, so another process may retry.
            await self._release_quietly(owners)
        return errors

    async def _release_quietly(self, owners: dict[str, list[str]]) -> None:
        # A lease left behind only delays other processes until it expires.
        for owner, keys in owners.items():
            with contextlib.suppress(Exception):
                await self.db.release_leases(keys, owner)

    async def history(self, limit: int) -> Any:
        try:
            return await self.db.get_history(limit)
        except Exception as exc:
            raise _translate(exc, self.db.backend_name, "reading history") from exc
