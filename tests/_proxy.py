"""A freezable TCP proxy, to make a real server look frozen (SIGSTOP-like).

``FreezableProxy(("127.0.0.1", 5432))`` listens on a loopback ephemeral port
and forwards bytes both ways. ``freeze()`` makes it behave like a stopped
server: connections stay open, new ones are accepted, and nothing is
answered; ``thaw()`` delivers everything held back, as a continued process
would. The shared servers are never touched, only this proxy.

The proxy runs its own asyncio loop in a daemon thread, so it keeps working
whatever loop (or none) the test and the code under test use.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

__all__ = ["FreezableProxy", "freezable_proxy"]

_CHUNK = 64 * 1024


class FreezableProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream``; freeze and thaw at will."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._running = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # -- control (from any thread) ---------------------------------------------------

    def start(self) -> FreezableProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def freeze(self) -> None:
        """Stop answering: no byte moves until :meth:`thaw`."""
        self._call(self._running.clear)

    def thaw(self) -> None:
        """Answer again, delivering whatever was held back."""
        self._call(self._running.set)

    def close(self) -> None:
        """Drop every connection and stop the proxy's loop and thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _call(self, fn: object) -> None:
        done = threading.Event()

        def run() -> None:
            fn()  # type: ignore[operator]
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(timeout=10)

    # -- on the proxy's loop -----------------------------------------------------------

    async def _start(self) -> None:
        self._running.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self._running.set()  # release pumps parked on a freeze
        for writer in list(self._writers):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled only by close(): end quietly rather than have asyncio log it.
        with contextlib.suppress(asyncio.CancelledError):
            await self._forward(reader, writer)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A frozen server's kernel still accepts; the process answers after thawing.
        self._writers.add(writer)
        try:
            await self._running.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await self._running.wait()
                data = await reader.read(_CHUNK)
                await self._running.wait()  # read before a freeze, held until the thaw
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


@contextlib.contextmanager
def freezable_proxy(host: str, port: int) -> Iterator[FreezableProxy]:
    """A started proxy in front of ``host:port``, closed afterwards."""
    proxy = FreezableProxy((host, port)).start()
    try:
        yield proxy
    finally:
        proxy.close()
