"""The "All-in-One Pipeline" of the original beautyspot guide, async.

Scenario: a batch of log files is analysed by a rate-limited external API;
each analysis is a custom result object. The metadata of every result is
shared through Redis (so several workers or machines see one cache), the
results themselves go to S3-compatible blob storage, and a file is analysed
again only when it changed (its size or modification time).

Everything the original wrote by hand (a Redis TaskDB, a GCS storage class, a
process-local token bucket) is built in here: ``redis://`` and ``s3://`` are
backends of the library, and ``Spot(tpm=...)`` limits the API calls.

Run it with a Redis on localhost::

    python examples/all_in_one_pipeline.py

It prints three passes: the first analyses every file, the second is
answered entirely from the cache, and after one file is touched the third
re-analyses only that one.

Configuration (environment variables, with local defaults):

``BEAUTYSPOT_DB`` (default ``redis://127.0.0.1:6379/0``)
    Where the metadata lives. Any database URL of the library works too:
    ``postgresql://user@host/db``, ``sqlite:///pipeline.db``.
``PIPELINE_NAMESPACE`` (default ``all_in_one_pipeline``)
    The Redis key prefix: one prefix is one cache, so several pipelines can
    share a Redis.
``BEAUTYSPOT_STORAGE`` (default ``s3://beautyspot-example/all-in-one``)
    Where the results live: ``s3://bucket/prefix`` or a local directory.
``AWS_ENDPOINT_URL``
    When unset and the storage is ``s3://``, the example starts a local S3
    (moto's server, ``pip install "moto[server]"``) on a free loopback port
    and creates the bucket there, so it runs without a cloud account.
    To use real S3, set ``AWS_ENDPOINT_URL=https://s3.amazonaws.com`` (or
    your region's endpoint) with the usual credentials (``AWS_PROFILE`` or
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) and an existing
    bucket. For Google Cloud Storage use its S3 interoperability endpoint:
    ``AWS_ENDPOINT_URL=https://storage.googleapis.com`` with an HMAC key as
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``. MinIO, R2 and Ceph
    work the same way.
``PIPELINE_LOG_DIR``
    Where the sample log files are written (default: a new temporary
    directory). Point it at a fixed directory and run the example twice:
    the second run's first pass executes nothing, every result is read back
    from Redis and S3 by a brand-new process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import beautyspot_async as bs
from beautyspot_async.cachekey import KeyGen

DB_URL = os.environ.get("BEAUTYSPOT_DB") or "redis://127.0.0.1:6379/0"
STORAGE_URL = os.environ.get("BEAUTYSPOT_STORAGE") or "s3://beautyspot-example/all-in-one"
NAMESPACE = os.environ.get("PIPELINE_NAMESPACE") or "all_in_one_pipeline"
LOG_FILES = 6
API_TOKENS_PER_MINUTE = 600  # the external API allows one call every 100 ms


# --- 1. The custom result type ---------------------------------------------------


@dataclass(frozen=True)
class AnalysisResult:
    """What the (simulated) analysis API returns for one log file."""

    file: str
    lines: int
    errors: int
    score: float
    summary: str


# --- 2. The Spot: Redis metadata + S3 blobs + a rate limit -----------------------


def task_db(url: str) -> bs.TaskDB | str:
    """The task database: Redis under our own key prefix, or any other URL as is."""
    if url.startswith(("redis://", "rediss://")):
        from beautyspot_async.db import RedisTaskDB

        return RedisTaskDB(url, prefix=NAMESPACE)
    return url


spot = bs.Spot(
    "all_in_one_pipeline",
    db=task_db(DB_URL),
    storage=STORAGE_URL,
    tpm=API_TOKENS_PER_MINUTE,
)

# Results are msgpack, never pickle: teach the serializer our type. The
# encoder may return any msgpack value; the decoder gets exactly that back.
spot.register_type(
    type_=AnalysisResult,
    code=20,
    encoder=lambda r: [r.file, r.lines, r.errors, r.score, r.summary],
    decoder=lambda fields: AnalysisResult(*fields),
)


# --- 3. The marked logic ----------------------------------------------------------

executed: list[str] = []  # files analysed in the current pass, for the printout


@spot.mark(
    save_blob=True,  # 1. the result goes to blob storage (S3), Redis keeps the location
    input_key_fn=KeyGen.from_path_stat,  # 2. key on path + size + mtime: edits re-run
    version="v2.0.1",  # 3. bump when the analysis logic changes
    content_type="application/msgpack",  # 4. a hint for viewers of the stored result
)
@spot.limiter(cost=1)  # 5. each analysis spends one token of the API's budget
async def analyze_log_file(path: str) -> AnalysisResult:
    """Analyse one log file with the (simulated) external API.

    Runs only on a cache miss: an unchanged file costs one Redis lookup and
    one S3 download, no API call and no token.
    """
    executed.append(Path(path).name)
    text = await asyncio.to_thread(Path(path).read_text)
    await asyncio.sleep(0.2)  # the API round trip
    lines = text.splitlines()
    errors = sum("ERROR" in line for line in lines)
    return AnalysisResult(
        file=Path(path).name,
        lines=len(lines),
        errors=errors,
        score=round(1.0 - errors / max(len(lines), 1), 3),
        summary=f"{len(lines)} lines, {errors} errors",
    )


# --- 4. Execution -------------------------------------------------------------------


def write_sample_logs(directory: Path) -> list[Path]:
    """Create the sample log files (kept as they are when they already exist)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(1, LOG_FILES + 1):
        path = directory / f"app-{n:02d}.log"
        if not path.exists():
            lines = [
                f"2024-05-0{n} 12:00:{s:02d} {'ERROR' if s % (n + 2) == 0 else 'INFO'} event {s}"
                for s in range(10 * n)
            ]
            path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


