"""A real openai SDK stream (``stream=True``) cached and replayed as a stream."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import beautyspot_async as bs

from ._services import require_module

require_module("openai", extra="dev")

from openai import AsyncOpenAI  # noqa: E402  (after the skip above)
from openai.types.chat import ChatCompletionChunk  # noqa: E402

from tests import _llm_server  # noqa: E402
from tests._llm_server import LLMServer  # noqa: E402

pytestmark = pytest.mark.anyio
llm_server = _llm_server.llm_server


@pytest.fixture
def anyio_backend() -> str:
    # Under trio the SDK leaves its own SSE generators to the garbage
    # collector (ResourceWarnings from openai/httpx internals); our streams
    # run under trio in test_stream.py.
    return "asyncio"


ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import asyncio, sys
from collections.abc import AsyncIterator
from openai.types.chat import ChatCompletionChunk
import beautyspot_async as bs

async def main() -> None:
    async with bs.Spot("sse", db=sys.argv[1]) as spot:
        @spot.mark(name="stream_ask")
        async def ask(prompt: str) -> AsyncIterator[ChatCompletionChunk]:
            raise AssertionError("a fresh process must replay, not call the API")
            yield

        chunks = [c async for c in ask("Say hello")]
        assert all(type(c) is ChatCompletionChunk for c in chunks), chunks
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        print(text)
        print(chunks[-1].usage.total_tokens)

asyncio.run(main())
"""


async def test_openai_stream_is_cached_and_replayed(tmp_path: Path, llm_server: LLMServer) -> None:
    db = str(tmp_path / "sse.db")
    client = AsyncOpenAI(base_url=llm_server.base_url, api_key="sk", max_retries=0)
    async with client, bs.Spot("sse", db=db) as spot:

        @spot.mark(name="stream_ask", usage=lambda chunks: chunks[-1].usage.total_tokens)
        async def ask(prompt: str) -> AsyncIterator[ChatCompletionChunk]:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": prompt}],
                stream=True,
            )
            async for chunk in stream:
                yield chunk

        before = llm_server.stats()["requests"]
        live = [c async for c in ask("Say hello")]
        again = [c async for c in ask("Say hello")]
        assert llm_server.stats()["requests"] == before + 1
    assert [c.model_dump() for c in again] == [c.model_dump() for c in live]
    text = "".join(c.choices[0].delta.content or "" for c in live if c.choices)
    assert text
    out = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-c", WORKER, db],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    )
    assert out.returncode == 0, out.stderr
    replayed_text, tokens = out.stdout.strip().splitlines()
    assert replayed_text == text
    assert int(tokens) == live[-1].usage.total_tokens  # type: ignore[union-attr]
    assert llm_server.stats()["requests"] == before + 1
