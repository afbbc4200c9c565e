"""What a limiter hands out: reservations, the awaitable acquisition, statistics.

Small records over a :class:`~beautyspot_async.limiter.Limiter`; the waiting
and the arithmetic are the limiter's. Public as ``beautyspot_async.limiter``.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import _gcra
    from .limiter import Limiter

__all__ = ["LimiterStatistics", "Reservation"]


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of a limiter's activity, as returned by ``Limiter.statistics()``.

    ``waited`` is the total time admitted calls spent queued (limiter clock
    seconds); the debts are units booked beyond now (``nan`` for a budget the
    limiter does not have, or with a Redis backend, where the state lives on
    the server).
    """

    admitted: int
    rejected: int
    waited: float
    queue_depth: int
    requests_debt: float
    tokens_debt: float
    paused_for: float


class Reservation:
    """An admitted call's booking; ``settle`` corrects it to the actual cost.

    Returned by ``await limiter.acquire(cost)``, ``async with
    limiter.acquire(cost) as reservation`` and ``limiter.acquire_nowait(cost)``.
    """

    __slots__ = ("_limiter", "_marks", "_settled", "cost")

    def __init__(self, limiter: Limiter, cost: float, marks: tuple[_gcra.Mark, ...]) -> None:
        self._limiter = limiter
        self._marks = marks
        self._settled = False
        self.cost = cost
        """The token cost this reservation booked (the estimate)."""

    def settle(self, actual_cost: float) -> None:
        """Replace the estimated token cost by ``actual_cost``.

        A lower actual cost refunds the part of the booking that still lies in
        the future (time already elapsed stays spent); a higher one books the
        difference. A reservation settles once; a second call raises
        ``RuntimeError``. Never blocks: with a Redis backend the correction is
        sent by a background thread.
        """
        if not (
            isinstance(actual_cost, int | float) and actual_cost >= 0 and math.isfinite(actual_cost)
        ):
            raise ValueError(f"actual_cost must be a finite number >= 0, got {actual_cost!r}")
        if self._settled:
            raise RuntimeError("this reservation is already settled")
        self._settled = True
        self._limiter._settle(self._marks, self._limiter._token_deltas(actual_cost - self.cost))

    def __repr__(self) -> str:
        return f"<Reservation cost={self.cost!r} settled={self._settled}>"


class _Acquisition:
    """``limiter.acquire(cost)``: await it, or use it as an async context manager."""

    __slots__ = ("_cost", "_limiter")

    def __init__(self, limiter: Limiter, cost: float) -> None:
        self._limiter = limiter
        self._cost = cost

    def __await__(self) -> Generator[Any, None, Reservation]:
        return self._limiter._acquire(self._cost).__await__()

    async def __aenter__(self) -> Reservation:
        return await self._limiter._acquire(self._cost)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The call happened (or was attempted): its booking stands unless the
        # body settled it.
        return None
