"""Durability modes, write failures, placement and corruption recovery."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

import beautyspot_async as bs
from beautyspot_async.db import MemoryTaskDB, SQLiteTaskDB, TaskRecord
from beautyspot_async.storage import LocalStorage

from ._spots import EMBEDDED, make_spot, open_spot

pytestmark = pytest.mark.anyio


@pytest.fixture(params=EMBEDDED)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def rows(db_path: Path) -> int:
    """Rows visible to an independent connection: what a crash would leave."""
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])


class FailingDB(MemoryTaskDB):
    """A memory database whose writes fail, to inject write errors."""

    async def save_many(self, records: Any) -> None:
        raise OSError("disk on fire")


class Recorder(bs.HookBase):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def pre_execute(self, context: bs.PreExecuteContext) -> None:
        self.events.append(("pre", context.args))

    async def on_cache_hit(self, context: bs.CacheHitContext) -> None:
        self.events.append(("hit", context.result))

    def on_cache_miss(self, context: bs.CacheMissContext) -> None:
        self.events.append(("miss", context.result))

    async def on_save_error(self, context: bs.SaveErrorContext) -> None:
        self.events.append(("save_error", type(context.error).__name__))


class TestDurability:
    """wait=True returns after commit; write-behind is durable after flush and exit."""

    async def test_wait_true_is_committed_on_return(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            await f(1)
            assert rows(tmp_path / "t.db") == 1
            await f(2)
            assert rows(tmp_path / "t.db") == 2

    async def test_write_behind_flush(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, default_wait=False) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            results = []
            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(lambda i=i: _append(results, f, i))
            await spot.flush()
            assert rows(tmp_path / "t.db") == 300
            assert sorted(results) == list(range(300))
            # results pending or not, a second call is a hit
            assert await f(5) == 5
            assert spot.statistics().misses == 300

    async def test_leaving_async_with_flushes(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, default_wait=False) as spot:

            @spot.mark(wait=False)
            async def f(x: int) -> int:
                return x

            for i in range(20):
                await f(i)
        assert rows(tmp_path / "t.db") == 20

    def test_leaving_with_flushes(self, tmp_path: Path) -> None:
        spot = make_spot("sqlite", tmp_path, default_wait=False)
        with spot:

            @spot.mark
            def f(x: int) -> int:
                return x

            for i in range(20):
                f(i)
        assert rows(tmp_path / "t.db") == 20

    def test_interpreter_exit_flushes(self, tmp_path: Path) -> None:
        script = textwrap.dedent(
            f"""
            import asyncio
            import beautyspot_async as bs
            spot = bs.Spot("exit", db={str(tmp_path / "exit.db")!r},
                           storage={str(tmp_path / "blobs")!r}, default_wait=False)

            @spot.mark
            async def f(x):
                return {{"x": x}}

            async def main():
                await asyncio.gather(*(f(i) for i in range(500)))

            asyncio.run(main())
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert rows(tmp_path / "exit.db") == 500

    async def test_per_task_wait_overrides_default(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, default_wait=False) as spot:

            @spot.mark(wait=True)
            async def durable(x: int) -> int:
                return x

            await durable(1)
            assert rows(tmp_path / "t.db") == 1


async def _append(results: list[Any], fn: Any, *args: Any) -> None:
    results.append(await fn(*args))


