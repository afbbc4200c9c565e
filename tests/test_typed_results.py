"""Typed results: the return annotation is the schema; registration by class, by name.

The string annotations of this module (``from __future__ import
annotations``) must resolve like real ones.
"""

from __future__ import annotations

import dataclasses
import enum
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, NewType, Optional, TypeVar

import msgpack  # type: ignore[import-untyped]
import pytest
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, RootModel

import beautyspot_async as bs
from beautyspot_async.serializer import MsgpackSerializer

from ._spots import EMBEDDED, open_spot
from .typed_models import (
    Analysis,
    Entity,
    Level,
    Pair,
    Point,
    Sentiment,
    Shape,
    expected,
    same_classes,
)

if TYPE_CHECKING:
    from decimal import Decimal  # only for an annotation that cannot be resolved at run time

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=EMBEDDED)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def stored_payloads(tmp_path: Path, name: str = "t") -> list[bytes]:
    """The raw stored bytes of every entry of the SQLite Spot ``name`` (all inline here)."""
    with closing(sqlite3.connect(tmp_path / f"{name}.db")) as conn:
        rows = conn.execute("SELECT result_data FROM tasks").fetchall()
    return [bytes(row[0]) for row in rows]


class Unregistered(BaseModel):
    value: int


class Sub(Entity):
    extra_field: int = 0


class Flavor(enum.Enum):
    SWEET = "sweet"
    SOUR = "sour"


# -- the annotation is the schema ------------------------------------------------------------


