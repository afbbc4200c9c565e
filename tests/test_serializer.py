"""Behaviour of the default msgpack serializer and its type registry."""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import enum
import inspect
import math
import struct
import threading
import uuid
from collections import OrderedDict, namedtuple
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beautyspot_async import serializer as serializer_module
from beautyspot_async.exceptions import ConfigurationError, SerializationError
from beautyspot_async.serializer import (
    RESERVED_CODES,
    MsgpackSerializer,
    Serializer,
    default_serializer,
)

# -- helpers -------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Structural equality that also demands identical types at every level.

    Floats compare bit for bit (so nan == nan and -0.0 != 0.0); Decimals by
    their exact text; datetimes and times by repr, which includes the tzinfo.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, dt.datetime | dt.time):
        return repr(a) == repr(b) and a.fold == b.fold
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if len(a) != len(b) or list(map(type, a)) != list(map(type, b)):
            return False
        return all(k in b and same(v, b[k]) for k, v in a.items())
    if isinstance(a, set | frozenset):
        # Iteration order of equal sets may differ, so pair members up by `same`.
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    return bool(a == b)


def roundtrip(s: MsgpackSerializer, value: Any) -> Any:
    data = s.dumps(value)
    assert isinstance(data, bytes)
    return s.loads(data)


@pytest.fixture
def ser() -> MsgpackSerializer:
    return MsgpackSerializer()


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Box:
    label: str
    content: Any


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Opaque:
    """A type nobody registers."""


# -- built-ins -----------------------------------------------------------------


