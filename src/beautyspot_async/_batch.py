"""The batch runner behind ``spot.map``, ``spot.starmap`` and ``spot.imap``.

One :class:`Batch` runs one marked function over an iterable of items. Each
item's key is its memo key, so resuming is "skip what is stored": a hit
costs a lookup, a miss executes, and an item that keeps failing is recorded
(never cached) and tried again by the next run.

The items are pulled lazily, one per free slot, so memory is bounded by
``concurrency`` and not by the number of items. Failures do not stop the
batch; a transient one (see ``_retry``) is retried after the server's
``Retry-After`` or an exponential backoff, and a ``Retry-After`` also pauses
the function's rate limiter, so one 429 holds back every caller.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import random
import sys
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Sized
from typing import TYPE_CHECKING, Any, Final

import anyio

from . import _retry
from ._display import to_jsonable
from ._failure import FailureRecord, exception_type_name
from ._pipeline import UNPROBED, Miss
from ._report import BatchError, Failure, MapProgress, MapReport
from ._steps import drive_async
from ._usage import UsageTotal, measure
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._marked import MarkedCall
    from ._spot import Spot
    from .limiter import Limiter

__all__ = ["Batch", "BatchError", "Failure", "MapProgress", "MapReport"]

logger = logging.getLogger("beautyspot_async")

#: How long an argument preview kept with a failure record may be.
_ARGS_PREVIEW_CHARS: Final = 512

_PENDING: Final[Any] = object()


class Batch:
    """One run of a marked function over items; see the module docstring."""

    def __init__(
        self,
        spot: Spot,
        fn: Any,
        *,
        star: bool,
        concurrency: int,
        retries: int,
        retry_on: Callable[[BaseException], bool] | None,
        max_errors: int | None,
        progress: bool | Callable[[MapProgress], Any] | None,
    ) -> None:
        call: MarkedCall | None = getattr(fn, "__beautyspot__", None)
        if call is None or call.pipeline.engine is not spot._engine:
            name = getattr(fn, "__qualname__", repr(fn))
            where = "a different Spot" if call is not None else "no Spot"
            raise ConfigurationError(
                f"{name} is marked on {where}: spot.map runs functions marked on this Spot "
                f"({spot.name!r}); decorate it with @spot.mark"
            )
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"retries must be an int >= 0, got {retries!r}")
        if max_errors is not None and (
            isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 1
        ):
            raise ConfigurationError(f"max_errors must be None or an int >= 1, got {max_errors!r}")
        if retry_on is not None and not callable(retry_on):
            raise ConfigurationError("retry_on must be a callable taking the exception")
        if not (progress is None or progress is True or progress is False or callable(progress)):
            raise ConfigurationError(
                "progress must be None (a live display on a terminal), True, False or a "
                "callable taking a MapProgress"
            )
        self.spot = spot
        self.call = call
        self.star = star
        self.concurrency = concurrency
        self.retries = retries
        self.retry_on = retry_on if retry_on is not None else _retry.default_retry_on
        self.max_errors = max_errors
        self.limiters = _limiters_of(fn, spot)
        clock = spot._engine.clock
        self.clock = clock
        sleep = getattr(clock, "sleep", None)
        self.sleep: Callable[[float], Any] = (
            sleep if inspect.iscoroutinefunction(sleep) else anyio.sleep
        )
        self.rng = random.Random()
        self.usage = call.pipeline.task.usage
        self.where = call.pipeline.task.identity
        # counters
        self.total: int | None = None
        self.started_at = clock()
        self.hits = self.executed = self.failed = self.retried = 0
        self.running = self.retrying = 0
        self.spent = UsageTotal()
        self.saved = UsageTotal()
        self.stop = False
        self.stopped_early = False
        self.display = _make_display(progress)
        self.callback: Callable[[MapProgress], Any] | None = (
            progress if callable(progress) else None
        )

    # -- one item ------------------------------------------------------------------------

    async def _call_once(self, args: tuple[Any, ...], found: Any = None) -> tuple[Any, bool]:
        """The value of ``fn(*args)`` and whether its body ran here.

        ``found`` is the probe's answer when the caller already asked (a
        :class:`Miss`); a retry asks again.
        """
        call = self.call
        pipeline = call.pipeline
        if found is None:
            found = await pipeline.aprobe(args, {})
            if type(found) is not Miss:
                return found, False
        ran = False
        body = call.body

        if call.is_async:

            def execute() -> Any:
                nonlocal ran
                ran = True
                return body(*args)

        else:

            def execute() -> Any:
                nonlocal ran
                ran = True
                return anyio.to_thread.run_sync(lambda: body(*args))

        value = await drive_async(pipeline.steps(args, {}, found), execute)
        return value, ran

    def stopped(self) -> bool:
        return self.stop

    def hit(self, value: Any) -> Any:
        """Count a value served from the cache."""
        self.hits += 1
        if self.usage is not None:
            self.saved.add(measure(self.usage, value, self.where))
        return value

    async def run_item(self, index: int, item: Any, args: tuple[Any, ...], found: Any) -> Any:
        """The item's value, or its :class:`Failure` after the retries."""
        attempts = 0
        self.running += 1
        try:
            while True:
                attempts += 1
                try:
                    value, ran = await self._call_once(args, found)
                    found = None
                except Exception as exc:
                    if attempts <= self.retries and self._should_retry(exc):
                        await self._wait_before_retry(exc, attempts)
                        continue
                    return await self._failed(index, item, args, exc, attempts)
                if not ran:
                    return self.hit(value)
                self.executed += 1
                if self.usage is not None:
                    self.spent.add(measure(self.usage, value, self.where))
                return value
        finally:
            self.running -= 1

    def _should_retry(self, exc: Exception) -> bool:
        try:
            return bool(self.retry_on(exc))
        except Exception as predicate_error:
            logger.warning(
                "retry_on raised %s on %s: not retrying",
                type(predicate_error).__name__,
                type(exc).__name__,
            )
            return False

    async def _wait_before_retry(self, exc: Exception, attempts: int) -> None:
        self.retried += 1
        delay = _retry.retry_after(exc, self.clock)
        if delay is not None:
            # The server said when: every caller of this function waits it out,
            # not only the one that was told.
            for limiter in self.limiters:
                limiter.penalize(delay)
        else:
            delay = _retry.backoff_delay(attempts, self.rng)
        self.retrying += 1
        self._changed()
        try:
            await self.sleep(delay)
        finally:
            self.retrying -= 1

    async def _failed(
        self, index: int, item: Any, args: tuple[Any, ...], exc: Exception, attempts: int
    ) -> Failure:
        self.failed += 1
        if self.max_errors is not None and self.failed >= self.max_errors and not self.stop:
            self.stop = True
            self.stopped_early = True
        try:
            await self.spot._engine.record_failure(self._failure_record(args, exc, attempts))
        except Exception as record_error:
            # The batch goes on; the failure is still in the report.
            logger.warning(
                "could not record the failure of %s: %s: %s",
                self.where,
                type(record_error).__name__,
                record_error,
            )
        return Failure(index, item, exc, attempts)

    def _failure_record(
        self, args: tuple[Any, ...], exc: Exception, attempts: int
    ) -> FailureRecord:
        pipeline = self.call.pipeline
        input_id, cache_key = pipeline.key_for(args, {})
        return FailureRecord(
            cache_key=cache_key,
            func_name=pipeline.task.identity,
            input_id=input_id,
            version=pipeline.task.version,
            exc_type=exception_type_name(exc),
            message=str(exc),
            attempts=attempts,
            failed_at=self.clock(),
            args=_args_preview(args),
        )

    # -- the whole batch -----------------------------------------------------------------

    async def drive(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        emit: Callable[[int, Any], Awaitable[None]],
    ) -> None:
        """Run every item (until stopped), awaiting ``emit(index, outcome)`` as each ends."""
        if isinstance(items, Sized):
            self.total = len(items)
        slots = anyio.Semaphore(self.concurrency)
        star = self.star
        probe_many = self.call.pipeline.aprobe_many

        async def one(index: int, item: Any, args: tuple[Any, ...], found: Any) -> None:
            # The slot is held until the outcome is taken: a slow consumer of
            # imap holds the batch back instead of piling up finished items.
            try:
                outcome = await self.run_item(index, item, args, found)
                self._changed()
                await emit(index, outcome)
            finally:
                slots.release()

        self._changed()
        index = 0
        try:
            async with (
                anyio.create_task_group() as tg,
                contextlib.aclosing(_chunks(items, max(self.concurrency, 32))) as chunks,
            ):
                async for chunk in chunks:
                    # Probe the whole chunk at once: hits cost one shared
                    # query and no task; only misses take a slot.
                    calls = [tuple(item) if star else (item,) for item in chunk]
                    try:
                        answers = await probe_many(calls)
                    except Exception:
                        answers = [UNPROBED] * len(calls)
                    for item, args, found in zip(chunk, calls, answers, strict=True):
                        if self.stop:
                            break
                        if found is not UNPROBED and type(found) is not Miss:
                            await emit(index, self.hit(found))
                            self._changed()
                        else:
                            try:
                                # No checkpoint while slots are free: a loop
                                # turn per item would cost more than the item.
                                slots.acquire_nowait()
                            except anyio.WouldBlock:
                                await slots.acquire()
                                if self.stopped():  # max_errors was reached meanwhile
                                    slots.release()
                                    break
                            tg.start_soon(
                                one, index, item, args, None if found is UNPROBED else found
                            )
                        index += 1
                    if self.stop:
                        break
        finally:
            if self.display is not None:
                self.display.close()

    async def collect(self, items: Iterable[Any] | AsyncIterable[Any]) -> MapReport:
        """Run the batch and report, results in input order."""
        results: list[Any] = []

        async def emit(index: int, outcome: Any) -> None:
            if index >= len(results):
                results.extend([_PENDING] * (index + 1 - len(results)))
            results[index] = outcome

        try:
            await self.drive(items, emit)
        except BaseException:
            await self.after_interrupt([r for r in results if r is not _PENDING])
            raise
        return self.report(results)

    async def after_interrupt(self, finished: list[Any]) -> None:
        """Make the finished results durable and say where the batch stopped."""
        with anyio.CancelScope(shield=True):
            try:
                await self.spot.flush()
            except Exception as exc:
                logger.warning("could not flush after an interrupted batch: %s", exc)
        report = self.report(finished, interrupted=True)
        logger.warning("spot.map of %s interrupted: %s", self.where, report.summary())

    def report(self, results: list[Any], *, interrupted: bool = False) -> MapReport:
        return MapReport(
            results=results,
            failures=[r for r in results if type(r) is Failure],
            hits=self.hits,
            executed=self.executed,
            failed=self.failed,
            retried=self.retried,
            elapsed=max(0.0, self.clock() - self.started_at),
            usage_spent=self.spent.value,
            usage_saved=self.saved.value,
            stopped_early=self.stopped_early,
            interrupted=interrupted,
        )

    def snapshot(self) -> MapProgress:
        elapsed = max(0.0, self.clock() - self.started_at)
        done = self.hits + self.executed + self.failed
        rate = self.executed / elapsed if elapsed > 0 else 0.0
        eta = None
        if self.total is not None:
            left = max(0, self.total - done)
            eta = 0.0 if left == 0 else (left / rate if rate > 0 else None)
        waiting = 0
        for limiter in self.limiters:
            waiting += limiter.statistics().queue_depth
        return MapProgress(
            total=self.total,
            done=done,
            hits=self.hits,
            executed=self.executed,
            failed=self.failed,
            running=self.running,
            retrying=self.retrying,
            waiting=waiting,
            elapsed=elapsed,
            rate=rate,
            eta=eta,
        )

    def _changed(self) -> None:
        if self.display is None and self.callback is None:
            return
        snapshot = self.snapshot()
        if self.callback is not None:
            try:
                self.callback(snapshot)
            except Exception as exc:
                logger.warning("progress callback raised %s: %s", type(exc).__name__, exc)
        if self.display is not None:
            self.display.update(snapshot)


