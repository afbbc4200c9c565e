"""The command line and the maintenance layer, over data written by a real Spot.

Each test builds a SQLite file and a blob directory in ``tmp_path`` with a real
Spot (on asyncio: ``asyncio.run`` in a sync fixture), then drives the typer app
with its CliRunner. The async maintenance tests run under asyncio and trio.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from typer.testing import CliRunner

import beautyspot_async as bs
from beautyspot_async import _display as display
from beautyspot_async import _maintenance as maint
from beautyspot_async._record import BLOB, INLINE, TaskRecord
from beautyspot_async.cli import app, format_size, spot_name_for
from beautyspot_async.db import SQLiteTaskDB
from beautyspot_async.storage import LocalStorage

runner = CliRunner()

BIG = "x" * 400  # above the builder's blob_threshold: stored as a blob
PAST = 1_000_000.0  # a wall clock long ago: a ttl taken then has expired now


class Point:
    """A user type the CLI process has not registered."""

    def __init__(self, x: int) -> None:
        self.x = x


@dataclass
class Built:
    db: Path
    blobs: Path
    keys: dict[str, str]  # label -> cache key


def build(tmp_path: Path) -> Built:
    """Write one entry of each kind through a real Spot, then close it."""
    db, blobs = tmp_path / "exp.db", tmp_path / "exp_blobs"
    keys: dict[str, str] = {}

    async def main() -> None:
        spot = bs.Spot("exp", db=db, storage=blobs, blob_threshold=64)
        spot.register_type(type_=Point, code=7, encoder=lambda p: p.x, decoder=Point)
        old = bs.Spot("exp_old", db=db, storage=blobs, clock=lambda: PAST)

        @spot.mark(name="small")
        async def small(x: int) -> Any:
            return {"x": x, "pair": (x, "a"), "when": dt.datetime(2024, 1, 2, tzinfo=dt.UTC)}

        @spot.mark(name="big")
        async def big(x: int) -> str:
            return BIG

        @spot.mark(name="custom")
        async def custom(x: int) -> Any:
            return [Point(x), "tail"]

        @old.mark(name="stale", ttl=60)
        async def stale(x: int) -> int:
            return x

        async with spot, old:
            for i in range(3):
                await small(i)
            await big(1)
            await custom(1)
            await stale(1)
        frame = await spot.history()
        for row in frame.itertuples():
            keys.setdefault(str(row.func_name), str(row.cache_key))
        await spot.aclose()

    asyncio.run(main())
    return Built(db=db, blobs=blobs, keys=keys)


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build(tmp_path)


def invoke(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Rich wraps long messages; compare them with whitespace collapsed."""
    return " ".join(text.split())


def history_json(built: Built, *extra: str) -> list[dict[str, Any]]:
    result = invoke("history", built.db, "--json", *extra)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


# -- the command line ------------------------------------------------------------------------


class TestDatabaseArgument:
    """DB names an existing SQLite file or a URL; anything else fails with exit code 2."""

    def test_missing_file_fails_and_is_not_created(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope.db"
        result = invoke("history", missing)
        assert result.exit_code == 2
        assert "no such database file" in flat(result.stderr)
        assert not missing.exists()
        assert list(tmp_path.iterdir()) == []

    def test_directory_is_refused(self, tmp_path: Path) -> None:
        result = invoke("stats", tmp_path)
        assert result.exit_code == 2
        assert "not a database file" in flat(result.stderr)

    def test_unknown_url_scheme_is_refused(self) -> None:
        result = invoke("history", "ftp://example/x")
        assert result.exit_code == 2
        assert "unknown database URL scheme 'ftp'" in flat(result.stderr)

    def test_sqlite_url_to_a_missing_file_fails(self, tmp_path: Path) -> None:
        missing = tmp_path / "gone.db"
        result = invoke("history", f"sqlite:///{missing}")
        assert result.exit_code == 2
        assert "no such database file" in flat(result.stderr)
        assert not missing.exists()

    def test_sqlite_url_to_an_existing_file_works(
        self, built: Built, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(built.db.parent)
        result = invoke("history", "sqlite:///exp.db", "--json")
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)) == 6

    def test_a_file_that_is_not_a_database_is_a_clear_error(self, tmp_path: Path) -> None:
        junk = tmp_path / "junk.db"
        junk.write_bytes(b"this is not sqlite" * 100)
        result = invoke("stats", junk)
        assert result.exit_code == 2
        assert "[sqlite]" in flat(result.stderr)
        assert "not a database" in flat(result.stderr)

    def test_spot_name_is_the_sanitized_file_stem(self) -> None:
        assert spot_name_for(Path("/x/my run (2).db")) == "my_run_2"
        assert spot_name_for(Path("results.v2.sqlite")) == "results.v2"


