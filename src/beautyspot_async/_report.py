"""What a batch returns: ``MapReport``, ``Failure``, ``BatchError``, ``MapProgress``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchError", "Failure", "MapProgress", "MapReport"]


@dataclass(frozen=True, slots=True)
class Failure:
    """An item that failed for good: where it was, what it was, what it raised."""

    index: int
    item: Any
    exception: Exception
    attempts: int

    def __repr__(self) -> str:
        return (
            f"Failure(index={self.index}, item={self.item!r}, "
            f"exception={type(self.exception).__name__}({self.exception}), "
            f"attempts={self.attempts})"
        )


class BatchError(ExceptionGroup[Exception]):
    """Raised by :meth:`MapReport.raise_for_failures`: every failed item's exception.

    An ``ExceptionGroup``, so ``except*`` picks out kinds of failure;
    ``.failures`` holds the :class:`Failure` records in input order.
    """

    failures: list[Failure]

    def __new__(cls, message: str, failures: list[Failure]) -> BatchError:
        self = super().__new__(cls, message, [f.exception for f in failures])
        self.failures = list(failures)
        return self

    def __init__(self, message: str, failures: list[Failure]) -> None:
        super().__init__(message, [f.exception for f in failures])

    def derive(self, excs: Any) -> Any:
        # A split keeps the message; the Failure list belongs to the whole.
        return ExceptionGroup(self.message, list(excs))


@dataclass(slots=True)
class MapReport:
    """What a ``spot.map`` did. ``results`` are in input order."""

    #: One entry per item that was started, in input order: its value, or a
    #: :class:`Failure`. Items never started (``max_errors``) are absent.
    results: list[Any]
    #: The :class:`Failure` entries of ``results``.
    failures: list[Failure]
    #: Items served from the cache (including single-flight joins).
    hits: int
    #: Items whose function body ran and returned.
    executed: int
    #: Items that failed for good.
    failed: int
    #: Retries made (attempts beyond each item's first).
    retried: int
    #: Seconds from start to end, by the Spot's clock.
    elapsed: float
    #: Sum of ``usage=`` over executed items (a dict when usage returns mappings).
    usage_spent: float | dict[str, float] = 0.0
    #: Sum of ``usage=`` over hits: what the cache saved.
    usage_saved: float | dict[str, float] = 0.0
    #: True when ``max_errors`` stopped the batch before every item was started.
    stopped_early: bool = False
    #: True when the batch was interrupted (cancelled, Ctrl+C).
    interrupted: bool = field(default=False, repr=False)

    def raise_for_failures(self) -> None:
        """Raise :class:`BatchError` when any item failed; do nothing otherwise."""
        if self.failures:
            raise BatchError(
                f"{self.failed} of {len(self.results)} items failed"
                + (" (stopped early: max_errors reached)" if self.stopped_early else ""),
                self.failures,
            )

    def summary(self) -> str:
        """One line: counts, retries, usage and time."""
        parts = [
            f"{len(self.results)} items",
            f"{self.hits} cached",
            f"{self.executed} executed",
            f"{self.failed} failed",
            f"{self.retried} retries",
        ]
        spent, saved = self.usage_spent, self.usage_saved
        if spent or saved:
            parts.append(f"usage spent {_usage_text(spent)}, saved {_usage_text(saved)}")
        parts.append(f"{self.elapsed:.1f} s")
        if self.stopped_early:
            parts.append("stopped early (max_errors)")
        if self.interrupted:
            parts.append("interrupted")
        return ", ".join(parts)


def _usage_text(usage: float | dict[str, float]) -> str:
    if isinstance(usage, dict):
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in usage.items()) + "}"
    return f"{usage:g}"


@dataclass(frozen=True, slots=True)
class MapProgress:
    """A snapshot of a running batch, for ``progress=callable``."""

    #: Number of items, when the iterable has a length.
    total: int | None
    #: Items finished: cached + executed + failed.
    done: int
    hits: int
    executed: int
    failed: int
    #: Calls running right now.
    running: int
    #: Items waiting out a backoff or a Retry-After before their next attempt.
    retrying: int
    #: Calls queued on the function's rate limiter.
    waiting: int
    elapsed: float
    #: Executed items per second (hits are not work).
    rate: float
    #: Seconds left at ``rate`` for the items not done, when ``total`` is known.
    eta: float | None
