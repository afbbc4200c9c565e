"""Blob storage in a local directory, sharded and checksummed.

A blob for key ``abcdef01...`` lives at ``root/ab/cd/abcdef01....bin`` so that
no directory holds more than a sliver of a million blobs. Each file starts
with a fixed header (see :func:`encode_header`) so that :meth:`LocalStorage.load`
can tell a complete blob from a truncated or damaged one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar, Final

import anyio.to_thread

from beautyspot_async._errormap import ErrorMap
from beautyspot_async.exceptions import CacheCorruptedError, ConfigurationError
from beautyspot_async.storage._base import BlobStorageBase

__all__ = ["LocalStorage", "decode_blob", "encode_header"]

MAGIC: Final = b"BSPB"
FORMAT_VERSION: Final = 1
# magic, format version, payload length, blake2b-256 of the payload
_HEADER: Final = struct.Struct(">4sBQ32s")
HEADER_SIZE: Final = _HEADER.size

SUFFIX: Final = ".bin"
MAX_KEY_LENGTH: Final = 200
# Lowercase only: on a case-insensitive file system (macOS, Windows) "AB" and
# "ab" would be one file. No "/" and no leading ".", so "..", hidden files and
# our own temp files (".tmp-*") can never be named by a key.
_KEY_RE: Final = re.compile(r"[0-9a-z_\-][0-9a-z._\-]*")
_SHARD_RE: Final = re.compile(r"[0-9a-z]{2}")
_TEMP_PREFIX: Final = ".tmp-"

_ERRORS: Final = ErrorMap("local", {OSError: None})


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def encode_header(data: bytes) -> bytes:
    """The header written before ``data``: magic, version, length, checksum."""
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(data), _checksum(data))


def decode_blob(raw: bytes, location: str) -> bytes:
    """Check a stored file's header and return its payload.

    Raises :class:`CacheCorruptedError` (naming ``location``) for a short
    file, wrong magic, unknown format version, length mismatch or checksum
    mismatch.
    """
    if len(raw) < HEADER_SIZE:
        raise CacheCorruptedError(f"blob {location!r} is truncated inside its header")
    magic, version, length, digest = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise CacheCorruptedError(f"blob {location!r} is not a beautyspot blob (bad magic)")
    if version != FORMAT_VERSION:
        raise CacheCorruptedError(f"blob {location!r} has unknown format version {version}")
    payload = raw[HEADER_SIZE:]
    if len(payload) != length:
        raise CacheCorruptedError(
            f"blob {location!r} holds {len(payload)} payload bytes, its header says {length}"
        )
    if _checksum(payload) != digest:
        raise CacheCorruptedError(f"blob {location!r} fails its checksum")
    return payload


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"a blob key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise ConfigurationError(f"a blob key is at most {MAX_KEY_LENGTH} characters long")
    if _KEY_RE.fullmatch(key) is None:
        raise ConfigurationError(
            f"blob key {key!r} may only hold lowercase letters, digits, '-', '_' and '.' "
            "(not first)"
        )


def _shards(key: str) -> tuple[str, str]:
    # Library keys are hex digests, so their first characters spread evenly;
    # anything else is spread by a hash of the key instead.
    head = key[:4] if _SHARD_RE.fullmatch(key[:2]) and _SHARD_RE.fullmatch(key[2:4]) else None
    if head is None:
        head = hashlib.blake2b(key.encode(), digest_size=2).hexdigest()
    return head[:2], head[2:4]


class LocalStorage(BlobStorageBase):
    """Store blobs as files under ``root`` (created on first save).

    Locations are paths relative to ``root`` with ``/`` separators
    (``"ab/cd/<key>.bin"``), so a cache directory can be moved or shared over
    a network mount. Writes are atomic (temp file, fsync, rename) and every
    file call runs in a worker thread, never on the event loop.
    """

    loop_bound: ClassVar[bool] = False
    backend_name: ClassVar[str] = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(os.fspath(root)).absolute()

    def __repr__(self) -> str:
        return f"LocalStorage({os.fspath(self._root)!r})"

    @property
    def root(self) -> Path:
        """The directory blobs live under."""
        return self._root

    def location_for(self, key: str) -> str:
        """The location :meth:`save` returns for ``key`` (validated)."""
        _check_key(key)
        first, second = _shards(key)
        return f"{first}/{second}/{key}{SUFFIX}"

    def _path_of(self, location: str) -> Path:
        parts = location.split("/") if isinstance(location, str) else []
        if (
            len(parts) != 3
            or _SHARD_RE.fullmatch(parts[0]) is None
            or _SHARD_RE.fullmatch(parts[1]) is None
            or not parts[2].endswith(SUFFIX)
        ):
            raise ConfigurationError(
                f"{location!r} is not a location of this storage (want 'ab/cd/<key>.bin')"
            )
        _check_key(parts[2][: -len(SUFFIX)])
        return self._root.joinpath(*parts)

    def _ensure_inside(self, path: Path) -> None:
        # The lexical checks of _path_of already forbid "..", "/" and "\\";
        # resolving (file I/O, so only in worker threads) also catches a shard
        # directory replaced by a symlink that points elsewhere.
        if not path.resolve().is_relative_to(self._root.resolve()):
            raise ConfigurationError(f"blob path {path} resolves outside {self._root}")

    # -- blocking halves, run in worker threads --------------------------------------

    def _write(self, path: Path, data: bytes) -> None:
        self._ensure_inside(path)
        directory = path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".part", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(encode_header(data))
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if path.is_dir():
                # A damaged store left a directory where the blob belongs (a
                # read treats it as corrupt); an empty one is replaced, anything
                # else fails the write rather than deleting what it holds.
                path.rmdir()
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_directory(directory)

    def _read(self, path: Path) -> bytes:
        self._ensure_inside(path)
        with path.open("rb") as handle:
            return handle.read()

    def _unlink(self, path: Path) -> None:
        self._ensure_inside(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _scan(self, relative: str) -> tuple[list[str], list[str]]:
        """Return (subdirectory names, blob file names) directly under ``relative``."""
        directories: list[str] = []
        files: list[str] = []
        try:
            with os.scandir(self._root / relative) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        directories.append(entry.name)
                    elif entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                        files.append(entry.name)
        except (FileNotFoundError, NotADirectoryError):
            pass
        return directories, files

    def _stale_temp(self, older_than: float, dry_run: bool) -> list[str]:
        """Temp files in the root and shard directories last touched before ``older_than``."""
        found: list[str] = []
        firsts, _ = self._scan(".")
        directories = ["."]
        for first in sorted(f for f in firsts if _SHARD_RE.fullmatch(f)):
            directories.append(first)
            seconds, _ = self._scan(first)
            directories.extend(f"{first}/{s}" for s in sorted(seconds) if _SHARD_RE.fullmatch(s))
        for relative in directories:
            try:
                with os.scandir(self._root / relative) as entries:
                    names = sorted(
                        e.name
                        for e in entries
                        if e.name.startswith(_TEMP_PREFIX)
                        and e.is_file(follow_symlinks=False)
                        and e.stat(follow_symlinks=False).st_mtime < older_than
                    )
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                path = self._root / relative / name
                if not dry_run:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                found.append(name if relative == "." else f"{relative}/{name}")
        return found

    # -- protocol ------------------------------------------------------------------

    async def save(self, key: str, data: bytes) -> str:
        location = self.location_for(key)
        path = self._path_of(location)
        with _ERRORS.translating(f"writing blob {location!r}"):
            await anyio.to_thread.run_sync(self._write, path, bytes(data))
        return location

    async def load(self, location: str) -> bytes:
        path = self._path_of(location)
        with _ERRORS.translating(f"reading blob {location!r}"):
            try:
                raw = await anyio.to_thread.run_sync(self._read, path)
            except FileNotFoundError as exc:
                raise CacheCorruptedError(f"blob {location!r} is missing") from exc
            except (IsADirectoryError, NotADirectoryError) as exc:
                # Not a storage failure that may pass: the entry itself is broken.
                raise CacheCorruptedError(f"blob {location!r} is not a file") from exc
        return decode_blob(raw, location)

    async def delete(self, location: str) -> None:
        path = self._path_of(location)
        with _ERRORS.translating(f"deleting blob {location!r}"):
            await anyio.to_thread.run_sync(self._unlink, path)

    async def list_locations(self) -> AsyncIterator[str]:
        """Yield every blob's location, one shard directory scanned at a time.

        Temp files left by an interrupted write are not blobs and are skipped.
        """
        firsts, _ = await anyio.to_thread.run_sync(self._scan, ".")
        for first in sorted(f for f in firsts if _SHARD_RE.fullmatch(f)):
            seconds, _ = await anyio.to_thread.run_sync(self._scan, first)
            for second in sorted(s for s in seconds if _SHARD_RE.fullmatch(s)):
                _, names = await anyio.to_thread.run_sync(self._scan, f"{first}/{second}")
                for name in names:
                    yield f"{first}/{second}/{name}"

    async def list_blobs(self) -> AsyncIterator[tuple[str, float | None]]:
        """:meth:`list_locations` with each file's modification time."""
        async for location in self.list_locations():
            modified = await anyio.to_thread.run_sync(self._mtime, location)
            if modified is not None:  # gone since it was listed
                yield location, modified

    def _mtime(self, location: str) -> float | None:
        try:
            return (self._root / location).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def remove_stale_temp_files(
        self, *, older_than: float, dry_run: bool = False
    ) -> list[str]:
        """Remove the ``.tmp-*`` files of writes killed before their rename.

        Returns their paths relative to the root. Only files last modified
        before ``older_than`` are taken: a write in progress keeps touching
        its file, and the caller picks a grace period longer than any write.
        """
        with _ERRORS.translating("cleaning temp files"):
            return await anyio.to_thread.run_sync(self._stale_temp, older_than, dry_run)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; Windows cannot open a
    # directory this way, and there the rename is as durable as it gets.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
