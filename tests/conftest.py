"""Shared fixtures: the anyio backend matrix and service requirements."""

from __future__ import annotations

import pytest

from ._services import require_module


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test under asyncio and trio.

    Modules whose code path is asyncio-only (aiosqlite, asyncpg, redis,
    aiobotocore drivers used directly) override this fixture. Without trio
    installed the trio half skips (fails in CI).
    """
    if request.param == "trio":
        require_module("trio", extra="dev")
    return str(request.param)
