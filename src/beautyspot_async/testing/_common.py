"""What every conformance check shares: building backends, naming failures, test rows."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeAlias, TypeVar

import anyio

from beautyspot_async._record import INLINE, TaskRecord, as_record
from beautyspot_async.db._base import TaskDB

from ._clock import FakeClock

_T = TypeVar("_T")
Factory: TypeAlias = Callable[[], _T | Awaitable[_T]]

#: A task-database check: the database under test and the suite's clock.
Check: TypeAlias = Callable[[TaskDB, FakeClock | None], Awaitable[None]]

#: A lease ttl long enough never to expire during a check, unless a check says so.
TTL = 30.0

#: Checks that run on an instance nobody has opened yet (no ``init_schema``).
UNOPENED: set[Callable[..., Any]] = set()


def unopened(check: Check) -> Check:
    """Mark ``check`` to receive the factory's instance before ``init_schema``."""
    UNOPENED.add(check)
    return check


async def make(factory: Callable[[], _T | Awaitable[_T]]) -> _T:
    made = factory()
    if inspect.isawaitable(made):
        return await made
    return made


async def aclose_all(backends: Sequence[Any]) -> None:
    with anyio.CancelScope(shield=True):
        for backend in backends:
            await backend.aclose()


@asynccontextmanager
async def opened(factory: Callable[[], _T | Awaitable[_T]]) -> AsyncIterator[_T]:
    """One backend from ``factory``, closed afterwards whatever happens."""
    backend = await make(factory)
    try:
        yield backend
    finally:
        await aclose_all([backend])


def _sole_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@contextmanager
def naming(suite: str, check: Callable[..., Any], prefix: str = "_check_") -> Iterator[None]:
    """Re-raise any failure inside as ``AssertionError("suite[check] ...")``.

    An unexpected exception from the backend is chained as ``__cause__``; a
    task group's group of one exception is unwrapped first.
    """
    name = check.__name__.removeprefix(prefix)
    try:
        yield
    except Exception as raised:
        exc = _sole_leaf(raised)
        if isinstance(exc, AssertionError):
            raise AssertionError(f"{suite}[{name}] failed: {exc}") from exc
        raise AssertionError(f"{suite}[{name}] raised {exc!r}") from exc


def new_key(tag: str) -> str:
    """A fresh random key, so a suite can run against a shared store."""
    return f"conformance-{tag}-{uuid.uuid4().hex}"


def save_fields(cache_key: str, **overrides: Any) -> dict[str, Any]:
    """The keywords of a ``save()`` of ``cache_key`` (an inline payload by default)."""
    result: dict[str, Any] = {
        "cache_key": cache_key,
        "func_name": "tests.conformance.fn",
        "input_id": cache_key[-16:],
        "version": "v1",
        "result_type": INLINE,
        "content_type": "application/msgpack",
        "result_value": None,
        "result_data": b"\x00payload\x00",
        "expires_at": None,
    }
    result.update(overrides)
    return result


def record(cache_key: str, **overrides: Any) -> TaskRecord:
    """A record for ``save_many`` / ``save_and_release``, with its size given."""
    values = save_fields(cache_key, **overrides)
    data = values["result_data"]
    values.setdefault("size_bytes", 0 if data is None else len(data))
    return TaskRecord(**values)


async def save(db: TaskDB, cache_key: str, **overrides: Any) -> dict[str, Any]:
    saved = save_fields(cache_key, **overrides)
    await db.save(**saved)
    return saved


def overrides(db: TaskDB, name: str) -> bool:
    """Whether ``db`` replaces the base class's default of method ``name``."""
    return getattr(type(db), name) is not getattr(TaskDB, name)


async def get(db: TaskDB, cache_key: str) -> TaskRecord:
    found = as_record(await db.get(cache_key), cache_key, backend=db.backend_name)
    assert found is not None, f"get({cache_key!r}) returned None right after save"
    return found


def assert_matches(found: TaskRecord, saved: dict[str, Any]) -> None:
    """Every saved field reads back equal and of the same type."""
    for name, expected in saved.items():
        if name == "size_bytes" and expected is None:
            continue
        actual = getattr(found, name)
        assert actual == expected, f"{name}: saved {expected!r}, read back {actual!r}"
        assert type(actual) is type(expected), (
            f"{name}: saved a {type(expected).__name__}, read back a {type(actual).__name__}"
        )
