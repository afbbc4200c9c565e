"""Lease holders: who holds a key, whether that holder still lives, and waiting on it."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import beautyspot_async as bs
from beautyspot_async._holder import (
    holder_is_gone,
    new_owner,
    parse_owner,
    process_start,
    this_host,
)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A live child process that is not ours to be."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


class TestHolderIdentity:
    def test_an_owner_names_this_host_and_process(self) -> None:
        holder = parse_owner(new_owner())
        assert holder is not None
        assert holder.host == this_host()
        assert holder.pid == os.getpid()
        assert holder.start == process_start(os.getpid())
        assert new_owner() != new_owner(), "two Spots of one process are two holders"

    def test_foreign_formats_are_not_parsed(self) -> None:
        assert parse_owner("a|b|c|d") is None
        assert parse_owner("something else") is None
        assert not holder_is_gone("something else")

    def test_owners_of_older_releases_are_understood(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        import socket

        assert holder_is_gone(f"{socket.gethostname()}:{proc.pid}:abcdef")
        assert not holder_is_gone(f"{socket.gethostname()}:{os.getpid()}:abcdef")
        assert not holder_is_gone(f"elsewhere:{proc.pid}:abcdef")

    def test_this_process_is_alive(self) -> None:
        assert not holder_is_gone(new_owner())

    def test_a_live_process_on_this_host_is_alive(self, child: subprocess.Popen[bytes]) -> None:
        owner = f"{this_host()}|{child.pid}|{process_start(child.pid)}|tok"
        assert not holder_is_gone(owner)

    def test_an_exited_process_is_gone(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        start = process_start(proc.pid)
        proc.wait()
        assert holder_is_gone(f"{this_host()}|{proc.pid}|{start}|tok")

    def test_a_killed_unreaped_process_is_gone(self, child: subprocess.Popen[bytes]) -> None:
        start = process_start(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        # Not reaped: the kernel keeps it as a zombie until wait().
        while Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert holder_is_gone(f"{this_host()}|{child.pid}|{start}|tok")

    def test_a_reused_pid_is_not_the_holder(self, child: subprocess.Popen[bytes]) -> None:
        assert holder_is_gone(f"{this_host()}|{child.pid}|1|tok")

    def test_another_host_is_never_presumed_dead(self) -> None:
        assert not holder_is_gone(f"elsewhere/0|{2**22 + 7}|1|tok")


def _plant_lease(db_path: Path, key: str, owner: str, expires_at: float) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO leases (cache_key, owner, expires_at) VALUES (?, ?, ?)",
            (key, owner, expires_at),
        )


class TestWaitingOnAHolder:
    """Calls whose key another process holds, on one SQLite file."""

    def _spot(self, tmp_path: Path) -> bs.Spot:
        return bs.Spot("leases", db=str(tmp_path / "leases.db"), storage=str(tmp_path / "blobs"))

    def _key(self, tmp_path: Path) -> str:
        """Create the schema and return the key of ``f(0)``, leaving it unstored."""
        spot = self._spot(tmp_path)

        @spot.mark(name="f")
        def f(x: int) -> int:
            return x * 2

        with spot:
            assert f(0) == 0
        with sqlite3.connect(tmp_path / "leases.db") as conn:
            ((key,),) = conn.execute("SELECT cache_key FROM tasks").fetchall()
            conn.execute("DELETE FROM tasks")
        return str(key)

    def _call(self, tmp_path: Path) -> tuple[float, bs.Spot]:
        spot = self._spot(tmp_path)

        @spot.mark(name="f")
        def f(x: int) -> int:
            return x * 2

        started = time.monotonic()
        with spot:
            assert f(0) == 0
        return time.monotonic() - started, spot

    @pytest.mark.slow
    def test_a_holder_on_another_host_blocks_until_its_lease_lapses(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = self._key(tmp_path)
        _plant_lease(tmp_path / "leases.db", key, "elsewhere/0|4242|1|tok", time.time() + 1.5)
        caplog.set_level(logging.INFO, logger="beautyspot_async")
        waited, spot = self._call(tmp_path)
        assert waited >= 1.0, "a live-looking holder elsewhere is respected until expiry"
        assert waited < 10
        assert spot.statistics().lease_waits == 1, "lease_waits counts calls, not polls"
        assert spot.statistics().misses == 1
        lines = [r.getMessage() for r in caplog.records if "wait for keys" in r.getMessage()]
        assert len(lines) == 1, "waiting is visible in the log, once"
        assert lines[0].startswith("1 call(s) wait for keys that process 4242 on elsewhere")

    def test_a_dead_holder_on_this_host_is_taken_over_at_once(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = self._key(tmp_path)
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        start = process_start(proc.pid)
        proc.wait()
        dead = f"{this_host()}|{proc.pid}|{start}|tok"
        _plant_lease(tmp_path / "leases.db", key, dead, time.time() + 3600)
        caplog.set_level(logging.INFO, logger="beautyspot_async")
        waited, spot = self._call(tmp_path)
        assert waited < 5, "no wait for an hour-long lease of a dead process"
        assert spot.statistics().misses == 1
        assert any("took over 1 lease" in r.getMessage() for r in caplog.records)
        with sqlite3.connect(tmp_path / "leases.db") as conn:
            assert conn.execute("SELECT count(*) FROM leases").fetchone() == (0,)
