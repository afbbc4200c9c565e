"""Exceptions raised by beautyspot-async.

Every exception the library raises on purpose derives from one root, so
``except bs.BeautySpotError`` catches them all. Where a builtin fits, the
exception inherits it too, so code written against the builtin keeps working::

    BeautySpotError
    ├── ConfigurationError   (also ValueError)   bad option, name, URL or key function
    ├── SerializationError   (also TypeError)    a value msgpack cannot encode or decode
    ├── CacheCorruptedError                      stored bytes that cannot be trusted
    ├── BackendError                             a database or storage driver failed;
    │                                            the driver's error is ``__cause__``
    └── RateLimitError                           a cost the limiter cannot admit now or
                                                 ever; ``retry_after`` says when to retry

Errors raised by the user's own function are never wrapped: they propagate
unchanged.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BeautySpotError",
    "CacheCorruptedError",
    "CacheMissError",
    "ConfigurationError",
    "RateLimitError",
    "SerializationError",
]


class BeautySpotError(Exception):
    """Root of every exception raised by beautyspot-async itself."""


class ConfigurationError(BeautySpotError, ValueError):
    """An option, name, URL or key function was invalid.

    Raised as early as possible: at ``Spot(...)`` or at decoration time, not
    on the first call.
    """


class SerializationError(BeautySpotError, TypeError):
    """A value could not be encoded, or stored bytes could not be decoded.

    The message names the offending type and how to register it. When a
    freshly computed result cannot be stored, ``value`` holds that result, so
    a paid computation is never thrown away; otherwise it is ``None``.
    """

    def __init__(self, *args: object, value: object = None) -> None:
        super().__init__(*args)
        self.value = value


class CacheCorruptedError(BeautySpotError):
    """Stored bytes are truncated, missing or fail their checksum, or a row is wrongly typed.

    The call pipeline never lets this reach a caller: it logs a warning,
    treats the entry as a miss and rewrites it.
    """


class BackendError(BeautySpotError):
    """A task database or blob storage operation failed.

    ``backend`` names the backend (``"sqlite"``, ``"postgresql"``, ``"s3"``...);
    the driver's own exception is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, backend: str = "") -> None:
        super().__init__(f"[{backend}] {message}" if backend else message)
        self.backend = backend


class RateLimitError(BeautySpotError):
    """A cost cannot be admitted.

    ``retry_after`` is the number of seconds after which the same request
    would be admitted, or ``math.inf`` when it never can be (a cost above the
    budget's capacity).
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CacheMissError(BeautySpotError, LookupError):
    """A call had to be answered from the cache and was not stored.

    Raised by ``f.lookup(...)`` and by every call in ``"replay"`` mode (the
    function never runs there). ``explanation`` says why it missed: the
    status, the key, and the closest stored entries with what differs.
    """

    def __init__(self, message: str, *, explanation: object = None) -> None:
        super().__init__(message)
        self.explanation = explanation
