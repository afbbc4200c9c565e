"""Arguments stored with each entry (``Spot(store_args=)``) and the call's usage.

Every backend (memory, SQLite, PostgreSQL, Redis, a custom backend that
stores meta and one that drops it) keeps the meta a fresh result is saved
with and shows it in history; SQLite files and PostgreSQL tables written
before the ``meta`` column gain it when opened. The previews are bounded,
secrets redacted by name, ignored arguments left out, defaults applied. A
malformed meta is never a corrupt entry. The CLI and the dashboard show it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

import beautyspot_async as bs
from beautyspot_async import _preview
from beautyspot_async._portal import io_loop
from beautyspot_async._record import TaskRecord, checked_record, parse_meta
from beautyspot_async.cachekey import ArgumentKeyer
from beautyspot_async.cli import app
from beautyspot_async.db import MemoryTaskDB, SQLiteTaskDB, TaskDB
from beautyspot_async.testing import check_taskdb
from tests import _backends
from tests._services import POSTGRES_URL, require_module
from tests.test_custom_backends import MemoryTaskDB as DroppingTaskDB
from tests.test_testing_suite import _RequiredOnly

pytestmark = pytest.mark.anyio

postgres_schema = _backends.postgres_schema
make_postgres = _backends.make_postgres
redis_client = _backends.redis_client
redis_prefix = _backends.redis_prefix
make_redis = _backends.make_redis

runner = CliRunner()


class MetaKeepingTaskDB(DroppingTaskDB):
    """The guide's custom backend, with a ``save()`` that accepts ``meta``."""

    async def save(  # type: ignore[override]
        self,
        *,
        cache_key: str,
        func_name: str,
        input_id: str,
        version: str | None,
        result_type: str,
        content_type: str | None,
        result_value: str | None = None,
        result_data: bytes | None = None,
        expires_at: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        await super().save(
            cache_key=cache_key,
            func_name=func_name,
            input_id=input_id,
            version=version,
            result_type=result_type,
            content_type=content_type,
            result_value=result_value,
            result_data=result_data,
            expires_at=expires_at,
        )
        self._storage[cache_key]["meta"] = meta


class ConformingKeeper(_RequiredOnly):
    """A conforming custom backend on the required methods that keeps meta."""

    async def save(self, *, meta: Mapping[str, Any] | None = None, **fields: Any) -> None:  # type: ignore[override]
        await super().save(**fields)
        key = fields["cache_key"]
        self._rows[key] = replace(self._rows[key], meta=meta)


CASES = [
    "memory",
    "sqlite",
    "custom",
    "custom-dropping",
    pytest.param("postgres", marks=pytest.mark.services),
    pytest.param("redis", marks=pytest.mark.services),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=CASES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_db(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], TaskDB]:
    if kind == "postgres":
        factory: Callable[[], TaskDB] = request.getfixturevalue("make_postgres")
        return factory
    if kind == "redis":
        return request.getfixturevalue("make_redis")
    if kind == "sqlite":
        return lambda: SQLiteTaskDB(tmp_path / "args.db")
    shared = {
        "memory": MemoryTaskDB,
        "custom": MetaKeepingTaskDB,
        "custom-dropping": DroppingTaskDB,
    }[kind]()
    return lambda: shared


@pytest.fixture
async def spot(make_db: Callable[[], TaskDB], tmp_path: Path) -> AsyncIterator[bs.Spot]:
    s = bs.Spot("args", db=make_db(), storage=tmp_path / "blobs")
    yield s
    await s.aclose()


async def on_io(spot: bs.Spot, fn: Callable[..., Any], *args: Any) -> Any:
    await spot.open()
    if spot.db.loop_bound:
        return await io_loop.run(fn, *args)
    return await fn(*args)


def only_row(frame: pd.DataFrame) -> pd.Series:
    assert len(frame) == 1, frame
    return frame.iloc[0]


# -- every backend -------------------------------------------------------------------


async def test_args_and_usage_round_trip(spot: bs.Spot, kind: str) -> None:
    @spot.mark(input_key_fn=bs.KeyGen.ignore("client"), usage=lambda r: {"tokens": len(r)})
    async def ask(
        prompt: str, api_key: str, client: object = None, temperature: float = 0.5
    ) -> str:
        return prompt.upper()

    assert await ask("hello", "sk-live-123", client=object()) == "HELLO"
    row = only_row(await spot.history())
    if kind == "custom-dropping":  # a backend that drops meta is tolerated
        assert row["args"] is None
        assert row["usage"] is None
        return
    assert row["args"] == {
        "prompt": '"hello"',
        "api_key": "<redacted>",
        "temperature": "0.5",  # the default, applied like the key applies it
    }
    assert row["usage"] == {"tokens": 5.0}
    meta = await on_io(spot, spot.db.get_meta, row["cache_key"])
    if kind in ("sqlite", "postgres", "redis"):  # hit-path reads leave meta out
        hot = await on_io(spot, spot.db.get, row["cache_key"])
        assert hot.meta is None
        many = await on_io(spot, spot.db.get_many, [row["cache_key"]])
        assert many[row["cache_key"]].meta is None
    assert dict(meta)["args"] == row["args"]
    assert set(meta["digests"]) == {"prompt", "api_key", "temperature"}
    assert all(len(d) == _preview.DIGEST_CHARS for d in meta["digests"].values())
    # A hit reads no meta and changes nothing.
    assert await ask("hello", "sk-live-123") == "HELLO"
    assert spot.statistics().hits + spot.statistics().memory_hits >= 1


async def test_store_args_none_stores_no_args(
    make_db: Callable[[], TaskDB], tmp_path: Path, kind: str
) -> None:
    async with bs.Spot("none", db=make_db(), storage=tmp_path / "b", store_args="none") as spot:

        @spot.mark
        async def plain(x: int) -> int:
            return x

        @spot.mark(usage=lambda r: 2)
        async def costly(x: int) -> int:
            return x

        await plain(1)
        await costly(2)
        frame = await spot.history()
        by_func = {r["func_name"].rsplit(".", 1)[-1]: r for _, r in frame.iterrows()}
        assert by_func["plain"]["args"] is None
        assert by_func["plain"]["meta"] is None
        assert by_func["costly"]["args"] is None
        if kind != "custom-dropping":
            assert by_func["costly"]["usage"] == 2.0


@pytest.mark.parametrize("cls", [MemoryTaskDB, _RequiredOnly, ConformingKeeper])
async def test_conformance_meta_check(cls: type[TaskDB]) -> None:
    """check_taskdb (meta round trip included) passes for keepers and droppers alike.

    The server backends run it in their own conformance tests.
    """
    await check_taskdb(cls)
    db = cls()
    await db.save_many([_record("k", {"usage": 1.0})])
    expected = None if cls is _RequiredOnly else {"usage": 1.0}
    assert await db.get_meta("k") == expected


# -- migration ----------------------------------------------------------------------------

_OLD_SQLITE = """
CREATE TABLE tasks (
    cache_key TEXT PRIMARY KEY NOT NULL, func_name TEXT NOT NULL, input_id TEXT NOT NULL,
    version TEXT, result_type TEXT NOT NULL, content_type TEXT, result_value TEXT,
    result_data BLOB, expires_at REAL, size_bytes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE leases (cache_key TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL,
    expires_at REAL NOT NULL) WITHOUT ROWID;
INSERT INTO tasks VALUES ('k1', 'f', 'i', NULL, 'inline', NULL, NULL, x'00', NULL, 1, 1.0, 1.0);
PRAGMA user_version = 1;
"""


def _sqlite_columns(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(tasks)")]


async def test_old_sqlite_file_gains_the_meta_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_OLD_SQLITE)
    assert "meta" not in _sqlite_columns(path)
    for _ in range(2):  # idempotent: a second open finds the column
        async with SQLiteTaskDB(path) as db:
            old = await db.get("k1")
            assert old is not None
            assert old.problem is None
            assert old.meta is None
            assert await db.get_meta("k1") is None
            await db.save_many([_record("k2", {"args": {"x": "1"}})])
            assert await db.get_meta("k2") == {"args": {"x": "1"}}
            history = await db.get_history()
            assert list(history["meta"]) == [{"args": {"x": "1"}}, None]
    assert _sqlite_columns(path).count("meta") == 1
    # The fast path reads the migrated file too.
    db = SQLiteTaskDB(path)
    try:
        await db.init_schema()
        assert db.get_nowait("k2") is not None
    finally:
        await db.aclose()


@pytest.mark.services
async def test_existing_postgres_table_gains_the_meta_column(
    make_postgres: Callable[..., Any], postgres_schema: str
) -> None:
    asyncpg = require_module("asyncpg", extra="postgres")
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'CREATE SCHEMA "{postgres_schema}"')
        await conn.execute(
            f"""CREATE TABLE "{postgres_schema}".beautyspot_tasks (
                cache_key text PRIMARY KEY, func_name text NOT NULL, input_id text NOT NULL,
                version text, result_type text NOT NULL, content_type text,
                result_value text, result_data bytea, expires_at double precision,
                size_bytes bigint NOT NULL DEFAULT 0, created_at double precision NOT NULL,
                updated_at double precision NOT NULL)"""
        )
        await conn.execute(
            f"""INSERT INTO "{postgres_schema}".beautyspot_tasks VALUES
                ('k1', 'f', 'i', NULL, 'inline', NULL, NULL, '\\x00', NULL, 1, 1.0, 1.0)"""
        )
        db = make_postgres()
        await db.init_schema()
        await db.init_schema()
        old = await db.get("k1")
        assert old is not None
        assert old.problem is None
        assert await db.get_meta("k1") is None
        await db.save_many([_record("k2", {"usage": 3.0})])
        assert await db.get_meta("k2") == {"usage": 3.0}
        assert [
            r.meta for r in sorted([r async for r in db.iter_records()], key=lambda r: r.cache_key)
        ] == [
            None,
            {"usage": 3.0},
        ]
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'beautyspot_tasks' AND column_name = 'meta'",
            postgres_schema,
        )
        assert len(columns) == 1
    finally:
        await conn.close()


