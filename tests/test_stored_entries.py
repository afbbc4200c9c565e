"""No stored entry can crash, stall or re-bill a caller.

Whatever bytes or field types a task database holds, a call either gets a
value, recomputes a corrupt entry (with a WARNING, rewriting it), or -- for an
entry whose type is merely not registered in this process -- raises
SerializationError without running the function. Readers (history, the CLI,
the dashboard) never crash on them either.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
import pytest

import beautyspot_async as bs
from beautyspot_async import _display as display
from beautyspot_async import _maintenance as maint
from beautyspot_async.db import TaskRecord
from beautyspot_async.serializer import MAX_DEPTH, MsgpackSerializer

from ._spots import EMBEDDED, open_spot

pytestmark = pytest.mark.anyio


@pytest.fixture(params=EMBEDDED)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def tuple_chain(levels: int) -> Any:
    """``((((),),),)``: ``levels`` tuples nested in one another."""
    value: Any = ()
    for _ in range(levels - 1):
        value = (value,)
    return value


def deep_payload(levels: int) -> bytes:
    """msgpack bytes of ``levels`` nested tuple extensions, built without the serializer."""
    inner = msgpack.ExtType(112, msgpack.packb([]))
    for _ in range(levels - 1):
        inner = msgpack.ExtType(112, msgpack.packb([inner]))
    return bytes(msgpack.packb(inner))


def warned_corrupt(caplog: pytest.LogCaptureFixture) -> bool:
    return any(r.levelno == logging.WARNING and "corrupt" in r.getMessage() for r in caplog.records)


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def register_point(spot: bs.Spot) -> None:
    spot.register_type(type_=Point, code=10, encoder=lambda p: p.x, decoder=Point)


class TestDeepNesting:
    """Nothing nested deeper than MAX_DEPTH is stored, and nothing deeper is decoded."""

    def test_dumps_refuses_what_could_not_be_decoded_safely(self) -> None:
        serializer = MsgpackSerializer()
        with pytest.raises(bs.SerializationError, match="nest"):
            serializer.dumps(tuple_chain(200))

    def test_up_to_the_limit_round_trips(self) -> None:
        serializer = MsgpackSerializer()
        value = {"deep": tuple_chain(MAX_DEPTH)}
        assert serializer.loads(serializer.dumps(value)) == value
        with pytest.raises(bs.SerializationError):
            serializer.dumps(tuple_chain(MAX_DEPTH + 1))

    def test_nested_registered_types_count(self) -> None:
        serializer = MsgpackSerializer()

        class Box:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

        serializer.register_type(type_=Box, code=3, encoder=lambda b: b.inner, decoder=Box)
        value: Any = None
        for _ in range(MAX_DEPTH + 1):
            value = Box(value)
        with pytest.raises(bs.SerializationError, match="nest"):
            serializer.dumps(value)

    def test_reading_a_deep_payload_never_crashes(self) -> None:
        """Run in a child: before the bound this segfaulted the interpreter."""
        script = textwrap.dedent(
            """
            import msgpack
            from beautyspot_async import _display as display
            from beautyspot_async.exceptions import SerializationError
            from beautyspot_async.serializer import MsgpackSerializer

            serializer = MsgpackSerializer()
            for levels in (200, 5000):
                inner = msgpack.ExtType(112, msgpack.packb([]))
                for _ in range(levels - 1):
                    inner = msgpack.ExtType(112, msgpack.packb([inner]))
                data = msgpack.packb(inner)
                try:
                    serializer.loads(data)
                except SerializationError as exc:
                    assert "nest" in str(exc), exc
                else:
                    raise AssertionError(f"decoded a {levels}-deep payload")
                value, problem = display.decode_lenient(serializer, data)
                assert problem is not None
                display.render_preview(value)
            print("ok")
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parent.parent,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "ok"

    async def test_a_too_deep_stored_entry_is_corrupt(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[int] = []

        async def run() -> Any:
            async with open_spot("sqlite", tmp_path) as spot:

                @spot.mark
                async def make() -> str:
                    calls.append(1)
                    return "fine"

                return await make()

        assert await run() == "fine"
        with sqlite3.connect(tmp_path / "t.db") as conn:
            conn.execute("UPDATE tasks SET result_data = ?", (deep_payload(300),))
        with caplog.at_level(logging.WARNING, logger="beautyspot_async"):
            assert await run() == "fine"
        assert len(calls) == 2
        assert warned_corrupt(caplog)
        assert await run() == "fine"
        assert len(calls) == 2

    async def test_a_too_deep_fresh_result_keeps_its_value(self, kind: str, tmp_path: Path) -> None:
        async with open_spot(kind, tmp_path) as spot:
            deep = tuple_chain(300)

            @spot.mark
            async def make() -> Any:
                return deep

            with pytest.raises(bs.SerializationError) as info:
                await make()
            assert info.value.value is deep


# -- wrongly typed fields -------------------------------------------------------------------

SQLITE_DAMAGE = {
    "integer result_data": "result_data = 5",
    "real result_data": "result_data = 1.5",
    "text result_data": "result_data = 'abc'",
    "invalid UTF-8 func_name": "func_name = CAST(x'ff' AS TEXT)",
    "invalid UTF-8 result_type": "result_type = CAST(x'c3' AS TEXT)",
    "text expires_at": "expires_at = 'soon'",
    "text size_bytes": "size_bytes = 'big'",
    "text created_at": "created_at = 'then'",
}


class TestWronglyTypedSQLiteRows:
    """A wrongly typed SQLite field is a miss, a WARNING and a rewrite."""

    async def _run(self, tmp_path: Path, calls: list[int], **options: Any) -> Any:
        async with open_spot("sqlite", tmp_path, **options) as spot:

            @spot.mark
            async def make() -> dict[str, Any]:
                calls.append(1)
                return {"payload": "z" * 2000}

            return await make()

    @pytest.mark.parametrize("damage", list(SQLITE_DAMAGE), ids=list(SQLITE_DAMAGE))
    async def test_row(self, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
        calls: list[int] = []
        await self._run(tmp_path, calls)
        with sqlite3.connect(tmp_path / "t.db") as conn:
            conn.execute(f"UPDATE tasks SET {SQLITE_DAMAGE[damage]}")
        async with open_spot("sqlite", tmp_path) as spot:
            frame = await spot.history()  # readers survive the row too
            assert len(frame) == 1
            assert await maint.summary(spot)
            entry = await maint.show(spot, frame["cache_key"].iloc[0])
            assert entry is not None
            assert entry.problem is not None
            json.dumps(display.entry_json(entry))
        with caplog.at_level(logging.WARNING, logger="beautyspot_async"):
            assert await self._run(tmp_path, calls) == {"payload": "z" * 2000}
        assert len(calls) == 2
        assert warned_corrupt(caplog)
        # rewritten: the bad row was replaced, the next run is a hit
        assert await self._run(tmp_path, calls) == {"payload": "z" * 2000}
        assert len(calls) == 2

    async def test_blob_path_that_is_a_directory(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[int] = []
        await self._run(tmp_path, calls, blob_threshold=100)
        (blob,) = (tmp_path / "t_blobs").rglob("*.bin")
        blob.unlink()
        blob.mkdir()
        with caplog.at_level(logging.WARNING, logger="beautyspot_async"):
            assert await self._run(tmp_path, calls, blob_threshold=100) == {"payload": "z" * 2000}
        assert len(calls) == 2
        assert warned_corrupt(caplog)


class TestReadersOfDamagedRows:
    """The CLI lists and shows a damaged row instead of failing."""

    @pytest.mark.parametrize("damage", list(SQLITE_DAMAGE), ids=list(SQLITE_DAMAGE))
    def test_cli(self, tmp_path: Path, damage: str) -> None:
        from typer.testing import CliRunner

        from beautyspot_async.cli import app

        spot = bs.Spot("t", db=tmp_path / "t.db", storage=tmp_path / "t_blobs")
        with spot:

            @spot.mark
            def make() -> str:
                return "fine"

            make()
        with sqlite3.connect(tmp_path / "t.db") as conn:
            conn.execute(f"UPDATE tasks SET {SQLITE_DAMAGE[damage]}")
        (key,) = (
            k for (k,) in sqlite3.connect(tmp_path / "t.db").execute("SELECT cache_key FROM tasks")
        )
        runner = CliRunner()
        for args in (["history"], ["history", "--json"], ["stats"], ["show", key]):
            done = runner.invoke(app, [args[0], str(tmp_path / "t.db"), *args[1:]])
            assert done.exit_code == 0, (args, done.output, done.exception)


# -- types not registered in this process ----------------------------------------------------


class TestUnregisteredType:
    """An entry whose ext type is not registered here is kept, not recomputed."""

    @pytest.mark.parametrize("threshold", [64 * 1024, 1], ids=["inline", "blob"])
    async def test_kept_and_raises(self, tmp_path: Path, threshold: int) -> None:
        calls: list[int] = []

        async def run(registered: bool) -> Any:
            # A file database: the entry must outlive the Spot that stored it.
            async with open_spot("sqlite", tmp_path, blob_threshold=threshold) as spot:
                if registered:
                    register_point(spot)

                @spot.mark
                async def paid() -> tuple[Point, int]:
                    calls.append(1)
                    return (Point(3), 4)

                return await paid()

        assert await run(registered=True) == (Point(3), 4)
        with pytest.raises(bs.SerializationError) as info:
            await run(registered=False)
        message = str(info.value)
        assert "code 10" in message
        assert "register_type" in message
        assert len(calls) == 1  # not re-billed
        # the entry was kept: registering again makes it a hit
        assert await run(registered=True) == (Point(3), 4)
        assert len(calls) == 1

    def test_garbage_around_an_unknown_code_is_corruption(self) -> None:
        serializer = MsgpackSerializer()
        well_formed = b"\xd4\x63\x00"  # ext 99 holding one byte
        with pytest.raises(bs.SerializationError, match="code 99") as info:
            serializer.loads(well_formed)
        assert "register_type" in str(info.value)
        truncated = b"\x92" + well_formed  # an array of two with only one item
        with pytest.raises(bs.SerializationError, match="cannot decode"):
            serializer.loads(truncated)


# -- fresh results that cannot be serialized -------------------------------------------------


class TestUnserializableFreshResult:
    """The SerializationError of a durable call carries the computed value."""

    async def test_value_is_kept(self, kind: str, tmp_path: Path) -> None:
        async with open_spot(kind, tmp_path) as spot:
            computed: list[Point] = []

            @spot.mark(wait=True)
            async def paid() -> Point:
                computed.append(Point(1))
                return computed[-1]

            with pytest.raises(bs.SerializationError, match="register_type") as info:
                await paid()
            assert info.value.value is computed[0]

    def test_default_is_none(self) -> None:
        assert bs.SerializationError("x").value is None


# -- far-future expiries and huge integers ----------------------------------------------------


class TestFarFutureExpiry:
    """An expiry past 2262 (pandas' datetime64[ns] limit) breaks no reader."""

    async def test_ttl_of_three_centuries(self, kind: str, tmp_path: Path) -> None:
        calls: list[int] = []
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark(ttl=timedelta(days=365 * 300))
            async def lasting(x: int) -> int:
                calls.append(x)
                return x

            assert await lasting(1) == 1
            assert await lasting(1) == 1
            assert calls == [1]
            frame = await spot.history()
            assert frame["expires_at"].iloc[0].year == 2262
            rows = display.history_rows(frame)
            assert rows[0]["expires_at"] is not None
            (key,) = frame["cache_key"]
            entry = await maint.show(spot, key)
            assert entry is not None
            data = display.entry_json(entry)
            assert data["expires_at"].startswith("23")
            json.dumps(data)

    def test_unrepresentable_times_render(self) -> None:
        from beautyspot_async.cli import format_time
        from beautyspot_async.db._history import records_to_frame

        assert format_time(1e300).startswith("after")
        assert format_time(-1e300).startswith("before")
        record = TaskRecord("k", "f", "i", None, "inline", None, expires_at=1e300)
        frame = records_to_frame([record])
        assert frame["expires_at"].iloc[0].year == 2262
        data = display.entry_json(maint.Entry(record=record))
        assert data["expires_at"] is not None


class TestHugeIntegerPreview:
    """Integers beyond Python's 4300-digit str() limit still preview."""

    def test_preview_and_json(self) -> None:
        value = {"n": 10**5000, "m": [-(7**9000)]}
        text = display.render_preview(value)
        assert "digits" in text
        record = TaskRecord("k", "f", "i", None, "inline", None)
        json.dumps(display.entry_json(maint.Entry(record=record, value=value)))

    def test_cli_show(self, tmp_path: Path) -> None:
        spot = bs.Spot("t", db=tmp_path / "t.db", storage=tmp_path / "t_blobs")
        with spot:

            @spot.mark
            def big() -> int:
                return 10**5000

            assert big() == 10**5000
        from typer.testing import CliRunner

        from beautyspot_async.cli import app

        runner = CliRunner()
        listed = runner.invoke(app, ["history", str(tmp_path / "t.db"), "--json"])
        assert listed.exit_code == 0, listed.output
        (row,) = json.loads(listed.output)
        shown = runner.invoke(app, ["show", str(tmp_path / "t.db"), row["cache_key"]])
        assert shown.exit_code == 0, shown.output
        assert "digits" in shown.output


# -- shared backends: rows written straight into PostgreSQL and Redis -------------------------


class TestWronglyTypedServiceRows:
    """PostgreSQL and Redis rows with bad fields are a miss, a WARNING and a rewrite."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        """asyncpg and redis.asyncio are asyncio-only."""
        return "asyncio"

    async def _cycle(
        self,
        spot_factory: Any,
        damage: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        calls: list[int] = []

        async def run() -> Any:
            spot = spot_factory()
            async with spot:

                @spot.mark
                async def make() -> dict[str, Any]:
                    calls.append(1)
                    return {"payload": "z" * 100}

                value = await make()
                await spot.history()
                return value

        assert await run() == {"payload": "z" * 100}
        await damage()
        with caplog.at_level(logging.WARNING, logger="beautyspot_async"):
            assert await run() == {"payload": "z" * 100}
        assert len(calls) == 2
        assert warned_corrupt(caplog)
        assert await run() == {"payload": "z" * 100}
        assert len(calls) == 2

    @pytest.mark.services
    @pytest.mark.parametrize(
        "damage",
        ["expires_at = 'NaN'", "expires_at = 'Infinity'"],
    )
    async def test_postgres(
        self, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        import uuid
        from urllib.parse import urlsplit

        from tests._services import POSTGRES_URL, require_module, require_service

        asyncpg = require_module("asyncpg", extra="postgres")
        url = urlsplit(POSTGRES_URL)
        require_service("PostgreSQL", url.hostname or "127.0.0.1", url.port or 5432)
        from beautyspot_async.db._postgres import PostgresTaskDB

        schema = f"bs_test_{uuid.uuid4().hex[:12]}"

        def spot_factory() -> bs.Spot:
            db = PostgresTaskDB(POSTGRES_URL, schema=schema)
            return bs.Spot("t", db=db, storage=tmp_path / "blobs")

        async def tamper() -> None:
            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                await conn.execute(f'UPDATE "{schema}".beautyspot_tasks SET {damage}')
            finally:
                await conn.close()

        try:
            if damage.startswith("expires_at = 'Infinity'"):
                # Not corrupt, only far in the future: history must still work.
                spot = spot_factory()
                async with spot:

                    @spot.mark
                    async def make() -> int:
                        return 1

                    await make()
                    await tamper()
                    frame = await spot.history()
                    assert frame["expires_at"].iloc[0].year == 2262
                    assert await make() == 1
            else:
                await self._cycle(spot_factory, tamper, caplog)
        finally:
            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

    @pytest.mark.services
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("expires_at", b"soon"),
            ("created_at", b"then"),
            ("size_bytes", b"big"),
            ("func_name", b"\xff\xfe"),
            ("result_type", b"\xc3"),
            ("func_name", None),
            ("result_data", None),
        ],
    )
    async def test_redis(
        self,
        tmp_path: Path,
        field: str,
        value: bytes | None,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        import uuid
        from urllib.parse import urlsplit

        from tests._services import REDIS_URL, require_module, require_service

        aioredis = require_module("redis.asyncio", extra="redis")

        url = urlsplit(REDIS_URL)
        require_service("Redis", url.hostname or "127.0.0.1", url.port or 6379)
        from beautyspot_async.db._redis import RedisTaskDB

        prefix = f"bs-test-{uuid.uuid4().hex[:12]}"
        raw = aioredis.Redis.from_url(REDIS_URL)

        def spot_factory() -> bs.Spot:
            return bs.Spot(
                "t", db=RedisTaskDB(REDIS_URL, prefix=prefix), storage=tmp_path / "blobs"
            )

        async def tamper() -> None:
            (key,) = [k async for k in raw.scan_iter(match=f"{prefix}:rec:*")]
            if value is None:
                await raw.hdel(key, field)
            else:
                await raw.hset(key, field, value)

        try:
            await self._cycle(spot_factory, tamper, caplog)
        finally:
            keys = [k async for k in raw.scan_iter(match=f"{prefix}:*", count=500)]
            if keys:
                await raw.delete(*keys)
            await raw.aclose()
