"""The steps a pipeline asks for, and the two drivers that perform them.

A pipeline is a generator that yields these steps instead of acting itself:
every side effect -- a read, a write queued, a flight landed, the user's
function run -- is a step. :func:`drive_async` performs them on the caller's
event loop (asyncio or trio), :func:`drive_sync` by blocking the caller's
thread and sending I/O through the portal. Exceptions raised while performing
a step are thrown back into the generator at that step. Because the generator
only describes, a test can drive it with scripted answers and no backend.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Final, NamedTuple

import anyio

from ._portal import Waiter, io_loop

__all__ = [
    "EXECUTE",
    "Blocking",
    "Call",
    "Io",
    "Step",
    "Steps",
    "Wait",
    "drive_async",
    "drive_sync",
]


# -- the steps a pipeline can ask for ------------------------------------------


class Call(NamedTuple):
    """Call ``fn(*args)`` right here: an in-process effect that never waits.

    Drivers perform it without a checkpoint, so a pipeline may ask for it
    from a cleanup path that runs inside a cancelled scope.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]


class Io(NamedTuple):
    """Await ``fn(*args)``; on the I/O loop when ``on_io_loop`` is true."""

    fn: Callable[..., Coroutine[Any, Any, Any]]
    args: tuple[Any, ...]
    on_io_loop: bool


class Wait(NamedTuple):
    """Hand a fresh Waiter to ``submit(*args, waiter)`` and wait until it is settled.

    The driver makes the waiter fit the caller: an asyncio future for asyncio
    callers (settled in batches, one wake-up per loop), a thread-safe future
    for sync and trio callers.
    """

    submit: Callable[..., None]
    args: tuple[Any, ...]


class Blocking(NamedTuple):
    """Call a blocking sync function (file I/O in a key function)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]


class _Execute:
    def __repr__(self) -> str:
        return "EXECUTE"


EXECUTE: Final = _Execute()

Step = Call | Io | Wait | Blocking | _Execute
Steps = Generator[Step, Any, Any]


# -- drivers ---------------------------------------------------------------------


async def drive_async(
    steps: Steps,
    execute: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Run ``steps`` on the current event loop; ``execute(*args, **kwargs)`` runs the function.

    Taking the call's arguments here, rather than a closure over them, keeps
    the marked wrapper free of closure cells: a call allocates no function
    object and no cells, on a hit or a miss (fewer objects for the cyclic
    collector to track in a large ``gather``).
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        value = error = None
        try:
            if type(step) is Call:
                value = step.fn(*step.args)
            elif step is EXECUTE:
                value = await (execute(*args, **kwargs) if kwargs else execute(*args))
            elif type(step) is Io:
                if step.on_io_loop:
                    value = await io_loop.run(step.fn, *step.args)
                else:
                    value = await step.fn(*step.args)
            elif type(step) is Wait:
                waiter = Waiter.for_async()
                step.submit(*step.args, waiter)
                value = await waiter.wait()
            elif type(step) is Blocking:
                value = await anyio.to_thread.run_sync(functools.partial(step.fn, *step.args))
            else:  # pragma: no cover - a new step type without a driver branch
                raise AssertionError(f"unknown pipeline step {step!r}")
        except BaseException as exc:
            error = exc


def drive_sync(steps: Steps, execute: Callable[[], Any]) -> Any:
    """Run ``steps`` blocking this thread; I/O goes through the portal."""
    driver = drive_sync_yielding(steps, lambda: _returning(execute))
    try:
        next(driver)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("a plain call's execute step yields nothing")  # pragma: no cover


def _returning(execute: Callable[[], Any]) -> Generator[Any, None, Any]:
    # A generator that yields nothing: a plain call's body, as an EXECUTE step.
    yield from ()
    return execute()


def drive_sync_yielding(
    steps: Steps, execute: Callable[[], Generator[Any, None, Any]]
) -> Generator[Any, None, Any]:
    """:func:`drive_sync` whose EXECUTE step is a generator: what it yields is passed on.

    A marked sync generator function's items reach its caller this way, in
    the middle of the pipeline. Closing this generator early throws
    ``GeneratorExit`` into the steps, which give the key up.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        value = error = None
        try:
            if type(step) is Call:
                value = step.fn(*step.args)
            elif step is EXECUTE:
                value = yield from execute()
            elif type(step) is Io:
                value = io_loop.call(step.fn, *step.args)
            elif type(step) is Wait:
                waiter = Waiter.for_sync()
                step.submit(*step.args, waiter)
                value = waiter.wait_sync()
            elif type(step) is Blocking:
                value = step.fn(*step.args)
            else:  # pragma: no cover
                raise AssertionError(f"unknown pipeline step {step!r}")
        except BaseException as exc:
            error = exc
