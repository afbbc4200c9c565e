"""S3Storage against moto's S3 server on loopback, through real HTTP.

asyncio only: aiobotocore runs on asyncio and nothing else, so this module
overrides ``anyio_backend``. Every test gets its own bucket, emptied and
deleted afterwards.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from beautyspot_async.exceptions import (
    BackendError,
    CacheCorruptedError,
    ConfigurationError,
)
from beautyspot_async.testing import check_blob_storage
from tests import _moto
from tests._moto import s3_client
from tests._services import require_module

require_module("aiobotocore", extra="s3")
require_module("moto.server", extra="dev")

from botocore.exceptions import ClientError  # noqa: E402  (after the extras guard)

from beautyspot_async.storage._s3 import (  # noqa: E402  (needs the s3 extra)
    S3Storage,
    location_for,
    parse_location,
)

pytestmark = [pytest.mark.anyio, pytest.mark.services]

# Registers the fixtures in this module (conftest.py is shared, not ours to edit).
moto_endpoint = _moto.moto_endpoint
s3_bucket = _moto.s3_bucket

MiB = 1024 * 1024
Factory = Callable[..., S3Storage]


@pytest.fixture
def anyio_backend() -> str:
    """aiobotocore is asyncio-only."""
    return "asyncio"


@pytest.fixture
async def make_storage(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[Factory]:
    """Build S3Storages on the test's bucket; close them all afterwards."""
    made: list[S3Storage] = []

    def factory(prefix: str = "blobs/run-1", **kwargs: Any) -> S3Storage:
        storage = S3Storage(s3_bucket, prefix, endpoint_url=moto_endpoint, **kwargs)
        made.append(storage)
        return storage

    yield factory
    for storage in made:
        await storage.aclose()


def _key() -> str:
    return uuid.uuid4().hex


class TestConformance:
    """S3Storage passes the BlobStorageBase behaviour suite, with and without a prefix."""

    async def test_with_prefix(self, make_storage: Factory) -> None:
        await check_blob_storage(make_storage)

    async def test_without_prefix(self, make_storage: Factory) -> None:
        await check_blob_storage(lambda: make_storage(""))


class TestLayout:
    """Objects live at <prefix>/<shard>/<key>; locations are relative to the prefix."""

    async def test_object_key_and_metadata(
        self, make_storage: Factory, moto_endpoint: str, s3_bucket: str
    ) -> None:
        storage = make_storage("team/exp")
        key = _key()
        location = await storage.save(key, b"hello")
        assert location == f"{key[:2]}/{key}"
        async with s3_client(moto_endpoint) as raw:
            head = await raw.head_object(Bucket=s3_bucket, Key=f"team/exp/{location}")
        assert head["Metadata"]["sha256"] == hashlib.sha256(b"hello").hexdigest()

    async def test_prefixes_do_not_see_each_other(self, make_storage: Factory) -> None:
        a, b = make_storage("a"), make_storage("ab")
        location = await a.save(_key(), b"x")
        assert [loc async for loc in b.list_locations()] == []
        assert [loc async for loc in a.list_locations()] == [location]

    async def test_list_paginates(self, make_storage: Factory) -> None:
        storage = make_storage(page_size=2)
        saved = {await storage.save(_key(), bytes([i])) for i in range(5)}
        assert {loc async for loc in storage.list_locations()} == saved

    async def test_foreign_objects_are_not_listed(
        self, make_storage: Factory, moto_endpoint: str, s3_bucket: str
    ) -> None:
        storage = make_storage("p")
        async with s3_client(moto_endpoint) as raw:
            await raw.put_object(Bucket=s3_bucket, Key="p/README.txt", Body=b"not a blob")
        assert [loc async for loc in storage.list_locations()] == []


class TestMultipart:
    """Blobs above the threshold go up in parts; a failed upload leaves nothing."""

    async def test_20_mib_blob(
        self, make_storage: Factory, moto_endpoint: str, s3_bucket: str
    ) -> None:
        storage = make_storage()
        data = os.urandom(20 * MiB)
        location = await storage.save(_key(), data)
        async with s3_client(moto_endpoint) as raw:
            head = await raw.head_object(Bucket=s3_bucket, Key=f"blobs/run-1/{location}")
        assert head["ETag"].strip('"').endswith("-3"), "expected a 3-part multipart object"
        assert await storage.load(location) == data

    async def test_below_threshold_is_a_single_put(
        self, make_storage: Factory, moto_endpoint: str, s3_bucket: str
    ) -> None:
        storage = make_storage()
        location = await storage.save(_key(), b"x" * MiB)
        async with s3_client(moto_endpoint) as raw:
            head = await raw.head_object(Bucket=s3_bucket, Key=f"blobs/run-1/{location}")
        assert "-" not in head["ETag"]

    async def test_failed_upload_is_aborted(
        self, make_storage: Factory, moto_endpoint: str, s3_bucket: str
    ) -> None:
        storage = make_storage(multipart_threshold=5 * MiB, part_size=5 * MiB)
        real = await storage._get_client()

        class FailingSecondPart:
            """The real client, except that the upload's second part fails."""

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            async def upload_part(self, **kwargs: Any) -> Any:
                if kwargs["PartNumber"] == 2:
                    raise ClientError({"Error": {"Code": "InternalError"}}, "UploadPart")
                return await real.upload_part(**kwargs)

        async def failing_client() -> Any:
            return FailingSecondPart()

        storage._get_client = failing_client  # type: ignore[method-assign]
        key = _key()
        with pytest.raises(BackendError):
            await storage.save(key, os.urandom(11 * MiB))
        async with s3_client(moto_endpoint) as raw:
            listed = await raw.list_objects_v2(Bucket=s3_bucket)
            uploads = await raw.list_multipart_uploads(Bucket=s3_bucket)
        assert listed.get("KeyCount", 0) == 0, "a partial object became visible"
        assert not uploads.get("Uploads"), "the multipart upload was not aborted"

    def test_part_size_below_s3_minimum(self) -> None:
        with pytest.raises(ConfigurationError):
            S3Storage("b", part_size=MiB)


