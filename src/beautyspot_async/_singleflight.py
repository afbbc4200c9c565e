"""In-process single-flight: one execution per cache key, however many callers.

Callers may be coroutines on different event loops, trio tasks and plain
threads at once, so a flight settles each joiner through its own Waiter
(see ``_portal``) rather than one loop-bound event. Joining is a single
``dict.setdefault``, atomic under the GIL, so the hot path takes no lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ._portal import Waiter, settle, settle_all

__all__ = ["Flight", "FlightRegistry", "FlightOutcome", "FlightEnd"]


class FlightEnd(Enum):
    RESOLVED = "resolved"
    FAILED = "failed"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class FlightOutcome:
    """How a flight ended, as seen by the callers that joined it."""

    kind: FlightEnd
    #: For RESOLVED: returns a fresh copy of the result for each waiter, so no
    #: two callers ever share one mutable object.
    share: Callable[[], Any] | None = None
    error: BaseException | None = None


class Flight:
    """One execution of a cache key that other callers may join."""

    __slots__ = ("_outcome", "_waiters", "key")

    def __init__(self, key: str) -> None:
        self.key = key
        self._outcome: FlightOutcome | None = None
        self._waiters: list[Waiter] = []

    def add_waiter(self, waiter: Waiter) -> None:
        """Have ``waiter`` settled with this flight's outcome (now, if it is over)."""
        self._waiters.append(waiter)
        # Appending before reading the outcome, while _finish writes the
        # outcome before copying the list, means no waiter is ever missed;
        # one may be settled twice, which Waiter ignores.
        outcome = self._outcome
        if outcome is not None:
            settle(waiter, outcome)

    def resolve(self, share: Callable[[], Any]) -> None:
        self._finish(FlightOutcome(FlightEnd.RESOLVED, share=share))

    def fail(self, error: BaseException) -> None:
        self._finish(FlightOutcome(FlightEnd.FAILED, error=error))

    def abandon(self) -> None:
        """The executing caller went away (cancelled): a waiter takes over."""
        self._finish(FlightOutcome(FlightEnd.ABANDONED))

    def _finish(self, outcome: FlightOutcome) -> None:
        if self._outcome is not None:
            return
        self._outcome = outcome
        waiters = list(self._waiters)
        if waiters:
            settle_all([(waiter, outcome, None) for waiter in waiters])


class FlightRegistry:
    """The flights currently executing, by cache key."""

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight, bool]:
        """Return the flight for ``key`` and whether the caller leads it."""
        fresh = Flight(key)
        flight = self._flights.setdefault(key, fresh)
        return flight, flight is fresh

    def land(self, flight: Flight) -> None:
        """Remove a finished flight so later callers start a new one.

        Only the leader calls this, once, and nobody can replace a flight
        while it is registered, so a plain pop cannot remove a newer flight.
        """
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
