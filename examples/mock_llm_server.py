"""A local OpenAI-compatible endpoint: Starlette served by uvicorn on loopback.

The real ``openai`` SDK talks to it over real HTTP, so nothing is patched. It
serves ``POST /v1/chat/completions`` with one realistic, deterministic
``ChatCompletion`` per request (the answer depends on the prompt only) and
behaves like a rate-limited, slightly flaky provider when asked to:

- ``rpm`` / ``tpm``: requests and tokens per minute, enforced over a sliding
  ``window`` (60 s by default). A request's tokens are its prompt tokens plus
  ``max_completion_tokens`` / ``max_tokens`` when given, else the completion's
  tokens. Over the limit it answers 429 with ``Retry-After`` (whole seconds,
  rounded up), ``retry-after-ms`` and OpenAI's error body. A shorter window
  keeps the same per-minute rates but lets a test see 429s in seconds.
- ``fail_rate``: the share of admitted requests answered 500, drawn from a
  RNG seeded with ``seed`` so a run is reproducible.

It counts every request per prompt (the last message's content), and the
429s and 500s per prompt; ``GET /stats`` returns the totals as JSON.

Standalone::

    python examples/mock_llm_server.py --port 8765 --rpm 600 --tpm 100000 --fail-rate 0.02
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 python examples/llm_batch.py

In-process (tests and ``llm_batch.py``), on a free port in a thread::

    with LLMServer(rpm=600).running() as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)

Needs ``starlette`` and ``uvicorn`` (the ``dashboard`` extra: ``pip install -e ".[dashboard]"``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "LLMServer",
    "SlidingWindow",
    "answer_text",
    "chat_completion",
    "prompt_of",
    "prompt_tokens",
]

#: The ``created`` timestamp of every completion: answers must be reproducible.
CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z
SYSTEM_FINGERPRINT = "fp_test_0001"
DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
#: Upper bound for the server to start or stop.
STARTUP_TIMEOUT = 30.0


def answer_text(prompt: str) -> str:
    """The assistant's reply to ``prompt`` (deterministic, so tests can predict it)."""
    return f"Echo: {prompt}"


def prompt_of(body: dict[str, Any]) -> str:
    """The prompt a request is counted under: its last message's content."""
    messages = body.get("messages") or [{"content": ""}]
    return str(messages[-1].get("content", ""))


def prompt_tokens(body: dict[str, Any]) -> int:
    """Tokens of the request's messages, roughly: words plus four per message."""
    messages = body.get("messages") or [{"content": ""}]
    return sum(len(str(m.get("content", "")).split()) + 4 for m in messages)


