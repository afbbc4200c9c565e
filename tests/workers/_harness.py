"""The parent side of the worker protocol (see ``memo_worker.py``).

:class:`Worker` starts one worker process and reads its stdout on a thread,
so every wait on a line is bounded by a timeout and a crashed worker shows
its stderr in the failure instead of hanging the test run.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.workers.memo_worker import WorkerConfig

WORKER = Path(__file__).with_name("memo_worker.py")
#: Upper bound for any single protocol step; generous for a loaded CI box.
STEP_TIMEOUT = 60.0


class WorkerFailed(AssertionError):
    """A worker exited, printed something unexpected, or took too long."""


class Worker:
    """One running ``memo_worker.py`` process."""

    def __init__(self, config: WorkerConfig, *, env: dict[str, str], log_dir: Path) -> None:
        self.config = config
        self.stderr_path = log_dir / f"{Path(config.journal).stem}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(asdict(config))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _pump(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:  # closed here, at end of file: the reader owns it
            for line in self.process.stdout:
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _fail(self, why: str) -> WorkerFailed:
        self._stderr.flush()
        stderr = self.stderr_path.read_text(errors="replace")[-4000:]
        return WorkerFailed(f"worker {self.pid}: {why}\n--- stderr ---\n{stderr}")

    def read_line(self, timeout: float = STEP_TIMEOUT) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise self._fail(f"no output within {timeout} s") from None
        if line is None:
            self.process.wait(timeout=STEP_TIMEOUT)
            raise self._fail(f"exited with code {self.process.returncode}")
        return line

    def expect(self, word: str) -> str:
        """Read one line and check that it starts with ``word``; return it."""
        line = self.read_line()
        if not line.startswith(word):
            raise self._fail(f"expected {word!r}, got {line!r}")
        return line

    def send(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def report(self) -> dict[str, Any]:
        """Read the final JSON report and wait for a clean exit."""
        line = self.read_line()
        try:
            report: dict[str, Any] = json.loads(line)
        except ValueError:
            raise self._fail(f"expected the JSON report, got {line!r}") from None
        if self.process.wait(timeout=STEP_TIMEOUT) != 0:
            raise self._fail(f"exited with code {self.process.returncode}")
        self.close()
        return report

    def kill(self) -> None:
        """SIGKILL the worker: no cleanup, no lease release, no goodbye."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=STEP_TIMEOUT)
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STEP_TIMEOUT)
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # the worker is gone already
                self.process.stdin.close()
        self._pump_thread.join(timeout=STEP_TIMEOUT)  # it closes stdout at end of file
        self._stderr.close()


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for workers: ours, plus ``extra`` (AWS endpoint and keys)."""
    env = dict(os.environ)
    env.update(extra or {})
    return env


def read_journals(paths: list[Path]) -> list[tuple[int, float, int]]:
    """All executions recorded by the workers: ``(key, time, pid)``."""
    entries: list[tuple[int, float, int]] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            key, at, pid = line.split()
            entries.append((int(key), float(at), int(pid)))
    return entries


def execution_counts(entries: list[tuple[int, float, int]]) -> Counter[int]:
    return Counter(key for key, _, _ in entries)


def worst_budget_excess(times: list[float], interval: float) -> float:
    """How far admissions ran ahead of a strict one-per-``interval`` budget.

    For every pair of admissions ``i < j`` (sorted), a strict budget needs
    ``t[j] - t[i] >= (j - i) * interval``. Returns the largest shortfall in
    seconds (0 when the budget held exactly); callers allow a small slack
    for the moment between admission and the timestamp being taken.
    """
    ordered = sorted(times)
    worst = 0.0
    # max over j of (j*interval - t[j]) - min over i<j of (i*interval - t[i])
    lowest = float("inf")
    for index, at in enumerate(ordered):
        ahead = index * interval - at
        if lowest != float("inf"):
            worst = max(worst, ahead - lowest)
        lowest = min(lowest, ahead)
    return worst
