"""Controlling the cache: per-call control, cache modes, invalidation, the pytest plugin."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import beautyspot_async as bs
from beautyspot_async.testing import FakeClock

from ._spots import EMBEDDED, open_spot

pytestmark = pytest.mark.anyio
pytest_plugins = ["pytester"]


@pytest.fixture(params=EMBEDDED)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestPerCall:
    async def test_async_function(self, kind: str, tmp_path: Path) -> None:
        calls: list[int] = []
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            async def double(x: int) -> int:
                calls.append(x)
                return 2 * x

            key = double.key(3)  # type: ignore[attr-defined]
            assert isinstance(key, str)
            assert len(key) == 32
            assert double.key(x=3) == key  # type: ignore[attr-defined]
            with pytest.raises(bs.CacheMissError) as info:
                await double.lookup(3)  # type: ignore[attr-defined]
            assert isinstance(info.value, LookupError)
            assert info.value.explanation.status == "miss"
            assert calls == []  # lookup never runs the function

            assert await double(3) == 6
            assert await double.lookup(3) == 6  # type: ignore[attr-defined]
            assert (await double.explain(3)).status == "hit"  # type: ignore[attr-defined]

            assert await double.refresh(3) == 6  # type: ignore[attr-defined]
            assert calls == [3, 3]  # refresh executes even though it is stored

            assert await double.invalidate(3) is True  # type: ignore[attr-defined]
            assert await double.invalidate(3) is False  # type: ignore[attr-defined]
            assert (await double.explain(3)).status == "miss"  # type: ignore[attr-defined]
            assert await double(3) == 6
        assert calls == [3, 3, 3]

    def test_sync_function(self, tmp_path: Path) -> None:
        calls: list[int] = []
        spot = bs.Spot("s", db=str(tmp_path / "s.db"))

        @spot.mark
        def inc(x: int) -> int:
            calls.append(x)
            return x + 1

        with spot:
            with pytest.raises(bs.CacheMissError):
                inc.lookup(1)  # type: ignore[attr-defined]
            assert inc(1) == 2
            assert inc.lookup(1) == 2  # type: ignore[attr-defined]
            assert inc.refresh(1) == 2  # type: ignore[attr-defined]
            assert inc.explain(1).status == "hit"  # type: ignore[attr-defined]
            assert inc.invalidate(1) is True  # type: ignore[attr-defined]

            async def from_async() -> None:
                with pytest.raises(bs.CacheMissError):
                    await inc.alookup(1)  # type: ignore[attr-defined]
                assert await inc.arefresh(1) == 2  # type: ignore[attr-defined]
                assert await inc.alookup(1) == 2  # type: ignore[attr-defined]
                assert (await inc.aexplain(1)).status == "hit"  # type: ignore[attr-defined]
                assert await inc.ainvalidate(1) is True  # type: ignore[attr-defined]

            anyio.run(from_async)
        assert calls == [1, 1, 1]


class TestExplain:
    async def test_expired_and_failed(self, tmp_path: Path) -> None:
        clock = FakeClock()
        async with open_spot("sqlite", tmp_path, clock=clock) as spot:

            @spot.mark(ttl=10)
            async def short(x: int) -> int:
                return x

            await short(1)
            clock.advance(11)
            explanation = await short.explain(1)  # type: ignore[attr-defined]
            assert explanation.status == "expired"
            assert "expired at" in str(explanation)

            @spot.mark
            async def broken(x: int) -> int:
                raise ValueError("nope")

            await spot.map(broken, [5], progress=False)
            explanation = await broken.explain(5)  # type: ignore[attr-defined]
            assert explanation.status == "failed"
            assert "ValueError: nope" in str(explanation)

    async def test_leased(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path) as spot:
            started, release = anyio.Event(), anyio.Event()

            @spot.mark
            async def slow(x: int) -> int:
                started.set()
                await release.wait()
                return x

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow, 1)
                await started.wait()
                explanation = await slow.explain(1)  # type: ignore[attr-defined]
                release.set()
            assert explanation.status == "leased"

    async def test_miss_names_the_version(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark(version="v1", name="ask")
            async def ask_v1(prompt: str) -> str:
                return prompt

            await ask_v1("hello")
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark(version="v2", name="ask")
            async def ask_v2(prompt: str) -> str:
                return prompt

            explanation = await ask_v2.explain("hello")  # type: ignore[attr-defined]
        assert explanation.status == "miss"
        (closest,) = explanation.closest
        assert bs.Explanation is type(explanation)
        assert any(d.name == "version" and d.stored == "v1" for d in closest.differences)
        assert "version: stored v1 -> now v2" in str(explanation)


class TestModes:
    async def test_replay_never_runs_nor_writes(self, tmp_path: Path) -> None:
        calls: list[int] = []
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                calls.append(x)
                return x

            await f(1)
            with spot.mode("replay"):
                assert await f(1) == 1
                with pytest.raises(bs.CacheMissError) as info:
                    await f(2)
                assert "replay mode" in str(info.value)
                # tasks started inside inherit the mode
                async with anyio.create_task_group() as tg:

                    async def inner() -> None:
                        with pytest.raises(bs.CacheMissError):
                            await f(3)

                    tg.start_soon(inner)
            assert calls == [1]
            assert (await f.explain(2)).status == "miss"  # type: ignore[attr-defined]

    async def test_refresh_and_off(self, tmp_path: Path) -> None:
        calls: list[int] = []
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                calls.append(x)
                return len(calls)

            assert await f(1) == 1
            with spot.mode("refresh"):
                assert await f(1) == 2  # executed and overwritten
            assert await f(1) == 2
            with spot.mode("off"):
                assert await f(5) == 3
            assert (await f.explain(5)).status == "miss"  # type: ignore[attr-defined]

    async def test_precedence(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BEAUTYSPOT_MODE", "replay")
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def from_env(x: int) -> int:
                return x

            @spot.mark(mode="normal")
            async def explicit(x: int) -> int:
                return x

            with pytest.raises(bs.CacheMissError):
                await from_env(1)  # the environment
            assert await explicit(1) == 1  # mark(mode=) wins over it
            with spot.mode("replay"), pytest.raises(bs.CacheMissError):
                await explicit(2)  # the context wins over everything
        monkeypatch.delenv("BEAUTYSPOT_MODE")
        async with open_spot("memory", tmp_path, mode="replay") as spot:

            @spot.mark
            async def from_spot(x: int) -> int:
                return x

            with pytest.raises(bs.CacheMissError):
                await from_spot(1)

    def test_mode_is_per_spot_and_reaches_threads(self, tmp_path: Path) -> None:
        one = bs.Spot("one", db="memory://")
        two = bs.Spot("two", db="memory://")

        @one.mark
        def a(x: int) -> int:
            return x

        @two.mark
        def b(x: int) -> int:
            return x

        with one.mode("replay"):
            with pytest.raises(bs.CacheMissError):
                a(1)
            assert b(1) == 1

            async def threaded() -> None:
                with pytest.raises(bs.CacheMissError):
                    await a.acall(2)  # type: ignore[attr-defined]

            anyio.run(threaded)

    @pytest.mark.parametrize("bad", ["REPLAY!", "", None, 3])
    def test_bad_modes(self, bad: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        spot = bs.Spot("m", db="memory://")
        with pytest.raises(bs.ConfigurationError, match="must be one of"):
            spot.mode(bad)
        if bad is not None:  # mark(mode=None) is the default: the Spot's mode
            with pytest.raises(bs.ConfigurationError, match="must be one of"):
                spot.mark(mode=bad)
        if isinstance(bad, str) and bad:
            monkeypatch.setenv("BEAUTYSPOT_MODE", bad)
            with pytest.raises(bs.ConfigurationError, match="BEAUTYSPOT_MODE"):
                bs.Spot("m2", db="memory://")


class TestInvalidate:
    async def test_filters(self, kind: str, tmp_path: Path) -> None:
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark(version="v1", name="f")
            async def f_v1(x: int) -> int:
                return x

            @spot.mark(version="v2", name="f")
            async def f_v2(x: int) -> int:
                return x

            @spot.mark
            async def g(x: int) -> int:
                return x

            for i in range(3):
                await f_v1(i)
            await spot.flush()
            between = dt.datetime.now(dt.UTC)
            for i in range(2):
                await f_v2(i)
            await g(1)

            assert await spot.invalidate(f_v2, version="stale") == 3  # the v1 ones
            assert await spot.invalidate("f", older_than=between) == 0  # v2 is newer
            assert await spot.invalidate("f", older_than=dt.timedelta(days=1)) == 0
            assert await spot.invalidate("f", version="v2", older_than=0) == 2
            assert await spot.clear() == 1
            assert len(await spot.history()) == 0

    async def test_errors(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def f(x: int) -> int:
                return x

            with pytest.raises(bs.ConfigurationError, match="stale"):
                await spot.invalidate("f", version="stale")
            with pytest.raises(bs.ConfigurationError, match="older_than"):
                await spot.invalidate(older_than=-1)
            with pytest.raises(bs.ConfigurationError, match="marked on this Spot"):
                await spot.invalidate(len)  # type: ignore[arg-type]


PLUGIN_TEST = """
import pytest
import beautyspot_async as bs