def chat_completion_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer: a word each, then usage.

    The last chunk has no choices and carries the usage, as OpenAI sends
    with ``stream_options={"include_usage": True}`` (sent here always).
    """
    whole = chat_completion(body)
    base = {
        "id": whole["id"],
        "object": "chat.completion.chunk",
        "created": whole["created"],
        "model": whole["model"],
        "system_fingerprint": whole["system_fingerprint"],
    }
    words = whole["choices"][0]["message"]["content"].split(" ")
    chunks = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""}
                    if i == 0
                    else {"content": (" " if i > 1 else "") + words[i - 1]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        for i in range(len(words) + 1)
    ]
    chunks.append(
        {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    )
    chunks.append({**base, "choices": [], "usage": whole["usage"]})
    return chunks


async def _sse(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def chat_completion(body: dict[str, Any], *, vendor_extras: bool = False) -> dict[str, Any]:
    """The JSON of a non-streaming chat completion answering ``body``'s last message.

    ``vendor_extras`` adds the fields an OpenAI-compatible server such as vLLM
    sends beyond OpenAI's schema (the SDK's models keep them as extras).
    """
    prompt = prompt_of(body)
    content = answer_text(prompt)
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    n_prompt = prompt_tokens(body)
    n_completion = len(content.split())
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": CREATED,
        "model": str(body.get("model", DEFAULT_MODEL)),
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": n_prompt,
            "completion_tokens": n_completion,
            "total_tokens": n_prompt + n_completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if vendor_extras:
        completion["prompt_logprobs"] = None
        completion["kv_transfer_params"] = {"do_remote_decode": False, "tokens": [1, 2, 3]}
        choice = completion["choices"][0]
        choice["stop_reason"] = None
        choice["message"]["reasoning_content"] = "The user wants an echo."
    return completion


def billed_tokens(body: dict[str, Any], completion: dict[str, Any]) -> int:
    """What a request counts against ``tpm``.

    A provider books the requested maximum up front, since it cannot know the
    answer's length before generating it; without one, the actual length.
    """
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return prompt_tokens(body) + limit
    return int(completion["usage"]["total_tokens"])


class SlidingWindow:
    """Requests and tokens admitted over the last ``window`` seconds (pure: time is passed in).

    ``max_requests`` and ``max_tokens`` are per window; None means no limit.
    """

    def __init__(self, window: float, max_requests: float | None, max_tokens: float | None) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        self.window = window
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self._entries: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0][0] <= now - self.window:
            self._tokens -= self._entries.popleft()[1]

    def usage(self, now: float) -> tuple[int, int]:
        """``(requests, tokens)`` admitted in the window ending at ``now``."""
        self._expire(now)
        return len(self._entries), self._tokens

    def wait(self, now: float, tokens: int) -> float:
        """Seconds until a request of ``tokens`` fits: 0 if it fits now, inf if it never will."""
        self._expire(now)
        if self.max_tokens is not None and tokens > self.max_tokens:
            return math.inf
        # The request fits once enough of the oldest entries have left the window;
        # the last of them to leave decides the wait.
        leave = 0
        if self.max_requests is not None:
            leave = max(leave, len(self._entries) + 1 - math.floor(self.max_requests))
        if self.max_tokens is not None:
            excess = self._tokens + tokens - self.max_tokens
            if excess > 0:
                freed = 0
                for count, (_, size) in enumerate(self._entries, start=1):
                    freed += size
                    if freed >= excess:
                        leave = max(leave, count)
                        break
        if leave <= 0:
            return 0.0
        (oldest_left, _) = next(itertools.islice(self._entries, leave - 1, None))
        return max(oldest_left + self.window - now, 0.0)

    def admit(self, now: float, tokens: int) -> float:
        """Record the request and return 0.0 if it fits, else the wait (nothing recorded)."""
        wait = self.wait(now, tokens)
        if wait == 0.0:
            self._entries.append((now, tokens))
            self._tokens += tokens
        return wait


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class LLMServer:
    """The mock endpoint: the app, its counters, and a uvicorn thread to serve it.

    ``rpm`` / ``tpm`` are per minute whatever ``window`` is: a 1 s window
    admits ``rpm / 60`` requests in any second. ``clock`` (monotonic seconds)
    drives the window, so a test can control it.
    """

    def __init__(
        self,
        *,
        vendor_extras: bool = False,
        rpm: float | None = None,
        tpm: float | None = None,
        window: float = 60.0,
        fail_rate: float = 0.0,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be within [0, 1], got {fail_rate!r}")
        self.vendor_extras = vendor_extras
        self.rpm = rpm
        self.tpm = tpm
        self.fail_rate = fail_rate
        self.clock = clock
        scale = window / 60.0
        self._window = SlidingWindow(
            window,
            None if rpm is None else rpm * scale,
            None if tpm is None else tpm * scale,
        )
        self._rng = random.Random(seed)
        #: Every request body, in arrival order.
        self.requests: list[dict[str, Any]] = []
        #: Requests per prompt, whatever the answer.
        self.prompt_requests: Counter[str] = Counter()
        #: 429s per prompt.
        self.prompt_rate_limited: Counter[str] = Counter()
        #: 500s per prompt.
        self.prompt_failed: Counter[str] = Counter()
        #: ``usage.total_tokens`` summed over the completions answered 200.
        self.tokens_served = 0
        # The app runs on uvicorn's thread, tests read from theirs.
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/stats", self._stats, methods=["GET"]),
            ]
        )
        self.port = 0

    @property
    def base_url(self) -> str:
        """What ``AsyncOpenAI(base_url=...)`` takes."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def rate_limited(self) -> int:
        """429s sent."""
        with self._lock:
            return self.prompt_rate_limited.total()

    @property
    def failed(self) -> int:
        """500s sent."""
        with self._lock:
            return self.prompt_failed.total()

    @property
    def succeeded(self) -> int:
        """Completions sent (200)."""
        with self._lock:
            return (
                self.prompt_requests.total()
                - self.prompt_rate_limited.total()
                - self.prompt_failed.total()
            )

    def stats(self) -> dict[str, int]:
        """The totals as one consistent snapshot."""
        with self._lock:
            requests = len(self.requests)
            limited = self.prompt_rate_limited.total()
            failed = self.prompt_failed.total()
            return {
                "requests": requests,
                "prompts": len(self.prompt_requests),
                "succeeded": requests - limited - failed,
                "rate_limited": limited,
                "failed": failed,
                "tokens_served": self.tokens_served,
            }

    def _rate_headers(self, now: float) -> dict[str, str]:
        requests, tokens = self._window.usage(now)
        headers: dict[str, str] = {}
        if self.rpm is not None:
            limit = self._window.max_requests or 0
            headers["x-ratelimit-limit-requests"] = str(int(self.rpm))
            headers["x-ratelimit-remaining-requests"] = str(max(0, int(limit) - requests))
        if self.tpm is not None:
            limit = self._window.max_tokens or 0
            headers["x-ratelimit-limit-tokens"] = str(int(self.tpm))
            headers["x-ratelimit-remaining-tokens"] = str(max(0, int(limit) - tokens))
        return headers

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        if body.get("stream"):
            with self._lock:
                self.requests.append(body)
                self.prompt_requests[prompt_of(body)] += 1
            return StreamingResponse(
                _sse(chat_completion_chunks(body)), media_type="text/event-stream"
            )
        prompt = prompt_of(body)
        completion = chat_completion(body, vendor_extras=self.vendor_extras)
        tokens = billed_tokens(body, completion)
        with self._lock:
            self.requests.append(body)
            self.prompt_requests[prompt] += 1
            now = self.clock()
            wait = self._window.admit(now, tokens)
            failed = wait == 0.0 and self._rng.random() < self.fail_rate
            if wait > 0.0:
                self.prompt_rate_limited[prompt] += 1
            elif failed:
                self.prompt_failed[prompt] += 1
            else:
                self.tokens_served += int(completion["usage"]["total_tokens"])
            headers = self._rate_headers(now)
        if wait > 0.0:
            return self._too_many(body, tokens, wait, headers)
        if failed:
            message = "The server had an error while processing your request. Sorry about that!"
            return JSONResponse(
                _error(message, "server_error", None), status_code=500, headers=headers
            )
        return JSONResponse(completion, headers=headers)

    def _too_many(
        self, body: dict[str, Any], tokens: int, wait: float, headers: dict[str, str]
    ) -> JSONResponse:
        model = str(body.get("model", DEFAULT_MODEL))
        if math.isinf(wait):
            # As OpenAI does: a 429 that no wait cures, so no Retry-After.
            message = (
                f"Request too large for {model} on tokens per min (TPM): "
                f"Limit {self.tpm:g}, Requested {tokens}."
            )
            return JSONResponse(
                _error(message, "tokens", "rate_limit_exceeded"), status_code=429, headers=headers
            )
        millis = math.ceil(wait * 1000)
        message = (
            f"Rate limit reached for {model} in organization org-mock. "
            f"Please try again in {millis}ms."
        )
        headers = {
            **headers,
            "retry-after": str(math.ceil(wait)),
            "retry-after-ms": str(millis),
        }
        return JSONResponse(
            _error(message, "requests", "rate_limit_exceeded"), status_code=429, headers=headers
        )

    async def _stats(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats())

    @contextlib.contextmanager
    def running(self) -> Iterator[LLMServer]:
        """Serve on a free loopback port in a background thread until the block ends."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        server = uvicorn.Server(config)
        # Off the main thread uvicorn installs no signal handlers.
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="llm-server", daemon=True
        )
        thread.start()
        try:
            pause = threading.Event()
            for _ in range(int(STARTUP_TIMEOUT / 0.01)):
                if server.started or not thread.is_alive():
                    break
                pause.wait(0.01)
            if not server.started:
                raise RuntimeError("the mock LLM server did not start")
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=STARTUP_TIMEOUT)
            sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute")
    parser.add_argument("--tpm", type=float, default=None, help="tokens per minute")
    parser.add_argument("--window", type=float, default=60.0, help="sliding window, seconds")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share answered 500")
    parser.add_argument("--seed", type=int, default=0, help="seed of the failure draws")
    parser.add_argument("--vendor-extras", action="store_true", help="add vLLM-style fields")
    args = parser.parse_args(argv)
    server = LLMServer(
        vendor_extras=args.vendor_extras,
        rpm=args.rpm,
        tpm=args.tpm,
        window=args.window,
        fail_rate=args.fail_rate,
        seed=args.seed,
    )
    print(f"mock LLM server on http://{args.host}:{args.port}/v1 (stats: GET /stats)", flush=True)
    uvicorn.run(server.app, host=args.host, port=args.port, log_level="warning", lifespan="off")
    print(server.stats())


if __name__ == "__main__":
    main()
