"""Typed result classes shared by the typed-results tests and their child process.

Run as ``python -m tests.typed_models DB STORAGE EXPECTED_CALLS``: builds a
Spot over the given files with no registration at all, calls each marked
function once, checks every result against :func:`expected`, and exits 0
only if exactly ``EXPECTED_CALLS`` bodies ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import sys
from typing import NamedTuple, Optional, TypedDict

from pydantic import BaseModel, ConfigDict, Field

import beautyspot_async as bs


class Sentiment(str, enum.Enum):  # noqa: UP042 (the instructor style)
    POSITIVE = "positive"
    NEGATIVE = "negative"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Entity(BaseModel):
    name: str
    kind: Optional[str] = None  # noqa: UP045
    seen_at: dt.datetime
    aliases: list[str] = []


class Analysis(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str
    sentiment: Sentiment
    entities: list[Entity]
    best: Optional[Entity] = None  # noqa: UP045
    scores: dict[str, float] = {}
    level: Level = Level.LOW
    note: str = Field(default="none", alias="remark")


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclasses.dataclass
class Shape:
    points: list[Point]
    closed: bool = False
    label: Optional[Sentiment] = None  # noqa: UP045


class Pair(NamedTuple):
    left: Point
    right: Point


class Box(TypedDict):
    corner: Point
    level: Level


def expected() -> dict[str, object]:
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    ada = Entity(name="Ada", seen_at=when, aliases=["Countess"])
    analysis = Analysis.model_validate(
        {
            "text": "hello",
            "sentiment": "positive",
            "entities": [ada.model_dump(), {"name": "Bob", "kind": "person", "seen_at": when}],
            "best": ada.model_dump(),
            "scores": {"joy": 0.5},
            "remark": "checked",
            "provider_extra": {"raw": [1, 2]},
        }
    )
    return {
        "analysis": analysis,
        "shapes": [Shape([Point(0, 0), Point(1, 1)], True, Sentiment.NEGATIVE)],
        "pairs": {"a": Pair(Point(1, 2), Point(3, 4))},
        "boxes": (Box(corner=Point(5, 6), level=Level.HIGH),),
        "maybe": None,
        "either": Point(7, 8),
        "levels": [Level.HIGH, Level.LOW],
    }


def build(spot: bs.Spot, calls: list[str]) -> dict[str, object]:
    want = expected()

    @spot.mark
    async def analysis() -> Analysis:
        calls.append("analysis")
        return want["analysis"]  # type: ignore[return-value]

    @spot.mark
    async def shapes() -> list[Shape]:
        calls.append("shapes")
        return want["shapes"]  # type: ignore[return-value]

    @spot.mark
    async def pairs() -> dict[str, Pair]:
        calls.append("pairs")
        return want["pairs"]  # type: ignore[return-value]

    @spot.mark
    async def boxes() -> tuple[Box, ...]:
        calls.append("boxes")
        return want["boxes"]  # type: ignore[return-value]

    @spot.mark
    async def maybe() -> Optional[Analysis]:  # noqa: UP045
        calls.append("maybe")
        return None

    @spot.mark
    async def either() -> Point | Entity:
        calls.append("either")
        return want["either"]  # type: ignore[return-value]

    @spot.mark
    def levels() -> list[Level]:  # a sync function, through the same pipeline
        calls.append("levels")
        return want["levels"]  # type: ignore[return-value]

    return {
        "analysis": analysis,
        "shapes": shapes,
        "pairs": pairs,
        "boxes": boxes,
        "maybe": maybe,
        "either": either,
        "levels": levels,
    }


def same_classes(a: object, b: object) -> bool:
    """Equal, and of the same class at every level the test data has."""
    if type(a) is not type(b):
        return False
    if isinstance(a, BaseModel):
        assert isinstance(b, BaseModel)
        return a == b and all(
            same_classes(getattr(a, f), getattr(b, f)) for f in type(a).model_fields
        )
    if dataclasses.is_dataclass(a):
        return a == b and all(
            same_classes(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple)
        return len(a) == len(b) and all(map(same_classes, a, b))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(same_classes(a[k], b[k]) for k in a)
    return a == b


async def _main(db: str, storage: str, expected_calls: int) -> int:
    calls: list[str] = []
    async with bs.Spot("typed", db=db, storage=storage) as spot:
        fns = build(spot, calls)
        want = expected()
        for name, fn in fns.items():
            got = await fn.acall() if name == "levels" else await fn()  # type: ignore[attr-defined]
            if not same_classes(got, want[name]):
                print(f"MISMATCH {name}: {got!r} != {want[name]!r}")
                return 1
    if len(calls) != expected_calls:
        print(f"CALLS {calls}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
