"""Pure decisions of the pipeline: where a payload goes and when it expires."""

from __future__ import annotations

import math
from datetime import timedelta

from ._record import BLOB, INLINE
from .exceptions import ConfigurationError

__all__ = ["expires_at", "normalize_ttl", "placement"]


def placement(size: int, *, threshold: int, save_blob: bool | None) -> str:
    """Return INLINE or BLOB for a serialized payload of ``size`` bytes.

    ``save_blob=True`` forces blob storage, ``False`` forces the row, ``None``
    decides by size: strictly above ``threshold`` goes to blob storage.
    """
    if save_blob is None:
        return BLOB if size > threshold else INLINE
    return BLOB if save_blob else INLINE


def normalize_ttl(ttl: float | timedelta | None) -> float | None:
    """Validate a ``ttl=`` option and return it in seconds (sub-second kept)."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise ConfigurationError(
            f"ttl must be seconds (int or float) or a datetime.timedelta, got {type(ttl).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(f"ttl must be a positive, finite duration, got {ttl!r}")
    return seconds


def expires_at(now: float, ttl: float | None) -> float | None:
    """Absolute expiry (POSIX seconds) of an entry written at ``now``."""
    return None if ttl is None else now + ttl
