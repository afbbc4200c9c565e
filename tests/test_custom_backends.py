"""Custom backends written from the guide (and from the seed's guide) work.

``MemoryTaskDB`` is the seed's ``MemoryTaskDB`` example ported to the
async protocol the way a user would: ``async`` added and the keyword
arguments of ``save`` taken from the contract. Its ``save()`` knows nothing
of ``size_bytes`` and its ``get()`` returns the stored dict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import beautyspot_async as bs
from beautyspot_async import _maintenance
from beautyspot_async.db import TaskDB, TaskRecord
from beautyspot_async.storage import BlobStorageBase


class MemoryTaskDB(TaskDB):
    """The seed guide's in-memory backend, ported to async."""

    def __init__(self) -> None:
        self._storage: dict[str, dict[str, Any]] = {}

    async def init_schema(self) -> None:
        pass  # a dict needs no schema

    async def get(self, cache_key: str) -> dict[str, Any] | None:
        return self._storage.get(cache_key)

    async def save(
        self,
        *,
        cache_key: str,
        func_name: str,
        input_id: str,
        version: str | None,
        result_type: str,
        content_type: str | None,
        result_value: str | None = None,
        result_data: bytes | None = None,
        expires_at: float | None = None,
    ) -> None:
        self._storage[cache_key] = {
            "func_name": func_name,
            "input_id": input_id,
            "version": version,
            "result_type": result_type,
            "content_type": content_type,
            "result_value": result_value,
            "result_data": result_data,
            "expires_at": expires_at,
            "updated_at": pd.Timestamp.now(),  # for the history
        }

    async def get_history(self, limit: int = 1000) -> pd.DataFrame:
        if not self._storage:
            return pd.DataFrame()
        df = pd.DataFrame(list(self._storage.values()))
        df["cache_key"] = list(self._storage.keys())
        return df.sort_values("updated_at", ascending=False).head(limit)


class FullerTaskDB(MemoryTaskDB):
    """The guide's backend plus delete() and iter_records(), none of the optional extras.

    Failure records and budgets then run on TaskDB's defaults over these two.
    """

    async def delete(self, cache_key: str) -> bool:
        return self._storage.pop(cache_key, None) is not None

    async def iter_records(self) -> AsyncIterator[dict[str, Any]]:
        for key, row in list(self._storage.items()):
            stamp = row["updated_at"].timestamp()
            yield {**row, "cache_key": key, "created_at": stamp, "updated_at": stamp}


class TwoMethodStorage(BlobStorageBase):
    """A blob storage with only the two methods a reader needs."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def save(self, key: str, data: bytes) -> str:
        self.blobs[key] = bytes(data)
        return key

    async def load(self, location: str) -> bytes:
        try:
            return self.blobs[location]
        except KeyError:
            raise bs.CacheCorruptedError(f"no blob {location!r}") from None


class TestMemoryTaskDB:
    """The seed's ported example caches results like a built-in backend."""

    @pytest.mark.anyio
    async def test_results_are_written_and_hit(self, tmp_path: Path) -> None:
        """Every write succeeds, and a new Spot on the same database hits it."""
        db = MemoryTaskDB()
        calls: list[int] = []

        def build(spot: bs.Spot) -> Any:
            @spot.mark
            async def calc(x: int) -> int:
                calls.append(x)
                return x * 2

            return calc

        async with bs.Spot("memory_app", db=db, storage=tmp_path / "blobs") as spot:
            assert await build(spot)(10) == 20
            assert spot.statistics().write_failures == 0
        assert len(db._storage) == 1
        async with bs.Spot("memory_app", db=db, storage=tmp_path / "blobs") as spot:
            assert await build(spot)(10) == 20
            assert spot.statistics().hits == 1
        assert calls == [10]

    @pytest.mark.anyio
    async def test_blob_results_round_trip(self, tmp_path: Path) -> None:
        """A result over the blob threshold goes to storage and comes back."""
        db = MemoryTaskDB()
        calls: list[int] = []
        for _ in range(2):
            async with bs.Spot(
                "memory_app", db=db, storage=tmp_path / "blobs", blob_threshold=16
            ) as spot:

                @spot.mark
                async def big(n: int) -> bytes:
                    calls.append(n)
                    return b"x" * n

                assert await big(1000) == b"x" * 1000
        assert calls == [1000]

    @pytest.mark.anyio
    async def test_history_is_the_backends_frame(self, tmp_path: Path) -> None:
        """history() hands back what the backend's get_history builds."""
        async with bs.Spot("memory_app", db=MemoryTaskDB(), storage=tmp_path / "b") as spot:

            @spot.mark
            async def calc(x: int) -> int:
                return x * 2

            await calc(1)
            frame = await spot.history()
            assert len(frame) == 1
            assert frame["func_name"][0].endswith("calc")