async def _chunks(
    items: Iterable[Any] | AsyncIterable[Any], size: int
) -> AsyncGenerator[list[Any], None]:
    """``items`` in lists of up to ``size``, read only as each list is asked for."""
    chunk: list[Any] = []
    if isinstance(items, AsyncIterable):
        async for item in items:
            chunk.append(item)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    else:
        for item in items:
            chunk.append(item)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _limiters_of(fn: Any, spot: Spot) -> list[Limiter]:
    """The rate limiters a call of ``fn`` goes through: stacked decorators and the Spot's."""
    found: list[Limiter] = []
    seen: set[int] = set()
    current = fn
    for _ in range(20):  # a chain of wrappers, never a cycle in practice
        limiter = getattr(current, "__beautyspot_limiter__", None)
        if limiter is not None and id(limiter) not in seen:
            seen.add(id(limiter))
            found.append(limiter)
        current = getattr(current, "__wrapped__", None)
        if current is None:
            break
    own = spot._limiter
    if own is not None and id(own) not in seen:
        found.append(own)
    return found


def _args_preview(args: tuple[Any, ...]) -> str | None:
    try:
        shown = to_jsonable(args[0] if len(args) == 1 else list(args), max_items=10, max_str=200)
        text = json.dumps(shown, ensure_ascii=False, default=str)
    except Exception:
        return None
    if len(text) > _ARGS_PREVIEW_CHARS:
        text = text[: _ARGS_PREVIEW_CHARS - 3] + "..."
    return text


def _make_display(progress: Any) -> Any:
    if progress is False or (callable(progress) and progress is not True):
        return None
    if progress is None and not _stderr_is_terminal():
        return None
    from ._progress import LiveDisplay

    return LiveDisplay()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
