"""``spot.map`` against a rate-limited, flaky OpenAI-compatible server, through the real SDK.

* :class:`TestMockServer`: the mock (``examples/mock_llm_server.py``) behaves
  like a provider: RPM and TPM over a sliding window answered with 429,
  ``Retry-After`` / ``retry-after-ms`` and OpenAI's error body, which the SDK
  turns into ``RateLimitError``; seeded 500s; counters per prompt. Its clock
  is a fake one, so the waits are exact.
* :class:`TestMapOverLLM`: 2 000 prompts through ``spot.map`` with the SDK's
  own retries off (``max_retries=0``). The client's limiter is set faster
  than the server's limit, so the server answers 429s, and 2 % of requests
  answer 500; the runner retries both until every prompt has its answer.
  The server's counters prove each prompt was paid for once, and a rerun
  sends nothing.

asyncio only: what is tested is the SDK-level behaviour, and the SDK's
transport runs the same under trio (see ``test_typed_sdk.py``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import beautyspot_async as bs

from ._services import require_module

require_module("openai", extra="dev")

import openai  # noqa: E402  (after the skip above)
from openai import AsyncOpenAI  # noqa: E402
from openai.types.chat import ChatCompletion  # noqa: E402

from tests._llm_server import LLMServer, SlidingWindow, answer_text  # noqa: E402

pytestmark = pytest.mark.anyio

MODEL = "gpt-4o-mini-2024-07-18"
MAX_TOKENS = 16


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


async def ask_raw(client: AsyncOpenAI, prompt: str, **extra: Any) -> ChatCompletion:
    return await client.chat.completions.create(
        model=MODEL,
        messages=messages(prompt),
        **extra,
    )


def sdk(server: LLMServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)


class TestSlidingWindow:
    """The window admits up to its limits and says how long until the next request fits."""

    def test_requests_wait_for_the_oldest_to_leave(self) -> None:
        window = SlidingWindow(60.0, max_requests=2, max_tokens=None)
        assert window.admit(0.0, 1) == 0.0
        assert window.admit(10.0, 1) == 0.0
        assert window.admit(15.0, 1) == 45.0  # the one at 0.0 leaves at 60.0
        assert window.usage(15.0) == (2, 2), "a refused request is not recorded"
        assert window.admit(60.0, 1) == 0.0

    def test_tokens_wait_until_enough_have_left(self) -> None:
        window = SlidingWindow(60.0, max_requests=None, max_tokens=100)
        for t, tokens in ((0.0, 40), (5.0, 40), (10.0, 10)):
            assert window.admit(t, tokens) == 0.0
        # 90 in the window; 50 more fits once 40 have left (at 60), not sooner.
        assert window.wait(20.0, 50) == 40.0
        # 80 more needs both 40s gone: the second leaves at 65.
        assert window.wait(20.0, 80) == 45.0
        assert window.wait(20.0, 10) == 0.0

    def test_a_request_larger_than_the_limit_never_fits(self) -> None:
        window = SlidingWindow(60.0, max_requests=None, max_tokens=100)
        assert window.wait(0.0, 101) == math.inf


class TestMockServer:
    """The mock answers like a rate-limited provider, and the SDK reads it as one."""

    async def test_over_rpm_is_a_429_with_retry_after(self) -> None:
        clock = FakeClock()
        with LLMServer(rpm=2, clock=clock).running() as server:
            client = sdk(server)
            for prompt in ("a", "b"):
                reply = await ask_raw(client, prompt)
                assert reply.choices[0].message.content == answer_text(prompt)
            clock.now += 1.5
            with pytest.raises(openai.RateLimitError) as caught:
                await ask_raw(client, "c")
            headers = caught.value.response.headers
            assert headers["retry-after-ms"] == "58500"
            assert headers["retry-after"] == "59"  # whole seconds, rounded up
            assert caught.value.code == "rate_limit_exceeded"
            assert "Please try again in 58500ms" in caught.value.message
            assert caught.value.status_code == 429
            clock.now += 58.5
            await ask_raw(client, "c")
            await client.close()
        assert server.prompt_requests == {"a": 1, "b": 1, "c": 2}
        assert server.prompt_rate_limited == {"c": 1}
        assert server.stats() == {
            "requests": 4,
            "prompts": 3,
            "succeeded": 3,
            "rate_limited": 1,
            "failed": 0,
            # prompt: 1 word + 4; completion: the echo's words
            "tokens_served": sum(5 + len(answer_text(p).split()) for p in "abc"),
        }

    async def test_tpm_books_max_tokens(self) -> None:
        clock = FakeClock()
        # One word + 4 = 5 prompt tokens; with max_tokens=16 a request books 21.
        with LLMServer(tpm=50, clock=clock).running() as server:
            client = sdk(server)
            await ask_raw(client, "one", max_tokens=MAX_TOKENS)
            await ask_raw(client, "two", max_tokens=MAX_TOKENS)
            with pytest.raises(openai.RateLimitError) as caught:
                await ask_raw(client, "three", max_tokens=MAX_TOKENS)
            assert caught.value.response.headers["retry-after"] == "60"
            # Without max_tokens the completion's own length counts (5 + 2).
            await ask_raw(client, "four")
            await client.close()
        assert server.rate_limited == 1

    async def test_a_request_too_large_for_tpm_has_no_retry_after(self) -> None:
        with LLMServer(tpm=10).running() as server:
            client = sdk(server)
            with pytest.raises(openai.RateLimitError) as caught:
                await ask_raw(client, "hello", max_tokens=MAX_TOKENS)
            await client.close()
        assert "Request too large" in caught.value.message
        assert "retry-after" not in caught.value.response.headers

    async def test_failures_are_500s_drawn_from_a_seeded_rng(self) -> None:
        async def statuses(seed: int) -> list[int]:
            with LLMServer(fail_rate=0.5, seed=seed).running() as server:
                client = sdk(server)
                seen = []
                for i in range(20):
                    try:
                        await ask_raw(client, f"p{i}")
                    except openai.InternalServerError as exc:
                        seen.append(exc.status_code)
                    else:
                        seen.append(200)
                await client.close()
            assert server.failed == seen.count(500)
            assert server.prompt_failed == {f"p{i}": 1 for i, s in enumerate(seen) if s == 500}
            return seen

        first = await statuses(7)
        assert first == await statuses(7), "the same seed fails the same requests"
        assert set(first) == {200, 500}


# -- spot.map over 2 000 prompts ------------------------------------------------------------

N = 2_000
#: The server admits 120 requests in any second; the client's limiter would
#: send 200, so the server has to push back with 429s. The TPM limit is
#: enforced too, loose enough that RPM binds first.
SERVER = {"rpm": 7_200, "tpm": 240_000, "window": 1.0, "fail_rate": 0.02, "seed": 2026}
CLIENT_RPM = 12_000
CLIENT_TPM = 400_000
#: Generous: a prompt refused by the limit several times in a row is normal
#: under sustained 429s, and one that runs out of retries fails the test.
RETRIES = 10


def prompts() -> list[str]:
    return [f"Classify review {i:04d}: great value, would buy again." for i in range(N)]


def estimated_tokens(prompt: str) -> int:
    """What the mock books for a request: prompt tokens (words + 4) plus max_tokens."""
    return len(prompt.split()) + 4 + MAX_TOKENS


def make_ask(spot: bs.Spot, client: AsyncOpenAI) -> Callable[[str], Awaitable[ChatCompletion]]:
    @spot.mark(name="tests.batch_llm.ask", usage=lambda r: r.usage.total_tokens)
    @spot.limiter(cost=estimated_tokens)
    async def ask(prompt: str) -> ChatCompletion:
        return await ask_raw(client, prompt, max_tokens=MAX_TOKENS)

    return ask


def open_spot(tmp_path: Path) -> bs.Spot:
    return bs.Spot(
        "batch-llm",
        db=str(tmp_path / "batch.db"),
        storage=str(tmp_path / "blobs"),
        rpm=CLIENT_RPM,
        tpm=CLIENT_TPM,
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
class TestMapOverLLM:
    """Every prompt gets its answer, each paid for once, through 429s and 500s."""

    async def test_two_thousand_prompts_then_a_rerun(self, tmp_path: Path) -> None:
        items = prompts()
        with LLMServer(**SERVER).running() as server:
            client = sdk(server)
            spot = open_spot(tmp_path)
            async with spot:
                report = await spot.map(
                    make_ask(spot, client), items, concurrency=32, retries=RETRIES
                )
            stats = server.stats()

            assert report.failed == 0, report.failures[:3]
            assert list(report.failures) == []
            assert not report.stopped_early
            assert (report.hits, report.executed) == (0, N)
            for prompt, result in zip(items, report.results, strict=True):
                assert isinstance(result, ChatCompletion)
                assert result.choices[0].message.content == answer_text(prompt)

            # The server pushed back both ways, and the runner retried each push.
            assert stats["rate_limited"] > 0
            assert stats["failed"] > 0
            assert report.retried == stats["rate_limited"] + stats["failed"]
            # Each prompt was asked once, plus once more per 429 or 500 it got.
            assert set(server.prompt_requests) == set(items)
            for prompt in items:
                assert server.prompt_requests[prompt] == (
                    1 + server.prompt_rate_limited[prompt] + server.prompt_failed[prompt]
                ), prompt
            assert stats["succeeded"] == N
            # What the report spent is exactly what the server billed.
            assert report.usage_spent == stats["tokens_served"]
            assert report.usage_saved == 0

            # A rerun, in a new Spot over the same files: all hits, no request.
            before = server.request_count
            rerun_spot = open_spot(tmp_path)
            async with rerun_spot:
                rerun = await rerun_spot.map(
                    make_ask(rerun_spot, client), items, concurrency=32, retries=RETRIES
                )
            await client.close()
            assert server.request_count == before, "a rerun reached the server"
        assert (rerun.hits, rerun.executed, rerun.failed, rerun.retried) == (N, 0, 0, 0)
        assert rerun.usage_spent == 0
        assert rerun.usage_saved == stats["tokens_served"]
        assert [r.choices[0].message.content for r in rerun.results] == [
            answer_text(p) for p in items
        ]
