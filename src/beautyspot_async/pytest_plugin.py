"""The pytest plugin: run tests against recorded results, offline.

Installed with the package (entry point ``pytest11``)::

    pytest --beautyspot-mode=replay           # every Spot: read only, a miss fails
    @pytest.mark.beautyspot(mode="replay")    # one test (or module, via pytestmark)

In replay mode a marked function never runs: a stored result is returned,
anything else raises :class:`~beautyspot_async.CacheMissError` with the
explanation of the miss. At the end of the session the plugin reports how
many stored entries the tests used and lists every replay miss.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from . import _modes

__all__: list[str] = []

_KEY = pytest.StashKey[dict[int, int]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("beautyspot", "beautyspot-async cache")
    group.addoption(
        "--beautyspot-mode",
        action="store",
        default=None,
        choices=_modes.MODES,
        help="cache mode of every Spot without an explicit mode (replay: tests run offline "
        "against recorded results; a miss fails)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "beautyspot(mode): run the test with every Spot in this cache mode "
        "('normal', 'replay', 'refresh' or 'off')",
    )
    config.stash[_KEY] = {}
    _modes.set_session_default(config.getoption("--beautyspot-mode"))
    _modes.replay_misses.clear()


def pytest_unconfigure(config: pytest.Config) -> None:
    _modes.set_session_default(None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    marker = item.get_closest_marker("beautyspot")
    mode = None
    if marker is not None:
        mode = marker.kwargs.get("mode", marker.args[0] if marker.args else None)
        mode = _modes.check_mode(mode, "@pytest.mark.beautyspot(mode=...)")
    with _modes.forced(mode):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
    try:
        return (yield)
    finally:
        _count_hits(item.config)


def _count_hits(config: pytest.Config) -> None:
    from ._spot import live_spots

    seen = config.stash.get(_KEY, {})
    for spot in live_spots():
        stats = spot.statistics()
        seen[id(spot)] = stats.hits + stats.memory_hits + stats.joins


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    _count_hits(config)
    used = sum(config.stash.get(_KEY, {}).values())
    misses = list(_modes.replay_misses)
    if config.getoption("--beautyspot-mode") is None and not misses and not used:
        return
    terminalreporter.section("beautyspot")
    terminalreporter.write_line(f"{used} cached results used; {len(misses)} replay miss(es)")
    for explanation in misses:
        terminalreporter.write_line(f"replay miss: {explanation}")
