"""Batch LLM calls with ``spot.map``: rate-limited, retried, and paid for once.

Run it twice: the first run asks every prompt, the second asks none (every
answer comes from the cache), and an interrupted run resumes where it stopped::

    python examples/llm_batch.py --n 200 --dir ./llm-cache
    python examples/llm_batch.py --n 200 --dir ./llm-cache   # 0 executed

Without ``OPENAI_BASE_URL`` it starts the mock OpenAI-compatible server of
``examples/mock_llm_server.py`` in-process (rate limits answered with 429 +
``Retry-After``, 2 % of requests answered 500), so it needs no account. With
``OPENAI_BASE_URL`` (and ``OPENAI_API_KEY``) it talks to that endpoint.

What each piece does:

- ``bs.Spot(..., rpm=, tpm=)``: the client-side budget. ``@spot.limiter(cost=)``
  books an estimate of the tokens before each request; ``@spot.mark(usage=)``
  reads the actual ``usage.total_tokens`` afterwards and corrects the booking;
  the report sums it over executed calls (spent) and hits (saved).
- ``AsyncOpenAI(max_retries=0)``: ``spot.map`` owns retries, so a 429's
  ``Retry-After`` pauses every caller of the Spot instead of one request.
- ``spot.map``: runs the misses ``--concurrency`` at a time; cache hits never
  reach the limiter or the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

import beautyspot_async as bs

MODEL = "gpt-4o-mini"
#: The answer's length cap; it is what the limiter books up front.
MAX_TOKENS = 32


def estimated_tokens(prompt: str) -> int:
    """What a request costs before we know the answer: prompt tokens plus the cap.

    Words + 4 is a rough stand-in for a tokenizer (tiktoken, in real use).
    """
    return len(prompt.split()) + 4 + MAX_TOKENS


def make_ask(spot: bs.Spot, client: AsyncOpenAI) -> Callable[[str], Awaitable[ChatCompletion]]:
    """The cached, rate-limited LLM call.

    Built here rather than at module level because the client's address is
    only known once the mock server has started; the explicit ``name=`` keeps
    the cache key independent of where the function is defined.
    """

    @spot.mark(name="llm_batch.ask", usage=lambda r: r.usage.total_tokens)
    @spot.limiter(cost=estimated_tokens)
    async def ask(prompt: str) -> ChatCompletion:
        return await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS,
        )

    return ask


def prompts(n: int) -> list[str]:
    return [f"Summarize support ticket #{i:05d} in one sentence." for i in range(n)]


class Progress:
    """Prints the batch's progress to stderr every 10 % (``progress=True`` draws a live line)."""

    def __init__(self, total: int) -> None:
        self.step = max(1, total // 10)
        self.next = self.step

    def __call__(self, p: bs.MapProgress) -> None:
        if p.done >= self.next:
            self.next = p.done + self.step
            print(
                f"  {p.done}/{p.total}: {p.hits} cached, {p.executed} executed, "
                f"{p.failed} failed, {p.retrying} retrying",
                file=sys.stderr,
                flush=True,
            )


async def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    with contextlib.ExitStack() as stack:
        base_url = os.environ.get("OPENAI_BASE_URL")
        server = None
        if not base_url:
            from mock_llm_server import LLMServer  # next to this script

            server = stack.enter_context(
                LLMServer(rpm=args.rpm, tpm=args.tpm, fail_rate=args.fail_rate).running()
            )
            base_url = server.base_url
            print(f"mock server on {base_url} (fail rate {args.fail_rate:.0%})")
        client = AsyncOpenAI(
            base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "test"), max_retries=0
        )
        spot = bs.Spot(
            "llm-batch",
            db=str(directory / "llm-batch.db"),
            storage=str(directory / "llm-batch-blobs"),
            rpm=args.rpm,
            tpm=args.tpm,
        )
        ask = make_ask(spot, client)
        items = prompts(args.n)
        async with spot:
            report = await spot.map(
                ask, items, concurrency=args.concurrency, progress=Progress(len(items))
            )
        await client.close()

        first = report.results[0]
        if not isinstance(first, bs.Failure):
            print(f"{items[0]!r} -> {first.choices[0].message.content!r}")
        print(
            f"{len(items)} prompts: {report.hits} hits, {report.executed} executed, "
            f"{report.failed} failed, {report.retried} retried; "
            f"usage spent {report.usage_spent:g} tokens, saved {report.usage_saved:g}; "
            f"{report.elapsed:.2f} s"
        )
        if server is not None:
            stats = server.stats()
            print(
                f"server: {stats['requests']} requests, {stats['rate_limited']} answered 429, "
                f"{stats['failed']} answered 500"
            )
        for failure in report.failures:
            print(f"failed for good: {failure.item!r}: {failure.exception!r}", file=sys.stderr)
    # Failures are recorded, not cached: the next run retries only those.
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200, help="prompts to ask (default 200)")
    parser.add_argument("--dir", default=".", help="where the cache lives (default: here)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rpm", type=float, default=6_000, help="requests per minute")
    parser.add_argument("--tpm", type=float, default=1_000_000, help="tokens per minute")
    parser.add_argument(
        "--fail-rate", type=float, default=0.02, help="share of mock requests answered 500"
    )
    args = parser.parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
