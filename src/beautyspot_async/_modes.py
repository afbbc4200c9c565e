"""Cache modes: normal, replay, refresh, off; which one applies to a call.

Precedence, highest first: the ``spot.mode(...)`` context (a context
variable, so it covers the tasks and worker threads started inside it), a
mode forced for the duration of a test (the pytest plugin's marker),
``@spot.mark(mode=)``, ``Spot(mode=)``, and ``BEAUTYSPOT_MODE`` (read when the
Spot is created) or the pytest plugin's ``--beautyspot-mode``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final, Literal

from .exceptions import ConfigurationError

__all__ = [
    "MODES",
    "NORMAL",
    "OFF",
    "REFRESH",
    "REPLAY",
    "Mode",
    "check_mode",
    "current",
    "env_mode",
    "forced",
    "scoped",
    "set_session_default",
]

Mode = Literal["normal", "replay", "refresh", "off"]
NORMAL: Final = "normal"
REPLAY: Final = "replay"
REFRESH: Final = "refresh"
OFF: Final = "off"
MODES: Final = (NORMAL, REPLAY, REFRESH, OFF)

ENV: Final = "BEAUTYSPOT_MODE"

#: Per-Spot modes set by ``spot.mode(...)``, keyed by the Spot's engine.
_context: contextvars.ContextVar[Mapping[Any, str] | None] = contextvars.ContextVar(
    "beautyspot_mode", default=None
)


#: Every replay miss of this process (the pytest plugin lists them), bounded.
replay_misses: list[Any] = []
_MAX_RECORDED: Final = 1000


def record_replay_miss(explanation: Any) -> None:
    if len(replay_misses) < _MAX_RECORDED:
        replay_misses.append(explanation)


class _Overrides:
    """Process-wide settings of the pytest plugin, and a count of live overrides.

    ``active`` counts the ``spot.mode()`` blocks open in any task plus the
    plugin's settings: while it is zero, no call can be in anything but its
    own default mode, which the hot path checks with a single load.
    """

    forced: str | None = None
    session: str | None = None
    active: int = 0
    lock = threading.Lock()

    @classmethod
    def add(cls, delta: int) -> None:
        # Blocks open and close on many threads at once: += alone could lose one.
        with cls.lock:
            cls.active += delta


def check_mode(mode: Any, where: str) -> str:
    if mode not in MODES:
        raise ConfigurationError(
            f"{where} must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}"
        )
    return str(mode)


def overrides() -> Any:
    """The object whose ``active`` count the hot path reads (see ``_Overrides``)."""
    return _Overrides


def env_mode() -> str | None:
    """``BEAUTYSPOT_MODE``, checked; None when unset."""
    value = os.environ.get(ENV)
    if value is None or value.strip() == "":
        return None
    return check_mode(value.strip().lower(), f"the {ENV} environment variable")


def current(engine: Any, explicit: str | None, env: str | None) -> str:
    """The mode of one call.

    ``explicit`` is ``@spot.mark(mode=)`` or else ``Spot(mode=)``; ``env`` is
    ``BEAUTYSPOT_MODE`` as read when the Spot was created.
    """
    scoped_modes = _context.get()
    if scoped_modes is not None:
        mode = scoped_modes.get(engine)
        if mode is not None:
            return mode
    if _Overrides.forced is not None:
        return _Overrides.forced
    if explicit is not None:
        return explicit
    if _Overrides.session is not None:
        return _Overrides.session
    return env if env is not None else NORMAL


@contextlib.contextmanager
def scoped(engine: Any, mode: str) -> Iterator[None]:
    """Apply ``mode`` to ``engine``'s calls inside the block (``spot.mode(...)``)."""
    previous = _context.get()
    modes = dict(previous or {})
    modes[engine] = mode
    token = _context.set(modes)
    _Overrides.add(1)
    try:
        yield
    finally:
        _Overrides.add(-1)
        _context.reset(token)


@contextlib.contextmanager
def forced(mode: str | None) -> Iterator[None]:
    """Force ``mode`` on every Spot for the block, in every task and thread (tests)."""
    previous = _Overrides.forced
    _Overrides.forced = mode
    _Overrides.add(1)
    try:
        yield
    finally:
        _Overrides.add(-1)
        _Overrides.forced = previous


def set_session_default(mode: str | None) -> None:
    """The pytest plugin's ``--beautyspot-mode``: the default of Spots created after."""
    if (_Overrides.session is None) != (mode is None):
        _Overrides.add(1 if mode is not None else -1)
    _Overrides.session = mode
