"""A rerun after an abnormal end starts at once and finishes the missing work.

A batch (``asyncio.gather`` of ``CALLS`` marked calls, in a child process:
``tests/workers/crash_worker.py``) ends abnormally -- killed with SIGKILL,
interrupted with SIGINT (Ctrl+C), or with an exception raised out of
``gather`` -- while most of its calls are queued or executing. A fresh
process on the same host then reruns the batch on the same backend with the
library's default ``lease_ttl``. It must start executing the missing calls
within a second (not sit out the dead batch's leases), finish in about the
time the missing work takes, never re-execute a call whose result the first
run returned, and leave every result stored.

Journals are written by the children with one ``write`` per line (see the
worker's docstring); nothing here sleeps to line processes up except a
bounded poll of the first run's journal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests._services import POSTGRES_URL, REDIS_URL
from tests.workers import _fixtures

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # worker processes

pg_schema = _fixtures.pg_schema
redis_prefix = _fixtures.redis_prefix

WORKER = Path(__file__).parent / "workers" / "crash_worker.py"
CALLS = 200
#: Calls of the first run that may start before it hangs (killed / interrupted runs).
FINISH = 40
#: The first run is ended once this many calls have returned (in the exception
#: case, the next call to end its work raises).
DONE_BEFORE_END = 30
#: Bound of the first executed call after the rerun's gather starts.
FIRST_CALL_WITHIN = 1.0
#: Bound of the whole rerun: the missing work is ~0.5 s; the old lease_ttl was 60 s.
RERUN_WITHIN = 15.0
#: A run that goes past this is killed and the test fails (keeps failures bounded).
RUN_TIMEOUT = 25.0
#: What each call of the worker spends executing (crash_worker.WORK_SECONDS).
WORK_SECONDS = 0.05


def start(config: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=dict(os.environ),
        )


def finish(process: subprocess.Popen[bytes], timeout: float, log: Path) -> int | None:
    """Wait for ``process`` at most ``timeout`` s; kill it and return None if it takes longer."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None
    finally:
        if process.stdout is not None:
            process.stdout.close()


def read_journal(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines()]


def events(journal: list[list[str]], kind: str) -> list[tuple[int, float]]:
    return [(int(words[1]), float(words[2])) for words in journal if words[0] == kind]


def stamp(journal: list[list[str]], kind: str) -> float | None:
    found = [float(words[1]) for words in journal if words[0] == kind]
    return found[0] if found else None


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    kind = request.param
    if kind == "sqlite":
        return {"kind": "sqlite", "path": str(tmp_path / "crash.db")}
    if kind == "postgres":
        schema = request.getfixturevalue("pg_schema")
        return {"kind": "postgres", "dsn": POSTGRES_URL, "schema": schema}
    prefix = request.getfixturevalue("redis_prefix")
    return {"kind": "redis", "url": REDIS_URL, "prefix": prefix}


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.services),
    pytest.param("redis", id="redis", marks=pytest.mark.services),
]


def end_first_run(tmp_path: Path, db: dict[str, Any], how: str) -> list[list[str]]:
    """Run the first batch and end it ``how``; return its journal."""
    journal = tmp_path / "run1.log"
    log = tmp_path / "run1.stderr"
    config = {
        "db": db,
        "blobs": str(tmp_path / "blobs"),
        "journal": str(journal),
        "calls": CALLS,
        "mode": "raise" if how == "exception" else "hang",
        "finish": DONE_BEFORE_END if how == "exception" else FINISH,
    }
    process = start(config, log)
    try:
        if how == "exception":
            code = finish(process, RUN_TIMEOUT, log)
            stderr = log.read_text(errors="replace")
            assert code not in (0, None), "the exception did not end the first run"
            assert "Boom" in stderr, stderr[-3000:]
            return read_journal(journal)
        deadline = time.monotonic() + RUN_TIMEOUT
        while len(events(read_journal(journal), "done")) < DONE_BEFORE_END:
            if process.poll() is not None:
                pytest.fail(f"first run exited early:\n{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail("first run made no progress")
            time.sleep(0.01)
        if how == "sigkill":
            process.send_signal(signal.SIGKILL)
            code = finish(process, RUN_TIMEOUT, log)
            assert code == -signal.SIGKILL
        else:
            process.send_signal(signal.SIGINT)
            code = finish(process, RUN_TIMEOUT, log)
            stderr = log.read_text(errors="replace")
            assert code not in (0, None), "SIGINT did not end the first run"
            assert "KeyboardInterrupt" in stderr, stderr[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return read_journal(journal)


def run_again(tmp_path: Path, db: dict[str, Any], name: str) -> tuple[list[list[str]], float]:
    """Run the whole batch in a fresh process; return its journal and wall time."""
    journal = tmp_path / f"{name}.log"
    log = tmp_path / f"{name}.stderr"
    config = {
        "db": db,
        "blobs": str(tmp_path / "blobs"),
        "journal": str(journal),
        "calls": CALLS,
        "mode": "run",
    }
    begin = time.monotonic()
    process = start(config, log)
    code = finish(process, RUN_TIMEOUT, log)
    wall = time.monotonic() - begin
    # A run killed at the timeout is judged by its journal (how long it waited).
    assert code in (0, None), f"{name} failed:\n{log.read_text(errors='replace')[-3000:]}"
    return read_journal(journal), wall


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("how", ["sigkill", "sigint", "exception"])
def test_rerun_after_an_abnormal_end_starts_at_once(
    tmp_path: Path, backend: dict[str, Any], how: str
) -> None:
    first = end_first_run(tmp_path, backend, how)
    returned = {arg for arg, _ in events(first, "done")}
    started_first = {arg for arg, _ in events(first, "start")}
    assert len(returned) >= DONE_BEFORE_END
    assert len(started_first) < CALLS, "the first run was not cut short"

    second, wall = run_again(tmp_path, backend, "run2")
    gather_at = stamp(second, "gather")
    assert gather_at is not None, "the rerun never reached its gather"
    starts = events(second, "start")
    assert starts, (
        f"the rerun executed nothing in {wall:.1f} s, yet the first run was cut short: "
        "it waited for the leases of the dead batch"
    )
    first_start = min(at for _, at in starts)
    assert first_start - gather_at < FIRST_CALL_WITHIN, (
        f"the rerun's first execution came {first_start - gather_at:.2f} s after its gather "
        "started: it waited for the leases of the dead batch"
    )
    end_at = stamp(second, "end")
    assert end_at is not None, f"the rerun did not finish within {RUN_TIMEOUT} s"
    assert end_at - gather_at < RERUN_WITHIN, (
        f"the rerun's gather took {end_at - gather_at:.2f} s for "
        f"{len(starts)} missing calls of {WORK_SECONDS} s each"
    )
    assert wall < RERUN_WITHIN + 10.0

    reexecuted = returned & {arg for arg, _ in starts}
    assert not reexecuted, f"results returned by the first run were lost: {sorted(reexecuted)}"
    done_second = {arg for arg, _ in events(second, "done")}
    assert done_second == set(range(CALLS))

    third, _ = run_again(tmp_path, backend, "run3")
    assert events(third, "start") == [], "the rerun did not store every result"
    assert {arg for arg, _ in events(third, "done")} == set(range(CALLS))