class TestHistory:
    """`history` lists entries newest first, filtered by function and limited."""

    def test_json_lists_every_entry_with_metadata(self, built: Built) -> None:
        rows = history_json(built)
        assert len(rows) == 6
        assert sorted({r["func_name"] for r in rows}) == ["big", "custom", "small", "stale"]
        updated = [r["updated_at"] for r in rows]
        assert updated == sorted(updated, reverse=True)
        big = next(r for r in rows if r["func_name"] == "big")
        assert big["result_type"] == BLOB
        assert big["size_bytes"] > 400
        assert big["expires_at"] is None
        stale = next(r for r in rows if r["func_name"] == "stale")
        assert dt.datetime.fromisoformat(stale["expires_at"]).timestamp() == PAST + 60

    def test_func_filter_applies_before_the_limit(self, built: Built) -> None:
        rows = history_json(built, "--func", "small", "--limit", "2")
        assert [r["func_name"] for r in rows] == ["small", "small"]
        assert len(history_json(built, "--func", "small")) == 3
        assert history_json(built, "--func", "nobody") == []

    def test_limit_caps_the_rows(self, built: Built) -> None:
        assert len(history_json(built, "--limit", "1")) == 1
        assert history_json(built, "--limit", "0") == []

    def test_table_shows_functions_and_key_prefixes(self, built: Built) -> None:
        result = runner.invoke(app, ["history", str(built.db)], env={"COLUMNS": "160"})
        assert result.exit_code == 0, result.output
        assert "6 entries" in result.stdout
        for label in ("small", "big", "custom", "stale"):
            assert built.keys[label][:12] in result.stdout
        assert "blob" in result.stdout


class TestStats:
    """`stats` summarizes entries per function."""

    def test_json_counts_per_function(self, built: Built) -> None:
        result = invoke("stats", built.db, "--json")
        assert result.exit_code == 0, result.output
        by_name = {s["func_name"]: s for s in json.loads(result.stdout)}
        assert sorted(by_name) == ["big", "custom", "small", "stale"]
        assert by_name["small"]["entries"] == 3
        assert by_name["small"]["inline"] == 3
        assert by_name["big"]["blobs"] == 1
        assert by_name["big"]["size_bytes"] > 400
        assert by_name["stale"]["expired"] == 1
        assert by_name["small"]["expired"] == 0
        assert by_name["small"]["oldest"] <= by_name["small"]["newest"]

    def test_table_has_a_total_row(self, built: Built) -> None:
        result = runner.invoke(app, ["stats", str(built.db)], env={"COLUMNS": "160"})
        assert result.exit_code == 0, result.output
        total_line = next(line for line in result.stdout.splitlines() if "total" in line)
        assert " 6 " in total_line


class TestShow:
    """`show` prints one entry's metadata and a preview of its decoded value."""

    def test_json_decodes_the_value(self, built: Built) -> None:
        key = built.keys["small"]
        result = invoke("show", built.db, key, "--json")
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert shown["cache_key"] == key
        assert shown["func_name"] == "small"
        assert shown["problem"] is None
        assert shown["value"]["pair"][1] == "a"
        assert shown["value"]["when"] == "2024-01-02T00:00:00+00:00"

    def test_a_unique_prefix_finds_the_entry(self, built: Built) -> None:
        key = built.keys["big"]
        result = invoke("show", built.db, key[:10])
        assert result.exit_code == 0, result.output
        assert key in result.stdout
        assert "location" in result.stdout
        assert "xxxxxxxx" in result.stdout

    def test_blob_value_is_read_from_the_default_storage(self, built: Built) -> None:
        result = invoke("show", built.db, built.keys["big"], "--json")
        shown = json.loads(result.stdout)
        assert shown["result_type"] == BLOB
        assert shown["value"] == BIG[:500]

    def test_unknown_ext_type_is_shown_not_fatal(self, built: Built) -> None:
        result = invoke("show", built.db, built.keys["custom"], "--json")
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert shown["value"] == ["<unknown msgpack ext code 7, 1 bytes>", "tail"]
        assert "ext code 7" in shown["problem"]

    def test_missing_blob_is_reported_as_a_problem(self, built: Built) -> None:
        for blob in built.blobs.rglob("*.bin"):
            blob.unlink()
        result = invoke("show", built.db, built.keys["big"])
        assert result.exit_code == 0, result.output
        assert "payload unavailable" in flat(result.stdout)

    def test_unknown_key_exits_1(self, built: Built) -> None:
        result = invoke("show", built.db, "f" * 32)
        assert result.exit_code == 1
        assert "no entry" in result.stderr

    def test_ambiguous_prefix_exits_2_and_lists_candidates(self, built: Built) -> None:
        asyncio.run(_save_raw(built.db, ["abcdef" + "0" * 26, "abcdef" + "1" * 26]))
        result = invoke("show", built.db, "abcdef")
        assert result.exit_code == 2
        assert "'abcdef' matches 2 entries" in flat(result.stderr)
        assert invoke("show", built.db, "abcdef1").exit_code == 0
        short = invoke("show", built.db, "abcd")
        assert short.exit_code == 1
        assert "a key prefix needs at least 6 characters" in flat(short.stderr)

    def test_preview_is_cut_at_max_chars(self, built: Built) -> None:
        result = invoke("show", built.db, built.keys["big"], "--max-chars", "50")
        assert result.exit_code == 0, result.output
        assert "more chars" in result.stdout
        assert "x" * 60 not in result.stdout


