"""The pure GCRA arithmetic, with plain floats and no event loop."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import ClassVar

import pytest

from beautyspot_async import _gcra
from beautyspot_async._gcra import Admit, Budget, Wait


def one(amount: float = 10, period: float = 1.0, burst: float = 0) -> list[Budget]:
    return [Budget.per_period("b", amount, period, burst)]


def admit(budgets: list[Budget], state: _gcra.State, now: float, costs: list[float]) -> Admit:
    verdict = _gcra.decide(budgets, state, now, costs)
    assert isinstance(verdict, Admit), verdict
    return verdict


def run_greedy(
    budgets: list[Budget], costs: Sequence[float], start: float = 0.0
) -> tuple[list[float], _gcra.State]:
    """Admit each cost as early as possible, in order; return admission times."""
    state = _gcra.initial_state(len(budgets))
    times = []
    now = start
    for cost in costs:
        verdict = _gcra.decide(budgets, state, now, [cost])
        if isinstance(verdict, Wait):
            now = verdict.until
            verdict = _gcra.decide(budgets, state, now, [cost])
        assert isinstance(verdict, Admit)
        state = verdict.state
        times.append(now)
    return times, state


def max_in_window(times: Sequence[float], costs: Sequence[float], width: float) -> float:
    best = 0.0
    for i, start in enumerate(times):
        total = sum(
            c for t, c in zip(times[i:], costs[i:], strict=True) if t <= start + width + 1e-12
        )
        best = max(best, total)
    return best


class TestBudget:
    """A budget converts an amount per period and a burst into seconds."""

    def test_interval_tolerance_capacity(self) -> None:
        budget = Budget.per_period("tpm", 90_000, 60.0, burst=1500)
        assert budget.interval == pytest.approx(60 / 90_000)
        assert budget.tolerance == pytest.approx(1.0)
        assert budget.capacity == 91_500

    @pytest.mark.parametrize(
        ("amount", "period", "burst"),
        [(0, 60, 0), (-1, 60, 0), (math.inf, 60, 0), (10, 0, 0), (10, 60, -1), (10, 60, math.nan)],
    )
    def test_invalid_values_are_refused(self, amount: float, period: float, burst: float) -> None:
        with pytest.raises(ValueError):
            Budget.per_period("b", amount, period, burst)


class TestDecideSpacing:
    """With zero burst the first call is immediate and the rest are strictly spaced."""

    def test_first_call_is_immediate(self) -> None:
        verdict = admit(one(), _gcra.initial_state(1), 100.0, [1])
        assert verdict.state.tats[0] == pytest.approx(100.1)

    def test_second_call_waits_one_interval(self) -> None:
        first = admit(one(), _gcra.initial_state(1), 0.0, [1])
        verdict = _gcra.decide(one(), first.state, 0.0, [1])
        assert isinstance(verdict, Wait)
        assert verdict.until == pytest.approx(0.1)

    def test_a_call_waits_for_the_previous_calls_cost(self) -> None:
        first = admit(one(), _gcra.initial_state(1), 0.0, [5])
        assert _gcra.decide(one(), first.state, 0.2, [1]) == Wait(0.5)
        assert isinstance(_gcra.decide(one(), first.state, 0.5, [1]), Admit)

    def test_idle_time_is_not_banked_without_burst(self) -> None:
        first = admit(one(), _gcra.initial_state(1), 0.0, [1])
        later = admit(one(), first.state, 50.0, [1])
        assert isinstance(_gcra.decide(one(), later.state, 50.0, [1]), Wait)

    def test_greedy_schedule_is_evenly_spaced(self) -> None:
        times, _ = run_greedy(one(10), [1] * 20)
        assert times == [pytest.approx(i * 0.1) for i in range(20)]

    def test_float_noise_does_not_cause_a_tiny_wait(self) -> None:
        state = _gcra.initial_state(1)
        now = 0.0
        for _ in range(1000):
            verdict = _gcra.decide(one(3), state, now, [1])
            if isinstance(verdict, Wait):
                now = verdict.until
                verdict = _gcra.decide(one(3), state, now, [1])
            assert isinstance(verdict, Admit)
            state = verdict.state
        assert now == pytest.approx(999 / 3)


class TestWindowBound:
    """No window of length W admits more than rate*W + burst + one call's cost."""

    @pytest.mark.parametrize("burst", [0, 3, 10])
    @pytest.mark.parametrize("seed", range(5))
    def test_random_costs_respect_the_bound(self, burst: float, seed: int) -> None:
        rng = random.Random(seed)
        costs = [rng.choice([1, 1, 1, 2, 5, 9]) for _ in range(200)]
        times, _ = run_greedy(one(10, burst=burst), costs)
        for width in (0.0, 0.05, 0.1, 0.35, 1.0, 2.5, 7.0):
            largest = max(costs)
            assert max_in_window(times, costs, width) <= 10 * width + burst + largest + 1e-6

    def test_burst_admits_burst_plus_one_at_once(self) -> None:
        times, _ = run_greedy(one(10, burst=4), [1] * 8)
        assert times[:5] == [0.0] * 5
        assert times[5] == pytest.approx(0.1)

    def test_random_refunds_keep_the_bound_on_actual_costs(self) -> None:
        rng = random.Random(7)
        budgets = one(10, burst=5)
        state = _gcra.initial_state(1)
        now = 0.0
        admitted: list[tuple[float, float]] = []  # (time, actual cost)
        pending: list[tuple[_gcra.Mark, float, int]] = []
        for _ in range(300):
            est = rng.choice([2, 4, 8])
            verdict = _gcra.decide(budgets, state, now, [est])
            if isinstance(verdict, Wait):
                now = verdict.until
                verdict = _gcra.decide(budgets, state, now, [est])
            assert isinstance(verdict, Admit)
            state = verdict.state
            actual = rng.uniform(0, est)
            admitted.append((now, actual))
            pending.append((verdict.marks[0], est - actual, len(admitted) - 1))
            # settle some earlier reservations, out of order, a little later
            now += rng.choice([0.0, 0.01, 0.05])
            while pending and rng.random() < 0.6:
                mark, refund, _ = pending.pop(rng.randrange(len(pending)))
                state = _gcra.settle(budgets, state, now, [mark], [-refund])
        times = [t for t, _ in admitted]
        actuals = [a for _, a in admitted]
        for width in (0.0, 0.1, 0.5, 1.0, 3.0):
            assert max_in_window(times, actuals, width) <= 10 * width + 5 + 8 + 1e-6