class BadGetDB(MemoryTaskDB):
    async def get(self, cache_key: str) -> Any:  # type: ignore[override]
        return ("not", "a", "record") if cache_key in self._storage else None


class KwargsDB(MemoryTaskDB):
    """A save() taking **kwargs receives every optional keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.extra: list[dict[str, Any]] = []

    async def save(self, **fields: Any) -> None:  # type: ignore[override]
        self.extra.append({k: v for k, v in fields.items() if k == "size_bytes"})
        await super().save(**{k: v for k, v in fields.items() if k != "size_bytes"})


class TestRecordsFromCustomBackends:
    """What a backend's get() returns is coerced to a TaskRecord, or refused clearly."""

    @pytest.mark.anyio
    async def test_mapping_becomes_a_record(self) -> None:
        """A dict with TaskRecord's field names is a record; the key is filled in."""
        db = MemoryTaskDB()
        await db.save_many(
            [
                TaskRecord(
                    cache_key="k",
                    func_name="f",
                    input_id="i",
                    version=None,
                    result_type="inline",
                    content_type=None,
                    result_data=b"abc",
                    size_bytes=3,
                )
            ]
        )
        found = await db.get_many(["k", "missing"])
        assert list(found) == ["k"]
        record = found["k"]
        assert isinstance(record, TaskRecord)
        assert record.cache_key == "k"
        assert record.result_data == b"abc"
        assert record.size_bytes == 3  # defaulted from the payload
        assert record.updated_at > 0  # the pandas Timestamp became POSIX seconds

    @pytest.mark.anyio
    async def test_save_many_passes_size_bytes_to_kwargs(self) -> None:
        """A save() with **kwargs is given the optional keywords too."""
        db = KwargsDB()
        record = TaskRecord(
            cache_key="k",
            func_name="f",
            input_id="i",
            version=None,
            result_type="inline",
            content_type=None,
            result_data=b"abc",
            size_bytes=3,
        )
        await db.save_many([record])
        assert db.extra == [{"size_bytes": 3}]

    @pytest.mark.anyio
    async def test_other_types_are_a_clear_error(self, tmp_path: Path) -> None:
        """A get() returning neither a record nor a mapping names what it returned."""
        db = BadGetDB()
        for attempt in range(2):
            async with bs.Spot("bad", db=db, storage=tmp_path / "blobs") as spot:

                @spot.mark
                async def calc(x: int) -> int:
                    return x * 2

                if attempt == 0:
                    assert await calc(1) == 2
                else:
                    with pytest.raises(bs.BackendError, match=r"tuple.*TaskRecord"):
                        await calc(1)

    @pytest.mark.anyio
    async def test_missing_field_is_a_clear_error(self) -> None:
        """A mapping without a required field names the field."""

        class Partial(MemoryTaskDB):
            async def get(self, cache_key: str) -> Any:  # type: ignore[override]
                return {"func_name": "f"}

        with pytest.raises(bs.BackendError, match="input_id"):
            await Partial().get_many(["k"])


class TestTwoMethodStorage:
    """A blob storage with only save and load works; gc says it cannot list."""

    @pytest.mark.anyio
    async def test_blobs_are_written_and_read(self, tmp_path: Path) -> None:
        """Blob results are saved and loaded through the two required methods."""
        storage = TwoMethodStorage()
        calls: list[int] = []
        for _ in range(2):
            async with bs.Spot(
                "two", db=tmp_path / "two.db", storage=storage, blob_threshold=16
            ) as spot:

                @spot.mark
                async def big(n: int) -> bytes:
                    calls.append(n)
                    return b"y" * n

                assert await big(100) == b"y" * 100
        assert calls == [100]
        assert len(storage.blobs) == 1

    @pytest.mark.anyio
    async def test_gc_says_storage_cannot_list(self, tmp_path: Path) -> None:
        """gc on a storage without list_locations is a clear ConfigurationError."""
        spot = bs.Spot("two", db=tmp_path / "two.db", storage=TwoMethodStorage())
        try:
            with pytest.raises(bs.ConfigurationError, match="cannot list its blobs"):
                await _maintenance.collect_garbage(spot)
        finally:
            await spot.aclose()