async def _save_raw(db_path: Path, keys: list[str]) -> None:
    """Write rows with chosen keys straight through the task-database API."""
    db = SQLiteTaskDB(db_path)
    try:
        for key in keys:
            await db.save(
                cache_key=key,
                func_name="raw",
                input_id="i",
                version=None,
                result_type=INLINE,
                content_type=None,
                result_data=msgpack.packb(1),
            )
    finally:
        await db.aclose()


class TestPurgeExpired:
    """`purge-expired` removes the rows past their ttl and nothing else."""

    def test_removes_only_expired_rows(self, built: Built) -> None:
        result = invoke("purge-expired", built.db)
        assert result.exit_code == 0, result.output
        assert "removed 1 expired entry" in result.stdout
        names = sorted(r["func_name"] for r in history_json(built))
        assert names == ["big", "custom", "small", "small", "small"]
        assert "removed 0 expired entries" in invoke("purge-expired", built.db).stdout


class TestGc:
    """`gc` lists orphaned blobs, and deletes them only with --yes."""

    def orphan(self, built: Built) -> str:
        async def save() -> str:
            return await LocalStorage(built.blobs).save("e" * 32, b"orphan")

        location = asyncio.run(save())
        # Older than gc's default orphan grace (a younger one may be an upload in progress).
        when = time.time() - 2 * 3600
        os.utime(built.blobs / location, (when, when))
        return location

    def test_storage_is_required(self, built: Built) -> None:
        result = invoke("gc", built.db)
        assert result.exit_code == 2
        assert not list(built.blobs.rglob("*.tmp"))

    def test_dry_run_lists_without_deleting(self, built: Built) -> None:
        location = self.orphan(built)
        result = invoke("gc", built.db, "--storage", built.blobs)
        assert result.exit_code == 0, result.output
        assert location in result.stdout
        assert "1 orphaned blob (dry run" in result.stdout
        assert (built.blobs / location).exists()

    def test_yes_deletes_orphans_and_keeps_referenced_blobs(self, built: Built) -> None:
        location = self.orphan(built)
        result = invoke("gc", built.db, "--storage", built.blobs, "--yes")
        assert result.exit_code == 0, result.output
        assert "deleted 1 orphaned blob" in result.stdout
        assert not (built.blobs / location).exists()
        assert len(list(built.blobs.rglob("*.bin"))) == 1
        shown = json.loads(invoke("show", built.db, built.keys["big"], "--json").stdout)
        assert shown["value"] == BIG

    def test_nothing_to_collect(self, built: Built) -> None:
        result = invoke("gc", built.db, "-s", built.blobs, "--yes")
        assert "deleted 0 orphaned blobs" in result.stdout

    def temp_file(self, built: Built, name: str, age: float) -> Path:
        path = built.blobs / "ab" / "cd" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a blob")
        when = time.time() - age
        os.utime(path, (when, when))
        return path

    def test_stale_temp_files_are_removed_after_a_grace_period(self, built: Built) -> None:
        """Temp files of writes killed long ago go; a write in progress is left alone."""
        stale = self.temp_file(built, ".tmp-dead1234.part", age=2 * 3600)
        fresh = self.temp_file(built, ".tmp-live5678.part", age=5)
        result = invoke("gc", built.db, "-s", built.blobs)
        assert result.exit_code == 0, result.output
        assert "ab/cd/.tmp-dead1234.part" in result.stdout
        assert "1 stale temp file (dry run" in result.stdout
        assert stale.exists()
        result = invoke("gc", built.db, "-s", built.blobs, "--yes")
        assert result.exit_code == 0, result.output
        assert "deleted 1 stale temp file" in result.stdout
        assert not stale.exists()
        assert fresh.exists()
        result = invoke("gc", built.db, "-s", built.blobs, "--yes", "--temp-grace", "1")
        assert not fresh.exists()

    def test_a_refused_entry_does_not_stop_gc(self, built: Built) -> None:
        """gc deletes every other orphan, then reports the one the storage refused."""
        refused = built.blobs / "ab" / "cd" / "NOT-A-KEY.bin"
        refused.parent.mkdir(parents=True, exist_ok=True)
        refused.write_bytes(b"stranger")
        when = time.time() - 2 * 3600
        os.utime(refused, (when, when))
        location = self.orphan(built)  # sorts after ab/cd/NOT-A-KEY.bin
        result = invoke("gc", built.db, "-s", built.blobs, "--yes")
        assert not (built.blobs / location).exists()
        assert refused.exists()
        assert result.exit_code == 1, result.output
        assert "deleted 1 orphaned blob" in result.stdout
        assert "ab/cd/NOT-A-KEY.bin" in flat(result.stderr)
        assert "refused" in flat(result.stderr)


