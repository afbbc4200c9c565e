"""Driver errors become BackendError once, at the backend boundary.

Each backend declares an :class:`ErrorMap`: which of its driver's exceptions
are failures of the backend (and which of those are transient, worth a retry
on a fresh connection). ``with errors.translating("save"):`` then raises
:class:`~beautyspot_async.BackendError` naming the backend and the action,
chained ``from`` the driver's exception. Errors of the library itself
(a :class:`~beautyspot_async.BeautySpotError`, such as a
ConfigurationError for a newer schema) pass through untouched, so nothing is
wrapped twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from .exceptions import BackendError, BeautySpotError

__all__ = ["ErrorMap", "backend_error"]

#: Decides whether one exception of a mapped class is a backend failure.
Predicate = Callable[[BaseException], bool]


def backend_error(backend: str, action: str, exc: BaseException, detail: str) -> BackendError:
    """``BackendError("<action> failed: <detail>")`` with ``exc`` as its cause.

    For the places that must build the error rather than raise it here (a
    retry loop, a context manager's ``__exit__``).
    """
    error = BackendError(f"{action} failed: {detail}", backend=backend)
    error.__cause__ = exc
    return error


class ErrorMap:
    """Which driver exceptions one backend translates, and which are transient.

    ``errors`` maps an exception class to ``None`` (every instance is a
    backend failure) or to a predicate picking the instances that are (a
    driver that reports a closed connection as a plain ``ValueError``).
    ``transient`` lists the classes after which a retry on a fresh
    connection may succeed. ``detail`` words the driver's exception for the
    message (default: ``str(exc)``).
    """

    __slots__ = ("_classes", "_errors", "_transient", "backend", "detail")

    def __init__(
        self,
        backend: str,
        errors: Mapping[type[BaseException], Predicate | None],
        *,
        transient: tuple[type[BaseException], ...] = (),
        detail: Callable[[BaseException], str] = str,
    ) -> None:
        self.backend = backend
        self._errors = dict(errors)
        self._classes = (*self._errors, *transient)
        self._transient = transient
        self.detail = detail

    def translates(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a failure of this backend (and not ours already)."""
        if isinstance(exc, BeautySpotError) or not isinstance(exc, self._classes):
            return False
        if self.is_transient(exc):
            return True
        for cls, predicate in self._errors.items():
            if isinstance(exc, cls) and (predicate is None or predicate(exc)):
                return True
        return False

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a retry on a fresh connection may succeed after ``exc``."""
        return isinstance(exc, self._transient)

    def error(self, action: str, exc: BaseException) -> BackendError:
        """The BackendError for ``exc`` raised while doing ``action``."""
        return backend_error(self.backend, action, exc, self.detail(exc))

    @contextmanager
    def translating(self, action: str) -> Iterator[None]:
        """Raise the mapped exceptions escaping the block as BackendError."""
        try:
            yield
        except Exception as exc:
            if not self.translates(exc):
                raise
            raise self.error(action, exc) from exc
