"""Warm hits copy a private decoded result instead of decoding it again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from beautyspot_async._clone import copier

from ._spots import open_spot


def _containers(value: Any) -> list[int]:
    """ids of every mutable container in ``value``."""
    found: list[int] = []
    if isinstance(value, dict):
        found.append(id(value))
        for item in value.values():
            found += _containers(item)
    elif isinstance(value, list):
        found.append(id(value))
        for item in value:
            found += _containers(item)
    elif isinstance(value, tuple):
        for item in value:
            found += _containers(item)
    return found


def _same_shape(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_shape(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_shape(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


PLAIN = [
    {"a": 1, "b": "x"},
    {"tokens": ["a", "b"], "scores": [0.5, 1.5], "text": "t", "n": None},
    [1, [2, [3, {"deep": [4]}]], (5, [6]), (7, 8)],
    ({"in": "tuple"}, 1),
    (1, "two", b"three"),
    {1: [True, False], (1, 2): {"nested": ("x", ["y"])}},
    [],
    {},
]


@pytest.mark.parametrize("value", PLAIN)
def test_copies_are_equal_fresh_and_of_the_same_types(value: Any) -> None:
    copy = copier(value)
    assert copy is not None
    first, second = copy(), copy()
    assert _same_shape(first, value)
    assert _same_shape(second, value)
    shared = set(_containers(value)) & (set(_containers(first)) | set(_containers(second)))
    assert not shared, "a copy shares a mutable container with the source"
    assert not set(_containers(first)) & set(_containers(second))


@pytest.mark.parametrize(
    "value",
    [
        "scalar",
        {1, 2},
        {"s": {1}},
        [object()],
        {"x": bytearray(b"a")},
        type("D", (dict,), {})(a=1),  # a subclass: decoded instead, keeping its type
    ],
)
def test_anything_else_gets_no_plan(value: Any) -> None:
    assert copier(value) is None


def test_deep_or_huge_results_get_no_plan() -> None:
    deep: Any = []
    for _ in range(40):
        deep = [deep]
    assert copier(deep) is None
    assert copier(list(range(100_000))) is None


@pytest.mark.anyio
async def test_warm_hits_never_share_what_a_caller_mutates(tmp_path: Path) -> None:
    async with open_spot("sqlite", tmp_path) as spot:

        @spot.mark
        async def f(x: int) -> dict[str, Any]:
            return {"x": x, "items": [1, 2], "pair": (1, [2])}

        expected = {"x": 1, "items": [1, 2], "pair": (1, [2])}
        seen = [await f(1) for _ in range(4)]  # miss, then warm hits (decode, then copies)
        for value in seen:
            assert value == expected
            value["items"].append("mutated")
            value["pair"][1].append("mutated")
            value["new"] = True
        assert await f(1) == expected
        assert len({id(v) for v in seen}) == len(seen)
