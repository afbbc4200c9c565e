"""Typed results with real SDK types: what a hit returns when the annotation names a model.

A function marked with ``@spot.mark`` whose return annotation is a pydantic
v2 model (or a container of models) caches its results with no registration:
a hit, in this process or in a fresh one, returns an instance of the same
class, equal to what the miss returned, with the same classes at every level.

* :class:`TestOpenAIChatCompletion`: the real ``openai`` SDK against a local
  OpenAI-compatible server (``tests/_llm_server.py``); the annotation is
  ``openai.types.chat.ChatCompletion``. A hit must not reach the server.
* :class:`TestStructuredOutput`: an instructor-style nested model
  (``Analysis``: enums, ``Optional`` and ``X | None`` fields, aware datetimes,
  a list of models, an optional nested model, ``dict[str, float]``).

This module uses ``from __future__ import annotations``: every annotation,
the marked functions' return annotations included, is a string that the
library has to resolve. The fresh-process halves run
``tests/workers/typed_worker.py``, which imports this module's factories and
classes.

Both anyio backends run: the SDK's HTTP client (httpx2 under openai 3.x) runs
on anyio and works under trio as well as asyncio.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import anyio.to_thread
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
import pytest

import beautyspot_async as bs

from ._services import require_module

require_module("pydantic", extra="dev")
require_module("openai", extra="dev")

from openai import AsyncOpenAI  # noqa: E402  (after the skip above)
from openai.types.chat import ChatCompletion  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from tests import _llm_server  # noqa: E402
from tests._llm_server import LLMServer, answer_text  # noqa: E402
from tests.workers.typed_worker import TypedConfig, run_typed_worker  # noqa: E402

pytestmark = pytest.mark.anyio

llm_server = _llm_server.llm_server  # registers the fixture in this module

MODEL = "gpt-4o-mini-2024-07-18"
#: Fixed identities, so the worker process derives the same cache keys.
ASK_NAME = "tests.typed_sdk.ask"
ANALYZE_NAME = "tests.typed_sdk.analyze"


# --- shared with tests/workers/typed_worker.py ------------------------------


class BodyCalls:
    """How many times a marked body ran (a hit runs none)."""

    def __init__(self) -> None:
        self.count = 0


def open_spot(workdir: Path, *, blob_threshold: int = 64 * 1024) -> bs.Spot:
    """The Spot of these tests: SQLite and local blobs under ``workdir``; no serializer set."""
    return bs.Spot(
        "typed_sdk",
        db=str(workdir / "tasks.db"),
        storage=str(workdir / "blobs"),
        blob_threshold=blob_threshold,
    )


def make_ask(spot: bs.Spot, base_url: str, calls: BodyCalls) -> Any:
    """``ask(prompt) -> ChatCompletion`` through the real SDK, marked on ``spot``."""

    @spot.mark(name=ASK_NAME)
    async def ask(prompt: str) -> ChatCompletion:
        calls.count += 1
        async with AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:
            return await client.chat.completions.create(
                model=MODEL,
                messages=[
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": prompt},
                ],
            )

    return ask


class Sentiment(str, Enum):  # noqa: UP042  (the str-mixin spelling instructor users write)
    POSITIVE = "positive"
    NEGATIVE = "negative"
    NEUTRAL = "neutral"


class Span(BaseModel):
    start: int
    end: int


class Entity(BaseModel):
    name: str
    kind: str
    wikipedia_url: Optional[str] = None  # noqa: UP045  (typing.Optional on purpose)
    description: Optional[str] = None  # noqa: UP045
    first_mentioned: dt.datetime
    span: Optional[Span] = None  # noqa: UP045


class Summary(BaseModel):
    text: str
    sentiment: Sentiment
    confidence: float


class Analysis(BaseModel):
    text: str
    sentiment: Sentiment
    entities: list[Entity]
    summary: Summary | None = None  # the PEP 604 spelling of an optional nested model
    scores: dict[str, float]
    analyzed_at: dt.datetime
    reviewer: str | None = None


TOKYO = dt.timezone(dt.timedelta(hours=9))
NEW_YORK_WINTER = dt.timezone(dt.timedelta(hours=-5), "EST")


def build_analysis(text: str) -> Analysis:
    """The structured output for ``text``: deterministic, so every process builds the same."""
    return Analysis(
        text=text,
        sentiment=Sentiment.POSITIVE,
        entities=[
            Entity(
                name="Ada Lovelace",
                kind="person",
                wikipedia_url="https://en.wikipedia.org/wiki/Ada_Lovelace",
                first_mentioned=dt.datetime(2024, 5, 17, 9, 30, 15, 250_000, tzinfo=TOKYO),
                span=Span(start=0, end=12),
            ),
            Entity(
                name="Analytical Engine",
                kind="machine",
                description=None,
                first_mentioned=dt.datetime(1843, 1, 1, tzinfo=dt.UTC),
            ),
            Entity(
                name="London",
                kind="place",
                description="capital of the United Kingdom",
                first_mentioned=dt.datetime(2024, 1, 31, 23, 59, tzinfo=NEW_YORK_WINTER),
            ),
        ],
        summary=Summary(text=f"About: {text[:20]}", sentiment=Sentiment.NEUTRAL, confidence=0.875),
        scores={"positive": 0.8125, "negative": 0.0625, "neutral": 0.125},
        analyzed_at=dt.datetime(2025, 3, 9, 12, 0, tzinfo=dt.UTC),
    )


def make_analyze(spot: bs.Spot, calls: BodyCalls) -> Any:
    """``analyze(text) -> Analysis`` (no server: built locally), marked on ``spot``."""

    @spot.mark(name=ANALYZE_NAME)
    async def analyze(text: str) -> Analysis:
        calls.count += 1
        return build_analysis(text)

    return analyze


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def shape(value: Any) -> Any:
    """The classes at every level of ``value``, as JSON-able data.

    Models list their declared fields and any extra ones (the SDK's models
    allow extras); aware datetimes carry their UTC offset in seconds, so a
    round trip that kept the instant but lost the offset shows up too.
    """
    name = qualified(type(value))
    if isinstance(value, BaseModel):
        fields = {key: shape(getattr(value, key)) for key in type(value).model_fields}
        fields.update({key: shape(v) for key, v in (value.model_extra or {}).items()})
        return [name, fields]
    if isinstance(value, dict):
        return [name, [[shape(k), shape(v)] for k, v in value.items()]]
    if isinstance(value, list | tuple):
        return [name, [shape(item) for item in value]]
    if isinstance(value, dt.datetime):
        offset = value.utcoffset()
        return [name, None if offset is None else offset.total_seconds()]
    return name


def stored_rows(workdir: Path, func_name: str) -> list[Any]:
    """The inline payloads of ``func_name`` in the tests' SQLite file, decoded by plain msgpack.

    No extension hook: an extension value (a registered type, a pickled
    object) comes back as ``msgpack.ExtType``.
    """
    with contextlib.closing(sqlite3.connect(workdir / "tasks.db")) as conn:
        rows = conn.execute(
            "SELECT result_data FROM tasks WHERE func_name = ? AND result_type = 'inline'",
            (func_name,),
        ).fetchall()
    return [msgpack.unpackb(data, raw=False, strict_map_key=False) for (data,) in rows]


def leaves(value: Any) -> list[Any]:
    """Every key and scalar inside ``value`` (plain msgpack data: dicts, lists, scalars)."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in (*leaves(k), *leaves(v))]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