class TestBuiltinRoundTrip:
    """Every supported built-in value comes back equal and of the same type."""

    @pytest.mark.parametrize(
        "value",
        [
            None,
            True,
            False,
            0,
            -1,
            2**63 - 1,
            -(2**63),
            2**64 - 1,
            2**64,
            -(2**63) - 1,
            2**200,
            -(2**200) + 7,
            1.5,
            -0.0,
            math.inf,
            -math.inf,
            math.nan,
            "",
            "héllo ✓",
            b"",
            b"\x00\xff raw",
            [],
            (),
            [1, "a", None],
            (1, "a", None),
            {},
            {"a": 1},
            set(),
            {1, 2, 3},
            frozenset(),
            frozenset({"a", (1, 2)}),
            dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
            dt.datetime(2024, 5, 6, 7, 8, 9, 1, tzinfo=dt.UTC),
            dt.datetime(1, 1, 1),
            dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
            dt.date(2020, 2, 29),
            dt.date(1, 1, 1),
            dt.time(0, 0),
            dt.time(23, 59, 59, 999999),
            dt.time(12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
            dt.timedelta(0),
            dt.timedelta(days=-3, seconds=5, microseconds=7),
            dt.timedelta.max,
            dt.timedelta.min,
            Decimal("1.500"),
            Decimal("-0"),
            Decimal("1E+400"),
            Decimal("NaN"),
            Decimal("-Infinity"),
            Decimal("sNaN"),
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            complex(1.5, -2),
            complex(math.inf, math.nan),
        ],
        ids=repr,
    )
    def test_value_round_trips_exactly(self, ser: MsgpackSerializer, value: Any) -> None:
        assert same(roundtrip(ser, value), value)

    def test_bytes_stay_bytes_and_str_stays_str(self, ser: MsgpackSerializer) -> None:
        out = roundtrip(ser, [b"abc", "abc"])
        assert type(out[0]) is bytes
        assert type(out[1]) is str

    def test_bytearray_and_memoryview_come_back_as_bytes(self, ser: MsgpackSerializer) -> None:
        out = roundtrip(ser, [bytearray(b"ab"), memoryview(b"cd")])
        assert out == [b"ab", b"cd"]
        assert all(type(x) is bytes for x in out)

    def test_float_bits_are_preserved(self, ser: MsgpackSerializer) -> None:
        out = roundtrip(ser, [math.nan, -0.0, 5e-324])
        assert math.isnan(out[0])
        assert math.copysign(1.0, out[1]) == -1.0
        assert out[2] == 5e-324

    def test_huge_int_inside_containers_and_as_key(self, ser: MsgpackSerializer) -> None:
        value = {2**100: [-(2**90), (2**70,)]}
        assert same(roundtrip(ser, value), value)


class TestListTupleAndKeys:
    """Lists and tuples are never confused, and dict keys keep their types."""

    def test_nested_lists_and_tuples_keep_their_kinds(self, ser: MsgpackSerializer) -> None:
        value = [(1, [2, (3, [])]), ([()], ((),))]
        out = roundtrip(ser, value)
        assert same(out, value)
        assert out != [[1, [2, [3, []]]], [[[]], [[]]]]

    def test_tuple_is_not_equal_to_list_after_round_trip(self, ser: MsgpackSerializer) -> None:
        assert type(roundtrip(ser, (1, 2))) is tuple
        assert type(roundtrip(ser, [1, 2])) is list

    def test_int_keys_stay_ints(self, ser: MsgpackSerializer) -> None:
        out = roundtrip(ser, {1: "a", -5: "b", 2**64: "c"})
        assert out == {1: "a", -5: "b", 2**64: "c"}
        assert all(type(k) is int for k in out)

    def test_tuple_bool_none_float_keys(self, ser: MsgpackSerializer) -> None:
        value = {(1, "a"): 1, True: 2, None: 3, 1.5: 4, frozenset({1}): 5, b"k": 6}
        assert same(roundtrip(ser, value), value)

    def test_str_and_int_keys_with_same_text_stay_distinct(self, ser: MsgpackSerializer) -> None:
        assert same(roundtrip(ser, {"1": "s", 1: "i"}), {"1": "s", 1: "i"})

    def test_datetime_and_uuid_keys(self, ser: MsgpackSerializer) -> None:
        value = {dt.date(2024, 1, 1): 1, uuid.UUID(int=7): 2}
        assert same(roundtrip(ser, value), value)


class TestDatetimes:
    """Naive stays naive, aware stays aware with its offset, microseconds exact."""

    def test_aware_datetime_keeps_its_offset(self, ser: MsgpackSerializer) -> None:
        tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
        value = dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=tz)
        out = roundtrip(ser, value)
        assert out == value
        assert out.utcoffset() == dt.timedelta(hours=5, minutes=30)
        assert out.microsecond == 678901
        assert out.tzinfo == tz

    def test_naive_datetime_stays_naive(self, ser: MsgpackSerializer) -> None:
        out = roundtrip(ser, dt.datetime(2024, 1, 2, 3, 4, 5, 6))
        assert out.tzinfo is None

    def test_sub_minute_and_negative_offsets(self, ser: MsgpackSerializer) -> None:
        tz = dt.timezone(-dt.timedelta(hours=23, minutes=59, seconds=1, microseconds=5))
        value = dt.datetime(2000, 6, 1, tzinfo=tz)
        out = roundtrip(ser, value)
        assert out.utcoffset() == value.utcoffset()

    def test_named_fixed_offset_keeps_its_name(self, ser: MsgpackSerializer) -> None:
        value = dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=9), "JST"))
        out = roundtrip(ser, value)
        assert out.tzname() == "JST"
        assert same(out, value)

    def test_equal_offsets_with_different_names_stay_apart(self, ser: MsgpackSerializer) -> None:
        plain = dt.timezone(dt.timedelta(hours=9))
        named = dt.timezone(dt.timedelta(hours=9), "JST")
        value = [dt.datetime(2024, 1, 1, tzinfo=tz) for tz in (plain, named, plain, named)]
        out = roundtrip(ser, value)
        assert [d.tzname() for d in out] == ["UTC+09:00", "JST", "UTC+09:00", "JST"]

    def test_zoneinfo_keeps_its_zone_and_fold(self, ser: MsgpackSerializer) -> None:
        paris = ZoneInfo("Europe/Paris")
        # 02:30 on 27 Oct 2024 happens twice in Paris; fold picks the second one.
        value = dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=paris)
        out = roundtrip(ser, value)
        assert out.tzinfo is paris
        assert out.fold == 1
        assert out.utcoffset() == dt.timedelta(hours=1)

    def test_foreign_tzinfo_becomes_fixed_offset(self, ser: MsgpackSerializer) -> None:
        class Plus2(dt.tzinfo):
            def utcoffset(self, _: dt.datetime | None) -> dt.timedelta:
                return dt.timedelta(hours=2)

            def dst(self, _: dt.datetime | None) -> dt.timedelta:
                return dt.timedelta(0)

            def tzname(self, _: dt.datetime | None) -> str:
                return "PLUS2"

        value = dt.datetime(2024, 1, 1, 12, tzinfo=Plus2())
        out = roundtrip(ser, value)
        assert out == value
        assert out.tzinfo == dt.timezone(dt.timedelta(hours=2))

    def test_unknown_zone_key_falls_back_to_offset(self, ser: MsgpackSerializer) -> None:
        value = dt.datetime(2024, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))
        data = ser.dumps(value).replace(b"Europe/Paris", b"Nowhere/Land")
        out = ser.loads(data)
        assert out == value
        assert out.utcoffset() == dt.timedelta(hours=2)


