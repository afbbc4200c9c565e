"""Which failures are worth another try, and how long to wait before it.

Pure and synchronous: the batch runner asks these questions of each
exception. Nothing here imports an HTTP client; exceptions are read by
duck typing (``.status_code``, ``.response.headers``...), so openai, httpx,
aiohttp and requests errors all answer.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "backoff_delay",
    "default_retry_on",
    "retry_after",
    "status_of",
]

#: Exponential backoff with full jitter: attempt n waits up to base * 2**(n-1) s.
BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 60.0

#: Statuses a server uses for "not now": timeout, conflict, too many requests.
_RETRY_STATUSES: Final = frozenset({408, 409, 429})

# Exception class names meaning the request never got an answer, across
# clients (openai, httpx, aiohttp, requests, urllib3, anyio).
_TRANSIENT_NAMES: Final = (
    "Timeout",
    "TimeoutError",
    "ConnectError",
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "RemoteProtocolError",
    "ReadError",
    "WriteError",
    "ServerDisconnectedError",
    "ClientConnectionError",
    "APIConnectionError",
    "APITimeoutError",
    "BrokenResourceError",
    "EndOfStream",
)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any."""
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status_code", "status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def default_retry_on(exc: BaseException) -> bool:
    """Retry transient failures: 408, 409, 429, 5xx, timeouts, lost connections."""
    status = status_of(exc)
    if status is not None:
        return status in _RETRY_STATUSES or status >= 500
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return any(name in names for name in _TRANSIENT_NAMES)


def _headers(exc: BaseException) -> Mapping[str, Any] | None:
    for holder in (getattr(exc, "response", None), exc):
        headers = getattr(holder, "headers", None)
        if headers is not None and hasattr(headers, "get"):
            return headers  # type: ignore[no-any-return]
    return None


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_after(exc: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """How long the server asked us to wait, in seconds, or None.

    Reads ``retry-after-ms`` (OpenAI's, precise), then ``Retry-After``
    (seconds or an HTTP date), then an ``exc.retry_after`` attribute (this
    library's RateLimitError and some SDKs).
    """
    headers = _headers(exc)
    if headers is not None:
        millis = _seconds(_get(headers, "retry-after-ms"))
        if millis is not None:
            return millis / 1000
        raw = _get(headers, "retry-after")
        if raw is not None:
            seconds = _seconds(raw)
            if seconds is not None:
                return seconds
            try:
                when = email.utils.parsedate_to_datetime(str(raw))
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - now())
    attr = _seconds(getattr(exc, "retry_after", None))
    return attr if attr is not None and math.isfinite(attr) else None


def _get(headers: Mapping[str, Any], name: str) -> Any:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (max(attempt, 1) - 1))
    return (rng or random).uniform(0, ceiling)