# --- the tests ---------------------------------------------------------------


class TestOpenAIChatCompletion:
    """``ask(prompt) -> ChatCompletion`` through the real openai SDK, cached typed."""

    async def round_trip(
        self, tmp_path: Path, server: LLMServer, backend: str
    ) -> tuple[ChatCompletion, ChatCompletion, ChatCompletion, dict[str, Any]]:
        """Miss, warm hit, hit through a second Spot, then the fresh process's report."""
        prompt = f"Name three uses of memoization ({backend})"
        before = server.request_count
        calls = BodyCalls()

        spot = open_spot(tmp_path)
        ask = make_ask(spot, server.base_url, calls)
        async with spot:
            original = await ask(prompt)
            assert server.request_count == before + 1
            warm = await ask(prompt)
        assert isinstance(original, ChatCompletion)
        assert original.choices[0].message.content == answer_text(prompt)

        second = open_spot(tmp_path)
        ask_again = make_ask(second, server.base_url, calls)
        async with second:
            reread = await ask_again(prompt)
        assert calls.count == 1, "a hit ran the body"
        assert server.request_count == before + 1, "a hit reached the server"

        report = await anyio.to_thread.run_sync(
            run_typed_worker,
            TypedConfig(
                task="ask",
                workdir=str(tmp_path),
                argument=prompt,
                loop=backend,
                base_url=server.base_url,
            ),
        )
        assert server.request_count == before + 1, "the fresh process reached the server"
        assert report["body_calls"] == 0
        return original, warm, reread, report

    async def test_hit_is_an_equal_chat_completion_in_process_and_in_a_fresh_one(
        self, tmp_path: Path, llm_server: LLMServer, anyio_backend: str
    ) -> None:
        original, warm, reread, report = await self.round_trip(tmp_path, llm_server, anyio_backend)
        for hit in (warm, reread):
            assert type(hit) is ChatCompletion
            assert hit.model_dump() == original.model_dump()
            assert hit == original
            assert hit.choices[0].message.content == original.choices[0].message.content
            assert shape(hit) == shape(original)
            assert hit.usage is not None
            assert original.usage is not None
            assert hit.usage.completion_tokens_details == original.usage.completion_tokens_details

        assert report["type"] == qualified(ChatCompletion)
        assert report["dump"] == original.model_dump(mode="json")
        assert report["dump"]["choices"][0]["message"]["content"] == answer_text(
            f"Name three uses of memoization ({anyio_backend})"
        )
        assert report["shape"] == shape(original)

    async def test_stored_form_is_plain_data(
        self, tmp_path: Path, llm_server: LLMServer, anyio_backend: str
    ) -> None:
        """The row holds plain msgpack data: no extension type, no class name."""
        calls = BodyCalls()
        spot = open_spot(tmp_path)
        async with spot:
            original = await make_ask(spot, llm_server.base_url, calls)("What is stored?")
        (stored,) = stored_rows(tmp_path, ASK_NAME)
        found = leaves(stored)
        assert not [leaf for leaf in found if isinstance(leaf, msgpack.ExtType)]
        assert original.choices[0].message.content in found
        assert not [leaf for leaf in found if isinstance(leaf, str) and "ChatCompletion" in leaf]

    async def test_hit_keeps_which_fields_the_api_set(
        self, tmp_path: Path, llm_server: LLMServer, anyio_backend: str
    ) -> None:
        """``to_dict()`` and ``model_dump(exclude_unset=True)`` equal the original's.

        The SDK builds responses from the fields the server sent; ``to_dict()``
        (``exclude_unset=True``) shows only those. A hit that re-validates
        every field as "set" would add ``metadata``, ``moderation`` and the
        like as ``None``. Kept apart from the test above on purpose: this is
        the part of the spec (field set preserved) most likely to be missing.
        """
        original, warm, reread, report = await self.round_trip(tmp_path, llm_server, anyio_backend)
        for hit in (warm, reread):
            assert hit.to_dict() == original.to_dict()
            assert hit.model_dump(exclude_unset=True) == original.model_dump(exclude_unset=True)
            assert hit.model_fields_set == original.model_fields_set
        assert report["dump_unset"] == original.model_dump(mode="json", exclude_unset=True)

    async def test_fields_beyond_the_schema_survive(
        self, tmp_path: Path, anyio_backend: str
    ) -> None:
        """An OpenAI-compatible server (vLLM) sends fields the SDK keeps as model extras.

        The SDK's models allow extra fields (``model_extra``); a hit has the
        same extras, at the top level and nested, with the same values.
        """
        with LLMServer(vendor_extras=True).running() as server:
            original, warm, reread, report = await self.round_trip(tmp_path, server, anyio_backend)
        assert original.model_extra is not None
        assert "kv_transfer_params" in original.model_extra
        message = original.choices[0].message
        assert message.model_extra == {"reasoning_content": "The user wants an echo."}
        for hit in (warm, reread):
            assert type(hit) is ChatCompletion
            assert hit.model_extra == original.model_extra
            assert hit.choices[0].model_extra == original.choices[0].model_extra
            assert hit.choices[0].message.model_extra == message.model_extra
            assert hit.model_dump() == original.model_dump()
            assert shape(hit) == shape(original)
        assert report["dump"] == original.model_dump(mode="json")
        assert report["shape"] == shape(original)


