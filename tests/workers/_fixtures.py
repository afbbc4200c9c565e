"""Synchronous fixtures for tests that drive separate processes.

Each gives the test a unique namespace on a real service (a PostgreSQL
schema, a Redis key prefix, a limiter budget, an S3 bucket on the local moto
server) and removes it afterwards. They are synchronous so that tests which
only orchestrate subprocesses need no event loop. Register them in a test
module by assignment (``pg_schema = _fixtures.pg_schema``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests._services import POSTGRES_URL, REDIS_URL, require_module, require_service

#: The driver each server needs, and the extra that installs it.
_DRIVERS = {"PostgreSQL": ("asyncpg", "postgres"), "Redis": ("redis", "redis")}


def require(name: str, url: str, port: int) -> None:
    """The server's driver (``require_module``), then ``require_service`` for ``url``."""
    module, extra = _DRIVERS[name]
    require_module(module, extra=extra)
    parts = urlsplit(url)
    require_service(name, parts.hostname or "127.0.0.1", parts.port or port)


def delete_redis_prefix(prefix: str) -> None:
    """Delete every Redis key under ``prefix:``."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A unique PostgreSQL schema, dropped with everything in it afterwards."""
    require("PostgreSQL", POSTGRES_URL, 5432)
    import asyncpg

    name = f"bs_mp_{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique Redis key prefix; every key under it is deleted afterwards."""
    require("Redis", REDIS_URL, 6379)
    name = f"bs-mp-{uuid.uuid4().hex[:12]}"
    yield name
    delete_redis_prefix(name)


@pytest.fixture
def limiter_key() -> Iterator[str]:
    """A unique shared-limiter budget name; its Redis state is deleted afterwards."""
    require("Redis", REDIS_URL, 6379)
    import redis

    from beautyspot_async._limiter_redis import KEY_PREFIX

    name = f"bs-mp-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(KEY_PREFIX + name)
    finally:
        client.close()


@dataclass
class S3Target:
    """A bucket on the local S3 endpoint, and a sync client to inspect it."""

    endpoint: str
    bucket: str
    client: Any

    def object_count(self) -> int:
        paginator = self.client.get_paginator("list_objects_v2")
        return sum(len(page.get("Contents", [])) for page in paginator.paginate(Bucket=self.bucket))

    @property
    def env(self) -> dict[str, str]:
        """What a child process needs to reach the endpoint (credentials are inherited)."""
        return {"AWS_ENDPOINT_URL": self.endpoint}


@pytest.fixture
def s3(moto_endpoint: str) -> Iterator[S3Target]:
    """A unique bucket on the local moto server; emptied and deleted afterwards."""
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"bs-mp-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    yield S3Target(moto_endpoint, bucket, client)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)
