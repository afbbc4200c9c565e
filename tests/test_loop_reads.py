"""``PerLoop`` and ``LoopReads``: the hit path's reads on the caller's own loop, without a server.

A fake connection stands in for asyncpg/redis: it answers the keys it holds,
counts its round trips, and can be made to hang or fail. The backends' real
use of ``LoopReads`` is tested against the servers in ``test_hits_here``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import anyio
import pytest

from beautyspot_async._lazy import PerLoop
from beautyspot_async._record import TaskRecord
from beautyspot_async.db._common import LoopReads

pytestmark = pytest.mark.anyio


def _record(key: str) -> TaskRecord:
    return TaskRecord(key, "tests.fn", "i", None, "inline", None, result_data=key.encode())


class FakeConn:
    def __init__(self, stored: Mapping[str, TaskRecord]) -> None:
        self.stored = stored
        self.trips: list[list[str]] = []
        self.closed = False


class Fakes:
    """The three callables ``LoopReads`` takes, over one shared store."""

    def __init__(self, keys: list[str]) -> None:
        self.stored = {key: _record(key) for key in keys}
        self.conns: list[FakeConn] = []
        self.hang = False
        self.fail = False

    async def open(self) -> FakeConn:
        await anyio.lowlevel.checkpoint()
        conn = FakeConn(self.stored)
        self.conns.append(conn)
        return conn

    async def close(self, conn: FakeConn) -> None:
        conn.closed = True

    async def read(self, conn: FakeConn, keys: list[str]) -> dict[str, TaskRecord]:
        assert not conn.closed
        conn.trips.append(list(keys))
        if self.hang:
            await anyio.sleep_forever()
        await asyncio.sleep(0)  # a round trip: other tasks run meanwhile
        if self.fail:
            raise ConnectionError("server gone")
        return {key: self.stored[key] for key in keys if key in self.stored}

    def reads(self) -> LoopReads[FakeConn]:
        return LoopReads(self.open, self.close, self.read)


@pytest.fixture
def anyio_backend() -> str:
    """LoopReads serves asyncio loops only (trio is covered below, by hand)."""
    return "asyncio"


class TestLoopReads:
    async def test_lone_lookup_reads_at_once(self) -> None:
        fakes = Fakes(["a", "b"])
        reads = fakes.reads()
        assert await reads.get_many(["a"], 5.0) == {"a": _record("a")}
        assert await reads.get_many(["a", "zz"], None) == {"a": _record("a"), "zz": None}
        # One connection, one round trip per lookup.
        assert len(fakes.conns) == 1
        assert fakes.conns[0].trips == [["a"], ["a", "zz"]]
        await reads.aclose()
        assert fakes.conns[0].closed

    async def test_concurrent_lookups_share_round_trips(self) -> None:
        keys = [f"k{i}" for i in range(500)]
        fakes = Fakes(keys[::2])
        reads = fakes.reads()
        answers = await asyncio.gather(*(reads.get_many([key], 5.0) for key in keys))
        for key, answer in zip(keys, answers, strict=True):
            assert answer == {key: fakes.stored.get(key)}  # each its own, absent ones None
        trips = fakes.conns[0].trips
        assert len(trips) <= 3, [len(t) for t in trips]  # the first alone, then the batch
        assert sorted(k for trip in trips for k in trip) == sorted(keys)
        await reads.aclose()

    async def test_batches_are_bounded(self) -> None:
        keys = [f"k{i}" for i in range(50)]
        fakes = Fakes(keys)
        reads = LoopReads(fakes.open, fakes.close, fakes.read, batch_size=10)
        await asyncio.gather(*(reads.get_many([key], None) for key in keys))
        assert max(len(trip) for trip in fakes.conns[0].trips) <= 10
        await reads.aclose()

    async def test_deadline_raises_timeout_and_drops_the_connection(self) -> None:
        fakes = Fakes(["a"])
        reads = fakes.reads()
        assert await reads.get_many(["a"], 0.2) == {"a": _record("a")}
        fakes.hang = True
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            await reads.get_many(["a"], 0.2)
        await asyncio.sleep(0)  # the dropped connection closes in the background
        assert fakes.conns[0].closed
        # Not cancelled for good: the task goes on, and the next lookup reconnects.
        fakes.hang = False
        assert await reads.get_many(["a"], 0.2) == {"a": _record("a")}
        assert len(fakes.conns) == 2
        await reads.aclose()

    async def test_deadline_of_a_batch_makes_its_lookups_fall_back(self) -> None:
        fakes = Fakes(["a", "b", "c"])
        reads = fakes.reads()
        fakes.hang = True
        with anyio.fail_after(5):
            results = await asyncio.gather(
                *(reads.get_many([key], 0.2) for key in "abc"), return_exceptions=True
            )
        assert isinstance(results[0], TimeoutError)  # the one reading
        assert all(isinstance(r, anyio.WouldBlock) for r in results[1:])  # queued: fall back
        await reads.aclose()

    async def test_failure_drops_the_connection_and_queued_lookups_fall_back(self) -> None:
        fakes = Fakes(["a", "b"])
        reads = fakes.reads()
        fakes.fail = True
        results = await asyncio.gather(
            reads.get_many(["a"], 5.0), reads.get_many(["b"], 5.0), return_exceptions=True
        )
        assert isinstance(results[0], ConnectionError)
        assert isinstance(results[1], anyio.WouldBlock)
        await asyncio.sleep(0)
        assert fakes.conns[0].closed
        fakes.fail = False
        assert await reads.get_many(["b"], 5.0) == {"b": _record("b")}
        await reads.aclose()

    async def test_cancelled_reader_drops_the_connection_and_waiters_are_served(self) -> None:
        fakes = Fakes(["a", "b"])
        reads = fakes.reads()
        fakes.hang = True
        first = asyncio.ensure_future(reads.get_many(["a"], None))
        await asyncio.sleep(0.01)
        fakes.hang = False
        second = asyncio.ensure_future(reads.get_many(["b"], None))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # The queued lookup is answered on a fresh connection.
        assert await asyncio.wait_for(second, 5) == {"b": _record("b")}
        assert fakes.conns[0].closed
        assert len(fakes.conns) == 2
        await reads.aclose()

    async def test_cancelled_queued_lookup_leaves_the_others_alone(self) -> None:
        keys = [f"k{i}" for i in range(20)]
        fakes = Fakes(keys)
        reads = fakes.reads()
        tasks = [asyncio.ensure_future(reads.get_many([key], 5.0)) for key in keys]
        await asyncio.sleep(0)
        tasks[5].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[5], asyncio.CancelledError)
        for i, key in enumerate(keys):
            if i != 5:
                assert done[i] == {key: _record(key)}
        await reads.aclose()

    async def test_a_connection_per_loop_closed_when_its_loop_ends(self) -> None:
        fakes = Fakes(["a"])
        reads = fakes.reads()

        def other_loop() -> None:
            asyncio.run(reads.get_many(["a"], 5.0))

        thread = threading.Thread(target=other_loop)
        thread.start()
        thread.join()
        assert len(fakes.conns) == 1
        assert fakes.conns[0].closed  # asyncio.run's shutdown closed it on its loop
        assert len(reads._lanes) == 0
        assert await reads.get_many(["a"], 5.0) == {"a": _record("a")}
        assert len(fakes.conns) == 2
        assert not fakes.conns[1].closed
        await reads.aclose()
        assert fakes.conns[1].closed


class TestPerLoop:
    async def test_one_object_per_loop(self) -> None:
        made: list[object] = []
        closed: list[object] = []

        def make() -> object:
            made.append(object())
            return made[-1]

        async def close(item: object) -> None:
            closed.append(item)

        per_loop = PerLoop(make, close)
        mine = per_loop.get()
        assert per_loop.get() is mine
        theirs: list[object] = []
        stop = threading.Event()
        ready = threading.Event()

        async def other() -> None:
            theirs.append(per_loop.get())
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.005)

        thread = threading.Thread(target=lambda: asyncio.run(other()))
        thread.start()
        ready.wait(5)
        assert theirs[0] is not mine
        # aclose from this loop: ours at once, theirs on their own loop.
        await per_loop.aclose()
        assert mine in closed
        for _ in range(200):
            if theirs[0] in closed:
                break
            await asyncio.sleep(0.005)
        assert theirs[0] in closed
        stop.set()
        thread.join()
        assert closed.count(theirs[0]) == 1  # not closed again at its loop's end
        assert per_loop.get() is not mine  # made anew after aclose
        await per_loop.aclose()

    def test_off_asyncio_is_an_error(self) -> None:
        per_loop = PerLoop(object, lambda _item: anyio.lowlevel.checkpoint())
        with pytest.raises(RuntimeError):
            per_loop.get()


def test_trio_lookups_would_block() -> None:
    """Under trio LoopReads raises WouldBlock: the caller takes the I/O loop's path."""
    pytest.importorskip("trio")
    fakes = Fakes(["a"])
    reads = fakes.reads()

    async def main() -> None:
        with pytest.raises(anyio.WouldBlock):
            await reads.get_many(["a"], 5.0)

    anyio.run(main, backend="trio")
    assert fakes.conns == []


def test_a_loop_closed_by_hand_is_let_go_on_aclose() -> None:
    """A loop closed without shutdown_asyncgens() is kept until aclose(), then let go."""
    import gc
    import weakref

    closed: list[object] = []

    async def close(item: object) -> None:
        closed.append(item)

    per_loop = PerLoop(object, close)
    loop = asyncio.new_event_loop()

    async def use() -> None:
        per_loop.get()

    loop.run_until_complete(use())
    loop.close()  # no shutdown_asyncgens(): its object was not closed there
    ref = weakref.ref(loop)
    del loop
    assert len(per_loop) == 1
    anyio.run(per_loop.aclose)  # from another loop: the closed one needs nothing
    gc.collect()
    assert ref() is None
    assert len(per_loop) == 0
