"""What a call cost: ``@spot.mark(usage=...)``, settling the limiter, and totals.

``usage(result)`` returns a number (tokens, dollars) or a mapping of
numbers (``{"input_tokens": .., "output_tokens": ..}``). When a marked
function also carries ``@spot.limiter(cost=estimate)`` underneath, the
limiter's reservation is booked before the body runs, with the estimate;
once the body has returned, :func:`settling` corrects it to the actual usage
(a mapping counts as the sum of its values). The reservations a body takes
are collected through a context variable the limiter decorator appends to,
so nothing has to be threaded through the user's function.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._callables import is_async_callable

if TYPE_CHECKING:
    from ._reservation import Reservation

__all__ = [
    "Usage",
    "UsageTotal",
    "collect_reservation",
    "collecting",
    "measure",
    "settle_all",
    "settling",
]

logger = logging.getLogger("beautyspot_async")

#: A call's usage: a number, or named numbers.
Usage = float | Mapping[str, float]

_open: contextvars.ContextVar[list[Reservation] | None] = contextvars.ContextVar(
    "beautyspot_open_reservations", default=None
)


def collect_reservation(reservation: Reservation) -> None:
    """Called by the limiter decorator: hand the reservation to a settling call, if any."""
    bucket = _open.get()
    if bucket is not None:
        bucket.append(reservation)


def measure(usage: Callable[[Any], Any], result: Any, where: str) -> Usage | None:
    """``usage(result)``, checked; None (and a warning) when it fails or is not a number."""
    try:
        value = usage(result)
    except Exception as exc:
        logger.warning("usage= of %s raised %s: %s; not counted", where, type(exc).__name__, exc)
        return None
    if isinstance(value, Mapping):
        if all(_number(v) for v in value.values()):
            return {str(k): float(v) for k, v in value.items()}
    elif _number(value):
        return float(value)
    logger.warning(
        "usage= of %s returned %r; it must return a number or a mapping of numbers", where, value
    )
    return None


def _number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _scalar(usage: Usage) -> float:
    return float(sum(usage.values())) if isinstance(usage, Mapping) else float(usage)


def _settle(bucket: list[Reservation], usage: Usage | None) -> None:
    if usage is None:
        return
    for reservation in bucket:
        reservation.settle(_scalar(usage))


@contextlib.contextmanager
def collecting() -> Iterator[list[Reservation]]:
    """Collect the limiter reservations taken inside the block (by this task and its threads)."""
    bucket: list[Reservation] = []
    token = _open.set(bucket)
    try:
        yield bucket
    finally:
        _open.reset(token)


def settle_all(bucket: list[Reservation], usage: Usage | None) -> None:
    """Settle every reservation in ``bucket`` to ``usage`` (nothing when it is None)."""
    _settle(bucket, usage)


def settling(fn: Callable[..., Any], usage: Callable[[Any], Any], where: str) -> Callable[..., Any]:
    """``fn``, settling the limiter reservations its call takes to ``usage(result)``."""
    if is_async_callable(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with collecting() as bucket:
                result = await fn(*args, **kwargs)
            if bucket:
                _settle(bucket, measure(usage, result, where))
            return result

        return run_async

    @functools.wraps(fn)
    def run_sync(*args: Any, **kwargs: Any) -> Any:
        with collecting() as bucket:
            result = fn(*args, **kwargs)
        if bucket:
            _settle(bucket, measure(usage, result, where))
        return result

    return run_sync


class UsageTotal:
    """A running sum of usages: a float, or per-name floats once a mapping is seen."""

    __slots__ = ("_named", "_total")

    def __init__(self) -> None:
        self._total = 0.0
        self._named: dict[str, float] | None = None

    def add(self, usage: Usage | None) -> None:
        if usage is None:
            return
        if isinstance(usage, Mapping):
            named = self._named if self._named is not None else {}
            for name, value in usage.items():
                named[name] = named.get(name, 0.0) + value
            self._named = named
        self._total += _scalar(usage)

    @property
    def value(self) -> float | dict[str, float]:
        """The total: per name when ``usage=`` returned mappings, else one number."""
        return dict(self._named) if self._named is not None else self._total