spot = bs.Spot("plugged", db={db!r})

@spot.mark
def ask(prompt):
    return prompt.upper()

def test_record():
    assert ask("stored") == "STORED"

@pytest.mark.beautyspot(mode="replay")
def test_replay_hit():
    assert ask("stored") == "STORED"

@pytest.mark.beautyspot(mode="replay")
def test_replay_miss():
    with pytest.raises(bs.CacheMissError):
        ask("never recorded")
"""


class TestPytestPlugin:
    def test_marker_and_report(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        pytester.makepyfile(PLUGIN_TEST.format(db=str(tmp_path / "p.db")))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
        result.assert_outcomes(passed=3)
        result.stdout.fnmatch_lines(["*beautyspot*", "*cached results used; 1 replay miss*"])
        result.stdout.fnmatch_lines(["*replay miss: *"])

    def test_command_line_mode(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        pytester.makepyfile(
            """
            import beautyspot_async as bs
            spot = bs.Spot("cli", db={!r})

            @spot.mark
            def ask(prompt):
                return prompt

            def test_offline():
                ask("x")
            """.format(str(tmp_path / "c.db"))
        )
        result = pytester.runpytest_subprocess("--beautyspot-mode=replay")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*CacheMissError*", "*1 replay miss*"])


def test_plugin_is_registered() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, timeout=120
    )
    assert "--beautyspot-mode" in out.stdout


class TestCommandLine:
    @staticmethod
    def build(tmp_path: Path) -> Path:
        db = tmp_path / "cli.db"

        async def main() -> None:
            async with bs.Spot("cli", db=str(db)) as spot:

                @spot.mark(name="app.llm.ask", version="v1")
                async def ask_v1(prompt: str) -> str:
                    return prompt

                @spot.mark(name="app.llm.ask", version="v2")
                async def ask_v2(prompt: str) -> str:
                    return prompt

                @spot.mark(name="app.other")
                async def other(x: int) -> int:
                    return x

                for p in ("a", "b"):
                    await ask_v1(p)
                await ask_v2("a")
                await other(1)

        anyio.run(main)
        return db

    def test_history_func_bare_name_and_invalidate(self, tmp_path: Path) -> None:
        from typer.testing import CliRunner

        from beautyspot_async.cli import app

        db = str(self.build(tmp_path))
        runner = CliRunner()
        shown = runner.invoke(app, ["history", db, "--func", "ask", "--json"])
        assert shown.exit_code == 0, shown.output
        assert shown.output.count("app.llm.ask") == 3
        assert "app.other" not in shown.output

        dry = runner.invoke(app, ["invalidate", db, "--func", "ask", "--version", "stale"])
        assert dry.exit_code == 0, dry.output
        assert "would delete 2 entries" in dry.output
        done = runner.invoke(app, ["invalidate", db, "-f", "ask", "--version", "stale", "--yes"])
        assert "deleted 2 entries" in done.output
        aged = runner.invoke(app, ["invalidate", db, "--older-than", "1d", "--yes"])
        assert "deleted 0 entries" in aged.output
        bad = runner.invoke(app, ["invalidate", db, "--older-than", "soon"])
        assert bad.exit_code == 2
        assert "--older-than" in bad.output
        everything = runner.invoke(app, ["invalidate", db, "--yes"])
        assert "deleted 2 entries" in everything.output

    def test_delete_by_prefix(self, tmp_path: Path) -> None:
        from typer.testing import CliRunner

        from beautyspot_async.cli import app

        db = str(self.build(tmp_path))
        runner = CliRunner()
        listed = runner.invoke(app, ["history", db, "--json"])
        import json

        keys = [row["cache_key"] for row in json.loads(listed.output)]
        key = keys[0]
        short = runner.invoke(app, ["delete", db, key[:5]])
        assert short.exit_code == 1
        assert "at least 6" in short.output
        unique = next(n for n in range(6, 33) if sum(k.startswith(key[:n]) for k in keys) == 1)
        gone = runner.invoke(app, ["delete", db, key[:unique]])
        assert gone.exit_code == 0, gone.output
        again = runner.invoke(app, ["delete", db, key])
        assert again.exit_code == 1


class TestExplainArguments:
    async def test_differing_argument_is_named_with_both_previews(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def ask(prompt: str, temperature: float = 0.0, api_key: str = "k1") -> str:
                return prompt

            await ask("Summarize ticket #12")
            await ask("Something else entirely", temperature=0.9)
            explanation = await ask.explain("Summarise ticket #12")  # type: ignore[attr-defined]
        assert explanation.status == "miss"
        best = explanation.closest[0]
        assert [d.name for d in best.differences] == ["prompt"]
        (diff,) = best.differences
        assert diff.stored == '"Summarize ticket #12"'
        assert diff.current == '"Summarise ticket #12"'
        assert 'prompt: stored "Summarize ticket #12" -> now "Summarise ticket #12"' in str(
            explanation
        )

    async def test_secret_change_shows_redacted(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def ask(prompt: str, api_key: str) -> str:
                return prompt

            await ask("hi", api_key="old")
            explanation = await ask.explain("hi", api_key="new")  # type: ignore[attr-defined]
        (diff,) = explanation.closest[0].differences
        assert (diff.name, diff.stored, diff.current) == ("api_key", "<redacted>", "<redacted>")
        assert "old" not in str(explanation)
        assert "new" not in str(explanation)


def test_cli_polish(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from beautyspot_async.cli import app, wrap_name

    db = str(TestCommandLine.build(tmp_path))
    runner = CliRunner()
    import json

    key = json.loads(runner.invoke(app, ["history", db, "--json"]).output)[0]["cache_key"]
    wide = runner.invoke(app, ["history", db, "--wide"], env={"COLUMNS": "200"})
    narrow = runner.invoke(app, ["history", db], env={"COLUMNS": "200"})
    assert wide.exit_code == 0
    assert key in wide.output
    assert key not in narrow.output
    assert key[:12] in narrow.output
    missing = runner.invoke(app, ["gc", db, "--storage", str(tmp_path / "no-such-dir")])
    assert missing.exit_code == 2
    assert "no blob storage directory" in " ".join(missing.output.split())
    assert wrap_name("app.services.llm.summarize", 14) == "app.services.\nllm.summarize"
    assert all(len(part) <= 14 or "." not in part for part in wrap_name("a.b" * 9, 14).split())