class TestRegisteredTypes:
    """User types round-trip through their encoder and decoder, nested anywhere."""

    def test_dataclass_round_trips(self, ser: MsgpackSerializer) -> None:
        ser.register_type(
            type_=Point, code=10, encoder=lambda p: [p.x, p.y], decoder=lambda v: Point(*v)
        )
        assert same(roundtrip(ser, Point(1, 2)), Point(1, 2))

    def test_decoder_receives_exactly_what_encoder_returned(self, ser: MsgpackSerializer) -> None:
        payloads: list[Any] = [
            b"\x00raw",
            "text",
            (1, (2, b"x")),
            {"k": (1,), 3: None},
            [1.5, None, True],
            None,
            2**80,
            {1, 2},
        ]
        seen: list[Any] = []

        class Carrier:
            def __init__(self, payload: Any) -> None:
                self.payload = payload

        def decode(value: Any) -> Carrier:
            seen.append(value)
            return Carrier(value)

        ser.register_type(type_=Carrier, code=0, encoder=lambda c: c.payload, decoder=decode)
        for payload in payloads:
            out = roundtrip(ser, Carrier(payload))
            assert same(seen[-1], payload)
            assert same(out.payload, payload)

    def test_nested_custom_types_in_containers_and_in_encoded_values(
        self, ser: MsgpackSerializer
    ) -> None:
        ser.register_type(
            type_=Point, code=1, encoder=lambda p: (p.x, p.y), decoder=lambda v: Point(*v)
        )
        ser.register_type(
            type_=Box,
            code=2,
            encoder=lambda b: {"label": b.label, "content": b.content},
            decoder=lambda v: Box(**v),
        )
        value = {
            "points": [Point(1, 2), (Point(3, 4),)],
            Point(5, 6): Box("outer", Box("inner", [Point(7, 8), {Point(9, 9)}])),
        }
        out = roundtrip(ser, value)
        assert out == value
        inner = out[Point(5, 6)].content
        assert type(inner) is Box
        assert type(inner.content[1]) is set

    def test_encoder_returning_bytes_keeps_bytes(self, ser: MsgpackSerializer) -> None:
        received: list[Any] = []

        class Blob:
            def __init__(self, data: bytes) -> None:
                self.data = data

        def decode(raw: Any) -> Blob:
            received.append(raw)
            return Blob(raw)

        ser.register_type(type_=Blob, code=4, encoder=lambda b: b.data, decoder=decode)
        out = roundtrip(ser, Blob(b"\x01\x02"))
        assert type(received[0]) is bytes
        assert out.data == b"\x01\x02"

    def test_register_decorator_returns_the_class(self, ser: MsgpackSerializer) -> None:
        @ser.register(code=20, encoder=lambda t: t.value, decoder=lambda v: Tagged(v))
        class Tagged:
            def __init__(self, value: int) -> None:
                self.value = value

            def __eq__(self, other: object) -> bool:
                return isinstance(other, Tagged) and other.value == self.value

            __hash__ = None  # type: ignore[assignment]

        assert inspect.isclass(Tagged)
        assert Tagged.__name__ == "Tagged"
        assert same(roundtrip(ser, [Tagged(3)]), [Tagged(3)])
        assert ser.registered_types() == {20: Tagged}

    def test_register_decorator_positional(self, ser: MsgpackSerializer) -> None:
        deco = ser.register(21, lambda p: [p.x, p.y], lambda v: Point(*v))
        assert deco(Point) is Point
        assert roundtrip(ser, Point(0, 0)) == Point(0, 0)

    def test_enum_members_of_registered_enums(self, ser: MsgpackSerializer) -> None:
        ser.register_type(type_=Color, code=30, encoder=lambda c: c.value, decoder=Color)
        ser.register_type(type_=Level, code=31, encoder=int, decoder=Level)
        value = {Color.RED: [Level.HIGH], "c": (Color.GREEN,)}
        out = roundtrip(ser, value)
        assert same(out, value)
        assert out[Color.RED][0] is Level.HIGH

    def test_namedtuple_can_be_registered(self, ser: MsgpackSerializer) -> None:
        Pair = namedtuple("Pair", "a b")
        ser.register_type(type_=Pair, code=40, encoder=tuple, decoder=lambda t: Pair(*t))
        out = roundtrip(ser, [Pair(1, (2,)), (1, 2)])
        assert type(out[0]) is Pair
        assert type(out[1]) is tuple
        assert out[0].b == (2,)


