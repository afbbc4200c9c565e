"""Streams: marked generator functions, recorded as they are produced, replayed as streams.

A marked ``async def`` generator returns an async iterator. On a miss the
items reach the caller as the generator produces them and are recorded; the
entry -- ``{"items": [...], "offsets": [...]}``, the offsets being seconds
since the stream started -- is stored only when the generator finishes
normally. An exception, a cancellation, or every consumer leaving early
stores nothing: a partial stream is never served as complete.

The producer runs in a host task (see ``_hosted``), through the ordinary
pipeline (lease, single flight, store), and appends to a :class:`LiveStream`
registered under its key; every consumer of that key in this process reads
the live stream from its first item on, in order. The producer goes on as
long as one consumer is attached and is cancelled when the last one leaves.
A hit replays the stored items, as fast as they are read or, with
``replay="timed"``, with the original gaps divided by ``replay_speed``.

A sync generator function runs in the caller's thread: its items reach the
caller as produced, and a concurrent caller of the same key waits for the
committed entry and replays it.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._hosted import spawn_hosted
from ._modes import OFF, REFRESH, REPLAY
from ._pipeline import UNPROBED, Miss
from ._steps import drive_async, drive_sync, drive_sync_yielding
from ._usage import collecting, measure, settle_all
from .exceptions import CacheCorruptedError, ConfigurationError

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = [
    "REPLAY_MODES",
    "LiveStream",
    "StreamCall",
    "check_replay",
    "is_stream_function",
    "stream_usage",
    "sync_stream",
]

REPLAY_MODES: Final = ("items", "timed")


def is_stream_function(fn: Any) -> bool:
    target = inspect.unwrap(fn)
    return inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target)


def check_replay(replay: Any, speed: Any) -> None:
    if replay not in REPLAY_MODES:
        raise ConfigurationError(f"replay must be 'items' or 'timed', got {replay!r}")
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not speed > 0:
        raise ConfigurationError(f"replay_speed must be a number > 0, got {speed!r}")


def stream_usage(usage: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``usage=`` of a stream receives its items (the last is often the usage chunk)."""

    def of_record(record: Any) -> Any:
        return usage(_items(record)[0])

    return of_record


def _record(items: list[Any], offsets: list[float]) -> dict[str, Any]:
    return {"items": items, "offsets": offsets}


def _items(record: Any) -> tuple[list[Any], list[float]]:
    if (
        type(record) is not dict
        or type(record.get("items")) is not list
        or type(record.get("offsets")) is not list
        or len(record["items"]) != len(record["offsets"])
    ):
        raise CacheCorruptedError("the stored entry is not a recorded stream")
    return record["items"], record["offsets"]


class LiveStream:
    """One stream being produced, shared by every consumer of its key in this process."""

    def __init__(self, started_at: float) -> None:
        self.items: list[Any] = []
        self.offsets: list[float] = []
        self.started_at = started_at
        self.done = False
        self.error: BaseException | None = None
        self.consumers = 0
        self.scope = anyio.CancelScope()
        self._changed = anyio.Event()

    def append(self, item: Any, now: float) -> None:
        self.items.append(item)
        self.offsets.append(max(0.0, now - self.started_at))
        self._notify()

    def finish(self, record: Any) -> None:
        if record is not None:
            items, offsets = _items(record)
            if items is not self.items:  # answered by a stored entry, not by us
                self.items, self.offsets = list(items), list(offsets)
        self.done = True
        self._notify()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done = True
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def item_at(self, index: int) -> tuple[bool, Any]:
        """``(True, item)``, or ``(False, None)`` at the end; re-raises the producer's error."""
        while index >= len(self.items):
            if self.done:
                if self.error is not None:
                    raise self.error
                return False, None
            await self._changed.wait()
        return True, self.items[index]

    def detach(self) -> None:
        self.consumers -= 1
        if self.consumers <= 0 and not self.done:
            # Nobody reads any more: stop producing; nothing gets stored.
            self.scope.cancel()


