"""``spot.imap``: a batch's outcomes as an async iterator, in completion order."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any

import anyio

from ._hosted import spawn_hosted

if TYPE_CHECKING:
    from ._batch import Batch

__all__ = ["Outcomes"]


class _Host:
    """The running side of an :class:`Outcomes` iterator, referenced only by its task.

    Kept apart from the iterator so that dropping the iterator (a ``break``
    out of ``async for``) lets it be collected at once, which cancels this.
    """

    def __init__(self, batch: Batch, items: Iterable[Any] | AsyncIterable[Any], size: int):
        self.batch = batch
        self.items = items
        self.send, self.receive = anyio.create_memory_object_stream[tuple[int, Any]](size)
        self.scope = anyio.CancelScope()
        self.error: BaseException | None = None
        self.finished = anyio.Event()

    async def run(self) -> None:
        async def emit(index: int, outcome: Any) -> None:
            await self.send.send((index, outcome))

        try:
            with self.scope:
                async with self.send:
                    await self.batch.drive(self.items, emit)
        except BaseException as exc:  # handed to the consumer, never lost in a host task
            self.error = exc
        finally:
            self.send.close()
            self.finished.set()


class Outcomes:
    """``spot.imap(...)``: ``(index, value or Failure)`` pairs in completion order.

    The batch runs in a task of its own rather than in a task group held
    open across ``yield``: a consumer may leave the loop at any point
    without the batch's cancel scopes ending up in the consumer's task.
    Leaving early cancels the calls still running (``aclose()``, or
    dropping the iterator, does it at once).
    """

    def __init__(self, batch: Batch, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._host = _Host(batch, items, batch.concurrency)
        self._started = False

    def __aiter__(self) -> Outcomes:
        return self

    def _start(self) -> None:
        self._started = True
        spawn_hosted(self._host.run)

    async def __anext__(self) -> tuple[int, Any]:
        if not self._started:
            self._start()
        host = self._host
        try:
            return await host.receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if host.error is not None and not isinstance(
                host.error, anyio.get_cancelled_exc_class()
            ):
                raise host.error from None
            raise StopAsyncIteration from None
        except BaseException:
            # The consumer was cancelled or interrupted: stop the batch too,
            # and keep what finished.
            await self.aclose()
            await host.batch.after_interrupt([])
            raise

    async def aclose(self) -> None:
        """Cancel the calls still running and wait for them to end."""
        host = self._host
        host.scope.cancel()
        host.receive.close()
        if self._started:
            with anyio.CancelScope(shield=True):
                await host.finished.wait()

    def __del__(self) -> None:
        # Left without aclose(): cancel; the host task ends by itself.
        self._host.scope.cancel()
        self._host.receive.close()
