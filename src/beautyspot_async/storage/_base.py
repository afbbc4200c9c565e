"""The blob storage protocol: where large serialized results live."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import ClassVar, Self

__all__ = ["BlobStorageBase"]


class BlobStorageBase(ABC):
    """Abstract async blob storage.

    Contract for implementations:

    * :meth:`save` stores ``data`` under ``key`` atomically -- a reader sees
      either nothing or the whole blob, never a prefix -- and returns an opaque
      *location* string that :meth:`load` and :meth:`delete` accept. Saving
      the same key again replaces the blob.
    * Keys are produced by the library (hex digests with an optional suffix)
      but implementations must still refuse any key or location that would
      escape their root, raising :class:`~beautyspot_async.ConfigurationError`.
    * :meth:`load` returns exactly the bytes saved, or raises
      :class:`~beautyspot_async.CacheCorruptedError` when the blob is
      missing, truncated or fails its checksum.
    * :meth:`save` and :meth:`load` are required; everything else is
      optional. :meth:`delete` is idempotent: deleting a missing blob is not
      an error. :meth:`list_locations` yields every stored location (for
      garbage collection and the CLI), in no particular order. Without them
      the call pipeline works; maintenance commands that need them (``gc``,
      deleting an entry's blob) say the storage cannot do it.
    * :meth:`remove_stale_temp_files` is for storages whose writes leave
      temporary files behind when the process is killed mid-write.
    * Driver errors are raised as :class:`~beautyspot_async.BackendError`
      chained to the driver's exception.
    * ``loop_bound`` has the meaning described on :class:`~beautyspot_async.db.TaskDB`.
    * :meth:`aclose` is idempotent and the storage reopens on next use;
      ``async with storage:`` closes it on exit.
    """

    loop_bound: ClassVar[bool] = True
    backend_name: ClassVar[str] = "custom"

    @abstractmethod
    async def save(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically; return its location."""

    @abstractmethod
    async def load(self, location: str) -> bytes:
        """Return the bytes stored at ``location``."""

    # -- optional ---------------------------------------------------------------

    async def delete(self, location: str) -> None:
        """Remove the blob at ``location``; a no-op when it does not exist."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete blobs")

    def list_locations(self) -> AsyncIterator[str]:
        """Yield the location of every stored blob.

        Implement it as an ``async def`` generator.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its blobs")

    async def list_blobs(self) -> AsyncIterator[tuple[str, float | None]]:
        """Yield ``(location, modified_at)`` for every stored blob (POSIX seconds).

        Garbage collection keeps orphans younger than a grace period, so
        that a blob whose row is not written yet (an upload in progress) is
        never taken. The default pairs :meth:`list_locations` with ``None``,
        an unknown age, which gc treats as old: such a storage gets no grace
        period and should implement this when its listing knows the times.
        """
        async for location in self.list_locations():
            yield location, None

    async def remove_stale_temp_files(
        self, *, older_than: float, dry_run: bool = False
    ) -> list[str]:
        """Remove temporary files of writes that never finished; return their names.

        Only files last modified before ``older_than`` (POSIX seconds) are
        taken, so writes in progress are left alone. With ``dry_run`` they
        are only listed. The default has nothing to clean.
        """
        return []

    async def __aenter__(self) -> Self:
        # Storages open lazily on first use: there is nothing to do yet.
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release clients and connections. Idempotent."""
