"""Bursts of concurrent calls raise the middle GC threshold, and always put it back."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from beautyspot_async import _gc_burst

from ._spots import open_spot


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Clock]:
    fake = _Clock()
    monkeypatch.setattr(_gc_burst.time, "monotonic", fake)
    monkeypatch.setattr(_gc_burst, "enabled", True)
    before = gc.get_threshold()
    yield fake
    _gc_burst.end_burst()
    gc.set_threshold(*before)


class _Loop:
    """Just enough of a loop: records the timers it is asked for."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, object]] = []

    def call_later(self, delay: float, fn: object, *args: object) -> None:
        self.timers.append((delay, fn))


def test_a_burst_raises_the_threshold_until_it_is_quiet(clock: _Clock) -> None:
    gc.set_threshold(700, 10, 10)
    loop = _Loop()
    _gc_burst.burst(loop)  # type: ignore[arg-type]
    assert gc.get_threshold() == (700, 1000, 10)
    assert len(loop.timers) == 1
    clock.now += _gc_burst.QUIET / 2
    _gc_burst.burst(loop)  # type: ignore[arg-type]
    assert len(loop.timers) == 1, "one timer per loop"
    clock.now += _gc_burst.QUIET / 2
    _gc_burst._check(loop)  # type: ignore[arg-type]
    assert gc.get_threshold() == (700, 1000, 10), "a burst was seen less than QUIET ago"
    assert len(loop.timers) == 2, "re-armed"
    clock.now += _gc_burst.QUIET
    _gc_burst._check(loop)  # type: ignore[arg-type]
    assert gc.get_threshold() == (700, 10, 10)


def test_thresholds_the_program_set_meanwhile_are_kept(clock: _Clock) -> None:
    gc.set_threshold(700, 10, 10)
    _gc_burst.burst(_Loop())  # type: ignore[arg-type]
    gc.set_threshold(5000, 20, 20)
    _gc_burst.end_burst()
    assert gc.get_threshold() == (5000, 20, 20)


@pytest.mark.parametrize("thresholds", [(0, 10, 10), (700, 5000, 10)])
def test_disabled_or_tuned_collection_is_left_alone(
    clock: _Clock, thresholds: tuple[int, int, int]
) -> None:
    gc.set_threshold(*thresholds)
    loop = _Loop()
    _gc_burst.burst(loop)  # type: ignore[arg-type]
    assert gc.get_threshold() == thresholds
    assert loop.timers == []


def test_off_by_environment(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    monkeypatch.setattr(_gc_burst, "enabled", False)
    gc.set_threshold(700, 10, 10)
    _gc_burst.burst(_Loop())  # type: ignore[arg-type]
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # bursts are batched with call_soon
async def test_a_large_gather_is_a_burst_and_closing_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gc_burst, "enabled", True)
    before = gc.get_threshold()
    seen: set[int] = set()
    try:
        gc.set_threshold(700, 10, 10)
        async with open_spot("sqlite", tmp_path, default_wait=False) as spot:

            @spot.mark
            async def f(x: int) -> int:
                seen.add(gc.get_threshold()[1])
                return x

            n = _gc_burst.BURST * 3
            assert await asyncio.gather(*(f(i) for i in range(n))) == list(range(n))
        assert 1000 in seen, "the gather's calls ran outside a burst"
        assert gc.get_threshold() == (700, 10, 10), "closing the Spot did not end the burst"
    finally:
        gc.set_threshold(*before)