class TestAnnotationIsTheSchema:
    @pytest.mark.parametrize(
        "name", ["analysis", "shapes", "pairs", "boxes", "maybe", "either", "levels"]
    )
    async def test_hit_returns_same_classes(self, tmp_path: Path, name: str) -> None:
        from .typed_models import build

        calls: list[str] = []
        want = expected()[name]
        for round_ in range(2):
            # A second Spot over the same files: no memory tier, no registration.
            async with open_spot("sqlite", tmp_path) as spot:
                fn: Any = build(spot, calls)[name]
                got = await (fn.acall() if name == "levels" else fn())
                assert same_classes(got, want), (round_, got)
        assert calls == [name]

    async def test_every_kind_on_every_embedded_backend(self, kind: str, tmp_path: Path) -> None:
        calls: list[int] = []
        async with open_spot(kind, tmp_path, memory_cache_entries=0) as spot:

            @spot.mark
            async def f(n: int) -> dict[Level, list[Pair]]:
                calls.append(n)
                return {Level.HIGH: [Pair(Point(n, 1), Point(2, 3))]}

            first = await f(1)
            second = await f(1)
        assert calls == [1]
        assert same_classes(first, second)
        assert type(next(iter(second))) is Level

    async def test_stored_form_is_plain_data(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def shape() -> Shape:
                return Shape([Point(1, 2)], closed=True, label=Sentiment.POSITIVE)

            await shape()
            await spot.flush()
            (payload,) = stored_payloads(tmp_path)
        # Readable by any msgpack reader, without this library or the classes.
        assert msgpack.unpackb(payload) == {
            "points": [{"x": 1, "y": 2}],
            "closed": True,
            "label": "positive",
        }

    async def test_pydantic_fields_set_and_extras_are_kept(self, tmp_path: Path) -> None:
        want = expected()["analysis"]
        assert isinstance(want, Analysis)
        async with open_spot("sqlite", tmp_path, memory_cache_entries=0) as spot:

            @spot.mark
            async def analyze() -> Analysis:
                return want

            await analyze()
            got = await analyze()
            await spot.flush()
            (payload,) = stored_payloads(tmp_path)
        assert got == want
        assert got.model_fields_set == want.model_fields_set
        assert got.model_dump(exclude_unset=True) == want.model_dump(exclude_unset=True)
        assert got.model_extra == {"provider_extra": {"raw": [1, 2]}}
        assert got.note == "checked"
        # Unset fields holding their defaults are not stored.
        stored = msgpack.unpackb(payload, strict_map_key=False)
        assert "level" not in stored
        assert stored["note"] == "checked"

    async def test_string_annotation_of_a_local_class(self, tmp_path: Path) -> None:
        @dataclasses.dataclass
        class Local:
            n: int

        for _ in range(2):
            async with open_spot("sqlite", tmp_path) as spot:

                @spot.mark
                async def make() -> list[Local]:
                    return [Local(1)]

                got = await make()
                assert got == [Local(1)]
                assert type(got[0]) is Local

    async def test_unresolvable_annotation_does_not_get_in_the_way(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, memory_cache_entries=0) as spot:

            @spot.mark
            async def total() -> Decimal:  # imported only under TYPE_CHECKING
                return 3  # type: ignore[return-value]

            assert await total() == 3
            assert await total() == 3

    async def test_plain_annotations_are_not_wrapped(self, tmp_path: Path) -> None:
        from beautyspot_async._typed import typed_serializer

        def plain() -> dict[str, list[int]]:  # not a string annotation
            return {}

        plain.__annotations__ = {"return": dict[str, list[int]]}
        base = MsgpackSerializer()
        assert typed_serializer(plain, base) is base


class TestMismatches:
    async def test_subclass_needs_registration(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, memory_cache_entries=0) as spot:

            @spot.mark(wait=True)
            async def find() -> Entity:
                return Sub(name="x", seen_at=expected()["analysis"].best.seen_at)  # type: ignore[attr-defined]

            with pytest.raises(bs.SerializationError) as info:
                await find()
            message = str(info.value)
            assert "Sub" in message
            assert "subclasses" in message
            assert "spot.register_type(type_=Sub)" in message
            assert isinstance(info.value.value, Sub)  # the paid result is not lost

            spot.register_type(type_=Sub)
            first = await find()
            got = await find()
        assert type(got) is Sub
        assert got == first

    async def test_unannotated_function_needs_registration(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark(wait=True)
            async def raw():  # type: ignore[no-untyped-def]
                return Unregistered(value=1)

            with pytest.raises(bs.SerializationError, match=r"register_type\(type_=Unregistered\)"):
                await raw()

    async def test_value_of_another_type_is_refused(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark(wait=True)
            async def lies() -> Point:
                return {"x": 1, "y": 2}  # type: ignore[return-value]

            with pytest.raises(bs.SerializationError, match="return annotation says") as info:
                await lies()
            assert info.value.value == {"x": 1, "y": 2}

    async def test_none_is_always_allowed(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, memory_cache_entries=0) as spot:

            @spot.mark
            async def nothing() -> Point:
                return None  # type: ignore[return-value]

            assert await nothing() is None
            assert await nothing() is None

    async def test_changed_class_recomputes(self, tmp_path: Path) -> None:
        calls: list[int] = []

        async def run(cls: type) -> Any:
            async with open_spot("sqlite", tmp_path) as spot:

                @spot.mark(name="shape")
                async def make() -> cls:  # type: ignore[valid-type]  # a closure variable
                    calls.append(1)
                    return cls(1) if dataclasses.is_dataclass(cls) else cls(a=1, b=2)

                return await make()

        @dataclasses.dataclass
        class V1:
            a: int

        class V2(BaseModel):  # now needs b too
            a: int
            b: int

        await run(V1)
        got = await run(V2)
        assert calls == [1, 1]
        assert got == V2(a=1, b=2)


# -- registration by class -------------------------------------------------------------------


class TestRegisterByClass:
    async def test_register_type_without_code(self, tmp_path: Path) -> None:
        for round_ in range(2):
            async with open_spot("sqlite", tmp_path) as spot:
                spot.register_type(type_=Point)

                @spot.mark
                async def anything():  # type: ignore[no-untyped-def]
                    return {"p": Point(1, 2), "e": [Point(3, 4)]}

                got = await anything()
                assert got == {"p": Point(1, 2), "e": [Point(3, 4)]}
                if round_ == 0:
                    await spot.flush()
                    (payload,) = stored_payloads(tmp_path)
                    assert b"tests.typed_models.Point" in payload

    async def test_decorator_form_and_custom_name(self, tmp_path: Path) -> None:
        for _ in range(2):
            async with open_spot("sqlite", tmp_path) as spot:

                @spot.register(name="shop.Order")
                @dataclasses.dataclass
                class Order:
                    item: str
                    flavor: Flavor

                @spot.mark(name="order")
                async def order():  # type: ignore[no-untyped-def]
                    return [Order("cake", Flavor.SOUR)]

                got = await order()
                assert got == [Order("cake", Flavor.SOUR)]
                assert type(got[0].flavor) is Flavor
                await spot.flush()
                (payload,) = stored_payloads(tmp_path)
                assert b"shop.Order" in payload
                assert b"Order\xa4" not in payload

    def test_registration_errors(self) -> None:
        ser = MsgpackSerializer()
        ser.register_type(type_=Point)
        with pytest.raises(bs.ConfigurationError, match="already registered by class"):
            ser.register_type(type_=Point, name="other")
        with pytest.raises(bs.ConfigurationError, match="already registered for"):
            ser.register_type(type_=Shape, name="tests.typed_models.Point")
        with pytest.raises(bs.ConfigurationError, match="encoder= and decoder="):
            ser.register_type(type_=Path)
        with pytest.raises(bs.ConfigurationError, match="not both"):
            ser.register_type(type_=Shape, code=3, name="x", encoder=repr, decoder=repr)
        with pytest.raises(bs.ConfigurationError, match="both encoder= and decoder="):
            ser.register_type(type_=Shape, encoder=repr)
        assert ser.registered_names() == {"tests.typed_models.Point": Point}

    def test_any_class_by_name_with_encoder(self) -> None:
        class Celsius:
            def __init__(self, degrees: float) -> None:
                self.degrees = degrees

            def __eq__(self, other: object) -> bool:
                return isinstance(other, Celsius) and other.degrees == self.degrees

        ser = MsgpackSerializer()
        ser.register_type(
            type_=Celsius, name="temp.C", encoder=lambda c: c.degrees, decoder=Celsius
        )
        assert ser.loads(ser.dumps([Celsius(21.5)])) == [Celsius(21.5)]

    def test_numeric_form_keeps_working_with_old_entries(self) -> None:
        ser = MsgpackSerializer()
        ser.register_type(
            type_=Point, code=5, encoder=lambda p: (p.x, p.y), decoder=lambda t: Point(*t)
        )
        # The seed's wire format, byte for byte: ext 5 around a tuple (ext 112).
        old = msgpack.packb(
            msgpack.ExtType(5, msgpack.packb(msgpack.ExtType(112, msgpack.packb([1.0, 2.0]))))
        )
        assert ser.loads(old) == Point(1.0, 2.0)
        assert ser.dumps(Point(1.0, 2.0)) == old


class TestNoCodeRunsFromStoredData:
    async def test_unknown_name_is_kept_and_explained(self, tmp_path: Path) -> None:
        calls: list[int] = []

        async def run(register: bool) -> Any:
            async with open_spot("sqlite", tmp_path) as spot:
                if register:
                    spot.register_type(type_=Point, name="geo.Point")

                @spot.mark(name="where")
                async def where():  # type: ignore[no-untyped-def]
                    calls.append(1)
                    return Point(1, 2)

                return await where()

        assert await run(register=True) == Point(1, 2)
        with pytest.raises(bs.SerializationError) as info:
            await run(register=False)
        message = str(info.value)
        assert "'geo.Point'" in message
        assert 'spot.register_type(type_=Point, name="geo.Point")' in message
        assert calls == [1]  # not re-run
        assert await run(register=True) == Point(1, 2)  # and the entry was kept
        assert calls == [1]

    def test_a_module_named_by_data_is_never_imported(self) -> None:
        ser = MsgpackSerializer()
        forged = msgpack.packb(
            msgpack.ExtType(123, msgpack.packb(["antigravity.Fly", {"x": 1}])), use_bin_type=True
        )
        before = set(sys.modules)
        with pytest.raises(bs.SerializationError, match=r"antigravity\.Fly"):
            ser.loads(forged)
        assert "antigravity" not in sys.modules
        assert set(sys.modules) == before

    def test_annotation_scope_resolves_only_its_own_classes(self) -> None:
        from beautyspot_async._typed import TypedResults

        def either() -> Point | Entity: ...

        typed = TypedResults(MsgpackSerializer(), either)
        assert typed.loads(typed.dumps(Point(1, 2))) == Point(1, 2)
        foreign = MsgpackSerializer()
        foreign.register_type(type_=Shape)
        with pytest.raises(bs.SerializationError, match=r"tests\.typed_models\.Shape"):
            typed.loads(foreign.dumps(Shape([])))

    @pytest.mark.parametrize(
        "payload",
        [
            msgpack.ExtType(123, b"\x92"),  # truncated
            msgpack.ExtType(123, msgpack.packb([1, 2])),  # name not a str
            msgpack.ExtType(123, msgpack.packb("x")),  # not a pair
        ],
    )
    def test_damaged_named_values_are_corrupt(self, payload: Any) -> None:
        with pytest.raises(bs.SerializationError) as info:
            MsgpackSerializer().loads(msgpack.packb(payload))
        assert getattr(info.value, "type_name", None) is None


class TestFreshProcess:
    def test_no_registration_in_a_fresh_process(self, tmp_path: Path) -> None:
        def run(expected_calls: int) -> None:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.typed_models",
                    str(tmp_path / "t.db"),
                    str(tmp_path / "blobs"),
                    str(expected_calls),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stdout + done.stderr

        run(7)  # stores every result
        run(0)  # a new interpreter: every result is a hit of the same classes


class TestInspection:
    async def test_cli_shows_typed_entries_as_json(self, tmp_path: Path) -> None:
        from beautyspot_async._display import decode_lenient, to_jsonable

        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def either() -> Optional[Point | Entity]:  # noqa: UP045 (typing.Optional too)
                return Point(1, 2)

            await either()
            await spot.flush()
            (payload,) = stored_payloads(tmp_path)
        # A process that knows neither the annotation nor the class.
        value, problem = decode_lenient(MsgpackSerializer(), payload)
        assert problem is None
        assert to_jsonable(value) == {"__type__": "tests.typed_models.Point", "x": 1, "y": 2}


# -- more shapes, at the serializer level --------------------------------------------------------

T = TypeVar("T")


class Item(BaseModel):
    n: int


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


class Items(RootModel[list[Item]]):
    pass


class WithPrivate(BaseModel):
    a: int
    _secret: str = PrivateAttr(default="unset")

    def model_post_init(self, context: Any) -> None:
        self._secret = "initialised"


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True)
    x: int
    ids: tuple[uuid.UUID, ...] = Field(default_factory=tuple)


@dataclasses.dataclass(slots=True, frozen=True)
class Slotted:
    a: int
    items: Annotated[list[Item], "metadata is ignored"]


@dataclasses.dataclass
class Holder(Generic[T]):
    value: T
    kind: Literal["a", "b"] = "a"


ItemId = NewType("ItemId", Item)

SHAPES: list[tuple[str, Any, Any]] = [
    ("generic model", Page[Item], Page[Item](items=[Item(n=1)], total=1)),
    ("root model", Items, Items([Item(n=2)])),
    ("private attribute + post_init", WithPrivate, WithPrivate(a=1)),
    ("frozen model + factory", FrozenModel, FrozenModel(x=3, ids=(uuid.uuid4(),))),
    ("slotted frozen dataclass", Slotted, Slotted(1, [Item(n=3)])),
    ("NewType", ItemId, Item(n=4)),
    ("generic dataclass", Holder[Item], Holder(Item(n=5))),
    ("nested containers", dict[str, list[tuple[Item, int]]], {"a": [(Item(n=6), 1)]}),
    ("set of frozen models", frozenset[FrozenModel], frozenset({FrozenModel(x=1)})),
    ("union in a list", list[Item | Slotted], [Item(n=1), Slotted(1, [])]),
    ("optional, None", Item | None, None),
]


@pytest.mark.parametrize(
    ("annotation", "value"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES]
)
def test_shapes_round_trip(annotation: Any, value: Any) -> None:
    from beautyspot_async._typed import TypedResults

    def fn() -> None: ...

    fn.__annotations__ = {"return": annotation}
    typed = TypedResults(MsgpackSerializer(), fn)
    got = typed.loads(typed.dumps(value))
    assert got == value
    assert type(got) is type(value)
    if isinstance(value, list):
        assert [type(v) for v in got] == [type(v) for v in value]