class TestDelete:
    """`delete` removes a row and its blob."""

    def test_deletes_row_and_blob(self, built: Built) -> None:
        result = invoke("delete", built.db, built.keys["big"])
        assert result.exit_code == 0, result.output
        assert list(built.blobs.rglob("*.bin")) == []
        assert "big" not in {r["func_name"] for r in history_json(built)}
        again = invoke("delete", built.db, built.keys["big"])
        assert again.exit_code == 1


class TestVersionAndImports:
    """`version` prints the version; the CLI does not import the dashboard's extras."""

    def test_version(self) -> None:
        result = invoke("version")
        assert result.exit_code == 0
        assert result.stdout.strip() == f"beautyspot-async {bs.__version__}"

    def test_cli_import_leaves_starlette_and_uvicorn_alone(self) -> None:
        code = (
            "import sys, beautyspot_async, beautyspot_async.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('starlette', 'uvicorn')))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "[]"

    def test_python_dash_m_runs_the_cli(self) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "beautyspot_async", "version"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == f"beautyspot-async {bs.__version__}"


# -- the maintenance layer, directly --------------------------------------------------------


class TestMaintenanceFromAnyLoop:
    """The maintenance functions work from asyncio and trio alike."""

    @pytest.mark.anyio
    async def test_summary_show_and_gc(self, built: Built) -> None:
        spot = bs.Spot("exp", db=built.db, storage=built.blobs)
        try:
            names = [s.func_name for s in await maint.summary(spot)]
            assert names == ["big", "custom", "small", "stale"]
            entry = await maint.show(spot, built.keys["small"])
            assert entry is not None
            assert entry.value["pair"] == (entry.value["x"], "a")
            assert await maint.show(spot, "0" * 32) is None
            assert await maint.orphan_blobs(spot) == []
            assert await maint.resolve_key(spot, built.keys["big"][:8]) == [built.keys["big"]]
            assert await maint.resolve_key(spot, "abc") == []  # shorter than MIN_PREFIX
        finally:
            await spot.aclose()

    @pytest.mark.anyio
    async def test_purge_with_explicit_now(self, built: Built) -> None:
        spot = bs.Spot("exp", db=built.db, storage=built.blobs)
        try:
            assert await maint.purge_expired(spot, now=PAST) == 0  # not yet expired then
            assert await maint.purge_expired(spot, now=PAST + 61) == 1
        finally:
            await spot.aclose()

    @pytest.mark.anyio
    async def test_delete_forgets_the_in_memory_copy(self, tmp_path: Path) -> None:
        calls: list[int] = []
        spot = bs.Spot("mem", db="memory://", storage=tmp_path / "b")

        @spot.mark
        async def f(x: int) -> int:
            calls.append(x)
            return x

        try:
            await f(1)
            key = (await spot.history())["cache_key"][0]
            assert await maint.delete(spot, key) is True
            await f(1)
            assert calls == [1, 1]
        finally:
            await spot.aclose()


class TestSummarizer:
    """Summaries count, size and date each function's records."""

    def record(self, func: str, **kw: Any) -> TaskRecord:
        base: dict[str, Any] = {
            "cache_key": "k",
            "func_name": func,
            "input_id": "i",
            "version": None,
            "result_type": INLINE,
            "content_type": None,
        }
        return TaskRecord(**(base | kw))

    def test_folds_records(self) -> None:
        tally = maint.Summarizer(now=100.0)
        tally.add(self.record("b", size_bytes=10, created_at=5, updated_at=6))
        tally.add(self.record("a", result_type=BLOB, size_bytes=7, created_at=1, updated_at=9))
        tally.add(self.record("a", size_bytes=3, created_at=3, updated_at=4, expires_at=100.0))
        a, b = tally.result()
        assert (a.func_name, a.entries, a.inline, a.blobs, a.size_bytes) == ("a", 2, 1, 1, 10)
        assert (a.expired, a.oldest, a.newest) == (1, 1, 9)
        assert (b.func_name, b.entries, b.expired) == ("b", 1, 0)

    def test_orphans_and_prefixes(self) -> None:
        assert maint.find_orphans(["c", "a", "b", "a"], ["b"]) == ["a", "c"]
        assert maint.match_keys(["ABcd", "abce", "abd"], "abc") == ["ABcd", "abce"]


class TestLenientDecoding:
    """Payloads decode with stand-ins for unknown ext types, and never raise."""

    def test_clean_payload(self) -> None:
        ser = bs.MsgpackSerializer()
        assert display.decode_lenient(ser, ser.dumps((1, {2: "x"}))) == ((1, {2: "x"}), None)

    def test_unknown_ext_inside_containers(self) -> None:
        writer = bs.MsgpackSerializer()
        writer.register_type(type_=Point, code=9, encoder=lambda p: p.x, decoder=Point)
        data = writer.dumps((Point(1), [Point(3)], frozenset({1})))
        value, problem = display.decode_lenient(bs.MsgpackSerializer(), data)
        unknown = display.UnknownExt(9, 1)
        assert value == (unknown, [unknown], frozenset({1}))
        assert problem is not None
        assert "ext code 9" in problem

    def test_unknown_ext_in_a_set_and_as_a_dict_key(self) -> None:
        writer = bs.MsgpackSerializer()
        writer.register_type(type_=Point, code=9, encoder=lambda p: p.x, decoder=Point)
        point = Point(1)
        data = writer.dumps({"s": {point}, "d": {point: 1}})
        value, _ = display.decode_lenient(bs.MsgpackSerializer(), data)
        assert value == {"s": {display.UnknownExt(9, 1)}, "d": {display.UnknownExt(9, 1): 1}}

    def test_garbage_bytes(self) -> None:
        value, problem = display.decode_lenient(bs.MsgpackSerializer(), b"\xc1\xc1\xc1")
        assert value is None
        assert problem is not None
        assert "not readable as msgpack" in problem


class TestPreview:
    """Previews are JSON, bounded in size, and survive hostile values."""

    def test_renders_builtins(self) -> None:
        value = {
            1: b"\x00\x01",
            "t": (1, 2.5, float("nan")),
            "s": {3, 1},
            "d": dt.date(2024, 5, 6),
        }
        assert display.to_jsonable(value) == {
            "1": "<2 bytes: 0001>",
            "t": [1, 2.5, "nan"],
            "s": [1, 3],
            "d": "2024-05-06",
        }

    def test_bounds_items_depth_and_strings(self) -> None:
        rendered = display.to_jsonable(list(range(100)), max_items=3)
        assert rendered == [0, 1, 2, "... 97 more"]
        nested: Any = [[[["deep"]]]]
        assert display.to_jsonable(nested, max_depth=2) == [["[['deep']]"]]
        assert display.to_jsonable("y" * 20, max_str=5) == "yyyyy... (15 more chars)"

    def test_dataclasses_and_hostile_reprs(self) -> None:
        class Hostile:
            def __repr__(self) -> str:
                raise RuntimeError("no")

        assert display.to_jsonable(Built(Path("a"), Path("b"), {})) == {
            "__type__": "Built",
            "db": "a",
            "blobs": "b",
            "keys": {},
        }
        assert display.to_jsonable([Hostile()]) == ["<Hostile: unrepresentable>"]
        assert "more chars" in display.render_preview(list(range(1000)), max_chars=50)

    def test_format_size(self) -> None:
        assert format_size(512) == "512 B"
        assert format_size(1536) == "1.5 KiB"
        assert format_size(3 * 1024**3) == "3.0 GiB"