class TestStructuredOutput:
    """``analyze(text) -> Analysis``: a nested instructor-style model, cached typed."""

    @pytest.mark.parametrize("where", ["inline", "blob"])
    async def test_round_trip_in_process_and_in_a_fresh_one(
        self, tmp_path: Path, anyio_backend: str, where: str
    ) -> None:
        threshold = 0 if where == "blob" else 64 * 1024
        text = "Ada Lovelace wrote about the Analytical Engine in London."
        expected = build_analysis(text)
        calls = BodyCalls()

        spot = open_spot(tmp_path, blob_threshold=threshold)
        analyze = make_analyze(spot, calls)
        async with spot:
            original = await analyze(text)
            warm = await analyze(text)
        second = open_spot(tmp_path, blob_threshold=threshold)
        async with second:
            reread = await make_analyze(second, calls)(text)
        assert calls.count == 1, "a hit ran the body"

        for result in (original, warm, reread):
            assert type(result) is Analysis
            assert result == expected
            assert shape(result) == shape(expected)
            assert type(result.sentiment) is Sentiment
            assert all(type(entity) is Entity for entity in result.entities)
            assert type(result.summary) is Summary
            assert type(result.entities[0].span) is Span
            assert result.entities[1].span is None
            assert result.entities[2].first_mentioned.utcoffset() == dt.timedelta(hours=-5)

        report = await anyio.to_thread.run_sync(
            run_typed_worker,
            TypedConfig(
                task="analyze",
                workdir=str(tmp_path),
                argument=text,
                loop=anyio_backend,
                blob_threshold=threshold,
            ),
        )
        assert report["body_calls"] == 0
        assert report["type"] == qualified(Analysis)
        assert report["equal_to_local"] is True
        assert report["shape"] == shape(expected)
        assert report["dump"] == expected.model_dump(mode="json")

    async def test_containers_of_models(self, tmp_path: Path, anyio_backend: str) -> None:
        """``list[Analysis]``, ``Optional[Analysis]`` and ``dict[str, Entity]`` annotations."""
        calls = BodyCalls()

        def mark_all(spot: bs.Spot) -> tuple[Any, Any, Any]:
            @spot.mark(name="tests.typed_sdk.analyze_many")
            async def analyze_many(texts: tuple[str, ...]) -> list[Analysis]:
                calls.count += 1
                return [build_analysis(text) for text in texts]

            @spot.mark(name="tests.typed_sdk.maybe_analyze")
            async def maybe_analyze(text: str) -> Optional[Analysis]:  # noqa: UP045
                calls.count += 1
                return build_analysis(text) if text else None

            @spot.mark(name="tests.typed_sdk.entities_by_name")
            async def entities_by_name(text: str) -> dict[str, Entity]:
                calls.count += 1
                return {entity.name: entity for entity in build_analysis(text).entities}

            return analyze_many, maybe_analyze, entities_by_name

        texts = ("first text", "second text")
        expected_many = [build_analysis(text) for text in texts]
        expected_entities = {e.name: e for e in build_analysis("x").entities}
        for _ in range(2):  # a miss then a hit through a second Spot over the same files
            spot = open_spot(tmp_path)
            analyze_many, maybe_analyze, entities_by_name = mark_all(spot)
            async with spot:
                many = await analyze_many(texts)
                some = await maybe_analyze("a text")
                none = await maybe_analyze("")
                entities = await entities_by_name("x")
            assert type(many) is list
            assert many == expected_many
            assert shape(many) == shape(expected_many)
            assert type(some) is Analysis
            assert some == build_analysis("a text")
            assert none is None
            assert entities == expected_entities
            assert shape(entities) == shape(expected_entities)
        assert calls.count == 4, "a hit ran a body"