class TestSubclassFallback:
    """A subclass of a registered type uses its nearest registered base."""

    def test_subclass_uses_base_encoder_and_decodes_to_base(self, ser: MsgpackSerializer) -> None:
        class Base:
            def __init__(self, v: int) -> None:
                self.v = v

        class Child(Base):
            pass

        ser.register_type(type_=Base, code=5, encoder=lambda b: b.v, decoder=Base)
        out = roundtrip(ser, Child(9))
        assert type(out) is Base
        assert out.v == 9

    def test_nearest_registered_base_wins(self, ser: MsgpackSerializer) -> None:
        class A:
            pass

        class B(A):
            pass

        class C(B):
            pass

        ser.register_type(type_=A, code=6, encoder=lambda _: "A", decoder=lambda v: v)
        ser.register_type(type_=B, code=7, encoder=lambda _: "B", decoder=lambda v: v)
        assert ser.loads(ser.dumps(C())) == "B"

    def test_resolution_is_cached_per_concrete_type(self, ser: MsgpackSerializer) -> None:
        class Base:
            pass

        class Child(Base):
            pass

        ser.register_type(type_=Base, code=8, encoder=lambda _: 0, decoder=lambda _: Base())
        ser.dumps(Child())
        frozen = ser._frozen
        assert Child in frozen._resolved
        assert frozen._resolved[Child] is frozen._by_type[Base]

    def test_subclass_registration_after_use_takes_precedence(self, ser: MsgpackSerializer) -> None:
        class Base:
            pass

        class Child(Base):
            pass

        ser.register_type(type_=Base, code=8, encoder=lambda _: "base", decoder=lambda v: v)
        assert ser.loads(ser.dumps(Child())) == "base"
        ser.register_type(type_=Child, code=9, encoder=lambda _: "child", decoder=lambda v: v)
        assert ser.loads(ser.dumps(Child())) == "child"

    def test_builtin_subclasses_are_not_downgraded(self, ser: MsgpackSerializer) -> None:
        single = namedtuple("single", "x")
        values: list[object] = [Level.LOW, OrderedDict(a=1), single(1), Color.RED]
        for value in values:
            with pytest.raises(SerializationError, match=type(value).__qualname__):
                ser.dumps(value)

    def test_builtin_subclass_error_explains_why(self, ser: MsgpackSerializer) -> None:
        class MyDate(dt.datetime):
            pass

        with pytest.raises(SerializationError, match=r"subclasses datetime\.datetime"):
            ser.dumps(MyDate(2024, 1, 1))


