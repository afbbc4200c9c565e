"""The decorator: turn a function into a marked one that runs the pipeline.

Whether a function is sync or async is decided once, here, at decoration
time; the wrappers then take one branch-free path per call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

import anyio

from ._callables import is_async_callable
from ._callables import unwrap_partial as _unwrap_partial
from ._control import add_controls
from ._modes import NORMAL, OFF, REFRESH, REPLAY, overrides
from ._modes import scoped as scoped_mode
from ._pipeline import UNPROBED, Miss, Pipeline
from ._steps import drive_async, drive_sync
from ._stream import StreamCall, sync_stream
from ._usage import settling
from .exceptions import ConfigurationError

__all__ = ["SyncMarked", "is_async_callable", "wrap"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class SyncMarked(Protocol[P, R_co]):
    """A marked sync function: call it as before, or ``await f.acall(...)``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    async def acall(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Run the call from async code; the body runs in a worker thread."""
        ...


def check_markable(fn: Any) -> None:
    """Refuse what the pipeline cannot cache: non-callables."""
    if not callable(fn):
        raise ConfigurationError(f"@spot.mark needs a function, got {type(fn).__qualname__}")


def _copy_metadata(wrapper: Any, fn: Any) -> None:
    functools.update_wrapper(wrapper, fn)
    target = _unwrap_partial(fn)
    if not inspect.isroutine(target) and not isinstance(target, type):
        target = type(target)  # a callable object: name it after its class
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        if getattr(fn, attr, None) is None and hasattr(target, attr):
            setattr(wrapper, attr, getattr(target, attr))
    wrapper.__wrapped__ = fn


class MarkedCall:
    """What the batch runner needs of a marked function: its pipeline and body.

    Kept on the wrapper as ``__beautyspot__``, so ``spot.map`` can tell a
    hit from an execution and knows which Spot the function belongs to.
    """

    __slots__ = ("body", "is_async", "pipeline")

    def __init__(self, pipeline: Pipeline, body: Callable[..., Any], is_async: bool) -> None:
        self.pipeline = pipeline
        self.body = body
        self.is_async = is_async


def _never_runs() -> Any:
    raise AssertionError("replay mode never executes the function")


def wrap(fn: Callable[..., Any], pipeline: Pipeline) -> Callable[..., Any]:
    """Return the marked version of ``fn`` driven by ``pipeline``.

    Each wrapper asks the pipeline's probe first and, only when that is a
    :class:`Miss`, drives the rest of the call: a hit costs one probe. A
    call in another cache mode than "normal" takes its own path.
    """
    probe = pipeline.probe
    aprobe = pipeline.aprobe
    steps = pipeline.steps
    replay = pipeline.replay
    mode_of = pipeline.mode
    # Most calls are in the normal mode with nothing set anywhere: tell that
    # from one load, without a call (this is the warm hit path).
    state = overrides()
    plain = pipeline.explicit_mode is None and pipeline.engine.env_mode is None
    usage = pipeline.task.usage
    body = fn if usage is None else settling(fn, usage, pipeline.task.identity)

    async def run_async(mode: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if mode == OFF:
            return await body(*args, **kwargs)
        if mode == REFRESH:
            return await drive_async(steps(args, kwargs, UNPROBED, True), body, args, kwargs)
        found = await aprobe(args, kwargs)
        if type(found) is Miss:
            return await drive_async(replay(args, kwargs, found), _never_runs)
        return found

    if is_async_callable(fn):

        async def async_marked(*args: Any, **kwargs: Any) -> Any:
            if state.active or not plain:
                mode = mode_of()
                if mode != NORMAL:
                    return await run_async(mode, args, kwargs)
            found = await aprobe(args, kwargs)
            if type(found) is Miss:
                # The arguments go to the driver, not into a closure: a
                # closure would give every call (hits too) two cells.
                return await drive_async(steps(args, kwargs, found), body, args, kwargs)
            return found

        _copy_metadata(async_marked, fn)
        async_marked.__beautyspot__ = MarkedCall(pipeline, body, True)  # type: ignore[attr-defined]
        add_controls(async_marked, pipeline, run=run_async, is_async=True)
        return async_marked

    def sync_marked(*args: Any, **kwargs: Any) -> Any:
        mode = mode_of() if state.active or not plain else NORMAL
        if mode == OFF:
            return body(*args, **kwargs)
        if mode == REFRESH:
            return drive_sync(
                steps(args, kwargs, UNPROBED, True), functools.partial(body, *args, **kwargs)
            )
        found = probe(args, kwargs)
        if type(found) is Miss:
            if mode == REPLAY:
                return drive_sync(replay(args, kwargs, found), _never_runs)
            return drive_sync(steps(args, kwargs, found), functools.partial(body, *args, **kwargs))
        return found

    async def run_threaded(mode: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The body's partial is made only when it runs, and handed to the
        # driver as an argument: a hit allocates neither it nor a closure.
        if mode == OFF:
            return await anyio.to_thread.run_sync(functools.partial(body, *args, **kwargs))
        if mode == REFRESH:
            return await drive_async(
                steps(args, kwargs, UNPROBED, True),
                anyio.to_thread.run_sync,
                (functools.partial(body, *args, **kwargs),),
            )
        found = await aprobe(args, kwargs)
        if type(found) is Miss:
            if mode == REPLAY:
                return await drive_async(replay(args, kwargs, found), _never_runs)
            return await drive_async(
                steps(args, kwargs, found),
                anyio.to_thread.run_sync,
                (functools.partial(body, *args, **kwargs),),
            )
        return found

    async def acall(*args: Any, **kwargs: Any) -> Any:
        return await run_threaded(mode_of(), args, kwargs)

    _copy_metadata(sync_marked, fn)
    sync_marked.acall = acall  # type: ignore[attr-defined]
    sync_marked.__beautyspot__ = MarkedCall(pipeline, body, False)  # type: ignore[attr-defined]
    add_controls(sync_marked, pipeline, run=run_threaded, is_async=False)
    return sync_marked


def wrap_stream(
    fn: Callable[..., Any], pipeline: Pipeline, *, timed: bool, speed: float
) -> Callable[..., Any]:
    """The marked version of a generator function: see ``_stream``."""
    if inspect.isasyncgenfunction(inspect.unwrap(_unwrap_partial(fn))):

        def async_stream(*args: Any, **kwargs: Any) -> StreamCall:
            return StreamCall(pipeline, fn, args, kwargs, timed=timed, speed=speed)

        async def collect(mode: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            # lookup/refresh of a stream: its items, as a list
            with scoped_mode(pipeline.engine, mode):
                call = StreamCall(pipeline, fn, args, kwargs, timed=False, speed=1.0)
                return [item async for item in call]

        _copy_metadata(async_stream, fn)
        add_controls(async_stream, pipeline, run=collect, is_async=True)
        return async_stream

    def sync_stream_marked(*args: Any, **kwargs: Any) -> Any:
        return sync_stream(pipeline, fn, args, kwargs, timed=timed, speed=speed)

    async def collect_sync(mode: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        def run() -> list[Any]:
            with scoped_mode(pipeline.engine, mode):
                return list(sync_stream(pipeline, fn, args, kwargs, timed=False, speed=1.0))

        return await anyio.to_thread.run_sync(run)

    _copy_metadata(sync_stream_marked, fn)
    add_controls(sync_stream_marked, pipeline, run=collect_sync, is_async=False)
    return sync_stream_marked
