"""Cache keys: canonical encoding, argument binding, key policies and stability."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import functools
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
import zoneinfo
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest

from beautyspot_async.cachekey import (
    ArgumentKeyer,
    KeyGen,
    KeyPolicy,
    cache_key,
    canonical_bytes,
    function_identity,
)
from beautyspot_async.exceptions import ConfigurationError

from ._services import require_module

# ----------------------------------------------------------------- module-level fixtures


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Shade(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int
    note: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass
class OtherPoint:
    x: int
    y: int


class Pair(NamedTuple):
    a: int
    b: int


class Token:
    """A user class opting into keys through the protocol."""

    def __init__(self, value: str, secret: object = None) -> None:
        self.value = value
        self.secret = secret

    def __cache_key__(self) -> object:
        return self.value


class Client:
    """Stands for an HTTP client: no value identity."""


class Service:
    def __init__(self, region: str) -> None:
        self.region = region

    def __cache_key__(self) -> str:
        return self.region

    def call(self, prompt: str) -> str:
        return prompt


class Unkeyed:
    def call(self, prompt: str) -> str:
        return prompt


class Adder:
    def __call__(self, a: int, b: int = 0) -> int:
        return a + b


def module_function(x: int) -> int:
    return x


def other_function(x: int) -> int:
    return x


def two(a: int, b: int = 2) -> int:
    return a + b


def keyed(a: Any, b: Any = None, *, c: Any = 3) -> None:
    pass


def varargs(a: Any, *rest: Any, flag: bool = False, **extra: Any) -> None:
    pass


def enc(value: object) -> bytes:
    return canonical_bytes(value)


def input_id(fn: Any, *args: Any, input_key_fn: Any = None, **kwargs: Any) -> str:
    return ArgumentKeyer(fn, input_key_fn=input_key_fn).input_id(args, kwargs)


# --------------------------------------------------------------------------- encoding


class TestTypesArePartOfTheValue:
    """Values that Python considers equal but that behave differently get different keys."""

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            (True, 1),
            (False, 0),
            (1, 1.0),
            (1.0, 1 + 0j),
            ([1, 2], (1, 2)),
            ("a", b"a"),
            (b"a", bytearray(b"a")),
            ({1}, frozenset({1})),
            ((1, 2), Pair(1, 2)),
            ({"a": 1}, collections.Counter({"a": 1})),
            ({"a": 1}, collections.OrderedDict(a=1)),
            (None, ()),
            ("", b""),
            (0.0, -0.0),
            (decimal.Decimal("1.0"), decimal.Decimal("1.00")),
            (decimal.Decimal(1), 1),
            (fractions.Fraction(1, 2), 0.5),
            (range(3), [0, 1, 2]),
            (Color.RED, "red"),
            (Color.RED, Shade.RED),
            (Point(1, 2), OtherPoint(1, 2)),
            (np.int64(1), 1),
            (np.float64(1.0), 1.0),
            (np.array([1, 2], dtype=np.int64), np.array([1, 2], dtype=np.int32)),
            (np.array([1, 2]), np.array([[1, 2]])),
            (pathlib.PurePosixPath("a/b"), pathlib.PureWindowsPath("a/b")),
            (pathlib.Path("a/b"), "a/b"),
            (dt.date(2024, 1, 2), dt.datetime(2024, 1, 2)),
        ],
    )
    def test_distinct(self, a: object, b: object) -> None:
        assert enc(a) != enc(b)

    def test_nested_distinctions_survive(self) -> None:
        assert enc({"k": [1, (2, 3)]}) != enc({"k": [1, [2, 3]]})
        assert enc([True]) != enc([1])

    def test_framing_is_unambiguous(self) -> None:
        assert enc(["ab", "c"]) != enc(["a", "bc"])
        assert enc([[1], 2]) != enc([[1, 2]])
        assert enc({"a": "bc"}) != enc({"ab": "c"})


class TestOrderIndependence:
    """dict and set order never changes a key; sequence order always does."""

    def test_dict_order(self) -> None:
        assert enc({"a": 1, "b": 2, 3: [4]}) == enc({3: [4], "b": 2, "a": 1})

    def test_set_order(self) -> None:
        # Colliding hashes make iteration order follow insertion order.
        values = [32 * i for i in range(6)]
        forward, backward = set(values), set()
        for value in reversed(values):
            backward.add(value)
        assert list(forward) != list(backward)
        assert enc(forward) == enc(backward)
        assert enc(frozenset(forward)) == enc(frozenset(backward))

    def test_nested_order(self) -> None:
        assert enc([{"x": {1, 2}, "y": 0}]) == enc([{"y": 0, "x": {2, 1}}])

    def test_sequence_order_matters(self) -> None:
        assert enc([1, 2]) != enc([2, 1])

    def test_dict_values_matter(self) -> None:
        assert enc({"a": 1, "b": 2}) != enc({"a": 2, "b": 1})


class TestFloats:
    """Floats are keyed by bits, with every NaN made canonical."""

    def test_nan_is_canonical(self) -> None:
        other_nan = -float("nan")
        assert enc(float("nan")) == enc(other_nan)
        assert enc(complex(float("nan"), 1)) == enc(complex(-float("nan"), 1))

    def test_values(self) -> None:
        assert enc(0.1 + 0.2) != enc(0.3)
        assert enc(float("inf")) != enc(float("-inf"))


class TestDatesAndTimes:
    """Datetimes and friends are keyed by value, with naive and aware kept apart."""

    def test_naive_is_not_aware(self) -> None:
        naive = dt.datetime(2024, 5, 1, 12, 0)
        assert enc(naive) != enc(naive.replace(tzinfo=dt.UTC))

    def test_equal_instants_in_different_offsets_differ(self) -> None:
        utc = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
        paris = utc.astimezone(dt.timezone(dt.timedelta(hours=2)))
        assert utc == paris
        assert enc(utc) != enc(paris)

    def test_same_wall_time_and_offset_agree_across_tzinfo_kinds(self) -> None:
        zoned = dt.datetime(2024, 5, 1, 12, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
        fixed = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        assert enc(zoned) == enc(fixed)

    def test_by_value(self) -> None:
        assert enc(dt.datetime(2024, 5, 1, 12, 0, 0, 1)) != enc(dt.datetime(2024, 5, 1, 12))
        assert enc(dt.date(2024, 5, 1)) == enc(dt.date(2024, 5, 1))
        assert enc(dt.time(1, 2, 3)) != enc(dt.time(1, 2, 4))
        assert enc(dt.time(1, tzinfo=dt.UTC)) != enc(dt.time(1))
        assert enc(dt.timedelta(days=1)) == enc(dt.timedelta(hours=24))
        assert enc(dt.timedelta(seconds=-1)) != enc(dt.timedelta(seconds=1))

    def test_time_without_offset_raises(self) -> None:
        with pytest.raises(ConfigurationError, match="offset"):
            enc(dt.time(1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")))


class TestValueTypes:
    """Decimal, UUID, paths, enums, dataclasses, pydantic and the rest key by value."""

    def test_decimal(self) -> None:
        assert enc(decimal.Decimal("1.5")) == enc(decimal.Decimal("1.5"))
        assert enc(decimal.Decimal("1.5")) != enc(decimal.Decimal("-1.5"))
        assert enc(decimal.Decimal("NaN")) != enc(decimal.Decimal("Infinity"))

    def test_uuid(self) -> None:
        u = uuid.UUID("12345678-1234-5678-1234-567812345678")
        assert enc(u) == enc(uuid.UUID(str(u)))
        assert enc(u) != enc(uuid.UUID(int=u.int + 1))
        assert enc(u) != enc(str(u))

    def test_paths(self) -> None:
        assert enc(pathlib.Path("data/x.csv")) == enc(pathlib.Path("data") / "x.csv")
        assert enc(pathlib.Path("data/x.csv")) != enc(pathlib.Path("data/y.csv"))
        assert enc(pathlib.PureWindowsPath("a\\b")) == enc(pathlib.PureWindowsPath("a/b"))

    def test_enum(self) -> None:
        assert enc(Color.RED) == enc(Color("red"))
        assert enc(Color.RED) != enc(Color.BLUE)

    def test_dataclass_uses_compared_fields(self) -> None:
        assert enc(Point(1, 2)) == enc(Point(1, 2, note="ignored: compare=False"))
        assert enc(Point(1, 2)) != enc(Point(2, 1))

    def test_pydantic(self) -> None:
        pydantic = require_module("pydantic", extra="dev")

        class Model(pydantic.BaseModel):
            name: str
            tags: list[str] = pydantic.Field(default_factory=list)

        assert enc(Model(name="a", tags=["x"])) == enc(Model(name="a", tags=["x"]))
        assert enc(Model(name="a")) != enc(Model(name="b"))
        assert enc(Model(name="a")) != enc({"name": "a", "tags": []})

    def test_small_builtins(self) -> None:
        assert enc(range(0, 10, 2)) != enc(range(0, 10, 3))
        assert enc(memoryview(b"abc")) == enc(memoryview(bytearray(b"abc")))
        assert enc(memoryview(b"abc")) != enc(b"abc")
        assert enc(1 + 2j) != enc(2 + 1j)
        assert enc(None) == enc(None)
        assert enc(10**40) != enc(-(10**40))
        assert enc(-1) != enc(255)

    def test_str_subclass_is_keyed_with_its_class(self) -> None:
        class Tag(str):
            pass

        assert enc(Tag("x")) != enc("x")
        assert enc(Tag("x")) == enc(Tag("x"))


class TestNumpy:
    """numpy arrays and scalars key by dtype, shape and contents."""

    def test_by_value(self) -> None:
        a = np.arange(12, dtype=np.float64).reshape(3, 4)
        assert enc(a) == enc(a.copy())
        assert enc(a) == enc(np.asfortranarray(a))
        assert enc(a[:, ::2]) == enc(np.ascontiguousarray(a[:, ::2]))
        b = a.copy()
        b[2, 3] = -1
        assert enc(a) != enc(b)
        assert enc(a) != enc(a.reshape(4, 3))

    def test_byte_order_is_normalised(self) -> None:
        little = np.arange(5, dtype="<i4")
        assert enc(little) == enc(little.astype(">i4"))

    def test_nan_payloads_are_canonical(self) -> None:
        a = np.array([1.0, np.nan])
        b = a.copy()
        b.view(np.uint64)[1] |= 1  # a different NaN payload
        assert np.isnan(b[1])
        assert enc(a) == enc(b)

    def test_object_arrays_by_element(self) -> None:
        assert enc(np.array(["a", 1], dtype=object)) == enc(np.array(["a", 1], dtype=object))
        assert enc(np.array(["a", 1], dtype=object)) != enc(np.array(["a", 2], dtype=object))
        with pytest.raises(ConfigurationError, match=r"value\[1\]"):
            enc(np.array(["a", Client()], dtype=object))

    def test_scalars(self) -> None:
        assert enc(np.float32(1.5)) == enc(np.float32(1.5))
        assert enc(np.float32(1.5)) != enc(np.float64(1.5))
        assert enc(np.datetime64("2024-01-01")) != enc(np.datetime64("2024-01-02"))

    def test_structured(self) -> None:
        a = np.array([(1, 2.0)], dtype=[("x", "<i4"), ("y", "<f8")])
        b = np.array([(1, 2.0)], dtype=[("u", "<i4"), ("y", "<f8")])
        assert enc(a) != enc(b)


class TestPandas:
    """pandas objects key by dtypes, names, index, columns and values."""

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None], "c": [0.5, np.nan, 1.0]})

    def test_dataframe_by_value(self) -> None:
        assert enc(self.frame()) == enc(self.frame())
        changed = self.frame()
        changed.loc[1, "a"] = 20
        assert enc(changed) != enc(self.frame())
        assert enc(self.frame().rename(columns={"a": "z"})) != enc(self.frame())
        assert enc(self.frame().set_axis([7, 8, 9])) != enc(self.frame())
        assert enc(self.frame().astype({"a": "float64"})) != enc(self.frame())
        assert enc(self.frame()[["b", "a", "c"]]) != enc(self.frame())

    def test_series_and_index(self) -> None:
        s = pd.Series([1, 2], name="n")
        assert enc(s) == enc(pd.Series([1, 2], name="n"))
        assert enc(s) != enc(s.rename("m"))
        assert enc(s) != enc(pd.Series([1, 2], name="n", index=["a", "b"]))
        assert enc(pd.Index([1, 2])) != enc(pd.Index([1, 3]))

    def test_extension_dtypes(self) -> None:
        nullable = pd.Series([1, None], dtype="Int64")
        assert enc(nullable) == enc(pd.Series([1, None], dtype="Int64"))
        assert enc(nullable) != enc(pd.Series([1, 2], dtype="Int64"))
        cat = pd.Series(["a", "b"], dtype=pd.CategoricalDtype(["a", "b"]))
        other = pd.Series(["a", "b"], dtype=pd.CategoricalDtype(["a", "b", "c"]))
        assert enc(cat) != enc(other)
        aware = pd.Series(pd.to_datetime(["2024-01-01"]).tz_localize("UTC"))
        assert enc(aware) != enc(aware.dt.tz_convert("Europe/Paris"))

    def test_scalars(self) -> None:
        assert enc(pd.Timestamp("2024-01-01 00:00:00.000000001")) != enc(
            pd.Timestamp("2024-01-01 00:00:00.000000002")
        )
        assert enc(pd.NaT) != enc(None)
        assert enc(pd.NA) != enc(None)


class TestKeyProtocolAndReferences:
    """__cache_key__ opts a class in; functions and classes key by importable name."""

    def test_cache_key_protocol(self) -> None:
        assert enc(Token("a", secret=Client())) == enc(Token("a", secret=object()))
        assert enc(Token("a")) != enc(Token("b"))
        assert enc(Token("a")) != enc("a")

    def test_cache_key_value_must_be_keyable(self) -> None:
        with pytest.raises(ConfigurationError, match=r"__cache_key__\(\)"):
            enc(Token(Client()))  # type: ignore[arg-type]

    def test_functions_and_classes_by_name(self) -> None:
        assert enc(module_function) == enc(module_function)
        assert enc(module_function) != enc(other_function)
        assert enc(Point) != enc(OtherPoint)
        assert enc(len) != enc(abs)
        assert enc(os) != enc(sys)

    def test_bound_methods_and_partials(self) -> None:
        assert enc(Service("eu").call) == enc(Service("eu").call)
        assert enc(Service("eu").call) != enc(Service("us").call)
        assert enc(functools.partial(two, 1)) != enc(functools.partial(two, 2))

    def test_local_function_raises(self) -> None:
        def local() -> None:
            pass

        with pytest.raises(ConfigurationError, match="inside a function"):
            enc(local)

    @pytest.mark.parametrize(
        "make",
        [
            lambda: lambda: 1,
            socket.socket,
            threading.Lock,
            lambda: open(__file__),  # noqa: SIM115 - the test closes it
            lambda: (i for i in range(2)),
            object,
            Client,
        ],
        ids=["lambda", "socket", "lock", "file", "generator", "object", "client"],
    )
    def test_unkeyable_raise(self, make: Any) -> None:
        value = make()
        try:
            with pytest.raises(ConfigurationError, match="cannot derive a cache key"):
                enc({"deep": [0, value]})
        finally:
            if hasattr(value, "close"):
                value.close()

    def test_path_inside_containers_is_named(self) -> None:
        with pytest.raises(ConfigurationError, match=r"value\['deep'\]\[1\]"):
            enc({"deep": [0, Client()]})
        with pytest.raises(ConfigurationError, match=r"value\.x"):
            enc(OtherPoint(Client(), 1))  # type: ignore[arg-type]

    def test_cycles_raise(self) -> None:
        cycle: list[Any] = []
        cycle.append(cycle)
        with pytest.raises(ConfigurationError, match="contains itself"):
            enc(cycle)


# --------------------------------------------------------------------------- binding


class TestBinding:
    """Arguments are bound to the signature with defaults applied before hashing."""

    def test_spellings_agree(self) -> None:
        ids = {
            input_id(two, 1, 2),
            input_id(two, 1, b=2),
            input_id(two, 1),
            input_id(two, a=1),
            input_id(two, b=2, a=1),
        }
        assert len(ids) == 1
        assert input_id(two, 1, 3) not in ids

    def test_id_shape(self) -> None:
        value = input_id(two, 1)
        assert len(value) == 32
        assert value == value.lower()
        int(value, 16)

    def test_keyword_only_and_defaults(self) -> None:
        assert input_id(keyed, 1) == input_id(keyed, 1, None, c=3)
        assert input_id(keyed, 1, c=4) != input_id(keyed, 1)

    def test_varargs_and_varkw(self) -> None:
        assert input_id(varargs, 1) == input_id(varargs, 1, flag=False)
        assert input_id(varargs, 1, 2) != input_id(varargs, 1)
        assert input_id(varargs, 1, x=1, y=2) == input_id(varargs, 1, y=2, x=1)
        assert input_id(varargs, 1, x=1) != input_id(varargs, 1, x=2)

    def test_argument_values_are_not_confused_between_parameters(self) -> None:
        assert input_id(keyed, 1, 2) != input_id(keyed, 2, 1)
        assert input_id(keyed, 1, None, c=2) != input_id(keyed, 1, 2)

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [((1, 2, 3), {}), ((), {}), ((1,), {"a": 1}), ((1,), {"zzz": 1})],
    )
    def test_unbindable_call_names_function(self, args: tuple[Any, ...], kwargs: Any) -> None:
        keyer = ArgumentKeyer(two)
        with pytest.raises(TypeError, match=r"test_cachekey\.two\(\)"):
            keyer.input_id(args, kwargs)

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [((1,), {}), ((1, 2), {}), ((1,), {"b": 5}), ((), {"a": 1, "c": 0}), ((1, [2]), {"c": 9})],
    )
    def test_fast_and_general_binding_agree(self, args: tuple[Any, ...], kwargs: Any) -> None:
        fast = ArgumentKeyer(keyed)
        general = ArgumentKeyer(keyed)
        general._fast = False  # force inspect.Signature.bind
        assert fast.input_id(args, kwargs) == general.input_id(args, kwargs)

    def test_coroutine_functions(self) -> None:
        async def fetch(url: str, retries: int = 3) -> str:
            return url

        keyer = ArgumentKeyer(fetch)
        assert keyer.input_id(("u",), {}) == keyer.input_id((), {"url": "u", "retries": 3})

    def test_unkeyable_argument_names_argument_and_remedy(self) -> None:
        def call_api(prompt: str, client: object, items: list[object]) -> None:
            pass

        keyer = ArgumentKeyer(call_api)
        with pytest.raises(ConfigurationError) as info:
            keyer.input_id(("p", Client(), []), {})
        message = str(info.value)
        assert "argument 'client'" in message
        assert "call_api" in message
        assert "test_cachekey.Client" in message
        assert "KeyGen.ignore('client')" in message
        assert "__cache_key__" in message
        with pytest.raises(ConfigurationError, match=r"argument 'items'.*items\[3\]"):
            keyer.input_id(("p", None, [0, 1, 2, threading.Lock()]), {})

    def test_unkeyable_extra_keyword_is_named(self) -> None:
        with pytest.raises(ConfigurationError, match="argument 'session'"):
            input_id(varargs, 1, session=Client())


class TestPartialsMethodsAndCallables:
    """partials key on their bound arguments; self is part of a method's key."""

    def test_partial_merges_bound_arguments(self) -> None:
        bound = functools.partial(two, 1)
        assert input_id(bound) == input_id(two, 1)
        assert input_id(bound, 5) == input_id(two, 1, 5)
        assert input_id(functools.partial(two, b=7), 1) == input_id(two, 1, 7)
        assert input_id(functools.partial(functools.partial(two, 1), b=4)) == input_id(two, 1, 4)

    def test_partial_identity_is_the_function(self) -> None:
        assert function_identity(functools.partial(two, 1)) == function_identity(two)

    def test_partial_with_custom_key_fn_keeps_bound_arguments(self) -> None:
        def const(*args: Any, **kwargs: Any) -> str:
            return "same"

        one = input_id(functools.partial(two, 1), input_key_fn=const)
        other = input_id(functools.partial(two, 2), input_key_fn=const)
        assert one != other

    def test_method_keys_on_self(self) -> None:
        plain = Service.call
        assert input_id(plain, Service("eu"), "p") == input_id(plain, Service("eu"), "p")
        assert input_id(plain, Service("eu"), "p") != input_id(plain, Service("us"), "p")
        assert input_id(Service("eu").call, "p") == input_id(plain, Service("eu"), "p")

    def test_ignore_self(self) -> None:
        policy = KeyGen.ignore("self")
        assert input_id(Unkeyed.call, Unkeyed(), "p", input_key_fn=policy) == input_id(
            Unkeyed.call, Unkeyed(), "p", input_key_fn=policy
        )
        with pytest.raises(ConfigurationError, match="argument 'self'"):
            input_id(Unkeyed.call, Unkeyed(), "p")

    def test_identities(self) -> None:
        assert function_identity(two) == "tests.test_cachekey.two"
        assert function_identity(Service("x").call).endswith("test_cachekey.Service.call")
        assert function_identity(Adder()).endswith("test_cachekey.Adder.__call__")
        assert function_identity(len) == "builtins.len"
        assert function_identity(two, name="custom") == "custom"

    def test_lambda_identity_needs_a_name(self) -> None:
        with pytest.raises(ConfigurationError, match="name="):
            function_identity(lambda x: x)
        assert function_identity(lambda x: x, name="square") == "square"

    def test_callable_object_binds_without_self(self) -> None:
        keyer = ArgumentKeyer(Adder())
        assert keyer.input_id((1,), {}) == keyer.input_id((1, 0), {})


