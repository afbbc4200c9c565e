"""Blob storage on Amazon S3 and S3-compatible services (extra ``[s3]``).

Any service speaking the S3 API works through ``endpoint_url``: MinIO,
Cloudflare R2, Ceph, and Google Cloud Storage's interoperability endpoint
(``endpoint_url="https://storage.googleapis.com"`` with HMAC keys as
``aws_access_key_id`` / ``aws_secret_access_key``). Without explicit
arguments the endpoint, region and credentials come from the standard AWS
configuration (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``~/.aws/config``...).

Locations are the blob's path relative to the storage prefix,
``<first two characters of the key>/<key>`` (for example ``ab/ab12...``), so
records stay valid when a bucket is copied or renamed. Each object carries the
SHA-256 of its bytes in the ``x-amz-meta-sha256`` metadata, checked on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple
from urllib.parse import urlsplit

import anyio

from beautyspot_async._errormap import ErrorMap
from beautyspot_async._extras import install_hint
from beautyspot_async._lazy import LazyClient
from beautyspot_async.exceptions import CacheCorruptedError, ConfigurationError
from beautyspot_async.storage._base import BlobStorageBase

try:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"S3Storage needs {install_hint('s3')}") from exc

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["S3Storage"]

MiB = 1024 * 1024
# S3 refuses parts below 5 MiB (except the last one) and above 5 GiB.
_MIN_PART = 5 * MiB
_MAX_PART = 5 * 1024 * MiB
_CHECKSUM_META = "sha256"

# A key is one path segment: no separators, no leading dot, nothing a
# filesystem, a URL or S3 console would interpret.
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}\Z")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9_.=-]+\Z")

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId"})


class _Opened(NamedTuple):
    client: S3Client
    stack: AsyncExitStack


async def _close(opened: _Opened) -> None:
    with anyio.CancelScope(shield=True):
        await opened.stack.aclose()


def _code(exc: BaseException) -> str:
    """The S3 error code of a ClientError ("" for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key) or ".." in key:
        raise ConfigurationError(f"invalid blob key {key!r}: use letters, digits, '.', '_', '-'")
    return key


def _normalise_prefix(prefix: str) -> str:
    segments = [s for s in prefix.split("/") if s]
    for segment in segments:
        if segment in (".", "..") or not _PREFIX_SEGMENT.match(segment):
            raise ConfigurationError(f"invalid S3 prefix {prefix!r}")
    return "/".join(segments)


def location_for(key: str) -> str:
    """Return the location of ``key``: ``<key[:2]>/<key>`` (pure)."""
    return f"{_check_key(key)[:2]}/{key}"


def parse_location(location: str) -> str:
    """Return the key of a location made by :func:`location_for` (pure).

    Raises :class:`~beautyspot_async.ConfigurationError` for anything else, so
    a location read from a database can never address an object outside the
    storage prefix.
    """
    shard, sep, key = location.partition("/") if isinstance(location, str) else ("", "", "")
    if not sep:
        raise ConfigurationError(f"invalid S3 blob location {location!r}")
    _check_key(key)
    if shard != key[:2]:
        raise ConfigurationError(f"invalid S3 blob location {location!r}")
    return key


def sha256_hex(data: bytes) -> str:
    """The checksum stored with each object (pure)."""
    return hashlib.sha256(data).hexdigest()


