"""Shared fixtures: the anyio backend matrix and service requirements."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test under asyncio and trio.

    Modules whose code path is asyncio-only (aiosqlite, asyncpg, redis,
    aiobotocore drivers used directly) override this fixture.
    """
    return str(request.param)
