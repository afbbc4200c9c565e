"""The examples run as users run them: as scripts, in a fresh process, against local services.

``all_in_one_pipeline.py`` gets a unique Redis prefix, a unique bucket on the
test's moto server and its own log directory; it runs twice, and the second
run (a new process with an empty memory) must find everything in Redis and
S3. Without ``AWS_ENDPOINT_URL`` it starts a local S3 by itself.

``llm_batch.py`` starts its mock OpenAI-compatible server in-process (no
``OPENAI_BASE_URL``), asks 200 prompts through ``spot.map``, and its second
run (a new process, a new server) must send no request at all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests import _moto
from tests._services import REDIS_URL, require_module
from tests.workers import _fixtures
from tests.workers._fixtures import S3Target

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # runs scripts in processes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PIPELINE = EXAMPLES / "all_in_one_pipeline.py"
QUICKSTART = EXAMPLES / "quickstart.py"
SEED_QUICKSTART = EXAMPLES / "seed_quickstart.py"
LLM_BATCH = EXAMPLES / "llm_batch.py"
TIMEOUT = 120

moto_endpoint = _moto.moto_endpoint
s3 = _fixtures.s3


#: Settings of the developer's environment that would redirect the examples.
UNSET = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "BEAUTYSPOT_DB",
    "BEAUTYSPOT_STORAGE",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
)


def run_example(script: Path, *, env: dict[str, str], cwd: Path, args: Sequence[str] = ()) -> str:
    """Run ``script args`` with ``env`` over a cleaned copy of ours; return its stdout.

    A failed run fails the test with the script's stderr.
    """
    base = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith("PIPELINE_")}
    completed = subprocess.run(
        [sys.executable, str(script), *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, f"{script.name} failed:\n{completed.stderr[-4000:]}"
    return completed.stdout


@pytest.fixture
def namespace() -> Iterator[str]:
    """A unique Redis key prefix for the pipeline; deleted afterwards."""
    _fixtures.require("Redis", REDIS_URL, 6379)
    name = f"bs-example-{uuid.uuid4().hex[:12]}"
    yield name
    _fixtures.delete_redis_prefix(name)


def pass_line(output: str, label: str) -> tuple[int, int]:
    """``(executed, cached)`` of the line the example prints for ``label``."""
    match = re.search(rf"^{re.escape(label)}: (\d+) executed, (\d+) cached", output, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{output}"
    return int(match[1]), int(match[2])


@pytest.mark.services
class TestAllInOnePipeline:
    """The pipeline caches in Redis + S3 and re-runs only what changed."""

    def test_two_runs_against_redis_and_s3(
        self, tmp_path: Path, namespace: str, s3: S3Target
    ) -> None:
        env = {
            **s3.env,
            "BEAUTYSPOT_DB": REDIS_URL,
            "BEAUTYSPOT_STORAGE": f"s3://{s3.bucket}/pipeline",
            "PIPELINE_NAMESPACE": namespace,
            "PIPELINE_LOG_DIR": str(tmp_path / "logs"),
        }
        first = run_example(PIPELINE, env=env, cwd=tmp_path)
        assert pass_line(first, "pass 1") == (6, 0)
        assert pass_line(first, "pass 2") == (0, 6)
        assert pass_line(first, "pass 3 (after editing app-03.log)") == (1, 5)
        assert "  executed: app-03.log\n" in first
        assert "app-01.log: score 0.6 (10 lines, 4 errors)" in first
        assert "app-03.log: 31 lines, 7 errors" in first
        # Six first results plus the edited file's new one, all in the bucket.
        assert s3.object_count() == 7
        assert "the cache holds 7 analyses, 7 as blobs" in first

        second = run_example(PIPELINE, env=env, cwd=tmp_path)
        # A new process: every answer of its first pass came from Redis + S3.
        assert pass_line(second, "pass 1") == (0, 6)
        assert "app-03.log: score 0.774 (31 lines, 7 errors)" in second
        assert pass_line(second, "pass 3 (after editing app-03.log)") == (1, 5)
        assert s3.object_count() == 8
        # Nothing was written next to the script's working directory.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]

    def test_starts_its_own_local_s3_without_an_endpoint(
        self, tmp_path: Path, namespace: str
    ) -> None:
        env = {"BEAUTYSPOT_DB": REDIS_URL, "PIPELINE_NAMESPACE": namespace}
        output = run_example(PIPELINE, env=env, cwd=tmp_path)
        assert "local S3 started on http://127.0.0.1:" in output
        assert pass_line(output, "pass 1") == (6, 0)
        assert pass_line(output, "pass 2") == (0, 6)


@pytest.mark.skipif(not QUICKSTART.exists(), reason="examples/quickstart.py is not written yet")
class TestQuickstart:
    """The quick start runs as written, and its second run executes nothing."""

    def test_second_run_is_served_from_the_database(self, tmp_path: Path) -> None:
        first = run_example(QUICKSTART, env={}, cwd=tmp_path)
        assert first.splitlines()[0].startswith("{'doc': 'the quick brown fox'")
        assert (tmp_path / "my_experiment.db").exists()
        timing = re.search(r"^4 results in ([0-9.]+)s", first, re.MULTILINE)
        assert timing, first
        assert float(timing[1]) >= 1.0  # three distinct docs, one second each, concurrently

        second = run_example(QUICKSTART, env={}, cwd=tmp_path)
        assert second.splitlines()[:4] == first.splitlines()[:4]
        match = re.search(r"^4 results in ([0-9.]+)s", second, re.MULTILINE)
        assert match, second
        assert float(match[1]) < 0.5  # the calls alone: nothing executes

    def test_seed_quickstart_runs_as_written(self, tmp_path: Path) -> None:
        first = run_example(SEED_QUICKSTART, env={}, cwd=tmp_path)
        assert first.splitlines()[:4] == [f"Processed: {x}" for x in "ABCA"]
        second = run_example(SEED_QUICKSTART, env={}, cwd=tmp_path)
        assert second.splitlines()[:4] == first.splitlines()[:4]


class TestLLMBatch:
    """The batch example pays for each prompt once: the second run sends no request."""

    @staticmethod
    def summary(output: str) -> dict[str, float]:
        """The counters of the example's summary line."""
        match = re.search(
            r"^(\d+) prompts: (\d+) hits, (\d+) executed, (\d+) failed, (\d+) retried; "
            r"usage spent ([0-9.]+) tokens, saved ([0-9.]+);",
            output,
            re.MULTILINE,
        )
        assert match, f"no summary line in:\n{output}"
        names = ("prompts", "hits", "executed", "failed", "retried", "spent", "saved")
        return dict(zip(names, map(float, match.groups()), strict=True))

    @staticmethod
    def server_requests(output: str) -> int:
        match = re.search(r"^server: (\d+) requests", output, re.MULTILINE)
        assert match, f"no server line in:\n{output}"
        return int(match[1])

    def test_second_run_sends_no_request(self, tmp_path: Path) -> None:
        for module in ("openai", "starlette", "uvicorn"):
            require_module(module, extra="dev")
        args = ["--dir", str(tmp_path / "cache")]
        first = run_example(LLM_BATCH, env={}, cwd=tmp_path, args=args)
        counts = self.summary(first)
        assert counts["prompts"] == 200
        assert (counts["hits"], counts["executed"], counts["failed"]) == (0, 200, 0)
        assert counts["spent"] > 0
        assert self.server_requests(first) >= 200
        assert "-> 'Echo: Summarize support ticket #00000 in one sentence.'" in first

        second = run_example(LLM_BATCH, env={}, cwd=tmp_path, args=args)
        again = self.summary(second)
        assert (again["hits"], again["executed"], again["failed"]) == (200, 0, 0)
        assert again["spent"] == 0
        assert again["saved"] == counts["spent"]
        assert self.server_requests(second) == 0
        # Everything lives under --dir, nothing next to the working directory.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