class TestRegistrationErrors:
    """Bad registrations fail at once with a message saying what to do."""

    @pytest.mark.parametrize("code", sorted(RESERVED_CODES))
    def test_reserved_codes_are_refused(self, ser: MsgpackSerializer, code: int) -> None:
        with pytest.raises(ConfigurationError, match=r"reserved.*0\.\.111"):
            ser.register_type(type_=Point, code=code, encoder=repr, decoder=repr)

    @pytest.mark.parametrize("code", [-1, -128, 128, 1000])
    def test_out_of_range_codes_are_refused(self, ser: MsgpackSerializer, code: int) -> None:
        with pytest.raises(ConfigurationError, match=r"out of range.*0\.\.111"):
            ser.register_type(type_=Point, code=code, encoder=repr, decoder=repr)

    @pytest.mark.parametrize("code", [1.0, "3", True])
    def test_non_int_codes_are_refused(self, ser: MsgpackSerializer, code: Any) -> None:
        with pytest.raises(ConfigurationError, match="needs an int"):
            ser.register_type(type_=Point, code=code, encoder=repr, decoder=repr)

    def test_boundary_codes_are_accepted(self, ser: MsgpackSerializer) -> None:
        ser.register_type(type_=Point, code=0, encoder=repr, decoder=repr)
        ser.register_type(type_=Box, code=111, encoder=repr, decoder=repr)
        assert ser.registered_types() == {0: Point, 111: Box}

    def test_duplicate_code_names_the_holder(self, ser: MsgpackSerializer) -> None:
        ser.register_type(type_=Point, code=10, encoder=repr, decoder=repr)
        with pytest.raises(ConfigurationError, match=r"code 10 .*Point.*free codes include 0"):
            ser.register_type(type_=Box, code=10, encoder=repr, decoder=repr)
        assert ser.registered_types() == {10: Point}

    def test_duplicate_type_is_refused(self, ser: MsgpackSerializer) -> None:
        ser.register_type(type_=Point, code=10, encoder=repr, decoder=repr)
        with pytest.raises(
            ConfigurationError, match=r"Point is already registered with ext code 10"
        ):
            ser.register_type(type_=Point, code=11, encoder=repr, decoder=repr)

    @pytest.mark.parametrize(
        "type_", [tuple, set, frozenset, dt.datetime, dt.date, Decimal, uuid.UUID, complex]
    )
    def test_builtin_encoded_types_are_refused(self, ser: MsgpackSerializer, type_: type) -> None:
        with pytest.raises(ConfigurationError, match="built-in encoding"):
            ser.register_type(type_=type_, code=1, encoder=repr, decoder=repr)

    @pytest.mark.parametrize("type_", [int, str, bytes, dict, list, bool, float, bytearray])
    def test_native_types_are_refused(self, ser: MsgpackSerializer, type_: type) -> None:
        with pytest.raises(ConfigurationError, match="natively"):
            ser.register_type(type_=type_, code=1, encoder=repr, decoder=repr)

    def test_non_class_and_non_callables_are_refused(self, ser: MsgpackSerializer) -> None:
        with pytest.raises(ConfigurationError, match="needs a class"):
            ser.register_type(type_=Point(1, 2), code=1, encoder=repr, decoder=repr)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="callable"):
            ser.register_type(type_=Point, code=1, encoder=None, decoder=repr)  # type: ignore[arg-type]

    def test_configuration_error_is_a_value_error(self, ser: MsgpackSerializer) -> None:
        with pytest.raises(ValueError):
            ser.register_type(type_=Point, code=200, encoder=repr, decoder=repr)

    def test_failed_registration_leaves_registry_unchanged(self, ser: MsgpackSerializer) -> None:
        with pytest.raises(ConfigurationError):
            ser.register_type(type_=Point, code=120, encoder=repr, decoder=repr)
        with pytest.raises(SerializationError):
            ser.dumps(Point(1, 2))


