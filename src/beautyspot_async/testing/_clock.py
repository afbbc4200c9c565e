"""FakeClock: time that moves only when a test says so."""

from __future__ import annotations

import anyio.lowlevel

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when told to.

    Calling it returns the current fake time in float seconds, so it can be
    passed wherever a ``clock=`` is accepted: as a wall clock (TTLs, expiry,
    ``created_at``) and as a monotonic clock (the rate limiter). It starts at
    ``start`` -- by default a plausible POSIX time, so code that treats it as
    wall-clock time sees a recent date.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds!r}))")
        self._now += seconds

    def set(self, now: float) -> None:
        """Jump to ``now``. Going backwards is allowed, for wall-clock tests."""
        self._now = float(now)

    async def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` at once, then yield to the event loop once.

        A stand-in for ``anyio.sleep`` in code under test that takes an
        injectable sleep: the sleeper returns immediately with the clock moved,
        so tests never wait in real time.
        """
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()