class S3Storage(BlobStorageBase):
    """Blobs as objects under ``s3://<bucket>/<prefix>/``.

    Blobs up to ``multipart_threshold`` bytes go up in a single PUT; larger
    ones in a multipart upload of ``part_size`` parts that is aborted on any
    failure, so a partial object is never visible. Transient errors (throttling,
    5xx, dropped connections) are retried by botocore's ``standard`` retry
    mode, up to ``max_attempts`` attempts per request. :meth:`list_locations`
    fetches ``page_size`` keys per request. ``client_kwargs`` go to
    ``session.create_client("s3", ...)`` (``region_name``,
    ``aws_access_key_id``, ``aws_secret_access_key``, ``config``...).
    """

    loop_bound: ClassVar[bool] = True
    backend_name: ClassVar[str] = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        multipart_threshold: int = 8 * MiB,
        part_size: int = 8 * MiB,
        max_attempts: int = 5,
        page_size: int = 1000,
        **client_kwargs: Any,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ConfigurationError(f"invalid S3 bucket name {bucket!r}")
        if not _MIN_PART <= part_size <= _MAX_PART:
            raise ConfigurationError("part_size must be between 5 MiB and 5 GiB (an S3 limit)")
        if multipart_threshold < 1:
            raise ConfigurationError("multipart_threshold must be positive")
        self.bucket = bucket
        self.prefix = _normalise_prefix(prefix)
        self.endpoint_url = endpoint_url
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._max_attempts = max_attempts
        self._page_size = page_size
        self._client_kwargs = client_kwargs
        self._client = LazyClient(self._open, _close)
        self._errors = ErrorMap(
            self.backend_name, {BotoCoreError: None, ClientError: None}, detail=self._hint
        )

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3Storage:
        """Build a storage from ``s3://bucket/prefix`` (keyword options pass through)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(f"expected s3://bucket/prefix, got {url!r}")
        return cls(parts.netloc, parts.path, **kwargs)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _object_key(self, key: str) -> str:
        location = location_for(key)
        return f"{self.prefix}/{location}" if self.prefix else location

    def _object_key_of(self, location: str) -> str:
        parse_location(location)
        return f"{self.prefix}/{location}" if self.prefix else location

    # -- client lifecycle -----------------------------------------------------

    async def _get_client(self) -> S3Client:
        return (await self._client.get()).client

    async def _open(self) -> _Opened:
        kwargs = dict(self._client_kwargs)
        # total_max_attempts counts the first try; botocore's max_attempts
        # would count retries only.
        config = AioConfig(retries={"mode": "standard", "total_max_attempts": self._max_attempts})
        user_config = kwargs.pop("config", None)
        if user_config is not None:
            config = config.merge(user_config)
        if self.endpoint_url is not None:
            kwargs["endpoint_url"] = self.endpoint_url
        stack = AsyncExitStack()
        with self._errors.translating("opening the S3 client"):
            try:
                client = await stack.enter_async_context(
                    get_session().create_client("s3", config=config, **kwargs)
                )
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stack.aclose()
                raise
        return _Opened(client, stack)

    async def aclose(self) -> None:
        """Close the client. Idempotent; the storage reopens on next use."""
        await self._client.aclose()

    def _hint(self, exc: BaseException) -> str:
        code = _code(exc)
        if code == "NoSuchBucket":
            return f"bucket {self.bucket!r} does not exist; create it or check endpoint/region"
        if code in _DENIED_CODES:
            return f"access to bucket {self.bucket!r} denied; check the credentials and policy"
        return str(exc)

    # -- operations -----------------------------------------------------------

    async def save(self, key: str, data: bytes) -> str:
        """Upload ``data`` under ``key`` (single PUT or multipart); return its location."""
        object_key = self._object_key(key)
        data = bytes(data)
        metadata = {_CHECKSUM_META: sha256_hex(data)}
        client = await self._get_client()
        with self._errors.translating(f"saving {key!r}"):
            if len(data) <= self.multipart_threshold:
                await client.put_object(
                    Bucket=self.bucket, Key=object_key, Body=data, Metadata=metadata
                )
            else:
                await self._multipart(client, object_key, data, metadata)
        return location_for(key)

    async def _multipart(
        self, client: S3Client, object_key: str, data: bytes, metadata: dict[str, str]
    ) -> None:
        created = await client.create_multipart_upload(
            Bucket=self.bucket, Key=object_key, Metadata=metadata
        )
        upload_id = created["UploadId"]
        try:
            view = memoryview(data)
            parts = []
            for number, start in enumerate(range(0, len(data), self.part_size), start=1):
                part = await client.upload_part(
                    Bucket=self.bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(view[start : start + self.part_size]),
                )
                parts.append({"PartNumber": number, "ETag": part["ETag"]})
            await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException:
            # Also on cancellation: parts of an aborted upload are discarded
            # and never become a visible (partial) object.
            with anyio.CancelScope(shield=True):
                # A failed abort must not hide the original error; an
                # incomplete-upload lifecycle rule on the bucket cleans up.
                with contextlib.suppress(BotoCoreError, ClientError):
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=object_key, UploadId=upload_id
                    )
            raise

    async def load(self, location: str) -> bytes:
        """Download the blob at ``location`` and verify its checksum.

        Raises :class:`~beautyspot_async.CacheCorruptedError` when the object
        is missing, has no checksum, or its bytes do not match it.
        """
        object_key = self._object_key_of(location)
        client = await self._get_client()
        with self._errors.translating(f"loading {location!r}"):
            try:
                response = await client.get_object(Bucket=self.bucket, Key=object_key)
                async with response["Body"] as body:
                    data = await body.read()
            except ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    raise CacheCorruptedError(f"S3 blob {location!r} is missing") from exc
                raise
        expected = response.get("Metadata", {}).get(_CHECKSUM_META)
        if expected is None:
            raise CacheCorruptedError(f"S3 blob {location!r} has no {_CHECKSUM_META} metadata")
        if sha256_hex(data) != expected:
            raise CacheCorruptedError(f"S3 blob {location!r} fails its {_CHECKSUM_META} checksum")
        return data

    async def delete(self, location: str) -> None:
        """Delete the blob at ``location``; deleting a missing blob is a no-op."""
        object_key = self._object_key_of(location)
        client = await self._get_client()
        with self._errors.translating(f"deleting {location!r}"):
            try:
                await client.delete_object(Bucket=self.bucket, Key=object_key)
            except ClientError as exc:
                if _code(exc) not in _MISSING_CODES:
                    raise

    async def list_locations(self) -> AsyncIterator[str]:
        """Yield the location of every blob under the prefix, page by page.

        Objects under the prefix that this storage did not write (their path
        is not a valid location) are skipped.
        """
        async for location, _ in self.list_blobs():
            yield location

    async def list_blobs(self) -> AsyncIterator[tuple[str, float | None]]:
        """:meth:`list_locations` with each object's ``LastModified``, from the same listing."""
        client = await self._get_client()
        root = f"{self.prefix}/" if self.prefix else ""
        paginator = client.get_paginator("list_objects_v2")
        with self._errors.translating("listing blobs"):
            async for page in paginator.paginate(
                Bucket=self.bucket, Prefix=root, PaginationConfig={"PageSize": self._page_size}
            ):
                for obj in page.get("Contents", []):
                    location = obj["Key"][len(root) :]
                    try:
                        parse_location(location)
                    except ConfigurationError:
                        continue
                    modified = obj.get("LastModified")
                    yield location, None if modified is None else modified.timestamp()