class TestIntegrity:
    """Tampered, unchecked or missing objects load as CacheCorruptedError."""

    async def test_checksum_mismatch(
        self, make_storage: Factory, moto_endpoint: str, s3_bucket: str
    ) -> None:
        storage = make_storage()
        location = await storage.save(_key(), b"original")
        async with s3_client(moto_endpoint) as raw:
            await raw.put_object(
                Bucket=s3_bucket,
                Key=f"blobs/run-1/{location}",
                Body=b"tampered",
                Metadata={"sha256": hashlib.sha256(b"original").hexdigest()},
            )
        with pytest.raises(CacheCorruptedError, match="checksum"):
            await storage.load(location)

    async def test_missing_checksum(
        self, make_storage: Factory, moto_endpoint: str, s3_bucket: str
    ) -> None:
        storage = make_storage()
        location = await storage.save(_key(), b"original")
        async with s3_client(moto_endpoint) as raw:
            await raw.put_object(Bucket=s3_bucket, Key=f"blobs/run-1/{location}", Body=b"x")
        with pytest.raises(CacheCorruptedError, match="sha256"):
            await storage.load(location)

    async def test_missing_object(self, make_storage: Factory) -> None:
        with pytest.raises(CacheCorruptedError, match="missing"):
            await make_storage().load(location_for(_key()))


class TestKeys:
    """Keys and locations cannot escape the prefix."""

    @pytest.mark.parametrize(
        "key", ["../x", "a/b", ".hidden", "a\\b", "x\x00y", "é", "a..b", " ", "a" * 300]
    )
    async def test_hostile_keys(self, make_storage: Factory, key: str) -> None:
        with pytest.raises(ConfigurationError):
            await make_storage().save(key, b"evil")

    @pytest.mark.parametrize(
        "location", ["abcd", "/ab/abcd", "xy/abcd", "ab/abcd/..", "ab//abcd", "s3://b/ab/abcd"]
    )
    def test_hostile_locations(self, location: str) -> None:
        with pytest.raises(ConfigurationError):
            parse_location(location)

    def test_location_round_trip(self) -> None:
        key = _key() + ".bin"
        assert parse_location(location_for(key)) == key

    @pytest.mark.parametrize("prefix", ["../up", "a/../b", "a b"])
    def test_hostile_prefix(self, prefix: str) -> None:
        with pytest.raises(ConfigurationError):
            S3Storage("bucket", prefix)


class TestConfiguration:
    """URLs, the standard AWS configuration and error messages."""

    def test_from_url(self) -> None:
        storage = S3Storage.from_url("s3://my-bucket/some/prefix/", max_attempts=2)
        assert (storage.bucket, storage.prefix) == ("my-bucket", "some/prefix")
        assert S3Storage.from_url("s3://b").prefix == ""

    @pytest.mark.parametrize("url", ["http://b/p", "s3:///p", "s3://b/p?x=1", "b/p"])
    def test_from_url_rejects(self, url: str) -> None:
        with pytest.raises(ConfigurationError):
            S3Storage.from_url(url)

    async def test_endpoint_from_environment(
        self, moto_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
        storage = S3Storage.from_url(f"s3://{s3_bucket}/env")
        try:
            location = await storage.save(_key(), b"via env")
            assert await storage.load(location) == b"via env"
        finally:
            await storage.aclose()

    async def test_retry_mode_is_standard(self, make_storage: Factory) -> None:
        client = await make_storage(max_attempts=7)._get_client()
        retries = client.meta.config.retries  # type: ignore[attr-defined]
        assert retries == {"mode": "standard", "total_max_attempts": 7}

    async def test_missing_bucket(self, moto_endpoint: str) -> None:
        storage = S3Storage(f"no-such-{uuid.uuid4().hex[:12]}", endpoint_url=moto_endpoint)
        try:
            with pytest.raises(BackendError, match="does not exist") as info:
                await storage.save(_key(), b"x")
            assert info.value.backend == "s3"
            assert isinstance(info.value.__cause__, ClientError)
        finally:
            await storage.aclose()

    def test_access_denied_message(self) -> None:
        # moto does not enforce IAM by default, so the mapping is checked directly.
        storage = S3Storage("locked")
        error = ClientError({"Error": {"Code": "AccessDenied"}}, "PutObject")
        assert "denied" in str(storage._errors.error("saving", error))

    async def test_concurrent_first_use_opens_one_client(self, make_storage: Factory) -> None:
        storage = make_storage()
        clients: list[object] = []

        async def grab() -> None:
            clients.append(await storage._get_client())

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(grab)
        assert len({id(c) for c in clients}) == 1
