"""A fresh process for the typed-result tests: one cached call, no registration.

Run from the repository root as ``python -m tests.workers.typed_worker
'<json config>'`` (see :class:`TypedConfig`); :func:`run_typed_worker` does
that and returns the report. The worker builds the same Spot over the same
SQLite file and blob directory as the test, marks the same function through
the test module's factory (so the return annotation names the same classes,
and no type is registered anywhere), calls it once with the test's argument
and prints one JSON line describing what came back:

* ``type``: the result's class, ``module.qualname``;
* ``shape``: the classes at every level (:func:`tests.test_typed_sdk.shape`);
* ``dump``: ``model_dump(mode="json")``; ``dump_unset``: the same with
  ``exclude_unset=True`` (what ``to_dict()`` builds on);
* ``equal_to_local``: for ``analyze``, whether the result equals the same
  ``Analysis`` built in this process;
* ``body_calls``: how many times the marked body ran here (0 for a hit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: The repository root: ``python -m tests.workers.typed_worker`` runs from it.
ROOT = Path(__file__).resolve().parents[2]
#: Upper bound for one worker (imports openai and pydantic; a loaded box is slow).
TIMEOUT = 120.0


@dataclass
class TypedConfig:
    """Everything the worker needs; JSON on the command line."""

    task: str  # "ask" or "analyze"
    workdir: str
    argument: str
    loop: str = "asyncio"
    blob_threshold: int = 64 * 1024
    base_url: str = ""


async def main(config: TypedConfig) -> dict[str, Any]:
    from tests import test_typed_sdk as t

    spot = t.open_spot(Path(config.workdir), blob_threshold=config.blob_threshold)
    calls = t.BodyCalls()
    if config.task == "ask":
        fn = t.make_ask(spot, config.base_url, calls)
    elif config.task == "analyze":
        fn = t.make_analyze(spot, calls)
    else:
        raise SystemExit(f"unknown task {config.task!r}")
    async with spot:
        result = await fn(config.argument)
    report: dict[str, Any] = {
        "type": t.qualified(type(result)),
        "shape": t.shape(result),
        "body_calls": calls.count,
    }
    dump = getattr(result, "model_dump", None)
    if dump is not None:
        report["dump"] = dump(mode="json")
        report["dump_unset"] = dump(mode="json", exclude_unset=True)
    if config.task == "analyze":
        report["equal_to_local"] = result == t.build_analysis(config.argument)
    return report


def run_typed_worker(config: TypedConfig) -> dict[str, Any]:
    """Run the worker in a new interpreter (blocking); its JSON report."""
    env = dict(os.environ)
    # The child imports ``tests`` from the root and the package from wherever
    # this process found it (PYTHONPATH=src, or an installed copy).
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.workers.typed_worker", json.dumps(asdict(config))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"typed worker exited with code {proc.returncode}\n"
            f"--- stderr ---\n{proc.stderr[-6000:]}"
        )
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise AssertionError(f"typed worker printed nothing\n--- stderr ---\n{proc.stderr}")
    report: dict[str, Any] = json.loads(lines[-1])
    return report


if __name__ == "__main__":
    import anyio

    worker_config = TypedConfig(**json.loads(sys.argv[1]))
    print(json.dumps(anyio.run(main, worker_config, backend=worker_config.loop)))