# --------------------------------------------------------------------------- key functions


class TestCustomKeyFunction:
    """A custom input_key_fn receives the call as written and must return str or bytes."""

    def test_receives_the_call_as_written(self) -> None:
        seen: list[Any] = []

        def key(*args: Any, **kwargs: Any) -> str:
            seen.append((args, kwargs))
            return "k"

        ArgumentKeyer(two, input_key_fn=key).input_id((1,), {"b": 5})
        assert seen == [((1,), {"b": 5})]

    def test_str_and_bytes(self) -> None:
        by_str = input_id(two, 1, input_key_fn=lambda a, b=2: f"{a}")
        assert by_str == input_id(two, 1, input_key_fn=lambda a, b=2: "1")
        assert by_str != input_id(two, 1, input_key_fn=lambda a, b=2: b"1")
        assert by_str != input_id(two, 1)

    @pytest.mark.parametrize("bad", [1, None, ["k"], bytearray(b"k")])
    def test_other_return_types_raise(self, bad: object) -> None:
        with pytest.raises(ConfigurationError, match=rf"two.*{type(bad).__name__}.*str or bytes"):
            input_id(two, 1, input_key_fn=lambda *a, **k: bad)

    def test_coroutine_key_function_rejected_at_decoration(self) -> None:
        async def key(*args: Any) -> str:
            return ""

        with pytest.raises(ConfigurationError, match="coroutine"):
            ArgumentKeyer(two, input_key_fn=key)

    def test_not_blocking_by_default(self) -> None:
        assert not ArgumentKeyer(two).blocking
        assert not ArgumentKeyer(two, input_key_fn=lambda *a: "k").blocking
        assert not ArgumentKeyer(two, input_key_fn=KeyGen.ignore("b")).blocking