class StreamCall:
    """What calling a marked ``async def`` generator returns: an async iterator."""

    def __init__(
        self,
        pipeline: Pipeline,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        timed: bool,
        speed: float,
    ) -> None:
        self._pipeline = pipeline
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self._timed = timed
        self._speed = speed
        self._next: Callable[[], Any] | None = None
        self._live: LiveStream | None = None

    def __aiter__(self) -> StreamCall:
        return self

    async def __anext__(self) -> Any:
        if self._next is None:
            self._next = await self._open()
        try:
            return await self._next()
        except BaseException:
            self._detach()
            raise

    async def aclose(self) -> None:
        """Stop reading; the producer stops too when nobody else reads."""
        self._detach()

    def __del__(self) -> None:
        self._detach()

    def _detach(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.detach()

    async def _open(self) -> Callable[[], Any]:
        pipeline = self._pipeline
        args, kwargs = self._args, self._kwargs
        mode = pipeline.mode()
        if mode == OFF:
            return self._direct()
        found: Any = UNPROBED
        if mode != REFRESH:
            found = await pipeline.aprobe(args, kwargs)
            if type(found) is not Miss:
                return self._replay(found)
            if mode == REPLAY:
                stored = await drive_async(pipeline.replay(args, kwargs, found), _never)
                return self._replay(stored)
        key = found.ids[1] if found.ids is not None else pipeline.cache_key(args, kwargs)
        streams = pipeline.engine.streams
        live = streams.get(key) if mode != REFRESH else None
        if live is None or live.done:
            live = LiveStream(pipeline.engine.clock())
            streams[key] = live
            # The host must not hold this iterator: dropping it is how a
            # consumer that left without aclose() lets the producer stop.
            refresh = mode == REFRESH
            fn = self._fn
            spawn_hosted(lambda: _produce(pipeline, fn, args, kwargs, live, key, found, refresh))
        live.consumers += 1
        self._live = live
        position = 0

        async def read_live() -> Any:
            nonlocal position
            more, item = await live.item_at(position)
            if not more:
                raise StopAsyncIteration
            position += 1
            return item

        return read_live

    def _replay(self, record: Any) -> Callable[[], Any]:
        items, offsets = _items(record)
        clock = self._pipeline.engine.clock
        sleep_fn = getattr(clock, "sleep", None)
        sleep = sleep_fn if inspect.iscoroutinefunction(sleep_fn) else anyio.sleep
        position = 0
        timed, speed = self._timed, self._speed

        async def read_stored() -> Any:
            nonlocal position
            if position >= len(items):
                raise StopAsyncIteration
            if timed:
                gap = offsets[position] - (offsets[position - 1] if position else 0.0)
                await sleep(max(0.0, gap) / speed)
            position += 1
            return items[position - 1]

        return read_stored

    def _direct(self) -> Callable[[], Any]:
        generator = self._fn(*self._args, **self._kwargs)

        async def read_direct() -> Any:
            return await generator.__anext__()

        return read_direct


async def _produce(
    pipeline: Pipeline,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    live: LiveStream,
    key: str,
    found: Any,
    refresh: bool,
) -> None:
    """The host task of a live stream: the pipeline, with the generator as its body."""
    engine = pipeline.engine

    usage = pipeline.task.usage

    async def execute() -> dict[str, Any]:
        with collecting() as reservations:
            async with contextlib.aclosing(fn(*args, **kwargs)) as generator:
                async for item in generator:
                    live.append(item, engine.clock())
        record = _record(live.items, live.offsets)
        if reservations and usage is not None:
            # A stacked @spot.limiter booked an estimate: correct it to what was used.
            settle_all(reservations, measure(usage, record, pipeline.task.identity))
        return record

    try:
        with live.scope:
            record = await drive_async(pipeline.steps(args, kwargs, found, refresh), execute)
        if live.scope.cancelled_caught:
            live.fail(RuntimeError("the stream was abandoned by every consumer"))
        else:
            live.finish(record)
    except BaseException as exc:  # handed to every consumer; never escapes the host task
        live.fail(exc)
    finally:
        if engine.streams.get(key) is live:
            del engine.streams[key]


def _never() -> Any:
    raise AssertionError("replay mode never executes the function")


# -- sync generator functions ----------------------------------------------------------------


def sync_stream(
    pipeline: Pipeline,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    timed: bool,
    speed: float,
) -> Iterator[Any]:
    """What calling a marked sync generator function returns: an iterator."""
    mode = pipeline.mode()
    if mode == OFF:
        yield from fn(*args, **kwargs)
        return
    found: Any = UNPROBED
    if mode != REFRESH:
        found = pipeline.probe(args, kwargs)
        if type(found) is not Miss:
            yield from _replay_sync(found, timed, speed)
            return
    if mode == REPLAY:
        stored = drive_sync(pipeline.replay(args, kwargs, found), _never)
        yield from _replay_sync(stored, timed, speed)
        return
    clock = pipeline.engine.clock
    started = clock()
    items: list[Any] = []
    offsets: list[float] = []

    def produce() -> Generator[Any, None, dict[str, Any]]:
        for item in fn(*args, **kwargs):
            items.append(item)
            offsets.append(max(0.0, clock() - started))
            yield item
        return _record(items, offsets)

    steps = pipeline.steps(args, kwargs, found, mode == REFRESH)
    record = yield from drive_sync_yielding(steps, produce)
    if not items and record is not None:
        # Answered by an entry another caller committed meanwhile: replay it.
        yield from _replay_sync(record, timed, speed)


def _replay_sync(record: Any, timed: bool, speed: float) -> Iterator[Any]:
    items, offsets = _items(record)
    previous = 0.0
    for item, offset in zip(items, offsets, strict=True):
        if timed:
            time.sleep(max(0.0, offset - previous) / speed)
            previous = offset
        yield item