class TestUnknownTypes:
    """Unregistered values fail loudly, naming the type and the fix."""

    def test_error_names_qualified_type_and_fix(self, ser: MsgpackSerializer) -> None:
        with pytest.raises(SerializationError) as info:
            ser.dumps(Opaque())
        message = str(info.value)
        assert f"{__name__}.Opaque" in message
        assert "spot.register_type(type_=Opaque, encoder=" in message
        assert "encoder=" in message
        assert "decoder=" in message

    def test_error_is_also_a_type_error(self, ser: MsgpackSerializer) -> None:
        with pytest.raises(TypeError):
            ser.dumps(Opaque())

    def test_error_says_where_in_the_container(self, ser: MsgpackSerializer) -> None:
        with pytest.raises(SerializationError, match=r"at result\[1\]\['a'\]\[0\]"):
            ser.dumps([1, {"a": (Opaque(),)}])

    def test_error_for_dict_key_and_set_member(self, ser: MsgpackSerializer) -> None:
        with pytest.raises(SerializationError, match="in a dict key at result"):
            ser.dumps({Opaque(): 1})
        with pytest.raises(SerializationError, match=r"in a set at result\[0\]"):
            ser.dumps([{Opaque()}])

    def test_error_inside_custom_encoded_value(self, ser: MsgpackSerializer) -> None:
        ser.register_type(type_=Box, code=2, encoder=lambda b: [b.content], decoder=repr)
        with pytest.raises(SerializationError, match=r"Opaque inside the result"):
            ser.dumps({"box": Box("x", Opaque())})

    def test_lambdas_and_locks_are_refused(self, ser: MsgpackSerializer) -> None:
        with pytest.raises(SerializationError, match="function"):
            ser.dumps(lambda: 1)
        with pytest.raises(SerializationError, match="lock"):
            ser.dumps([threading.Lock()])

    def test_encoder_failure_is_wrapped_and_chained(self, ser: MsgpackSerializer) -> None:
        def boom(_: object) -> Any:
            raise RuntimeError("kaput")

        ser.register_type(type_=Point, code=3, encoder=boom, decoder=repr)
        with pytest.raises(
            SerializationError, match=r"encoder registered for .*Point.*kaput"
        ) as info:
            ser.dumps([Point(1, 2)])
        assert isinstance(info.value.__cause__, RuntimeError)

    def test_self_returning_encoder_fails_cleanly(self, ser: MsgpackSerializer) -> None:
        ser.register_type(type_=Point, code=3, encoder=lambda p: p, decoder=repr)
        with pytest.raises(SerializationError, match="own type"):
            ser.dumps(Point(1, 2))

    def test_reference_cycle_fails_cleanly(self, ser: MsgpackSerializer) -> None:
        cyclic: list[Any] = []
        cyclic.append(cyclic)
        with pytest.raises(SerializationError):
            ser.dumps(cyclic)