async def analyze_all(label: str, paths: list[Path]) -> list[AnalysisResult]:
    executed.clear()
    started = time.perf_counter()
    results = await asyncio.gather(*(analyze_log_file(str(p)) for p in paths))
    elapsed = time.perf_counter() - started
    cached = len(paths) - len(executed)
    print(f"{label}: {len(executed)} executed, {cached} cached ({elapsed:.2f}s)")
    if executed:
        print(f"  executed: {', '.join(sorted(executed))}")
    return results


async def main(log_dir: Path) -> None:
    paths = write_sample_logs(log_dir)
    async with spot:
        results = await analyze_all("pass 1", paths)
        for result in results:
            print(f"  {result.file}: score {result.score} ({result.summary})")

        await analyze_all("pass 2", paths)

        touched = paths[2]
        with touched.open("a") as log:  # a new line changes size and mtime
            log.write("2024-05-03 13:00:00 ERROR disk full\n")
        results = await analyze_all(f"pass 3 (after editing {touched.name})", paths)
        print(f"  {touched.name}: {results[2].summary}")

        history = await spot.history(limit=100)
    analyses = history[history["func_name"].str.endswith(".analyze_log_file")]
    blobs = int((analyses["result_type"] == "blob").sum())
    print(f"the cache holds {len(analyses)} analyses, {blobs} as blobs in {STORAGE_URL}")


@contextlib.contextmanager
def local_s3_when_unconfigured() -> Iterator[None]:
    """Start a local S3 (moto) unless an endpoint is configured or storage is not S3."""
    if os.environ.get("AWS_ENDPOINT_URL") or not STORAGE_URL.startswith("s3://"):
        yield
        return
    try:
        import boto3  # type: ignore[import-untyped]
        from moto.server import ThreadedMotoServer
    except ImportError:
        sys.exit(
            "AWS_ENDPOINT_URL is not set and moto is not installed: "
            'pip install "moto[server]", or point AWS_ENDPOINT_URL at a real S3'
        )
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
        print(f"(local S3 started on {os.environ['AWS_ENDPOINT_URL']})")
        bucket = STORAGE_URL.removeprefix("s3://").split("/", 1)[0]
        s3: Any = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        s3.create_bucket(Bucket=bucket)
        yield
    finally:
        server.stop()


if __name__ == "__main__":
    with local_s3_when_unconfigured(), contextlib.ExitStack() as stack:
        configured = os.environ.get("PIPELINE_LOG_DIR")
        if configured:
            log_dir = Path(configured)
        else:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="logs-")))
        try:
            asyncio.run(main(log_dir))
        except bs.BackendError as exc:
            sys.exit(
                f"{exc}\nIs the backend running? Start Redis (docker run -p 6379:6379 redis) "
                "or set BEAUTYSPOT_DB=sqlite:///pipeline.db"
            )
