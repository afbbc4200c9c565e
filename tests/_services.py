"""Reachability of the real services some tests need.

On a developer's laptop a missing service skips the test with the reason; in
CI (``BEAUTYSPOT_REQUIRE_SERVICES=1``) it fails it instead, so a broken
service can never turn the suite green by skipping.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get(
    "BEAUTYSPOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("BEAUTYSPOT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, in CI, fail) unless ``host:port`` accepts connections."""
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("BEAUTYSPOT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and BEAUTYSPOT_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)