class TestKeyPolicies:
    """KeyGen.ignore and KeyGen.map are validated at decoration and chain."""

    def call_api(self) -> Any:
        def call_api(prompt: str, client: object = None, verbose: bool = False) -> None:
            pass

        return call_api

    def test_ignore(self) -> None:
        fn = self.call_api()
        policy = KeyGen.ignore("client", "verbose")
        a = input_id(fn, "p", Client(), True, input_key_fn=policy)
        b = input_id(fn, "p", client=socket, input_key_fn=policy)
        assert a == b
        assert a != input_id(fn, "q", Client(), input_key_fn=policy)

    def test_map(self) -> None:
        fn = self.call_api()
        policy = KeyGen.map(prompt=str.strip)
        assert input_id(fn, "  p ", input_key_fn=policy) == input_id(fn, "p", input_key_fn=policy)
        assert input_id(fn, "p", input_key_fn=policy) != input_id(fn, "q", input_key_fn=policy)

    def test_map_to_a_summary(self) -> None:
        def describe(df: pd.DataFrame) -> None:
            pass

        policy = KeyGen.map(df=lambda d: d.shape)
        small = pd.DataFrame({"a": [1]})
        assert input_id(describe, small, input_key_fn=policy) == input_id(
            describe, pd.DataFrame({"a": [2]}), input_key_fn=policy
        )

    def test_chain(self) -> None:
        fn = self.call_api()
        policy = KeyGen.ignore("client").map(prompt=str.lower)
        assert isinstance(policy, KeyPolicy)
        assert input_id(fn, "P", Client(), input_key_fn=policy) == input_id(
            fn, "p", input_key_fn=policy
        )
        assert policy.ignored == frozenset({"client"})
        assert set(policy.transforms) == {"prompt"}

    def test_unknown_name_fails_at_decoration(self) -> None:
        with pytest.raises(ConfigurationError, match="clinet"):
            ArgumentKeyer(self.call_api(), input_key_fn=KeyGen.ignore("clinet"))
        with pytest.raises(ConfigurationError, match="nope"):
            KeyGen.map(nope=str).bind_to(two)

    def test_names_in_var_keyword_are_allowed(self) -> None:
        policy = KeyGen.ignore("session")
        assert input_id(varargs, 1, session=Client(), input_key_fn=policy) == input_id(
            varargs, 1, input_key_fn=policy
        )

    def test_conflicts_and_bad_names(self) -> None:
        with pytest.raises(ConfigurationError):
            KeyGen.ignore("a").map(a=str)
        with pytest.raises(ConfigurationError):
            KeyGen.map(a=str).map(a=str)
        with pytest.raises(ConfigurationError):
            KeyGen.ignore("not a name")
        with pytest.raises(ConfigurationError):
            KeyGen.map(a=1)  # type: ignore[arg-type]

    def test_unbound_policy_cannot_be_called(self) -> None:
        with pytest.raises(ConfigurationError, match="bind_to"):
            KeyGen.ignore("a")(1)

    def test_bind_to(self) -> None:
        keyed_id = KeyGen.ignore("b").bind_to(two)
        assert keyed_id((1, 2), {}) == keyed_id((1, 3), {})


