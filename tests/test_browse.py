"""The dashboard's index queries, as pure functions over history and failure frames."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import beautyspot_async as bs
from beautyspot_async._browse import (
    HistoryCache,
    IndexQuery,
    args_text,
    filter_history,
    func_totals,
    index_page,
)
from beautyspot_async._failure import failures_to_frame
from beautyspot_async.db._history import records_to_frame

NOW = 1_000_000.0


def frame(n: int = 30, *, with_args: bool = True) -> pd.DataFrame:
    from beautyspot_async._record import TaskRecord

    records = [
        TaskRecord(
            cache_key=f"{i:032x}",
            func_name=("app.llm.ask", "app.scrape.fetch", "other.ask_more")[i % 3],
            input_id=f"in{i}",
            version=f"v{i % 2}",
            result_type="inline",
            content_type=None,
            result_data=b"\xc0",
            expires_at=NOW - 1 if i % 5 == 0 else None,
            size_bytes=10 + i,
            created_at=NOW - 1000 + i,
            updated_at=NOW - 1000 + i,
        )
        for i in reversed(range(n))  # newest first, as history() returns them
    ]
    history = records_to_frame(records)
    if with_args:
        history["args"] = [{"prompt": f"question number {i}"} for i in reversed(range(n))]
    return history


NO_FAILURES = failures_to_frame([])


class TestQuery:
    def test_bad_values_are_clamped(self) -> None:
        query = IndexQuery(func="  ", status="weird", page=-3, per_page=10**9, search=" x ")
        assert (query.func, query.status, query.page, query.search) == (None, None, 1, "x")
        assert query.per_page == 500


class TestFilters:
    def test_function_by_identity_or_bare_name(self) -> None:
        history = frame()
        assert len(filter_history(history, IndexQuery(func="ask"), NOW)) == 10
        assert len(filter_history(history, IndexQuery(func="app.llm.ask"), NOW)) == 10
        assert len(filter_history(history, IndexQuery(func="llm.ask"), NOW)) == 10
        assert len(filter_history(history, IndexQuery(func="sk"), NOW)) == 0

    def test_version_and_status(self) -> None:
        history = frame()
        assert len(filter_history(history, IndexQuery(version="v1"), NOW)) == 15
        assert len(filter_history(history, IndexQuery(status="expired"), NOW)) == 6
        assert len(filter_history(history, IndexQuery(status="ok"), NOW)) == 24
        assert len(filter_history(history, IndexQuery(status="failed"), NOW)) == 0

    def test_search_over_argument_previews(self) -> None:
        history = frame()
        found = filter_history(history, IndexQuery(search="NUMBER 17"), NOW)
        assert list(found["cache_key"]) == [f"{17:032x}"]
        combined = IndexQuery(search="question", func="fetch", status="expired")
        assert len(filter_history(history, combined, NOW)) == 2  # 5 and 20

    def test_search_without_args_column(self) -> None:
        history = frame(with_args=False)
        assert len(filter_history(history, IndexQuery(search="question"), NOW)) == 0
        assert len(filter_history(history, IndexQuery(search="SCRAPE"), NOW)) == 10

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (None, ""),
            ({"a": "1", "b": "'x'"}, "a=1, b='x'"),
            ('{"a": "1"}', "a=1"),
            ("[1, 2]", "[1, 2]"),
            ("plain", "plain"),
            (float("nan"), ""),
        ],
    )
    def test_args_text(self, value: Any, text: str) -> None:
        assert args_text(value) == text


class TestPage:
    def test_pages_and_totals(self) -> None:
        history = frame(30)
        page = index_page(history, NO_FAILURES, IndexQuery(page=2, per_page=8), NOW)
        assert (page.total, page.stored, page.pages, page.first) == (30, 30, 4, 9)
        assert [r["cache_key"] for r in page.rows] == [f"{i:032x}" for i in range(21, 13, -1)]
        assert page.rows[0]["args"] == "prompt=question number 21"
        assert {r["status"] for r in page.rows} == {"ok", "expired"}
        assert page.versions == ["v0", "v1"]
        beyond = index_page(history, NO_FAILURES, IndexQuery(page=9, per_page=8), NOW)
        assert beyond.rows == []
        assert beyond.total == 30

    def test_func_totals_include_failures(self) -> None:
        from beautyspot_async._failure import FailureRecord

        failure = FailureRecord(
            cache_key="f" * 32,
            func_name="app.flaky",
            input_id="in-f",
            version=None,
            exc_type="ValueError",
            message="boom",
            attempts=3,
            failed_at=NOW,
            args='{"n": "1"}',
        )
        failures = failures_to_frame([failure])
        totals = {t.func_name: t for t in func_totals(frame(30), failures, NOW)}
        assert totals["app.llm.ask"].entries == 10
        assert totals["app.llm.ask"].expired == 2  # 0, 15
        assert totals["app.flaky"].failures == 1
        assert totals["app.flaky"].entries == 0
        page = index_page(frame(30), failures, IndexQuery(status="failed"), NOW)
        assert [(r["func_name"], r["attempts"], r["args"]) for r in page.rows] == [
            ("app.flaky", 3, "n=1")
        ]

    def test_a_hundred_thousand_rows_filter_quickly(self) -> None:
        history = frame(100_000)
        page = index_page(history, NO_FAILURES, IndexQuery(search="number 99999"), NOW)
        assert page.total == 1


class TestHistoryCache:
    def test_reused_while_young_and_current(self, tmp_path: Path) -> None:
        clock = [0.0]

        async def main() -> list[int]:
            spot = bs.Spot("c", db=tmp_path / "c.db", storage=tmp_path / "b")

            @spot.mark
            async def f(x: int) -> int:
                return x

            cache = HistoryCache(max_age=10, clock=lambda: clock[0])
            sizes = []
            async with spot:
                await f(1)
                sizes.append(len(await cache.history(spot)))
                first = await cache.history(spot)
                assert await cache.history(spot) is first  # reused
                await f(2)  # a newer row: read again at once
                sizes.append(len(await cache.history(spot)))
                await f.invalidate(1)  # a deletion shows after max_age
                sizes.append(len(await cache.history(spot)))
                clock[0] = 11
                sizes.append(len(await cache.history(spot)))
                await f(3)
                cache.clear()
                sizes.append(len(await cache.history(spot)))
            return sizes

        assert asyncio.run(main()) == [1, 2, 2, 1, 2]
