"""Streaming: marked generator functions record live, commit on completion, replay as streams."""

from __future__ import annotations

import dataclasses
import gc
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import beautyspot_async as bs
from beautyspot_async.testing import FakeClock

from ._spots import EMBEDDED, open_spot

pytestmark = pytest.mark.anyio


@pytest.fixture(params=EMBEDDED)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclasses.dataclass(frozen=True)
class Chunk:
    text: str
    tokens: int = 1


def stored_rows(tmp_path: Path) -> int:
    with closing(sqlite3.connect(tmp_path / "t.db")) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])


class TestLive:
    async def test_items_arrive_as_produced_and_hit_replays(
        self, kind: str, tmp_path: Path
    ) -> None:
        calls: list[str] = []
        async with open_spot(kind, tmp_path) as spot:
            gate = anyio.Event()

            @spot.mark
            async def words(text: str) -> AsyncIterator[Chunk]:
                calls.append(text)
                first, *rest = text.split()
                yield Chunk(first)
                await gate.wait()  # the first item must reach the caller before this
                for word in rest:
                    yield Chunk(word)

            seen: list[str] = []
            async for chunk in words("a b c"):
                seen.append(chunk.text)
                gate.set()
            assert seen == ["a", "b", "c"]
            replayed = [c async for c in words("a b c")]
        assert replayed == [Chunk("a"), Chunk("b"), Chunk("c")]
        assert calls == ["a b c"]

    async def test_exception_stores_nothing(self, tmp_path: Path) -> None:
        calls: list[int] = []
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def broken(n: int) -> AsyncIterator[int]:
                calls.append(n)
                yield 1
                raise ValueError("midway")

            got: list[int] = []

            async def read() -> None:
                async for item in broken(1):
                    got.append(item)

            with pytest.raises(ValueError, match="midway"):
                await read()
            assert got == [1]
            await spot.flush()
            assert stored_rows(tmp_path) == 0
            with pytest.raises(ValueError):
                async for _ in broken(1):
                    pass
        assert calls == [1, 1]  # a partial stream is never served

    async def test_early_stop_stores_nothing_and_stops_the_producer(self, tmp_path: Path) -> None:
        finished: list[str] = []
        async with open_spot("sqlite", tmp_path) as spot:

            @spot.mark
            async def endless(n: int) -> AsyncIterator[int]:
                try:
                    i = 0
                    while True:
                        yield i
                        i += 1
                        await anyio.lowlevel.checkpoint()
                finally:
                    finished.append("closed")

            stream = endless(1)
            async for item in stream:
                if item == 3:
                    break
            await stream.aclose()
            with anyio.fail_after(10):
                while not finished:
                    await anyio.sleep(0.01)
            await spot.flush()
            assert stored_rows(tmp_path) == 0
            assert (await endless.explain(1)).status == "miss"  # type: ignore[attr-defined]

    async def test_dropping_the_iterator_also_stops_it(self, tmp_path: Path) -> None:
        finished: list[str] = []
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def endless(n: int) -> AsyncIterator[int]:
                try:
                    while True:
                        yield n
                        await anyio.lowlevel.checkpoint()
                finally:
                    finished.append("closed")

            async for _ in endless(2):
                break
            gc.collect()
            with anyio.fail_after(10):
                while not finished:
                    await anyio.sleep(0.01)