class TestFileKeys:
    """File helpers key on stat or content, plus the other arguments, and are blocking."""

    def test_path_stat_changes_when_file_changes(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "data.csv"
        path.write_text("a,b\n")
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
        first = KeyGen.from_path_stat(path)
        assert KeyGen.from_path_stat(str(path)) == first
        os.utime(path, ns=(2_000_000_000, 2_000_000_000))
        touched = KeyGen.from_path_stat(path)
        assert touched != first
        path.write_text("a,b,c\n")
        os.utime(path, ns=(2_000_000_000, 2_000_000_000))
        assert KeyGen.from_path_stat(path) not in {first, touched}

    def test_path_stat_resolves_path(
        self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "data.csv"
        path.write_text("x")
        monkeypatch.chdir(tmp_path)
        assert KeyGen.from_path_stat("data.csv") == KeyGen.from_path_stat(path)

    def test_content_survives_touch(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "data.bin"
        path.write_bytes(b"\x00" * 3_000_000)
        first = KeyGen.from_file_content(path)
        os.utime(path, ns=(5_000_000_000, 5_000_000_000))
        assert KeyGen.from_file_content(path) == first
        path.write_bytes(b"\x00" * 2_999_999 + b"\x01")
        assert KeyGen.from_file_content(path) != first

    def test_remaining_arguments_count(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "f"
        path.write_text("x")
        for helper in (KeyGen.from_path_stat, KeyGen.from_file_content):
            assert helper(path, mode="a") != helper(path, mode="b")
            assert helper(path, 1) != helper(path)

    def test_missing_file(self, tmp_path: pathlib.Path) -> None:
        with pytest.raises(FileNotFoundError):
            KeyGen.from_path_stat(tmp_path / "missing")
        with pytest.raises(FileNotFoundError):
            KeyGen.from_file_content(tmp_path / "missing")

    def test_under_keyer(self, tmp_path: pathlib.Path) -> None:
        def load(source: pathlib.Path, mode: str = "r") -> None:
            pass

        path = tmp_path / "f"
        path.write_text("x")
        keyer = ArgumentKeyer(load, input_key_fn=KeyGen.from_path_stat)
        assert keyer.blocking
        assert ArgumentKeyer(load, input_key_fn=KeyGen.from_file_content).blocking
        plain = keyer.input_id((path,), {})
        assert keyer.input_id((), {"source": path}) == plain
        assert keyer.input_id((path, "r"), {}) == plain
        assert keyer.input_id((path,), {"mode": "w"}) != plain


# --------------------------------------------------------------------------- cache_key


class TestCacheKey:
    """cache_key frames identity, version and input id unambiguously."""

    def test_framing(self) -> None:
        assert cache_key("a", "bc", "x") != cache_key("ab", "c", "x")
        assert cache_key("a", None, "x") != cache_key("a", "", "x")
        assert cache_key("a", "v1", "x") != cache_key("a", "v2", "x")
        assert cache_key("a", "v1", "x") == cache_key("a", "v1", "x")

    def test_shape(self) -> None:
        key = cache_key("mod.f", None, "0" * 32)
        assert len(key) == 32
        assert key == key.lower()
        int(key, 16)

    def test_rejects_non_str(self) -> None:
        with pytest.raises(ConfigurationError):
            cache_key("a", 2, "x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- stability

_STABILITY_SCRIPT = textwrap.dedent(
    """
    import dataclasses, datetime, decimal, enum, json, pathlib, uuid
    import numpy as np, pandas as pd
    from beautyspot_async.cachekey import ArgumentKeyer, cache_key, canonical_bytes

    class Color(enum.Enum):
        RED = 1

    @dataclasses.dataclass
    class P:
        tags: frozenset
        meta: dict

    def f(a, b=2, *rest, **extra):
        pass

    words = {f"word{i}" for i in range(40)}
    values = [
        None, True, 1, -7, 10**30, 1.5, float("nan"), "héllo", b"\\x00\\xff",
        words, frozenset(words), {w: i for i, w in enumerate(sorted(words))},
        {("t", 1): {3, 4}, "x": [1.0, (2, "3")]},
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
        decimal.Decimal("3.14"), uuid.UUID(int=42), pathlib.PurePosixPath("a/b"),
        Color.RED, P(frozenset(words), {"k": words}),
        np.arange(6, dtype=np.int32).reshape(2, 3),
        pd.DataFrame({"a": [1, 2], "b": ["x", None]}),
    ]
    keyer = ArgumentKeyer(f)
    out = {
        "bytes": [canonical_bytes(v).hex() for v in values],
        "ids": [keyer.input_id((v,), {"z": words}) for v in values],
        "key": cache_key("m.f", "v1", keyer.input_id((1,), {})),
    }
    print(json.dumps(out))
    """
)


def _run_with_hashseed(seed: str) -> Any:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _STABILITY_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class TestStability:
    """Keys do not depend on the process, the hash seed or this library's history."""

    def test_same_keys_under_different_hash_seeds(self) -> None:
        results = [_run_with_hashseed(seed) for seed in ("0", "12345", "random")]
        assert results[0] == results[1] == results[2]
        assert len(set(results[0]["ids"])) == len(results[0]["ids"])

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, "4e0000000000000000"),
            (True, "540000000000000000"),
            (1, "69000000000000000101"),
            (-1, "690000000000000001ff"),
            (1.0, "6600000000000000083ff0000000000000"),
            ("a", "73000000000000000161"),
            (b"a", "62000000000000000161"),
            ([1], "6c000000000000000a69000000000000000101"),
            ((1,), "74000000000000000a69000000000000000101"),
        ],
    )
    def test_golden_encodings(self, value: object, expected: str) -> None:
        assert enc(value).hex() == expected

    def test_golden_keys(self) -> None:
        assert input_id(two, 1) == GOLDEN_TWO_1
        assert input_id(keyed, {"b": [1, 2], "a": {3}}, c=dt.date(2024, 1, 2)) == GOLDEN_KEYED
        assert cache_key("pkg.mod.f", "v1", GOLDEN_TWO_1) == GOLDEN_CACHE_KEY
        assert cache_key("pkg.mod.f", None, "") == GOLDEN_CACHE_KEY_NONE


# Pinned: a change here changes every stored key; bump the encoding on purpose only.
GOLDEN_TWO_1 = "5829dcd6be526adce09a8da0e0744620"
GOLDEN_KEYED = "4568a7b6c12439a7887bc2dd05836569"
GOLDEN_CACHE_KEY = "56647579b125f48868c591b7b24c43cd"
GOLDEN_CACHE_KEY_NONE = "c82cd29c29f2bcc226421fecdefccc0b"
