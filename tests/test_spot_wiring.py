"""How a Spot is configured: URLs, environment, limiter, memory tier bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import beautyspot_async as bs
from beautyspot_async._memory_tier import MemoryEntry, MemoryTier
from beautyspot_async.db import MemoryTaskDB, SQLiteTaskDB
from beautyspot_async.storage import LocalStorage
from beautyspot_async.testing import FakeClock

from ._spots import open_spot


class TestURLs:
    """db= and storage= accept paths and URLs; explicit options beat the environment."""

    def test_default_files_in_working_directory(self, tmp_path: Path, monkeypatch: Any) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("BEAUTYSPOT_DB", raising=False)
        monkeypatch.delenv("BEAUTYSPOT_STORAGE", raising=False)
        spot = bs.Spot("exp")
        assert isinstance(spot.db, SQLiteTaskDB)
        assert Path(spot.db.path).resolve() == (tmp_path / "exp.db").resolve()
        assert isinstance(spot.storage, LocalStorage)
        assert Path(spot.storage.root).resolve() == (tmp_path / "exp_blobs").resolve()

    def test_sqlite_relative_and_absolute(self, tmp_path: Path, monkeypatch: Any) -> None:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "sub").mkdir()
        relative = bs.Spot("r", db="sqlite:///sub/rel.db").db
        assert isinstance(relative, SQLiteTaskDB)
        assert Path(relative.path).resolve() == (tmp_path / "sub" / "rel.db").resolve()
        absolute = bs.Spot("a", db=f"sqlite:///{tmp_path}/abs.db").db
        assert isinstance(absolute, SQLiteTaskDB)
        assert str(tmp_path).startswith("/")  # so the URL above has four slashes
        assert Path(absolute.path) == tmp_path / "abs.db"

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

    def test_memory_url(self) -> None:
        assert isinstance(bs.Spot("m", db="memory://").db, MemoryTaskDB)

    def test_environment_and_precedence(self, tmp_path: Path, monkeypatch: Any) -> None:
        monkeypatch.setenv("BEAUTYSPOT_DB", "memory://")
        monkeypatch.setenv("BEAUTYSPOT_STORAGE", str(tmp_path / "env_blobs"))
        from_env = bs.Spot("e")
        assert isinstance(from_env.db, MemoryTaskDB)
        assert Path(from_env.storage.root) == tmp_path / "env_blobs"  # type: ignore[attr-defined]
        explicit = bs.Spot("e", db=tmp_path / "x.db", storage=tmp_path / "mine")
        assert isinstance(explicit.db, SQLiteTaskDB)
        assert Path(explicit.storage.root) == tmp_path / "mine"  # type: ignore[attr-defined]

    def test_scale_out_urls_build_their_backends(self) -> None:
        from beautyspot_async.db import PostgresTaskDB, RedisTaskDB
        from beautyspot_async.storage import S3Storage

        assert isinstance(bs.Spot("p", db="postgresql://u@127.0.0.1:1/db").db, PostgresTaskDB)
        assert isinstance(bs.Spot("p", db="redis://127.0.0.1:1/0").db, RedisTaskDB)
        assert isinstance(bs.Spot("p", storage="s3://bucket/pre/fix").storage, S3Storage)

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
        with pytest.raises(bs.ConfigurationError, match=match):
            bs.Spot("bad", **{option: value})

    def test_other_options_validated(self) -> None:
        with pytest.raises(bs.ConfigurationError, match="blob_threshold"):
            bs.Spot("x", db="memory://", blob_threshold=-1)
        with pytest.raises(bs.ConfigurationError, match="on_backend_error"):
            bs.Spot("x", db="memory://", on_backend_error="ignore")  # type: ignore[arg-type]
        with pytest.raises(bs.ConfigurationError, match="lease_ttl"):
            bs.Spot("x", db="memory://", lease_ttl=0)
        with pytest.raises(bs.ConfigurationError, match="tpm= or limiter="):
            bs.Spot("x", db="memory://", tpm=10, limiter=bs.Limiter(tpm=10))


@pytest.mark.anyio
class TestSpotLimiter:
    """spot.limiter is configured by the Spot; under @spot.mark only misses pay."""

    def test_missing_limit_fails_at_decoration(self) -> None:
        spot = bs.Spot("nolimit", db="memory://")
        with pytest.raises(bs.ConfigurationError, match="no rate limit"):
            spot.limiter(cost=1)
        with pytest.raises(bs.ConfigurationError, match="no rate limit"):

            @spot.limiter
            async def f() -> None: ...

    def test_tpm_builds_a_limiter(self) -> None:
        spot = bs.Spot("limited", db="memory://", tpm=600)
        assert isinstance(spot.limiter, bs.Limiter)

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


class TestMemoryTier:
    """The front tier respects its bounds and never evicts unwritten results."""

    def entry(self, size: int) -> MemoryEntry:
        return MemoryEntry(b"x" * size, None)

    def test_entry_bound(self) -> None:
        tier = MemoryTier(max_entries=3, max_bytes=10**6)
        for i in range(10):
            tier.put(f"k{i}", self.entry(10))
        assert len(tier) == 3
        assert tier.get("k9") is not None
        assert tier.get("k0") is None

    def test_byte_bound(self) -> None:
        tier = MemoryTier(max_entries=1000, max_bytes=2000)
        for i in range(50):
            tier.put(f"k{i}", self.entry(400))
        assert tier.nbytes <= 2000
        assert 0 < len(tier) < 50

    def test_oversized_entry_is_not_kept(self) -> None:
        tier = MemoryTier(max_entries=10, max_bytes=100)
        tier.put("big", self.entry(1000))
        assert tier.get("big") is None

    def test_pinned_entries_survive_pressure(self) -> None:
        tier = MemoryTier(max_entries=2, max_bytes=10**6)
        pinned = self.entry(10)
        tier.pin("pending", pinned)
        for i in range(10):
            tier.put(f"k{i}", self.entry(10))
        assert tier.get("pending") is pinned
        tier.unpin("pending", pinned)
        assert len(tier) == 2

    def test_disabled(self) -> None:
        tier = MemoryTier(max_entries=0, max_bytes=0)
        tier.put("k", self.entry(1))
        assert tier.get("k") is None

    def test_spot_memory_bounds(self, tmp_path: Path) -> None:
        spot = bs.Spot(
            "bounded",
            db=MemoryTaskDB(),
            storage=tmp_path,
            memory_cache_entries=5,
        )

        @spot.mark
        def f(x: int) -> list[int]:
            return [x]

        for i in range(50):
            f(i)
        assert spot.statistics().memory_entries == 5


@pytest.mark.anyio
class TestCoalescedLookups:
    """Concurrent reads answered by one batched query still return each key's own row."""

    async def test_gather_of_mixed_keys_in_a_fresh_spot(self, tmp_path: Path) -> None:
        calls: list[int] = []

        def body(x: int) -> Any:
            calls.append(x)
            return {"x": x, "blob": "z" * (5000 if x % 3 == 0 else 1)}

        async with open_spot("sqlite", tmp_path, blob_threshold=1000) as spot:
            first = spot.mark(name="f")(_as_async(body))
            results: dict[int, Any] = {}

            async def run(x: int) -> None:
                results[x] = await first(x)

            async with anyio.create_task_group() as tg:
                for x in range(0, 60, 2):  # even keys stored first
                    tg.start_soon(run, x)
        assert len(calls) == 30
        calls.clear()
        # A fresh Spot: nothing in memory, so every read goes to SQLite at once.
        async with open_spot("sqlite", tmp_path, blob_threshold=1000) as spot:
            again = spot.mark(name="f")(_as_async(body))
            results = {}

            async def run2(x: int) -> None:
                results[x] = await again(x)

            async with anyio.create_task_group() as tg:
                for x in range(60):
                    tg.start_soon(run2, x)
            assert spot.statistics().hits == 30
        assert sorted(calls) == list(range(1, 60, 2))
        for x in range(60):
            assert results[x] == {"x": x, "blob": "z" * (5000 if x % 3 == 0 else 1)}

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])  # SQLiteTaskDB used directly: aiosqlite
    async def test_sqlite_get_many_nowait(self, tmp_path: Path) -> None:
        from beautyspot_async.db import TaskRecord

        db = SQLiteTaskDB(tmp_path / "n.db", nowait_max_bytes=100)
        await db.init_schema()
        for key, size in (("small", 10), ("large", 1000)):
            await db.save(
                cache_key=key,
                func_name="f",
                input_id=key,
                version=None,
                result_type="inline",
                content_type=None,
                result_data=b"d" * size,
            )
        found = db.get_many_nowait(["small", "large", "absent"])
        await db.aclose()
        small = found["small"]
        assert isinstance(small, TaskRecord)
        assert small.result_data == b"d" * 10
        assert found["absent"] is None
        assert "large" not in found  # too large to read on the loop thread

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])  # SQLiteTaskDB used directly: aiosqlite
    async def test_lookup_or_lease_is_atomic_per_batch(self, tmp_path: Path) -> None:
        a = SQLiteTaskDB(tmp_path / "l.db")
        b = SQLiteTaskDB(tmp_path / "l.db")
        await a.init_schema()
        await a.save(
            cache_key="stored",
            func_name="f",
            input_id="i",
            version=None,
            result_type="inline",
            content_type=None,
            result_data=b"v",
        )
        first = await a.lookup_or_lease(["stored", "k1", "k2"], "owner-a", 60)
        second = await b.lookup_or_lease(["k1", "k2", "k3"], "owner-b", 60)
        await a.aclose()
        await b.aclose()
        assert not isinstance(first["stored"], bool)
        assert first["k1"] is True
        assert first["k2"] is True
        assert second == {"k1": False, "k2": False, "k3": True}


def _as_async(fn: Any) -> Any:
    async def wrapper(x: int) -> Any:
        return fn(x)

    wrapper.__qualname__ = fn.__qualname__
    return wrapper
