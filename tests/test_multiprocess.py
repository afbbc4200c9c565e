"""Several processes sharing one backend: exactly-once execution and dead lease holders.

Each test starts real worker processes (``tests/workers/memo_worker.py``)
that share a task database (PostgreSQL, Redis or one SQLite file) and a blob
storage (S3 on a local moto server, or one directory). Executions are
counted through per-worker journal files the marked function appends to, so
the count survives a killed worker. Workers are lined up with stdin/stdout
barriers, never with sleeps.

These tests are synchronous: the parent only orchestrates processes; the
code under test runs in the workers (half on asyncio, half on trio).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import _moto
from tests._services import POSTGRES_URL, REDIS_URL, require_module
from tests.workers import _fixtures
from tests.workers._fixtures import S3Target
from tests.workers._harness import (
    Worker,
    execution_counts,
    read_journals,
    worker_env,
    worst_budget_excess,
)
from tests.workers.memo_worker import WorkerConfig, expected_value

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # up to ~30 s each under load

require_module("trio", extra="dev")  # half of the workers run on trio

WORKERS = 4
DISTINCT_KEYS = 250  # 4 workers x 250 calls = 1 000 calls, each key wanted by every worker
LIMIT_RPM = 5_000.0  # one admission every 12 ms: the run takes ~3 s
#: Allowed lag between an admission and the timestamp the function takes.
TIMESTAMP_SLACK = 0.5

moto_endpoint = _moto.moto_endpoint
s3 = _fixtures.s3
pg_schema = _fixtures.pg_schema
redis_prefix = _fixtures.redis_prefix
limiter_key = _fixtures.limiter_key


# -- running a batch ---------------------------------------------------------------------


@dataclass
class Batch:
    reports: list[dict[str, Any]]
    journal: list[tuple[int, float, int]]
    wall: float


def run_batch(
    tmp_path: Path,
    *,
    db: dict[str, Any],
    storage: dict[str, Any],
    env: dict[str, str] | None = None,
    limiter: dict[str, Any] | None = None,
) -> Batch:
    """Run ``WORKERS`` workers over the same keys (each in its own order) at once."""
    journals = [tmp_path / f"journal-{n}.log" for n in range(WORKERS)]
    workers: list[Worker] = []
    begin = time.monotonic()
    try:
        for n, journal in enumerate(journals):
            config = WorkerConfig(
                db=db,
                storage=storage,
                journal=str(journal),
                keys=list(range(DISTINCT_KEYS)),
                loop="asyncio" if n % 2 == 0 else "trio",
                limiter=limiter,
                barrier=True,
                verify=True,
                seed=n,
            )
            workers.append(Worker(config, env=worker_env(env), log_dir=tmp_path))
        for worker in workers:
            worker.expect("ready")
        for worker in workers:
            worker.send("go")
        for worker in workers:
            worker.expect("done")
        for worker in workers:
            worker.send("verify")
        reports = [worker.report() for worker in workers]
    finally:
        for worker in workers:
            worker.close()
    return Batch(reports, read_journals(journals), time.monotonic() - begin)


def check_exactly_once(batch: Batch) -> None:
    """Every key ran once in all; every worker saw, and re-read, the right values."""
    counts = execution_counts(batch.journal)
    assert sorted(counts) == list(range(DISTINCT_KEYS))
    duplicated = {key: n for key, n in counts.items() if n != 1}
    assert duplicated == {}, f"keys executed more than once: {duplicated}"
    expected = {str(key): expected_value(key) for key in range(DISTINCT_KEYS)}
    for report in batch.reports:
        assert report["results"] == expected
        assert report["reread"] == expected
    # The work really was shared: together the workers executed each key once.
    assert sum(r["statistics"]["misses"] for r in batch.reports) == DISTINCT_KEYS
    assert batch.wall < 60


def check_budget(batch: Batch) -> None:
    """The shared limiter spaced the admissions of all processes together."""
    interval = 60.0 / LIMIT_RPM
    times = [at for _, at, _ in batch.journal]
    assert len({pid for _, _, pid in batch.journal}) > 1, "only one process executed"
    assert worst_budget_excess(times, interval) <= TIMESTAMP_SLACK
    # Without a shared budget the batch would finish in a fraction of this.
    assert max(times) - min(times) >= (len(times) - 1) * interval - TIMESTAMP_SLACK


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.services
class TestSharedServices:
    """Four processes on one PostgreSQL or Redis task DB plus S3 execute each key once."""

    def test_postgres_s3_and_a_shared_limiter(
        self, tmp_path: Path, pg_schema: str, s3: S3Target, limiter_key: str
    ) -> None:
        limiter = {"url": REDIS_URL, "key": limiter_key, "rpm": LIMIT_RPM}
        batch = run_batch(
            tmp_path,
            db={"kind": "postgres", "dsn": POSTGRES_URL, "schema": pg_schema},
            storage={"kind": "s3", "url": f"s3://{s3.bucket}/mp"},
            env=s3.env,
            limiter=limiter,
        )
        check_exactly_once(batch)
        # Even keys are above the blob threshold: one S3 object each.
        assert s3.object_count() == DISTINCT_KEYS // 2
        check_budget(batch)

    def test_redis_s3_and_a_shared_limiter(
        self, tmp_path: Path, redis_prefix: str, s3: S3Target, limiter_key: str
    ) -> None:
        limiter = {"url": REDIS_URL, "key": limiter_key, "rpm": LIMIT_RPM}
        batch = run_batch(
            tmp_path,
            db={"kind": "redis", "url": REDIS_URL, "prefix": redis_prefix},
            storage={"kind": "s3", "url": f"s3://{s3.bucket}/mp"},
            env=s3.env,
            limiter=limiter,
        )
        check_exactly_once(batch)
        assert s3.object_count() == DISTINCT_KEYS // 2
        check_budget(batch)


class TestBudgetCheck:
    """The budget check itself flags admissions that run ahead of the budget."""

    def test_strict_spacing_passes_and_a_burst_fails(self) -> None:
        spaced = [i * 0.012 for i in range(100)]
        assert worst_budget_excess(spaced, 0.012) == pytest.approx(0.0, abs=1e-9)
        burst = spaced[:50] + [spaced[49] + 0.001 * i for i in range(1, 51)]
        assert worst_budget_excess(burst, 0.012) == pytest.approx(50 * 0.011, abs=1e-9)


class TestSharedSQLiteFile:
    """Four processes on one SQLite file and one blob directory execute each key once."""

    def test_exactly_once(self, tmp_path: Path) -> None:
        blobs = tmp_path / "blobs"
        batch = run_batch(
            tmp_path,
            db={"kind": "sqlite", "path": str(tmp_path / "shared.db")},
            storage={"kind": "local", "path": str(blobs)},
        )
        check_exactly_once(batch)
        stored = [p for p in blobs.rglob("*") if p.is_file()]
        assert len(stored) == DISTINCT_KEYS // 2


# -- dead and slow lease holders --------------------------------------------------------------

LEASE_TTL = 1.0
LEASE_KEY = 7

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.services),
    pytest.param("redis", id="redis", marks=pytest.mark.services),
]


@pytest.fixture
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The worker config of a task database every process of the test shares."""
    kind = request.param
    if kind == "sqlite":
        return {"kind": "sqlite", "path": str(tmp_path / "shared.db")}
    if kind == "postgres":
        schema = request.getfixturevalue("pg_schema")
        return {"kind": "postgres", "dsn": POSTGRES_URL, "schema": schema}
    prefix = request.getfixturevalue("redis_prefix")
    return {"kind": "redis", "url": REDIS_URL, "prefix": prefix}


