"""The decorator: what a marked function looks like and what it returns."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import beautyspot_async as bs
from beautyspot_async.testing import FakeClock

from ._spots import EMBEDDED, make_spot, open_spot

pytestmark = pytest.mark.anyio


@pytest.fixture(params=EMBEDDED)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestShape:
    """A marked function keeps its nature, name, docs and signature."""

    def test_async_stays_coroutine_function(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)

        @spot.mark
        async def fetch(url: str, retries: int = 3) -> str:
            """Fetch it."""
            return url

        assert inspect.iscoroutinefunction(fetch)
        assert fetch.__name__ == "fetch"
        assert fetch.__doc__ == "Fetch it."
        original = fetch.__wrapped__  # type: ignore[attr-defined]
        assert original.__name__ == "fetch"
        assert inspect.signature(fetch) == inspect.signature(original)
        assert list(inspect.signature(fetch).parameters) == ["url", "retries"]

    def test_sync_stays_plain_function(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)

        @spot.mark(version="v1")
        def square(x: int) -> int:
            return x * x

        assert not inspect.iscoroutinefunction(square)
        assert square(3) == 9
        assert inspect.iscoroutinefunction(square.acall)

    def test_unknown_option_is_type_error(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)
        with pytest.raises(TypeError):
            spot.mark(verison="v2")  # type: ignore[call-overload]

    def test_generators_are_streams(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)

        def gen() -> Any:
            yield 1

        async def agen() -> Any:
            yield 1

        # Cached as streams (see test_stream.py): calling returns iterators.
        assert list(spot.mark(gen)()) == [1]
        assert hasattr(spot.mark(agen)(), "__anext__")

    def test_invalid_name(self) -> None:
        with pytest.raises(bs.ConfigurationError, match="invalid Spot name"):
            bs.Spot("my experiment/1")
        with pytest.raises(ValueError):  # ConfigurationError is a ValueError
            bs.Spot("")

    def test_bad_options_rejected_early(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)
        with pytest.raises(bs.ConfigurationError, match="ttl"):
            spot.mark(ttl=-1)
        with pytest.raises(bs.ConfigurationError, match="ttl"):
            spot.mark(ttl="1h")  # type: ignore[call-overload]
        with pytest.raises(bs.ConfigurationError, match="dumps"):
            spot.mark(serializer=object())  # type: ignore[call-overload]
        with pytest.raises(bs.ConfigurationError, match="keygen"):
            spot.mark(input_key_fn=str, keygen=str)

    def test_two_lambdas_need_names(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)
        with pytest.raises(bs.ConfigurationError, match="name="):
            spot.mark(lambda x: x + 2)
        plus3 = spot.mark(name="plus3")(lambda x: x + 3)
        assert plus3(1) == 4

    def test_redefinition_of_the_same_function_is_allowed(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)
        for _ in range(2):  # a re-run notebook cell or a re-imported module

            def same(x: int) -> int:
                return x

            assert spot.mark(same)(1) == 1

    def test_closures_from_a_loop_need_names(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)

        def make_adder(n: int) -> Any:
            def add(x: int, n: int = n) -> int:
                return x + n

            return add

        first = spot.mark(make_adder(0))
        with pytest.raises(bs.ConfigurationError, match="name="):
            spot.mark(make_adder(1))
        assert first(1) == 1


class TestCallObjects:
    """A call allocates no closure: the wrappers capture no per-call variable.

    Fewer objects per call is what keeps the cyclic collector's work down in
    a large ``gather`` (docs/performance.md). A closure over a call's
    arguments would give every call, hits included, two cells.
    """

    def test_async_wrapper_has_no_cells(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)

        @spot.mark
        async def f(x: int, *, y: int = 0) -> int:
            return x + y

        assert f.__code__.co_cellvars == ()

    def test_sync_wrapper_and_acall_have_no_cells(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)

        @spot.mark
        def g(x: int) -> int:
            return x

        assert g.__code__.co_cellvars == ()
        assert g.acall.__code__.co_cellvars == ()

    async def test_arguments_reach_the_body_on_a_miss(self, kind: str, tmp_path: Path) -> None:
        async with open_spot(kind, tmp_path) as spot:
            calls: list[tuple[int, int]] = []

            @spot.mark
            async def f(x: int, *, y: int = 0) -> int:
                calls.append((x, y))
                return x * 10 + y

            @spot.mark
            def g(x: int, y: int = 0) -> int:
                calls.append((x, y))
                return x * 10 + y

            assert await f(1, y=2) == 12
            assert await f(3) == 30
            assert await f(1, y=2) == 12
            assert await g.acall(4, y=5) == 45
            assert await g.acall(4, y=5) == 45
            assert await f.refresh(1, y=2) == 12
            assert calls == [(1, 2), (3, 0), (4, 5), (1, 2)]


class TestResults:
    """A hit returns a value equal to, and of the same type as, the miss."""

    @pytest.mark.parametrize(
        "value",
        [
            None,
            (1, "a", (2, 3)),
            {1: "one", 2: "two"},
            b"\x00bytes",
            [1, [2, (3,)]],
            {"nested": {"t": (1, 2)}},
            {1, 2, 3},
            dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=9))),
            Decimal("1.10"),
            True,
            1.5,
        ],
        ids=repr,
    )
    async def test_round_trip_through_storage(self, kind: str, tmp_path: Path, value: Any) -> None:
        calls = 0
        for attempt in range(2):
            # A fresh Spot each time: the second answer comes from storage, not memory.
            async with open_spot(kind if kind == "sqlite" else "sqlite", tmp_path) as spot:

                @spot.mark
                async def produce() -> Any:
                    nonlocal calls
                    calls += 1
                    return value

                result = await produce()
                assert result == value
                assert type(result) is type(value)
                if isinstance(value, dt.datetime):
                    assert result.utcoffset() == value.utcoffset()
            assert calls == 1, f"attempt {attempt}"

    async def test_none_is_cached(self, kind: str, tmp_path: Path) -> None:
        calls = []
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            async def nothing(x: int) -> None:
                calls.append(x)

            assert await nothing(1) is None
            assert await nothing(1) is None
        assert calls == [1]

    async def test_mutating_a_result_does_not_change_the_cache(
        self, kind: str, tmp_path: Path
    ) -> None:
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            async def make() -> dict[str, list[int]]:
                return {"a": [1]}

            first = await make()
            first["a"].append(2)
            second = await make()
            assert second == {"a": [1]}
            second["a"].append(3)
            assert await make() == {"a": [1]}

    async def test_exceptions_propagate_and_are_not_cached(self, kind: str, tmp_path: Path) -> None:
        calls = 0
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            async def flaky() -> str:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise KeyError("first")
                return "ok"

            with pytest.raises(KeyError, match="first"):
                await flaky()
            assert await flaky() == "ok"
            assert await flaky() == "ok"
        assert calls == 2

    async def test_cache_if_decides_storage(self, kind: str, tmp_path: Path) -> None:
        calls = []
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark(cache_if=lambda r: not r.endswith("..."))
            async def answer(q: str) -> str:
                calls.append(q)
                return "truncated..." if q == "long" else "done"

            await answer("long")
            await answer("long")
            await answer("short")
            await answer("short")
        assert calls == ["long", "long", "short"]


class TestKeys:
    """Calls that bind to the same arguments share a key; anything else does not."""

    async def test_defaults_and_keywords_share_key(self, kind: str, tmp_path: Path) -> None:
        calls = []
        async with open_spot(kind, tmp_path) as spot:

            @spot.mark
            async def f(a: int, b: int = 2) -> int:
                calls.append((a, b))
                return a + b

            assert await f(1, 2) == await f(1, b=2) == await f(1) == await f(a=1) == 3
            await f(1, 3)
        assert calls == [(1, 2), (1, 3)]

    async def test_version_separates_results(self, tmp_path: Path) -> None:
        calls = []
        async with open_spot("sqlite", tmp_path) as spot:

            def body(x: int) -> int:
                calls.append(x)
                return x

            v1 = spot.mark(version="v1", name="f")(body)
            v2 = spot.mark(version="v2", name="f")(body)
            v1(1)
            v2(1)
            v1(1)
        assert calls == [1, 1]

    async def test_methods_key_on_self(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)
        calls = []

        class Scaler:
            def __init__(self, k: int) -> None:
                self.k = k

            def __cache_key__(self) -> int:
                return self.k

            @spot.mark
            async def scale(self, x: int) -> int:
                calls.append((self.k, x))
                return self.k * x

        assert await Scaler(2).scale(3) == 6
        assert await Scaler(2).scale(3) == 6
        assert await Scaler(3).scale(3) == 9
        assert calls == [(2, 3), (3, 3)]
        await spot.aclose()

    async def test_methods_can_ignore_self(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)
        calls = []

        class Client:
            @spot.mark(input_key_fn=bs.KeyGen.ignore("self"))
            async def get(self, x: int) -> int:
                calls.append(x)
                return x

        assert await Client().get(1) == await Client().get(1) == 1
        assert calls == [1]
        await spot.aclose()

    async def test_partial_keys_on_bound_arguments(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)
        calls = []

        async def power(base: int, exp: int) -> int:
            calls.append((base, exp))
            return int(base**exp)

        square = spot.mark(functools.partial(power, exp=2), name="square")
        cube = spot.mark(functools.partial(power, exp=3), name="cube")
        assert await square(3) == 9
        assert await cube(3) == 27
        assert await square(3) == 9
        assert calls == [(3, 2), (3, 3)]
        await spot.aclose()

    async def test_partials_of_one_function_need_no_name(self, tmp_path: Path) -> None:
        """Partials of one function with different bound arguments key on them."""
        spot = make_spot("memory", tmp_path)
        calls = []

        async def power(base: int, exp: int) -> int:  # a closure: it uses `calls`
            calls.append((base, exp))
            return int(base**exp)

        square = spot.mark(functools.partial(power, exp=2))
        cube = spot.mark(functools.partial(power, exp=3))
        assert await square(3) == 9
        assert await cube(3) == 27
        assert await square(3) == 9
        assert await cube(3) == 27
        assert calls == [(3, 2), (3, 3)]
        await spot.aclose()

    async def test_partials_of_different_closures_are_still_refused(self, tmp_path: Path) -> None:
        """Partials do not hide two closures that share a qualname."""
        spot = make_spot("memory", tmp_path)

        def make(offset: int) -> Any:
            async def shifted(x: int, y: int) -> int:
                return x + y + offset

            return shifted

        first = spot.mark(functools.partial(make(1), y=1))
        with pytest.raises(bs.ConfigurationError, match="share the identity"):
            spot.mark(functools.partial(make(2), y=1))
        assert await first(1) == 3
        await spot.aclose()

    async def test_unkeyable_argument_names_it(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)

        @spot.mark
        async def call(client: object, prompt: str) -> str:
            return prompt

        with pytest.raises(bs.ConfigurationError, match="client") as info:
            await call(lambda: None, "hi")
        assert "KeyGen.ignore" in str(info.value)
        await spot.aclose()

    async def test_custom_key_function_must_return_str_or_bytes(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)

        @spot.mark(input_key_fn=lambda x: len(x))
        async def f(x: str) -> str:
            return x

        with pytest.raises(bs.ConfigurationError, match="str or bytes"):
            await f("abc")
        await spot.aclose()

    async def test_keygen_alias(self, tmp_path: Path) -> None:
        spot = make_spot("memory", tmp_path)
        calls = []

        @spot.mark(keygen=lambda text: text.lower())
        async def f(text: str) -> str:
            calls.append(text)
            return text.lower()

        await f("ABC")
        await f("abc")
        assert calls == ["ABC"]
        await spot.aclose()


class TestTTL:
    """Expired entries are misses; ttl accepts seconds and timedeltas."""

    async def test_expiry_with_fake_clock(self, kind: str, tmp_path: Path) -> None:
        clock = FakeClock()
        calls = 0
        async with open_spot(kind, tmp_path, clock=clock) as spot:

            @spot.mark(ttl=dt.timedelta(seconds=1.5))
            async def now() -> int:
                nonlocal calls
                calls += 1
                return calls

            assert await now() == 1
            clock.advance(1.4)
            assert await now() == 1
            clock.advance(0.2)
            assert await now() == 2
            history = await spot.history()
            expires = history["expires_at"].iloc[0].timestamp()
            assert expires == pytest.approx(clock() + 1.5, abs=1e-3)

    async def test_expired_on_disk_is_a_miss_in_a_new_process(self, tmp_path: Path) -> None:
        clock = FakeClock()
        calls = 0

        async def run_once() -> int:
            async with open_spot("sqlite", tmp_path, clock=clock) as spot:

                @spot.mark(ttl=10)
                async def value() -> int:
                    nonlocal calls
                    calls += 1
                    return calls

                return await value()

        assert await run_once() == 1
        clock.advance(5)
        assert await run_once() == 1
        clock.advance(6)
        assert await run_once() == 2


class TestSeedCompatibility:
    """bs.Project and Project.task keep the seed README's quick start working."""

    def test_project_alias(self, tmp_path: Path) -> None:
        import warnings

        from beautyspot_async import _spot

        _spot.Project._warned = False
        _spot.Project._task_warned = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            project = bs.Project("p", db=f"sqlite:///{tmp_path}/p.db", storage=tmp_path / "b")
            seen = []

            @project.task
            def heavy(text: str) -> str:
                seen.append(text)
                return f"Processed: {text}"

            out = [heavy(t) for t in ["A", "B", "C", "A"]]
        assert out[-1] == "Processed: A"
        assert seen == ["A", "B", "C"]
        kinds = [w.category for w in caught]
        assert kinds.count(DeprecationWarning) == 2
        with bs.Project("p", db="memory://", storage=tmp_path / "b"):
            pass