class TestMultiBudget:
    """Several budgets are admitted atomically: all allow it or none books anything."""

    budgets: ClassVar[list[Budget]] = [
        Budget.per_period("rpm", 60, 60.0),
        Budget.per_period("tpm", 600, 60.0),
    ]

    def test_waits_for_the_slowest_budget(self) -> None:
        first = admit(self.budgets, _gcra.initial_state(2), 0.0, [1, 100])
        # requests free again at 1 s, tokens at 10 s
        assert _gcra.decide(self.budgets, first.state, 0.0, [1, 1]) == Wait(10.0)

    def test_a_waiting_call_books_nothing(self) -> None:
        first = admit(self.budgets, _gcra.initial_state(2), 0.0, [1, 100])
        verdict = _gcra.decide(self.budgets, first.state, 5.0, [1, 1])
        assert isinstance(verdict, Wait)
        # the request budget alone would admit at 5 s, but nothing was booked on it
        assert first.state.tats[0] == pytest.approx(1.0)

    def test_cost_above_any_capacity_never_admits(self) -> None:
        verdict = _gcra.decide(self.budgets, _gcra.initial_state(2), 0.0, [1, 601])
        assert verdict == Wait(math.inf)
        assert isinstance(_gcra.decide(self.budgets, _gcra.initial_state(2), 0.0, [1, 600]), Admit)

    def test_mismatched_lengths_are_refused(self) -> None:
        with pytest.raises(ValueError):
            _gcra.decide(self.budgets, _gcra.initial_state(2), 0.0, [1])

    @pytest.mark.parametrize("cost", [-1, math.nan, math.inf])
    def test_invalid_costs_are_refused(self, cost: float) -> None:
        with pytest.raises(ValueError):
            _gcra.decide(self.budgets, _gcra.initial_state(2), 0.0, [1, cost])


