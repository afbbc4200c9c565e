"""How a Spot is configured: which backends it builds, where their files go, what it refuses.

The memory tier's bounds are specified in ``test_memory_tier.py``, batched
reads in ``test_batched_lookups.py`` and connection names in
``test_connection_names.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import beautyspot_async as bs
from beautyspot_async.db import MemoryTaskDB, SQLiteTaskDB
from beautyspot_async.storage import LocalStorage
from beautyspot_async.testing import FakeClock

from ._services import require_module
from ._spots import open_spot


class TestBackendSelection:
    """db= and storage= build a backend from a URL, a path or the environment."""

    def test_memory_url(self) -> None:
        assert isinstance(bs.Spot("m", db="memory://").db, MemoryTaskDB)

    def test_scale_out_urls_build_their_backends(self) -> None:
        """postgresql://, redis:// and s3:// build their backends without connecting."""
        require_module("asyncpg", extra="postgres")
        require_module("redis", extra="redis")
        require_module("aiobotocore", extra="s3")
        from beautyspot_async.db import PostgresTaskDB, RedisTaskDB
        from beautyspot_async.storage import S3Storage

        assert isinstance(bs.Spot("p", db="postgresql://u@127.0.0.1:1/db").db, PostgresTaskDB)
        assert isinstance(bs.Spot("p", db="redis://127.0.0.1:1/0").db, RedisTaskDB)
        assert isinstance(bs.Spot("p", storage="s3://bucket/pre/fix").storage, S3Storage)

    def test_environment_and_precedence(self, tmp_path: Path, monkeypatch: Any) -> None:
        """BEAUTYSPOT_DB and BEAUTYSPOT_STORAGE apply unless db= or storage= is given."""
        monkeypatch.setenv("BEAUTYSPOT_DB", "memory://")
        monkeypatch.setenv("BEAUTYSPOT_STORAGE", str(tmp_path / "env_blobs"))
        from_env = bs.Spot("e")
        assert isinstance(from_env.db, MemoryTaskDB)
        assert Path(from_env.storage.root) == tmp_path / "env_blobs"  # type: ignore[attr-defined]
        explicit = bs.Spot("e", db=tmp_path / "x.db", storage=tmp_path / "mine")
        assert isinstance(explicit.db, SQLiteTaskDB)
        assert Path(explicit.storage.root) == tmp_path / "mine"  # type: ignore[attr-defined]


class TestPathResolution:
    """Paths and sqlite:/// URLs resolve against the working directory at creation."""

    def test_default_files_in_working_directory(self, tmp_path: Path, monkeypatch: Any) -> None:
        """With nothing configured: SQLite <name>.db and local <name>_blobs in the cwd."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("BEAUTYSPOT_DB", raising=False)
        monkeypatch.delenv("BEAUTYSPOT_STORAGE", raising=False)
        spot = bs.Spot("exp")
        assert isinstance(spot.db, SQLiteTaskDB)
        assert Path(spot.db.path).resolve() == (tmp_path / "exp.db").resolve()
        assert isinstance(spot.storage, LocalStorage)
        assert Path(spot.storage.root).resolve() == (tmp_path / "exp_blobs").resolve()

    def test_sqlite_relative_and_absolute(self, tmp_path: Path, monkeypatch: Any) -> None:
        """sqlite:///rel.db is relative to the cwd; sqlite:////abs.db is absolute."""
        monkeypatch.chdir(tmp_path)
        (tmp_path / "sub").mkdir()
        relative = bs.Spot("r", db="sqlite:///sub/rel.db").db
        assert isinstance(relative, SQLiteTaskDB)
        assert Path(relative.path).resolve() == (tmp_path / "sub" / "rel.db").resolve()
        absolute = bs.Spot("a", db=f"sqlite:///{tmp_path}/abs.db").db
        assert isinstance(absolute, SQLiteTaskDB)
        assert str(tmp_path).startswith("/")  # so the URL above has four slashes
        assert Path(absolute.path) == tmp_path / "abs.db"

    @pytest.mark.anyio
    async def test_relative_paths_are_fixed_at_creation(
        self, tmp_path: Path, monkeypatch: Any
    ) -> None:
        """Spot("x") then chdir: the files stay in the directory the Spot was made in."""
        monkeypatch.delenv("BEAUTYSPOT_DB", raising=False)
        monkeypatch.delenv("BEAUTYSPOT_STORAGE", raising=False)
        first, second = tmp_path / "first", tmp_path / "second"
        first.mkdir()
        second.mkdir()
        monkeypatch.chdir(first)
        spot = bs.Spot("x", blob_threshold=16)
        relative = bs.Spot("y", db="sqlite:///y.db", storage="y_blobs")
        monkeypatch.chdir(second)

        @spot.mark
        async def big(n: int) -> bytes:
            return b"z" * n

        @relative.mark
        async def small(n: int) -> int:
            return n

        async with spot, relative:
            await big(100)
            await small(1)
        assert (first / "x.db").is_file()
        assert (first / "y.db").is_file()
        assert any((first / "x_blobs").rglob("*.bin"))
        assert list(second.iterdir()) == []