def start_holder_and_taker(
    tmp_path: Path, db: dict[str, Any], *, hold_for: float | None, lease_ttl: float = LEASE_TTL
) -> tuple[Worker, Worker, float]:
    """Start a holder executing ``LEASE_KEY`` and a taker waiting at its barrier.

    Returns both workers and the holder's time just before its call (the
    lease was taken after it).
    """
    storage = {"kind": "local", "path": str(tmp_path / "blobs")}
    # The taker is ready first, so that it calls right after the holder took
    # the lease however slowly processes start on this machine.
    taker = Worker(
        WorkerConfig(
            db=db,
            storage=storage,
            journal=str(tmp_path / "taker.log"),
            keys=[LEASE_KEY],
            lease_ttl=lease_ttl,
            barrier=True,
            loop="trio",
        ),
        env=worker_env(),
        log_dir=tmp_path,
    )
    holder: Worker | None = None
    try:
        taker.expect("ready")
        holder = Worker(
            WorkerConfig(
                db=db,
                storage=storage,
                journal=str(tmp_path / "holder.log"),
                keys=[LEASE_KEY],
                lease_ttl=lease_ttl,
                hang_on=LEASE_KEY,
                hold_for=hold_for,
            ),
            env=worker_env(),
            log_dir=tmp_path,
        )
        _, key, before_call = holder.expect("started").split()
        assert int(key) == LEASE_KEY
    except BaseException:
        taker.close()
        if holder is not None:
            holder.close()
        raise
    return holder, taker, float(before_call)


@pytest.mark.parametrize("shared_db", BACKENDS, indirect=True)
class TestDeadLeaseHolder:
    """A key whose executing process on this host was SIGKILLed is taken over at once."""

    def test_taker_executes_without_waiting_for_the_lease_to_expire(
        self, tmp_path: Path, shared_db: dict[str, Any]
    ) -> None:
        lease_ttl = 20.0
        holder, taker, _ = start_holder_and_taker(
            tmp_path, shared_db, hold_for=None, lease_ttl=lease_ttl
        )
        try:
            holder.kill()
            taker.send("go")
            report = taker.report()
        finally:
            holder.close()
            taker.close()

        assert report["results"] == {str(LEASE_KEY): expected_value(LEASE_KEY)}
        stats = report["statistics"]
        assert stats["misses"] == 1, "the taker executed the key itself"
        assert stats["lease_waits"] == 1, "the taker found the dead holder's lease, once"
        executions = read_journals([tmp_path / "holder.log", tmp_path / "taker.log"])
        assert [pid for _, _, pid in executions] == [holder.pid, taker.process.pid]
        # Taken over because its holder is gone, not because the lease expired.
        assert report["elapsed"] < lease_ttl / 4


@pytest.mark.parametrize("shared_db", BACKENDS, indirect=True)
class TestSlowLiveLeaseHolder:
    """A holder still executing when its lease_ttl passes is not duplicated by a waiter."""

    def test_waiter_receives_the_holders_result(
        self, tmp_path: Path, shared_db: dict[str, Any]
    ) -> None:
        holder, taker, _ = start_holder_and_taker(tmp_path, shared_db, hold_for=3 * LEASE_TTL)
        try:
            taker.send("go")
            taker_report = taker.report()
            holder_report = holder.report()
        finally:
            holder.close()
            taker.close()
        expected = {str(LEASE_KEY): expected_value(LEASE_KEY)}
        assert holder_report["results"] == expected
        assert taker_report["results"] == expected
        executions = read_journals([tmp_path / "holder.log", tmp_path / "taker.log"])
        assert execution_counts(executions)[LEASE_KEY] == 1