class TestSettle:
    """Settling refunds only future booking and books extra debits at the end."""

    def test_refund_of_a_future_slot_frees_it(self) -> None:
        first = admit(one(10), _gcra.initial_state(1), 0.0, [10])  # booked until 1.0
        state = _gcra.settle(one(10), first.state, 0.2, first.marks, [-6])
        assert state.tats[0] == pytest.approx(0.4)

    def test_refund_never_hands_back_elapsed_time(self) -> None:
        first = admit(one(10), _gcra.initial_state(1), 0.0, [10])
        state = _gcra.settle(one(10), first.state, 0.9, first.marks, [-10])
        assert state.tats[0] == pytest.approx(0.9)

    def test_refund_after_the_slot_ended_is_nothing(self) -> None:
        first = admit(one(10), _gcra.initial_state(1), 0.0, [10])
        state = _gcra.settle(one(10), first.state, 5.0, first.marks, [-10])
        assert state.tats == first.state.tats

    def test_refund_does_not_move_later_calls_before_now(self) -> None:
        budgets = one(10, burst=20)
        a = admit(budgets, _gcra.initial_state(1), 0.0, [10])  # slot [0, 1]
        b = admit(budgets, a.state, 0.0, [10])  # slot [1, 2]
        state = _gcra.settle(budgets, b.state, 0.5, a.marks, [-10])
        # only A's future half (0.5 s) comes back
        assert state.tats[0] == pytest.approx(1.5)

    def test_earlier_refunds_bound_a_later_refund(self) -> None:
        budgets = one(10, burst=20)
        a = admit(budgets, _gcra.initial_state(1), 0.0, [10])  # [0, 1]
        b = admit(budgets, a.state, 0.0, [10])  # [1, 2]
        state = _gcra.settle(budgets, b.state, 0.0, a.marks, [-10])  # B now [0, 1]
        state = _gcra.settle(budgets, state, 0.5, b.marks, [-10])
        assert state.tats[0] == pytest.approx(0.5)

    def test_extra_debit_books_more(self) -> None:
        first = admit(one(10), _gcra.initial_state(1), 0.0, [1])
        state = _gcra.settle(one(10), first.state, 0.0, first.marks, [4])
        assert state.tats[0] == pytest.approx(0.5)

    def test_extra_debit_after_idle_starts_at_now(self) -> None:
        first = admit(one(10), _gcra.initial_state(1), 0.0, [1])
        state = _gcra.settle(one(10), first.state, 3.0, first.marks, [4])
        assert state.tats[0] == pytest.approx(3.4)

    def test_zero_delta_changes_nothing(self) -> None:
        first = admit(one(10), _gcra.initial_state(1), 0.0, [3])
        assert _gcra.settle(one(10), first.state, 0.1, first.marks, [0]) == first.state

    def test_non_finite_delta_is_refused(self) -> None:
        first = admit(one(10), _gcra.initial_state(1), 0.0, [3])
        with pytest.raises(ValueError):
            _gcra.settle(one(10), first.state, 0.1, first.marks, [math.nan])


class TestPenalize:
    """A penalty pauses every budget without booking anything."""

    def test_pause_delays_admission(self) -> None:
        state = _gcra.penalize(_gcra.initial_state(1), 0.0, 2.5)
        assert _gcra.decide(one(), state, 1.0, [1]) == Wait(2.5)
        after = admit(one(), state, 2.5, [1])
        assert after.state.tats[0] == pytest.approx(2.6)

    def test_pauses_do_not_add_up(self) -> None:
        state = _gcra.penalize(_gcra.initial_state(1), 0.0, 5)
        state = _gcra.penalize(state, 1.0, 1)
        assert state.paused_until == 5.0
        state = _gcra.penalize(state, 4.0, 3)
        assert state.paused_until == 7.0

    def test_negative_seconds_are_refused(self) -> None:
        with pytest.raises(ValueError):
            _gcra.penalize(_gcra.initial_state(1), 0.0, -1)


class TestScheduleAndDebt:
    """The queue schedule is FIFO and debt counts units booked ahead of now."""

    def test_large_cost_first_delays_small_ones(self) -> None:
        first = admit(one(10), _gcra.initial_state(1), 0.0, [1])
        times = _gcra.schedule(one(10), first.state, 0.0, [[8], [1], [1]])
        assert times == [pytest.approx(0.1), pytest.approx(0.9), pytest.approx(1.0)]

    def test_impossible_entry_makes_the_rest_infinite(self) -> None:
        times = _gcra.schedule(one(10), _gcra.initial_state(1), 0.0, [[1], [11], [1]])
        assert times == [0.0, math.inf, math.inf]

    def test_debt(self) -> None:
        first = admit(one(10), _gcra.initial_state(1), 0.0, [5])
        assert _gcra.debt(one(10), first.state, 0.2)[0] == pytest.approx(3.0)
        assert _gcra.debt(one(10), first.state, 9.0) == (0.0,)
        assert _gcra.debt(one(10), _gcra.initial_state(1), 0.0) == (0.0,)
