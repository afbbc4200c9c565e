"""LocalStorage: the conformance suite plus layout, integrity and containment."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from beautyspot_async.exceptions import CacheCorruptedError, ConfigurationError
from beautyspot_async.storage._local import HEADER_SIZE, MAGIC, LocalStorage
from beautyspot_async.testing import check_blob_storage

pytestmark = pytest.mark.anyio

KEY = "abcdef0123456789"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "blobs")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


class TestConformance:
    """LocalStorage passes the shared blob storage suite under asyncio and trio."""

    async def test_suite(self, tmp_path: Path) -> None:
        await check_blob_storage(lambda: LocalStorage(tmp_path / "blobs"))


class TestLayout:
    """Blobs are sharded by the key's first characters and located relative to root."""

    async def test_hex_key_shards(self, storage: LocalStorage) -> None:
        location = await storage.save(KEY, b"data")
        assert location == f"ab/cd/{KEY}.bin"
        assert (storage.root / "ab" / "cd" / f"{KEY}.bin").is_file()

    async def test_short_key_is_spread_by_hash(self, storage: LocalStorage) -> None:
        location = await storage.save("x", b"data")
        first, second, name = location.split("/")
        assert name == "x.bin"
        assert len(first) == len(second) == 2
        assert await storage.load(location) == b"data"

    async def test_file_carries_header(self, storage: LocalStorage) -> None:
        location = await storage.save(KEY, b"12345")
        raw = (storage.root / location).read_bytes()
        assert raw.startswith(MAGIC)
        assert len(raw) == HEADER_SIZE + 5
        assert raw.endswith(b"12345")

    async def test_no_temp_file_left_behind(self, storage: LocalStorage) -> None:
        for i in range(5):
            await storage.save(f"{KEY}{i}", os.urandom(1000))
        await storage.save(KEY + "0", b"overwritten")
        names = [p.name for p in _files(storage.root)]
        assert len(names) == 5
        assert all(n.endswith(".bin") and not n.startswith(".") for n in names)

    async def test_crash_leftovers_are_not_listed(self, storage: LocalStorage) -> None:
        location = await storage.save(KEY, b"data")
        (storage.root / "ab" / "cd" / ".tmp-dead.part").write_bytes(b"partial")
        (storage.root / "stray.txt").write_bytes(b"not a shard")
        assert [loc async for loc in storage.list_locations()] == [location]

    async def test_concurrent_overwrites_stay_whole(self, storage: LocalStorage) -> None:
        payloads = [bytes([i]) * 200_000 for i in range(8)]

        async def write(data: bytes) -> None:
            await storage.save(KEY, data)

        async with anyio.create_task_group() as tg:
            for data in payloads:
                tg.start_soon(write, data)
        assert await storage.load(f"ab/cd/{KEY}.bin") in payloads
        assert len(_files(storage.root)) == 1


class TestCorruption:
    """Damaged, truncated or missing files raise CacheCorruptedError on load."""

    @pytest.fixture
    async def stored(self, storage: LocalStorage) -> tuple[LocalStorage, str, Path]:
        location = await storage.save(KEY, os.urandom(4096))
        return storage, location, storage.root / location

    async def test_truncated_payload(self, stored: tuple[LocalStorage, str, Path]) -> None:
        storage, location, path = stored
        path.write_bytes(path.read_bytes()[:-1])
        with pytest.raises(CacheCorruptedError, match="header says"):
            await storage.load(location)

    async def test_truncated_header(self, stored: tuple[LocalStorage, str, Path]) -> None:
        storage, location, path = stored
        path.write_bytes(path.read_bytes()[:10])
        with pytest.raises(CacheCorruptedError, match="truncated"):
            await storage.load(location)

    async def test_flipped_payload_byte(self, stored: tuple[LocalStorage, str, Path]) -> None:
        storage, location, path = stored
        raw = bytearray(path.read_bytes())
        raw[HEADER_SIZE + 100] ^= 0x01
        path.write_bytes(bytes(raw))
        with pytest.raises(CacheCorruptedError, match="checksum"):
            await storage.load(location)

    async def test_bad_magic(self, stored: tuple[LocalStorage, str, Path]) -> None:
        storage, location, path = stored
        path.write_bytes(b"XXXX" + path.read_bytes()[4:])
        with pytest.raises(CacheCorruptedError, match="magic"):
            await storage.load(location)

    async def test_deleted_file(self, stored: tuple[LocalStorage, str, Path]) -> None:
        storage, location, path = stored
        path.unlink()
        with pytest.raises(CacheCorruptedError, match="missing"):
            await storage.load(location)


class TestContainment:
    """Keys and locations can never reach outside the root."""

    @pytest.mark.parametrize(
        "key", ["../x", "/abs", "", "a/b", "..", ".hidden", "ABC", "a\\b", "k" * 201, "a\x00b"]
    )
    async def test_hostile_keys(self, tmp_path: Path, key: str) -> None:
        storage = LocalStorage(tmp_path / "root")
        with pytest.raises(ConfigurationError):
            await storage.save(key, b"evil")
        assert _files(tmp_path) == []

    @pytest.mark.parametrize(
        "location",
        ["../x.bin", "/etc/passwd", "ab/cd/../../../x.bin", "ab/cd", "ab/cd/x.txt", "AB/cd/x.bin"],
    )
    async def test_hostile_locations(self, storage: LocalStorage, location: str) -> None:
        with pytest.raises(ConfigurationError):
            await storage.load(location)
        with pytest.raises(ConfigurationError):
            await storage.delete(location)

    async def test_symlinked_shard_is_refused(self, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        storage = LocalStorage(tmp_path / "root")
        storage.root.mkdir()
        (storage.root / "ab").symlink_to(outside, target_is_directory=True)
        with pytest.raises(ConfigurationError, match="outside"):
            await storage.save(KEY, b"evil")
        assert list(outside.iterdir()) == []
        with pytest.raises(ConfigurationError, match="outside"):
            await storage.load(f"ab/cd/{KEY}.bin")


class _StrictDelete(LocalStorage):
    async def delete(self, location: str) -> None:
        if not (self.root / location).exists():
            raise FileNotFoundError(location)
        await super().delete(location)


class _Permissive(LocalStorage):
    def location_for(self, key: str) -> str:
        return f"00/00/{key}.bin"

    def _path_of(self, location: str) -> Path:
        return self.root / location


class TestSuiteCatchesBugs:
    """check_blob_storage fails, naming the check, for a storage that breaks the contract."""

    @pytest.mark.parametrize(
        ("broken", "check"), [(_StrictDelete, "delete"), (_Permissive, "hostile")]
    )
    async def test_broken_storage_fails(
        self, tmp_path: Path, broken: type[LocalStorage], check: str
    ) -> None:
        with pytest.raises(AssertionError, match=rf"check_blob_storage\[{check}\]"):
            await check_blob_storage(lambda: broken(tmp_path / "root" / "blobs"))
