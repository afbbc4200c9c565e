"""What some tests need beyond the core install: real services, optional extras.

On a developer's laptop a missing service or extra skips the test with the
reason; in CI (``BEAUTYSPOT_REQUIRE_SERVICES=1``) it fails it instead, so a
broken service or a missing dependency can never turn the suite green by
skipping.
"""

from __future__ import annotations

import importlib
import os
import socket
from types import ModuleType

import pytest

POSTGRES_URL = os.environ.get(
    "BEAUTYSPOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("BEAUTYSPOT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _required() -> bool:
    return os.environ.get("BEAUTYSPOT_REQUIRE_SERVICES") == "1"


def require_module(name: str, *, extra: str) -> ModuleType:
    """Import and return module ``name``, which the ``extra`` extra installs.

    Like :func:`pytest.importorskip`: when the module is missing the test (or,
    called at module level, the whole module) is skipped, naming the extra to
    install (a module it needs being absent counts too: ``moto.server``
    without ``moto[server]``). In CI it fails instead. Other import errors
    propagate: an install that is present but broken is never a skip.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        reason = (
            f"{name} cannot be imported ({exc.name} is missing): "
            f"pip install 'beautyspot-async[{extra}]'"
        )
    if _required():
        pytest.fail(f"{reason}, and BEAUTYSPOT_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


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
    if _required():
        pytest.fail(f"{reason}, and BEAUTYSPOT_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)


def require_executable(path: str, *, install: str) -> str:
    """Skip (or, in CI, fail) unless the program at ``path`` exists and is executable."""
    if os.access(path, os.X_OK):
        return path
    reason = f"{path} is missing: {install}"
    if _required():
        pytest.fail(f"{reason}, and BEAUTYSPOT_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
