"""GCRA arithmetic: pure, synchronous, I/O-free.

The generic cell rate algorithm keeps one number per budget, the
*theoretical arrival time* (TAT). Think of each budget as a timeline on which
every admitted call books a slot of ``cost * interval`` seconds, slots laid end
to end; the TAT is where the last slot ends. A call may start booking at time
``now`` when the timeline is booked no further than ``tolerance`` seconds into
the future (``tat - now <= tolerance``); its slot starts at ``max(tat, now)``.

Consequences this module is built around (``burst`` is ``tolerance /
interval``, in the budget's own units):

* With ``burst == 0`` the first call is admitted at once and later calls are
  spaced by exactly the previous call's slot: no window of any length ``W``
  admits more than ``rate * W`` plus one call's cost.
* In general a window admits at most ``rate * W + burst`` plus one call's cost.
* Several budgets are decided together: a call is admitted only when every
  budget allows it, and a call that must wait books nothing anywhere.
* A refund (settling below the estimate) only hands back the part of the
  call's slot that still lies in the future, so later calls are never moved
  to before their own admission and the window bound keeps holding for the
  *actual* costs. An extra debit books more time at the end of the timeline.
* ``penalize`` pauses all admissions until a point in time without booking
  anything, the way a provider's ``Retry-After`` does.

Everything here works on plain floats (seconds on one monotonic clock) and
immutable records; the async limiter and the Redis Lua script are shells
around the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = [
    "EPSILON",
    "Admit",
    "Budget",
    "Mark",
    "State",
    "Wait",
    "debt",
    "decide",
    "initial_state",
    "penalize",
    "schedule",
    "settle",
]

# Float noise from repeated additions must not turn "admit now" into "wait a
# nanosecond": deadlines within EPSILON seconds of now count as reached. This
# loosens the window bound by EPSILON * rate units, far below one unit.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Budget:
    """One limit: ``interval`` seconds per unit, ``tolerance`` seconds of burst.

    ``capacity`` is the largest single cost the budget will ever admit; a
    larger cost is refused outright instead of waiting forever or putting the
    budget into debt for longer than its period.
    """

    name: str
    interval: float
    tolerance: float
    capacity: float

    @classmethod
    def per_period(cls, name: str, amount: float, period: float, burst: float = 0.0) -> Budget:
        """A budget of ``amount`` units per ``period`` seconds with ``burst`` units of tolerance.

        The capacity is one period's amount plus the burst: the most a single
        call may cost.
        """
        if not (amount > 0 and math.isfinite(amount)):
            raise ValueError(
                f"{name}: the amount per period must be a positive number, got {amount!r}"
            )
        if not (period > 0 and math.isfinite(period)):
            raise ValueError(f"{name}: the period must be a positive number, got {period!r}")
        if not (burst >= 0 and math.isfinite(burst)):
            raise ValueError(f"{name}: burst must be a number >= 0, got {burst!r}")
        interval = period / amount
        return cls(
            name=name, interval=interval, tolerance=burst * interval, capacity=amount + burst
        )


@dataclass(frozen=True, slots=True)
class State:
    """The whole limiter's state: one TAT per budget, refund bookkeeping, pause.

    ``shifted[i]`` is the total time refunds have handed back on budget ``i``;
    it lets a refund bound its own slot's current end without a per-call log.
    """

    tats: tuple[float, ...]
    shifted: tuple[float, ...]
    paused_until: float = -math.inf


@dataclass(frozen=True, slots=True)
class Mark:
    """Where an admitted call's slot ended on one budget, for a later settle."""

    end: float
    shifted: float