class TestCorruptInput:
    """Undecodable bytes raise SerializationError, chaining msgpack's error."""

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\xc1",  # a byte msgpack never uses
            b"\x92\x01",  # array of 2 with one element
            b"\xdb\x00\x00\x00\x10ab",  # str32 announcing more bytes than present
            b"\x91\x01\x02",  # trailing data
        ],
        ids=repr,
    )
    def test_garbage_raises_with_cause(self, ser: MsgpackSerializer, data: bytes) -> None:
        with pytest.raises(SerializationError) as info:
            ser.loads(data)
        assert info.value.__cause__ is not None

    def test_truncated_payload_raises(self, ser: MsgpackSerializer) -> None:
        data = ser.dumps({"k": [1, 2, (3, dt.datetime(2024, 1, 1))], "z": "x" * 100})
        for cut in range(len(data)):
            with pytest.raises(SerializationError):
                ser.loads(data[:cut])

    def test_unknown_ext_code_names_the_code(self, ser: MsgpackSerializer) -> None:
        data = msgpack.packb(msgpack.ExtType(42, b"\x01"))
        with pytest.raises(SerializationError, match=r"ext code 42.*register_type"):
            ser.loads(data)

    def test_unknown_ext_code_nested(self, ser: MsgpackSerializer) -> None:
        data = msgpack.packb({"a": [msgpack.ExtType(50, b"")]})
        with pytest.raises(SerializationError, match="ext code 50"):
            ser.loads(data)

    def test_data_from_a_serializer_with_more_types(self) -> None:
        writer = MsgpackSerializer()
        writer.register_type(
            type_=Point, code=10, encoder=lambda p: [p.x], decoder=lambda v: Point(v[0], 0)
        )
        with pytest.raises(SerializationError, match="ext code 10"):
            MsgpackSerializer().loads(writer.dumps(Point(1, 2)))

    @pytest.mark.parametrize(
        ("code", "payload"),
        [
            (112, b"\xc1"),  # tuple whose items are garbage
            (115, b"\x93\x01\x02\x03"),  # datetime with too few fields
            (115, msgpack.packb([2024, 13, 1, 0, 0, 0, 0, 0, None])),  # month 13
            (115, msgpack.packb([2024, 1, 1, 0, 0, 0, 0, 0, [1]])),  # short tz
            (115, msgpack.packb([2024, 1, 1, 0, 0, 0, 0, 0, [[0], None, None]])),  # bad tz
            (119, b"not-a-number"),  # Decimal
            (119, b"\xff"),  # Decimal, not ASCII
            (120, b"short"),  # UUID needs 16 bytes
            (121, b"\x00" * 3),  # complex needs 16 bytes
            (113, msgpack.packb([[1]])),  # set of an unhashable list
        ],
    )
    def test_bad_builtin_payloads_raise(
        self, ser: MsgpackSerializer, code: int, payload: bytes
    ) -> None:
        with pytest.raises(SerializationError) as info:
            ser.loads(msgpack.packb(msgpack.ExtType(code, payload)))
        assert info.value.__cause__ is not None

    def test_decoder_failure_is_wrapped(self, ser: MsgpackSerializer) -> None:
        ser.register_type(
            type_=Point, code=10, encoder=lambda p: [p.x, p.y], decoder=lambda v: Point(*v)
        )
        data = msgpack.packb(msgpack.ExtType(10, msgpack.packb([1, 2, 3])))
        with pytest.raises(SerializationError, match=r"decoder registered for .*Point") as info:
            ser.loads(data)
        assert isinstance(info.value.__cause__, TypeError)

    def test_loads_accepts_bytes_like(self, ser: MsgpackSerializer) -> None:
        data = ser.dumps((1, "a"))
        assert ser.loads(bytearray(data)) == (1, "a")
        assert ser.loads(memoryview(data)) == (1, "a")


class TestCopyAndDefault:
    """Copies and default serializers are independent of each other."""

    def test_copy_has_same_registry(self, ser: MsgpackSerializer) -> None:
        ser.register_type(type_=Point, code=10, encoder=repr, decoder=repr)
        ser.register_type(
            type_=Box, code=11, encoder=lambda b: b.label, decoder=lambda v: Box(v, None)
        )
        clone = ser.copy()
        assert clone.registered_types() == {10: Point, 11: Box}
        assert clone.loads(ser.dumps(Box("x", None))) == Box("x", None)

    def test_registrations_do_not_leak_either_way(self, ser: MsgpackSerializer) -> None:
        clone = ser.copy()
        clone.register_type(type_=Point, code=10, encoder=lambda p: p.x, decoder=repr)
        ser.register_type(type_=Box, code=10, encoder=lambda b: b.label, decoder=repr)
        with pytest.raises(SerializationError):
            ser.dumps(Point(1, 2))
        with pytest.raises(SerializationError):
            clone.dumps(Box("a", None))

    def test_default_serializer_is_fresh_each_time(self) -> None:
        first = default_serializer()
        first.register_type(type_=Point, code=10, encoder=repr, decoder=repr)
        second = default_serializer()
        assert second is not first
        assert second.registered_types() == {}
        assert first.copy().registered_types() == {10: Point}

    def test_protocol_is_runtime_checkable(self) -> None:
        class Custom:
            def dumps(self, obj: Any) -> bytes:
                return b""

            def loads(self, data: bytes) -> Any:
                return None

        static: Serializer = MsgpackSerializer()  # mypy checks the structural match
        assert isinstance(static, Serializer)
        assert isinstance(Custom(), Serializer)
        assert not isinstance(object(), Serializer)

    def test_repr_lists_registrations(self, ser: MsgpackSerializer) -> None:
        ser.register_type(type_=Point, code=10, encoder=repr, decoder=repr)
        assert "10=" in repr(ser)
        assert "Point" in repr(ser)


