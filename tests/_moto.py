"""An S3 endpoint for tests: moto's server mode on a free loopback port.

Import the fixtures into a test module (``from tests._moto import
moto_endpoint, s3_bucket``) to register them. The server is real HTTP, so the
code under test goes through aiobotocore exactly as against AWS; nothing is
patched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests._services import require_module

_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start moto's server on 127.0.0.1 (a free port) with dummy credentials."""
    moto_server = require_module("moto.server", extra="dev")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _DUMMY_ENV.items():
            mp.setenv(name, value)
        # A real profile or endpoint in the developer's environment must not
        # redirect the tests away from the local server.
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def s3_client(endpoint: str) -> Any:
    """An aiobotocore S3 client context manager for ``endpoint`` (raw access)."""
    session = require_module("aiobotocore.session", extra="s3")
    return session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    )


@pytest.fixture
async def s3_bucket(moto_endpoint: str) -> AsyncIterator[str]:
    """Create a uniquely named bucket; empty and delete it afterwards."""
    name = f"bs-test-{uuid.uuid4().hex[:16]}"
    async with s3_client(moto_endpoint) as client:
        await client.create_bucket(Bucket=name)
        try:
            yield name
        finally:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=name):
                for obj in page.get("Contents", []):
                    await client.delete_object(Bucket=name, Key=obj["Key"])
            uploads = await client.list_multipart_uploads(Bucket=name)
            for upload in uploads.get("Uploads", []):
                await client.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            await client.delete_bucket(Bucket=name)