@dataclass(frozen=True, slots=True)
class Admit:
    """The call is admitted: ``state`` is the new state, ``marks`` one per budget."""

    state: State
    marks: tuple[Mark, ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """The call must wait until ``until`` (``math.inf``: it can never be admitted).

    ``until`` is exact if nothing else changes the state meanwhile.
    """

    until: float


def initial_state(n_budgets: int) -> State:
    """A state in which nothing has been booked yet."""
    return State(tats=(-math.inf,) * n_budgets, shifted=(0.0,) * n_budgets)


def decide(
    budgets: Sequence[Budget], state: State, now: float, costs: Sequence[float]
) -> Admit | Wait:
    """Admit ``costs`` (one per budget) at ``now``, or say until when to wait.

    Admission is atomic across budgets: either every budget books its cost or
    none does. A cost above a budget's capacity yields ``Wait(math.inf)``.
    """
    # Written for speed (one validating pass, no dataclasses.replace): the
    # limiter decides once or twice per admission, right after its timer fires.
    tats = state.tats
    if not len(budgets) == len(tats) == len(costs):
        raise ValueError(
            f"{len(budgets)} budgets, {len(tats)} states and {len(costs)} costs must match"
        )
    until = state.paused_until
    for budget, tat, cost in zip(budgets, tats, costs):  # noqa: B905 - lengths checked above
        if not (cost >= 0 and math.isfinite(cost)):
            raise ValueError(f"{budget.name}: a cost must be a finite number >= 0, got {cost!r}")
        start = tat - budget.tolerance if cost <= budget.capacity else math.inf
        if start > until:
            until = start
    if until > now + EPSILON:
        return Wait(until)
    ends = tuple(
        (tat if tat > now else now) + cost * budget.interval
        for budget, tat, cost in zip(budgets, tats, costs)  # noqa: B905 - lengths checked above
    )
    shifted = state.shifted
    return Admit(State(ends, shifted, state.paused_until), tuple(map(Mark, ends, shifted)))


def settle(
    budgets: Sequence[Budget],
    state: State,
    now: float,
    marks: Sequence[Mark],
    deltas: Sequence[float],
) -> State:
    """Correct an admitted call's booking by ``deltas`` units (actual - estimate).

    A positive delta books the extra time at the end of the budget's timeline.
    A negative delta hands back at most the part of the call's own slot that
    still lies after ``now``; whatever is already in the past stays spent.
    """
    if not len(budgets) == len(state.tats) == len(marks) == len(deltas):
        raise ValueError("budgets, states, marks and deltas must have one entry per budget")
    tats = list(state.tats)
    shifted = list(state.shifted)
    for i, (budget, mark, delta) in enumerate(zip(budgets, marks, deltas, strict=True)):
        if not math.isfinite(delta):
            raise ValueError(f"{budget.name}: a settle delta must be finite, got {delta!r}")
        if delta > 0:
            tats[i] = max(tats[i], now) + delta * budget.interval
        elif delta < 0:
            # Refunds applied since this call's admission may have moved its
            # slot earlier; subtracting all of them gives a lower bound on
            # where the slot ends now, which keeps the refund on the safe side.
            end_now = mark.end - (shifted[i] - mark.shifted)
            give_back = min(-delta * budget.interval, max(0.0, end_now - now))
            if give_back > 0:
                tats[i] -= give_back
                shifted[i] += give_back
    return replace(state, tats=tuple(tats), shifted=tuple(shifted))


def penalize(state: State, now: float, seconds: float) -> State:
    """Pause every admission until ``now + seconds`` (never shortens a pause)."""
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError(f"penalize needs a finite number of seconds >= 0, got {seconds!r}")
    return replace(state, paused_until=max(state.paused_until, now + seconds))


def debt(budgets: Sequence[Budget], state: State, now: float) -> tuple[float, ...]:
    """Units booked beyond ``now`` on each budget (0 when the budget is idle)."""
    return tuple(
        max(0.0, tat - now) / budget.interval
        for budget, tat in zip(budgets, state.tats, strict=True)
    )


def schedule(
    budgets: Sequence[Budget],
    state: State,
    now: float,
    queue: Sequence[Sequence[float]],
) -> list[float]:
    """Admission times of a FIFO queue of calls if nothing else changes.

    Each entry of ``queue`` holds one cost per budget; the result has one time
    per entry (``math.inf`` from the first call that can never be admitted on).
    """
    times: list[float] = []
    t = now
    for costs in queue:
        verdict = decide(budgets, state, t, costs)
        if isinstance(verdict, Wait):
            if math.isinf(verdict.until):
                return times + [math.inf] * (len(queue) - len(times))
            t = verdict.until
            verdict = decide(budgets, state, t, costs)
            if isinstance(verdict, Wait):  # pragma: no cover - decide is monotone in time
                raise AssertionError("a call was not admitted at the time decide named")
        state = verdict.state
        times.append(t)
    return times