class TestConfigurationValidation:
    """A bad option raises ConfigurationError when the Spot is built, creating nothing."""

    @pytest.mark.parametrize(
        ("option", "value", "match"),
        [
            ("db", "mysql://x", "unknown database URL scheme"),
            ("db", "sqlite://rel.db", "sqlite:///relative.db"),
            ("db", 42, "TaskDB instance, a path or a URL"),
            ("storage", "gs://bucket", "unknown storage URL scheme"),
            ("storage", 3.5, "BlobStorageBase instance"),
        ],
    )
    def test_bad_specs(self, option: str, value: Any, match: str) -> None:
        """Unknown URL schemes and values of the wrong type name what is accepted."""
        with pytest.raises(bs.ConfigurationError, match=match):
            bs.Spot("bad", **{option: value})

    @pytest.mark.parametrize("form", ["url", "path", "pathlike", "env"])
    def test_missing_directory_is_a_configuration_error(
        self, tmp_path: Path, monkeypatch: Any, form: str
    ) -> None:
        """An explicit database path in a directory that does not exist is refused."""
        target = tmp_path / "no" / "such" / "x.db"
        spec: Any = {
            "url": f"sqlite:///{target}",
            "path": str(target),
            "pathlike": target,
            "env": None,
        }[form]
        if form == "env":
            monkeypatch.setenv("BEAUTYSPOT_DB", str(target))
        with pytest.raises(bs.ConfigurationError, match="does not exist"):
            bs.Spot("x", db=spec, storage=tmp_path / "blobs")
        assert not (tmp_path / "no").exists()

    def test_other_options_validated(self) -> None:
        """Out-of-range numbers, unknown policies and conflicting options are refused."""
        with pytest.raises(bs.ConfigurationError, match="blob_threshold"):
            bs.Spot("x", db="memory://", blob_threshold=-1)
        with pytest.raises(bs.ConfigurationError, match="on_backend_error"):
            bs.Spot("x", db="memory://", on_backend_error="ignore")  # type: ignore[arg-type]
        with pytest.raises(bs.ConfigurationError, match="lease_ttl"):
            bs.Spot("x", db="memory://", lease_ttl=0)
        with pytest.raises(bs.ConfigurationError, match="tpm=/rpm= or limiter="):
            bs.Spot("x", db="memory://", tpm=10, limiter=bs.Limiter(tpm=10))


class TestRateLimitConfiguration:
    """spot.limiter is built from tpm=; without a limit, using it fails at decoration."""

    def test_tpm_builds_a_limiter(self) -> None:
        spot = bs.Spot("limited", db="memory://", tpm=600)
        assert isinstance(spot.limiter, bs.Limiter)

    def test_missing_limit_fails_at_decoration(self) -> None:
        spot = bs.Spot("nolimit", db="memory://")
        with pytest.raises(bs.ConfigurationError, match="no rate limit"):
            spot.limiter(cost=1)
        with pytest.raises(bs.ConfigurationError, match="no rate limit"):

            @spot.limiter
            async def f() -> None: ...


@pytest.mark.anyio
class TestRateLimitUnderMark:
    """Under @spot.mark only the call that executes pays: hits and joiners pay nothing."""

    async def test_hits_and_joiners_consume_no_quota(self, tmp_path: Path) -> None:
        clock = FakeClock(start=0.0)
        limiter = bs.Limiter(tpm=6000, clock=clock)
        release = anyio.Event()
        async with open_spot("memory", tmp_path, limiter=limiter) as spot:

            @spot.mark
            @spot.limiter(cost=lambda prompt: len(prompt))
            async def call(prompt: str) -> str:
                await release.wait()
                return prompt.upper()

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(call, "abcd")  # one executes, nine join
                await anyio.wait_all_tasks_blocked()
                release.set()
            for _ in range(5):
                assert await call("abcd") == "ABCD"  # memory hits
        stats = limiter.statistics()
        assert stats.admitted == 1