class TestWriteFailures:
    """A failed write is reported; it never replaces a write-behind caller's result."""

    async def test_write_behind_failure_is_logged_and_hooked(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        recorder = Recorder()
        spot = bs.Spot(
            "fail",
            db=FailingDB(),
            storage=LocalStorage(tmp_path),
            default_wait=False,
            hooks=[recorder],
        )

        @spot.mark
        async def f(x: int) -> int:
            return x * 2

        with caplog.at_level(logging.ERROR, logger="beautyspot_async"):
            assert await f(2) == 4
            await spot.flush()  # does not raise
        await spot.aclose()
        assert ("save_error", "BackendError") in recorder.events
        assert any("disk on fire" in r.getMessage() for r in caplog.records)
        assert spot.statistics().write_failures == 1

    async def test_durable_failure_raises_backend_error(self, tmp_path: Path) -> None:
        spot = bs.Spot("fail", db=FailingDB(), storage=LocalStorage(tmp_path))

        @spot.mark
        async def f(x: int) -> int:
            return x

        with pytest.raises(bs.BackendError, match="disk on fire") as info:
            await f(1)
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.backend == "memory"
        await spot.aclose()

    async def test_bypass_returns_result_uncached(self, tmp_path: Path) -> None:
        spot = bs.Spot(
            "fail", db=FailingDB(), storage=LocalStorage(tmp_path), on_backend_error="bypass"
        )

        @spot.mark
        async def f(x: int) -> int:
            return x

        with pytest.warns(RuntimeWarning, match="not cached"):
            assert await f(1) == 1
        await spot.aclose()

    async def test_unregistered_type_raises_when_durable(self, kind: str, tmp_path: Path) -> None:
        class Opaque:
            pass

        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            async def f() -> Opaque:
                return Opaque()

            with pytest.raises(bs.SerializationError, match="Opaque") as info:
                await f()
            assert "register_type" in str(info.value)

    async def test_unregistered_type_logged_in_write_behind(
        self, kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Opaque:
            pass

        recorder = Recorder()
        async with open_spot(kind, tmp_path, default_wait=False, hooks=[recorder]) as spot:

            @spot.mark
            async def f() -> Opaque:
                return Opaque()

            with caplog.at_level(logging.ERROR, logger="beautyspot_async"):
                assert isinstance(await f(), Opaque)
        assert ("save_error", "SerializationError") in recorder.events


class TestPlacement:
    """Large results go to blob storage, small ones stay in the row."""

    async def test_threshold_and_overrides(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, blob_threshold=1000) as spot:

            @spot.mark
            async def sized(n: int) -> bytes:
                return b"x" * n

            @spot.mark(save_blob=True)
            async def forced_blob() -> str:
                return "tiny"

            @spot.mark(save_blob=False)
            async def forced_inline() -> bytes:
                return b"y" * 5000

            await sized(10)
            await sized(5000)
            await forced_blob()
            await forced_inline()
            history = await spot.history()
        placement = {
            (row.func_name.rsplit(".", 1)[-1], row.size_bytes > 1000): row.result_type
            for row in history.itertuples()
        }
        assert placement == {
            ("sized", False): "inline",
            ("sized", True): "blob",
            ("forced_blob", False): "blob",
            ("forced_inline", True): "inline",
        }
        blob_files = list((tmp_path / "t_blobs").rglob("*.bin"))
        assert len(blob_files) == 2

    async def test_blob_results_come_back(self, tmp_path: Path) -> None:
        calls = 0
        for _ in range(2):
            async with open_spot("sqlite", tmp_path, blob_threshold=100) as spot:

                @spot.mark
                async def big() -> dict[str, Any]:
                    nonlocal calls
                    calls += 1
                    return {"data": list(range(1000)), "t": (1, 2)}

                assert await big() == {"data": list(range(1000)), "t": (1, 2)}
        assert calls == 1


class TestCorruption:
    """Corrupt stored data is a miss with a warning, and the entry is rewritten."""

    async def _run(self, tmp_path: Path, calls: list[int], **options: Any) -> Any:
        async with open_spot("sqlite", tmp_path, **options) as spot:

            @spot.mark
            async def make() -> dict[str, Any]:
                calls.append(1)
                return {"payload": "z" * 2000}

            return await make()

    @pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
    async def test_damaged_blob(
        self, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[int] = []
        await self._run(tmp_path, calls, blob_threshold=100)
        (blob,) = (tmp_path / "t_blobs").rglob("*.bin")
        data = blob.read_bytes()
        if damage == "truncate":
            blob.write_bytes(data[: len(data) // 2])
        elif damage == "flip":
            blob.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        else:
            blob.unlink()
        with caplog.at_level(logging.WARNING, logger="beautyspot_async"):
            assert await self._run(tmp_path, calls, blob_threshold=100) == {"payload": "z" * 2000}
        assert len(calls) == 2
        assert any("corrupt" in r.getMessage() for r in caplog.records)
        # rewritten: the third run is a hit again
        assert await self._run(tmp_path, calls, blob_threshold=100) == {"payload": "z" * 2000}
        assert len(calls) == 2

    async def test_unknown_ext_code_is_kept(self, tmp_path: Path) -> None:
        """Intact data of a type not registered here is no corruption: kept, not re-run."""
        calls: list[int] = []
        await self._run(tmp_path, calls)
        # msgpack ext type 99 holding one byte: no decoder is registered for it
        with sqlite3.connect(tmp_path / "t.db") as conn:
            conn.execute("UPDATE tasks SET result_data = ?", (b"\xd4\x63\x00",))
        with pytest.raises(bs.SerializationError, match="code 99"):
            await self._run(tmp_path, calls)
        assert len(calls) == 1
        with sqlite3.connect(tmp_path / "t.db") as conn:
            (data,) = conn.execute("SELECT result_data FROM tasks").fetchone()
        assert data == b"\xd4\x63\x00"

    async def test_damaged_bytes_around_an_ext_marker(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[int] = []
        await self._run(tmp_path, calls)
        with sqlite3.connect(tmp_path / "t.db") as conn:
            # an array of two holding only one ext 99 value: truncated
            conn.execute("UPDATE tasks SET result_data = ?", (b"\x92\xd4\x63\x00",))
        with caplog.at_level(logging.WARNING, logger="beautyspot_async"):
            assert await self._run(tmp_path, calls) == {"payload": "z" * 2000}
        assert len(calls) == 2
        assert any("corrupt" in r.getMessage() for r in caplog.records)
        assert await self._run(tmp_path, calls) == {"payload": "z" * 2000}
        assert len(calls) == 2


class TestHistory:
    """history() is a DataFrame of metadata, newest first, with UTC timestamps."""

    async def test_columns_and_order(self, kind: str, tmp_path: Path) -> None:
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark(version="v3", content_type="application/json")
            async def f(x: int) -> int:
                return x

            for i in range(5):
                await f(i)
            history = await spot.history(limit=3)
        assert len(history) == 3
        for column in bs.db.HISTORY_COLUMNS:
            assert column in history.columns
        assert str(history["created_at"].dt.tz) == "UTC"
        assert history["updated_at"].is_monotonic_decreasing
        assert set(history["func_name"]) == {
            f"{__name__}.TestHistory.test_columns_and_order.<locals>.f"
        }
        assert set(history["version"]) == {"v3"}
        assert set(history["content_type"]) == {"application/json"}

    async def test_history_limit_validated(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:
            with pytest.raises(bs.ConfigurationError):
                await spot.history(limit=-1)


class TestLifecycle:
    """aclose is idempotent and a closed Spot reopens on next use."""

    async def test_close_and_reopen(self, kind: str, tmp_path: Path) -> None:
        spot = make_spot(kind, tmp_path)
        calls = []

        @spot.mark
        async def f(x: int) -> int:
            calls.append(x)
            return x

        await f(1)
        await spot.aclose()
        await spot.aclose()
        await f(1)
        await f(2)
        await spot.aclose()
        assert calls == [1, 2]


class TestHooks:
    """Hooks see every call; a raising hook is logged and ignored."""

    async def test_events(self, kind: str, tmp_path: Path) -> None:
        recorder = Recorder()
        async with open_spot(kind, tmp_path, hooks=[recorder]) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x + 1

            await f(1)
            await f(1)
        assert recorder.events == [("pre", (1,)), ("miss", 2), ("pre", (1,)), ("hit", 2)]

    async def test_context_fields(self, tmp_path: Path) -> None:
        seen: list[bs.HookContext] = []

        class Capture(bs.HookBase):
            def on_cache_miss(self, context: bs.CacheMissContext) -> None:
                seen.append(context)

        async with open_spot("memory", tmp_path) as spot:

            @spot.mark(version="v9", hooks=[Capture()])
            async def f(x: int, *, y: int = 0) -> int:
                return x

            await f(1, y=2)
        (ctx,) = seen
        assert ctx.version == "v9"
        assert ctx.args == (1,)
        assert dict(ctx.kwargs) == {"y": 2}
        with pytest.raises(TypeError):
            ctx.kwargs["y"] = 3  # type: ignore[index]
        assert len(ctx.cache_key) == 32
        assert ctx.input_id
        assert ctx.func_name.endswith("test_context_fields.<locals>.f")

    async def test_raising_hook_is_ignored(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken(bs.HookBase):
            def pre_execute(self, context: bs.PreExecuteContext) -> None:
                raise RuntimeError("hook bug")

            async def on_cache_miss(self, context: bs.CacheMissContext) -> None:
                raise RuntimeError("async hook bug")

        async with open_spot("memory", tmp_path, hooks=[Broken()]) as spot:

            @spot.mark
            async def f() -> str:
                return "fine"

            with caplog.at_level(logging.ERROR, logger="beautyspot_async"):
                assert await f() == "fine"
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "pre_execute" in messages
        assert "on_cache_miss" in messages

    def test_hooks_must_be_hookbase(self) -> None:
        with pytest.raises(bs.ConfigurationError, match="HookBase"):
            bs.Spot("h", db="memory://", hooks=[object()])  # type: ignore[list-item]


def test_records_are_task_records() -> None:
    assert TaskRecord.__module__.startswith("beautyspot_async")
    assert SQLiteTaskDB.loop_bound
    assert not MemoryTaskDB.loop_bound