class TestSingleFlight:
    async def test_second_consumer_attaches_from_the_first_item(self, tmp_path: Path) -> None:
        calls: list[int] = []
        async with open_spot("memory", tmp_path) as spot:
            step = anyio.Event()

            @spot.mark
            async def ticks(n: int) -> AsyncIterator[int]:
                calls.append(n)
                for i in range(n):
                    if i == 2:
                        await step.wait()
                    yield i

            first: list[int] = []
            second: list[int] = []

            async def read(into: list[int]) -> None:
                async for item in ticks(5):
                    into.append(item)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read, first)
                with anyio.fail_after(10):
                    while len(first) < 2:
                        await anyio.sleep(0.001)
                tg.start_soon(read, second)  # joins mid-stream
                await anyio.sleep(0.01)
                step.set()
        assert first == second == [0, 1, 2, 3, 4]
        assert calls == [5]

    async def test_failure_reaches_every_consumer(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:
            go = anyio.Event()

            @spot.mark
            async def doomed(n: int) -> AsyncIterator[int]:
                yield 0
                await go.wait()
                raise RuntimeError("provider hung up")

            errors: list[str] = []

            async def read() -> None:
                try:
                    async for _ in doomed(1):
                        pass
                except RuntimeError as exc:
                    errors.append(str(exc))

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                tg.start_soon(read)
                await anyio.sleep(0.02)
                go.set()
        assert errors == ["provider hung up", "provider hung up"]

    async def test_producer_goes_on_for_the_others(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:
            proceed = anyio.Event()

            @spot.mark
            async def ticks(n: int) -> AsyncIterator[int]:
                for i in range(n):
                    if i == 1:
                        await proceed.wait()
                    yield i

            quitter = ticks(4)
            assert await quitter.__anext__() == 0
            full: list[int] = []

            async def read_all() -> None:
                async for item in ticks(4):
                    full.append(item)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read_all)
                await anyio.sleep(0.01)
                await quitter.aclose()  # the first consumer leaves early
                proceed.set()
            assert full == [0, 1, 2, 3]
            assert [i async for i in ticks(4)] == [0, 1, 2, 3]  # and it was stored


class TestReplay:
    async def test_timed_replay_keeps_the_gaps(self, tmp_path: Path) -> None:
        clock = FakeClock()
        async with open_spot("memory", tmp_path, clock=clock) as spot:

            @spot.mark(replay="timed", replay_speed=10.0)
            async def slow(n: int) -> AsyncIterator[int]:
                for i in range(n):
                    clock.advance(2.0)  # two seconds between items
                    yield i

            assert [i async for i in slow(3)] == [0, 1, 2]
            start = clock()
            assert [i async for i in slow(3)] == [0, 1, 2]
            assert clock() - start == pytest.approx(0.6)  # 6 s at ten times the speed

    def test_bad_replay_options(self) -> None:
        spot = bs.Spot("r", db="memory://")
        with pytest.raises(bs.ConfigurationError, match="replay"):
            spot.mark(replay="fast")  # type: ignore[arg-type]
        with pytest.raises(bs.ConfigurationError, match="replay_speed"):
            spot.mark(replay="timed", replay_speed=0)

    async def test_replay_mode(self, tmp_path: Path) -> None:
        async with open_spot("memory", tmp_path) as spot:

            @spot.mark
            async def items(n: int) -> AsyncIterator[int]:
                for i in range(n):
                    yield i

            assert [i async for i in items(2)] == [0, 1]
            with spot.mode("replay"):
                assert [i async for i in items(2)] == [0, 1]
                with pytest.raises(bs.CacheMissError):
                    async for _ in items(3):
                        pass


class TestStorage:
    async def test_typed_items_blob_and_usage(self, tmp_path: Path) -> None:
        async with open_spot("sqlite", tmp_path, blob_threshold=64) as spot:

            @spot.mark(usage=lambda items: items[-1].tokens)
            async def chunks(n: int) -> AsyncIterator[Chunk]:
                for i in range(n):
                    yield Chunk("x" * 20, tokens=i)

            first = [c async for c in chunks(10)]
        async with open_spot("sqlite", tmp_path, blob_threshold=64) as spot:

            @spot.mark(usage=lambda items: items[-1].tokens)
            async def chunks(n: int) -> AsyncIterator[Chunk]:
                raise AssertionError("served from the cache")
                yield Chunk("")

            again = [c async for c in chunks(10)]
            frame = await spot.history()
        assert again == first
        assert type(again[0]) is Chunk
        assert list(frame["result_type"]) == ["blob"]


class TestSyncGenerators:
    def test_sync_generator_function(self, tmp_path: Path) -> None:
        calls: list[int] = []
        spot = bs.Spot("s", db=str(tmp_path / "s.db"))

        @spot.mark
        def count(n: int) -> Iterator[int]:
            calls.append(n)
            yield from range(n)

        with spot:
            assert list(count(3)) == [0, 1, 2]
            assert list(count(3)) == [0, 1, 2]
            broken = count(4)
            assert next(broken) == 0
            broken.close()  # an early stop stores nothing
            assert list(count(4)) == [0, 1, 2, 3]
        assert calls == [3, 4, 4]


def test_markable() -> None:
    spot = bs.Spot("g", db="memory://")

    @spot.mark
    async def agen() -> AsyncIterator[Any]:
        yield 1

    assert not isinstance(agen(), list)


STREAM_WORKER = """
import asyncio, sys, time
import beautyspot_async as bs

async def main(db, role):
    async with bs.Spot("xproc", db=db) as spot:
        @spot.mark(name="slow_stream")
        async def slow(n):
            print("producing", flush=True)
            for i in range(n):
                await asyncio.sleep(0.3)
                yield i
        if role == "producer":
            async for item in slow(5):
                print("item", item, flush=True)
        else:
            items = [i async for i in slow(5)]
            print("got", items, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.slow
def test_a_second_process_waits_for_the_stream_then_replays(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    db = str(tmp_path / "x.db")
    producer = subprocess.Popen(
        [sys.executable, "-c", STREAM_WORKER, db, "producer"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert producer.stdout is not None
    deadline = time.monotonic() + 60
    for line in producer.stdout:
        if line.startswith("item 0"):
            break
        assert time.monotonic() < deadline
    consumer = subprocess.run(
        [sys.executable, "-c", STREAM_WORKER, db, "consumer"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    producer.communicate(timeout=60)
    assert consumer.returncode == 0, consumer.stderr
    assert "got [0, 1, 2, 3, 4]" in consumer.stdout
    assert "producing" not in consumer.stdout  # it waited on the lease and replayed


async def test_usage_settles_a_stacked_limiter_on_a_stream(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = bs.Limiter(tpm=60_000, clock=clock)
    async with open_spot("memory", tmp_path, limiter=limiter) as spot:

        @spot.mark(usage=lambda chunks: chunks[-1].tokens)
        @spot.limiter(cost=1_000)
        async def ask(n: int) -> AsyncIterator[Chunk]:
            for i in range(n):
                yield Chunk("w", tokens=7 * (i + 1))

        items = [c async for c in ask(3)]
        assert items[-1].tokens == 21
        assert limiter.statistics().tokens_debt == pytest.approx(21, abs=1e-3)
        assert [c async for c in ask(3)] == items  # a hit: no admission
        assert limiter.statistics().admitted == 1