class TestReservedCodes:
    """The reserved block is documented and matches what the serializer emits."""

    def test_reserved_block_is_the_top_of_the_range(self) -> None:
        assert set(RESERVED_CODES) == set(range(112, 128))

    @pytest.mark.parametrize(
        ("value", "code"),
        [
            ((1,), 112),
            ({1}, 113),
            (frozenset({1}), 114),
            (dt.datetime(2024, 1, 1), 115),
            (dt.date(2024, 1, 1), 116),
            (dt.time(1), 117),
            (dt.timedelta(1), 118),
            (Decimal(1), 119),
            (uuid.UUID(int=1), 120),
            (1j, 121),
            (2**64, 122),
        ],
        ids=repr,
    )
    def test_builtin_uses_documented_code(
        self, ser: MsgpackSerializer, value: Any, code: int
    ) -> None:
        raw = msgpack.unpackb(ser.dumps(value), ext_hook=lambda c, d: c)
        assert raw == code
        assert f"{code}   " in (serializer_module.__doc__ or "")


class TestNoPickle:
    """The serializer never imports pickle or its relatives."""

    def test_module_does_not_import_pickle(self) -> None:
        source = inspect.getsource(serializer_module)
        imported: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert imported
        assert not imported & {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve"}
        assert "pickle" not in vars(serializer_module)

    def test_objects_with_reduce_are_still_refused(self, ser: MsgpackSerializer) -> None:
        class Picklable:
            def __reduce__(self) -> tuple[Any, ...]:
                return (Picklable, ())

        with pytest.raises(SerializationError):
            ser.dumps(Picklable())


class TestThreadSafety:
    """Concurrent dumps/loads and registrations do not corrupt each other."""

    def test_concurrent_round_trips_while_registering(self) -> None:
        ser = MsgpackSerializer()
        ser.register_type(
            type_=Point, code=1, encoder=lambda p: (p.x, p.y), decoder=lambda v: Point(*v)
        )
        value = {"p": [Point(i, -i) for i in range(50)], "t": (1, {2}, dt.date(2024, 1, 1))}
        errors: list[BaseException] = []
        barrier = threading.Barrier(9)

        def worker() -> None:
            barrier.wait()
            try:
                for _ in range(300):
                    assert same(ser.loads(ser.dumps(value)), value)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def registrar() -> None:
            barrier.wait()
            for code in range(10, 60):
                ser.register_type(
                    type_=type(f"T{code}", (), {}), code=code, encoder=repr, decoder=repr
                )

        threads = [threading.Thread(target=worker) for _ in range(8)]
        threads.append(threading.Thread(target=registrar))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(ser.registered_types()) == 51


# -- property-based round trips ------------------------------------------------

_fixed_offsets = st.builds(
    dt.timezone,
    st.timedeltas(
        min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)
    ),
)
_tzinfos = st.none() | _fixed_offsets | st.timezones()

_hashable_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.datetimes(timezones=_tzinfos, allow_imaginary=False)
    | st.dates()
    | st.times(timezones=st.none() | _fixed_offsets)
    | st.timedeltas()
    | st.decimals(allow_nan=False)
    | st.uuids()
    | st.complex_numbers(allow_nan=False)
)
_hashables = st.recursive(
    _hashable_leaves,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
_values = st.recursive(
    _hashable_leaves | st.floats() | st.decimals(allow_nan=True) | st.complex_numbers(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(_hashables, inner, max_size=4)
        | st.sets(_hashables, max_size=4)
    ),
    max_leaves=20,
)


class TestPropertyRoundTrip:
    """Arbitrary nestings of supported values round-trip exactly."""

    @settings(max_examples=300, deadline=None)
    @given(_values)
    def test_any_supported_value(self, value: Any) -> None:
        ser = MsgpackSerializer()
        assert same(roundtrip(ser, value), value)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(st.integers(), st.integers()), max_size=5))
    def test_registered_type_anywhere(self, pairs: list[tuple[int, int]]) -> None:
        ser = MsgpackSerializer()
        ser.register_type(
            type_=Point, code=1, encoder=lambda p: (p.x, p.y), decoder=lambda v: Point(*v)
        )
        value = {Point(a, b): [Point(b, a), (Point(a, a),)] for a, b in pairs}
        assert same(roundtrip(ser, value), value)