def _record(key: str, meta: dict[str, Any] | None) -> TaskRecord:
    return TaskRecord(
        cache_key=key,
        func_name="f",
        input_id="i",
        version=None,
        result_type="inline",
        content_type=None,
        result_data=b"\x01",
        size_bytes=1,
        meta=meta,
    )


# -- what is stored ----------------------------------------------------------------


def test_previews_are_bounded() -> None:
    long = _preview.preview("x" * 10_000)
    assert len(long) <= _preview.MAX_ARG_CHARS
    assert long.endswith(_preview.ELLIPSIS)
    assert _preview.preview([1, "a", None]) == '[1,"a",null]'
    many = [(f"a{i}", "y" * 2000, "y" * 2000) for i in range(30)]
    meta = _preview.argument_meta(many)
    total = sum(len(k) + len(v) for k, v in meta["args"].items())
    assert total <= _preview.MAX_TOTAL_CHARS
    assert all(len(v) <= _preview.MAX_ARG_CHARS for v in meta["args"].values())
    assert len(meta["digests"]) == 30  # digests are kept whole, whatever the previews
    # One huge argument among small ones: the small ones survive intact.
    mixed = _preview.argument_meta(
        [("small", 1, 1)] + [(f"big{i}", "z" * 600, "z" * 600) for i in range(10)]
    )
    assert mixed["args"]["small"] == "1"


