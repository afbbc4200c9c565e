"""Static checks, run by ``mypy --strict tests/typing``: type checkers see the
original signatures of marked functions (ParamSpec), not ``Any``."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

import beautyspot_async as bs

spot = bs.Spot("typing", db="memory://")


@spot.mark
async def fetch(url: str, retries: int = 3) -> bytes:
    return url.encode()


@spot.mark(version="v2", ttl=60)
async def score(text: str) -> float:
    return float(len(text))


@spot.mark
def parse(raw: bytes) -> dict[str, int]:
    return {"n": len(raw)}


async def use() -> None:
    pending = assert_type(fetch("x"), Coroutine[Any, Any, bytes])
    pending.close()
    assert_type(await fetch("x", retries=1), bytes)
    assert_type(await score("t"), float)
    assert_type(parse(b"x"), dict[str, int])
    assert_type(await parse.acall(b"x"), dict[str, int])
    fetch(1).close()  # type: ignore[arg-type]
    parse(raw="no")  # type: ignore[arg-type]
