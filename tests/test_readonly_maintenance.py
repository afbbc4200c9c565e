"""Read-only commands (`history`, `stats`, `show`) never create anything.

Run against the real PostgreSQL and Redis servers, each test on a fresh
schema or key prefix that nobody has initialised: afterwards the schema must
still not exist and no key may exist under the prefix.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

import beautyspot_async as bs
from beautyspot_async import cli
from tests._services import POSTGRES_URL, REDIS_URL, require_module, require_service

pytestmark = [pytest.mark.services]

runner = CliRunner()


def _require(url: str, name: str, port: int) -> None:
    parts = urlsplit(url)
    require_service(name, parts.hostname or "127.0.0.1", parts.port or port)


async def _postgres_leftovers(schema: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        found = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        return int(found)
    finally:
        await conn.close()


async def _redis_leftovers(prefix: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["postgresql", "redis"])
def fresh_store(request: pytest.FixtureRequest) -> Iterator[tuple[Callable[[], bs.TaskDB], Any]]:
    """A factory of task databases on a never-initialised namespace; checks leftovers."""
    name = f"bs_ro_{uuid.uuid4().hex[:12]}"
    leftovers: Callable[[str], Any]
    if request.param == "postgresql":
        require_module("asyncpg", extra="postgres")
        _require(POSTGRES_URL, "PostgreSQL", 5432)
        from beautyspot_async.db import PostgresTaskDB

        def factory() -> bs.TaskDB:
            return PostgresTaskDB(POSTGRES_URL, schema=name)

        leftovers = _postgres_leftovers
    else:
        require_module("redis", extra="redis")
        _require(REDIS_URL, "Redis", 6379)
        from beautyspot_async.db import RedisTaskDB

        def factory() -> bs.TaskDB:
            return RedisTaskDB(REDIS_URL, prefix=name)

        leftovers = _redis_leftovers
    found: list[int] = []
    yield factory, found
    found.append(asyncio.run(leftovers(name)))
    assert found[-1] == 0, f"a read-only command created {found[-1]} object(s) in {name}"


def _invoke(
    monkeypatch: pytest.MonkeyPatch, factory: Callable[[], bs.TaskDB], tmp: Path, *args: str
) -> Any:
    def open_spot(db: str, storage: str | None) -> bs.Spot:
        return bs.Spot("ro", db=factory(), storage=tmp / "blobs")

    monkeypatch.setattr(cli, "_open_spot", open_spot)
    return runner.invoke(cli.app, list(args))


class TestReadOnlyCommands:
    """history, stats and show on an uninitialised store answer empty and create nothing."""

    def test_history_is_empty(
        self, fresh_store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        factory, _ = fresh_store
        result = _invoke(monkeypatch, factory, tmp_path, "history", "x", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == []

    def test_stats_is_empty(
        self, fresh_store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        factory, _ = fresh_store
        result = _invoke(monkeypatch, factory, tmp_path, "stats", "x", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == []

    def test_show_finds_nothing(
        self, fresh_store: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        factory, _ = fresh_store
        result = _invoke(monkeypatch, factory, tmp_path, "show", "x", "0" * 32)
        assert result.exit_code == 1, result.output
        assert "no entry" in " ".join(result.stderr.split())