def test_redaction_by_name() -> None:
    for name in ("api_key", "KEY", "auth_token", "client_secret", "password", "Authorization"):
        assert _preview.is_secret_name(name), name
    for name in ("prompt", "model", "x"):
        assert not _preview.is_secret_name(name)
    one = _preview.argument_meta([("api_key", "sk-1", "sk-1"), ("prompt", "p", "p")])
    two = _preview.argument_meta([("api_key", "sk-2", "sk-2"), ("prompt", "p", "p")])
    assert one["args"]["api_key"] == "<redacted>"
    assert "sk-1" not in json.dumps(one)
    assert one["digests"]["api_key"] != two["digests"]["api_key"]
    assert one["digests"]["prompt"] == two["digests"]["prompt"]


def test_key_arguments_follow_the_key() -> None:
    def fn(a: int, b: int = 2, *rest: int, client: object = None, **kw: Any) -> None: ...

    keyer = ArgumentKeyer(fn, input_key_fn=bs.KeyGen.ignore("client", "noise").map(b=str))
    found = keyer.key_arguments((1,), {"client": object(), "noise": 1, "extra": [3]})
    assert [(n, v, k) for n, v, k in found] == [
        ("a", 1, 1),
        ("b", 2, "2"),
        ("rest", (), ()),
        ("extra", [3], [3]),
    ]

    def custom_key(*args: Any, **kwargs: Any) -> str:
        return "same"

    keyer = ArgumentKeyer(fn, input_key_fn=custom_key)
    names = [n for n, _, _ in keyer.key_arguments((1,), {"client": 5})]
    assert names == ["a", "b", "rest", "client", "kw"]


