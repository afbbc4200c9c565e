"""The mock OpenAI-compatible endpoint for tests: ``examples/mock_llm_server.py``.

One implementation serves the tests and the examples; this module loads it
by path (``examples/`` is not a package) and adds the pytest fixture. See the
example's docstring for what the server does (realistic ``ChatCompletion``
JSON, RPM/TPM limits answered with 429 + ``Retry-After``, seeded 500s,
counters per prompt).

Register the fixture in a test module by assignment (``llm_server =
_llm_server.llm_server``), or use :meth:`LLMServer.running` directly::

    with LLMServer(rpm=600, fail_rate=0.02).running() as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests._services import require_module

require_module("starlette", extra="dashboard")
require_module("uvicorn", extra="dashboard")

#: Where the implementation lives, and the name it is imported under (the
#: example scripts import it by this name too, from their own directory).
SOURCE = Path(__file__).resolve().parent.parent / "examples" / "mock_llm_server.py"
MODULE = "mock_llm_server"


def _load() -> ModuleType:
    module = sys.modules.get(MODULE)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(MODULE, SOURCE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {SOURCE}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: postponed annotations resolve through sys.modules.
    sys.modules[MODULE] = module
    spec.loader.exec_module(module)
    return module


_server = _load()

LLMServer = _server.LLMServer
SlidingWindow = _server.SlidingWindow
answer_text = _server.answer_text
chat_completion = _server.chat_completion
prompt_of = _server.prompt_of
prompt_tokens = _server.prompt_tokens


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LLMServer]:
    """One mock endpoint per test module; tests read ``request_count`` before and after."""
    with LLMServer().running() as server:
        yield server
