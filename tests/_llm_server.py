"""A local OpenAI-compatible endpoint for tests: Starlette served by uvicorn on loopback.

The real ``openai`` SDK talks to it over real HTTP, so nothing is patched.
Today it serves ``POST /v1/chat/completions`` with one realistic, deterministic
``ChatCompletion`` per request (the answer depends on the prompt only) and
counts the requests; ``LLMServer(vendor_extras=True)`` adds fields beyond
OpenAI's schema, as OpenAI-compatible servers (vLLM) do. Streaming (SSE) and
rate limiting (429) will be added here as further routes or options of
:class:`LLMServer`.

Register the fixture in a test module by assignment (``llm_server =
_llm_server.llm_server``), or use :meth:`LLMServer.running` directly::

    with LLMServer().running() as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test")
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests._services import require_module

require_module("starlette", extra="dashboard")
require_module("uvicorn", extra="dashboard")

import uvicorn  # noqa: E402  (after the skip above)
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

#: The ``created`` timestamp of every completion: answers must be reproducible.
CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z
SYSTEM_FINGERPRINT = "fp_test_0001"
#: Upper bound for the server to start or stop.
STARTUP_TIMEOUT = 30.0


def answer_text(prompt: str) -> str:
    """The assistant's reply to ``prompt`` (deterministic, so tests can predict it)."""
    return f"Echo: {prompt}"


def chat_completion(body: dict[str, Any], *, vendor_extras: bool = False) -> dict[str, Any]:
    """The JSON of a non-streaming chat completion answering ``body``'s last message.

    ``vendor_extras`` adds the fields an OpenAI-compatible server such as vLLM
    sends beyond OpenAI's schema (the SDK's models keep them as extras).
    """
    messages = body.get("messages") or [{"content": ""}]
    prompt = str(messages[-1].get("content", ""))
    content = answer_text(prompt)
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    prompt_tokens = sum(len(str(m.get("content", "")).split()) + 4 for m in messages)
    completion_tokens = len(content.split())
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": CREATED,
        "model": str(body.get("model", "gpt-4o-mini-2024-07-18")),
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
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
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


class LLMServer:
    """The mock endpoint: the app, the request log, and a uvicorn thread to serve it."""

    def __init__(self, *, vendor_extras: bool = False) -> None:
        self.vendor_extras = vendor_extras
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self.port = 0

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def base_url(self) -> str:
        """What ``AsyncOpenAI(base_url=...)`` takes."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
        if body.get("stream"):
            return JSONResponse(
                {"error": {"message": "streaming is not served yet", "type": "invalid_request"}},
                status_code=400,
            )
        return JSONResponse(chat_completion(body, vendor_extras=self.vendor_extras))

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
            deadline = threading.Event()
            for _ in range(int(STARTUP_TIMEOUT / 0.01)):
                if server.started or not thread.is_alive():
                    break
                deadline.wait(0.01)
            if not server.started:
                raise RuntimeError("the mock LLM server did not start")
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=STARTUP_TIMEOUT)
            sock.close()


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LLMServer]:
    """One mock endpoint per test module; tests read ``request_count`` before and after."""
    with LLMServer().running() as server:
        yield server