async def test_custom_key_function_stores_bound_args_redacted(tmp_path: Path) -> None:
    async with bs.Spot("custom", db=MemoryTaskDB(), storage=tmp_path / "b") as spot:

        @spot.mark(input_key_fn=lambda prompt, token=None: prompt)
        async def ask(prompt: str, token: str | None = None) -> str:
            return prompt

        await ask("p", token="t-1")
        row = only_row(await spot.history())
        assert row["args"] == {"prompt": '"p"', "token": "<redacted>"}


async def test_unkeyable_ignored_arg_absent_and_no_failure(tmp_path: Path) -> None:
    async with bs.Spot("ign", db=MemoryTaskDB(), storage=tmp_path / "b") as spot:

        @spot.mark(input_key_fn=bs.KeyGen.ignore("lock"))
        async def work(n: int, lock: Any) -> int:
            return n

        await work(3, asyncio.Lock())
        row = only_row(await spot.history())
        assert row["args"] == {"n": "3"}


async def test_preview_failure_never_fails_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(arguments: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr("beautyspot_async._pipeline.argument_meta", broken)
    async with bs.Spot("broken", db=MemoryTaskDB(), storage=tmp_path / "b") as spot:

        @spot.mark
        async def f(x: int) -> int:
            return x + 1

        with caplog.at_level(logging.DEBUG, logger="beautyspot_async"):
            assert await f(1) == 2
        assert only_row(await spot.history())["args"] is None
        assert "not stored" in caplog.text


async def test_unrepresentable_argument_is_previewed(tmp_path: Path) -> None:
    class Weird:
        def __repr__(self) -> str:
            raise ValueError("no repr")

        def __cache_key__(self) -> str:
            return "weird"

    async with bs.Spot("weird", db=MemoryTaskDB(), storage=tmp_path / "b") as spot:

        @spot.mark
        async def f(w: Weird) -> int:
            return 1

        assert await f(Weird()) == 1
        args = only_row(await spot.history())["args"]
        assert set(args) == {"w"}
        assert "unrepresentable" in args["w"]


# -- malformed meta --------------------------------------------------------------------


@pytest.mark.parametrize("junk", ["not json", "[1, 2]", "42", "null", '{"args": '])
def test_malformed_meta_is_no_corruption(junk: str) -> None:
    record = checked_record(
        "k", "f", "i", None, "inline", None, None, b"x", None, 1, 1.0, 1.0, junk
    )
    assert record.problem is None
    assert record.meta is None
    assert parse_meta(b'{"a": 1}') == {"a": 1}
    assert parse_meta(7) is None


async def test_malformed_meta_in_sqlite_is_a_hit(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    calls: list[int] = []
    async with bs.Spot("junk", db=path, storage=tmp_path / "b") as spot:

        @spot.mark
        async def f(x: int) -> int:
            calls.append(x)
            return x * 2

        await f(1)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE tasks SET meta = 'not json at all'")
    async with bs.Spot("junk", db=path, storage=tmp_path / "b") as spot:

        @spot.mark
        async def f(x: int) -> int:  # type: ignore[no-redef]
            calls.append(x)
            return x * 2

        assert await f(1) == 2
        assert calls == [1]  # a hit: the entry was not taken for corrupt
        assert spot.statistics().corrupt == 0
        row = only_row(await spot.history())
        assert row["meta"] is None
        assert row["args"] is None


# -- CLI and dashboard -------------------------------------------------------------------


def _build(tmp_path: Path) -> tuple[Path, Path, str]:
    db, blobs = tmp_path / "cli.db", tmp_path / "cli_blobs"

    async def main() -> str:
        async with bs.Spot("cli", db=db, storage=blobs) as spot:

            @spot.mark(usage=lambda r: {"tokens": 7})
            async def ask(prompt: str, items: list[int], password: str = "hunter2") -> str:
                return prompt

            await ask("[bold]tell me[/bold]", [1, 2, 3])
            return str((await spot.history())["cache_key"].iloc[0])

    return db, blobs, asyncio.run(main())


def test_cli_history_and_show_show_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    db, blobs, key = _build(tmp_path)
    result = runner.invoke(app, ["history", str(db), "--storage", str(blobs)])
    assert result.exit_code == 0, result.output
    assert "args" in result.output
    assert '"[bold]tell me[/bold]"' in result.output  # not taken for markup
    assert "password=<redacted>" in result.output
    assert "hunter2" not in result.output
    as_json = runner.invoke(app, ["history", str(db), "--storage", str(blobs), "--json"])
    rows = json.loads(as_json.output)
    assert rows[0]["args"]["items"] == "[1,2,3]"
    assert rows[0]["usage"] == {"tokens": 7.0}
    shown = runner.invoke(app, ["show", str(db), key[:10], "--storage", str(blobs)])
    assert shown.exit_code == 0, shown.output
    assert "items = [1,2,3]" in shown.output
    assert "password = <redacted>" in shown.output
    assert '"tokens": 7.0' in shown.output
    shown_json = json.loads(
        runner.invoke(app, ["show", str(db), key, "--storage", str(blobs), "--json"]).output
    )
    assert shown_json["args"]["prompt"] == '"[bold]tell me[/bold]"'
    assert shown_json["usage"] == {"tokens": 7.0}


def test_dashboard_shows_args(tmp_path: Path) -> None:
    require_module("starlette", extra="dashboard")
    from starlette.testclient import TestClient

    from beautyspot_async.dashboard import create_app

    db, blobs, key = _build(tmp_path)
    with (
        bs.Spot("cli", db=db, storage=blobs) as spot,
        TestClient(create_app(spot), base_url="http://localhost") as client,
    ):
        entry = client.get(f"/api/entries/{key}").json()
        assert entry["args"]["password"] == "<redacted>"
        assert entry["usage"] == {"tokens": 7.0}
        page = client.get("/").text
        assert "items=[1,2,3]" in page
        assert "&lt;redacted&gt;" in page
        history = client.get("/api/history").json()
        assert history[0]["args"]["items"] == "[1,2,3]"


def test_hit_path_reads_no_meta(tmp_path: Path) -> None:
    """The nowait and get reads of SQLite leave meta out: hits never pay for it."""

    async def main() -> None:
        db = SQLiteTaskDB(tmp_path / "hot.db")
        async with db:
            await db.save_many([_record("k", {"args": {"x": "1"}})])
            found = db.get_many_nowait(["k"])["k"]
            assert found is not None
            assert found.meta is None
            got = await db.get("k")
            assert got is not None
            assert got.meta is None
            assert [r.meta async for r in db.iter_records()] == [{"args": {"x": "1"}}]

    asyncio.run(main())
