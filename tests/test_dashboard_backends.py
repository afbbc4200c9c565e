"""The dashboard over every shipped backend: paging, filters, failures, an entry page.

The index goes through the public protocols only (``history()``,
``failures()``, ``get``), so what works on SQLite must work on the in-memory
database, PostgreSQL and Redis alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest

import beautyspot_async as bs
from beautyspot_async.db import MemoryTaskDB
from beautyspot_async.db._base import TaskDB
from tests import _backends

from ._services import require_module

require_module("starlette", extra="dashboard")
httpx = require_module("httpx", extra="dev")

from beautyspot_async.dashboard import create_app  # noqa: E402  (needs the dashboard extra)

pytestmark = pytest.mark.anyio

postgres_schema = _backends.postgres_schema
make_postgres = _backends.make_postgres
redis_client = _backends.redis_client
redis_prefix = _backends.redis_prefix
make_redis = _backends.make_redis


@pytest.fixture
def anyio_backend() -> str:
    """asyncpg and redis.asyncio are asyncio-only."""
    return "asyncio"


@pytest.fixture(
    params=[
        "memory",
        pytest.param("postgres", marks=pytest.mark.services),
        pytest.param("redis", marks=pytest.mark.services),
    ]
)
def make_db(request: pytest.FixtureRequest) -> Callable[[], TaskDB]:
    if request.param == "memory":
        return MemoryTaskDB
    fixture = "make_postgres" if request.param == "postgres" else "make_redis"
    factory: Callable[[], TaskDB] = request.getfixturevalue(fixture)
    return factory


async def test_index_entry_and_failures(make_db: Callable[[], TaskDB], tmp_path: Any) -> None:
    spot = bs.Spot("dash", db=make_db(), storage=tmp_path / "blobs")

    @spot.mark(name="app.fill", version="v2")
    async def fill(n: int) -> int:
        return n

    @spot.mark(name="app.report", content_type="text/markdown")
    async def report(topic: str) -> str:
        return f"# About {topic}\n\n<script>window.x=1</script>"

    async def broken(n: int) -> int:
        raise ValueError(f"bad {n}")

    async with spot:
        for i in range(10):
            await fill(i)
        await report("cats")
        await spot.map(spot.mark(name="app.broken")(broken), [7], retries=0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*httpx2.*")
            transport = httpx.ASGITransport(app=create_app(spot))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            data = (await client.get("/api/index", params={"per_page": 4, "page": 3})).json()
            assert (data["total"], data["pages"], len(data["rows"])) == (11, 3, 3)
            assert data["rows"][-1]["func_name"] == "app.fill"  # the oldest, last
            totals = {t["func_name"]: t for t in data["totals"]}
            assert totals["app.fill"]["entries"] == 10
            assert totals["app.broken"]["failures"] == 1

            fills = (await client.get("/api/index", params={"func": "fill"})).json()
            assert fills["total"] == 10
            v2 = (await client.get("/api/index", params={"version": "v2"})).json()
            assert v2["total"] == 10
            failed = (await client.get("/api/index", params={"status": "failed"})).json()
            assert [r["message"] for r in failed["rows"]] == ["bad 7"]

            page = (await client.get(f"/entries/{report.key('cats')}")).text
            assert "<h1>About cats</h1>" in page
            assert "<script>window" not in page
            failures = (await client.get("/failures")).text
            assert "<strong>ValueError</strong>: bad 7" in failures
