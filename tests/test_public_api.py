"""The public surface: curated exports, public module paths, optional imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import beautyspot_async as bs


class TestExports:
    """The package root exports a sorted, complete and public ``__all__``."""

    def test_all_sorted_and_unique(self) -> None:
        names = [n for n in bs.__all__ if n != "__version__"]
        assert names == sorted(names)
        assert len(set(bs.__all__)) == len(bs.__all__)

    def test_every_public_attribute_is_exported(self) -> None:
        public = {
            name
            for name, value in vars(bs).items()
            if not name.startswith("_") and not isinstance(value, type(sys))
        }
        assert public <= set(bs.__all__), public - set(bs.__all__)
        for name in bs.__all__:
            assert hasattr(bs, name), name

    def test_no_private_module_paths(self) -> None:
        for name in bs.__all__:
            value = getattr(bs, name)
            module = getattr(value, "__module__", None)
            if module is not None:
                assert not any(part.startswith("_") for part in module.split(".")), (name, module)

    def test_public_modules_from_the_seed_documents(self) -> None:
        from beautyspot_async.cachekey import KeyGen
        from beautyspot_async.db import MemoryTaskDB, SQLiteTaskDB, TaskDB
        from beautyspot_async.limiter import Limiter
        from beautyspot_async.storage import BlobStorageBase, LocalStorage

        assert KeyGen is bs.KeyGen
        assert Limiter is bs.Limiter
        assert TaskDB is bs.TaskDB
        assert BlobStorageBase is bs.BlobStorageBase
        assert issubclass(MemoryTaskDB, TaskDB)
        assert issubclass(SQLiteTaskDB, TaskDB)
        assert issubclass(LocalStorage, BlobStorageBase)
        for module in ("db", "storage", "cachekey", "limiter", "hooks", "serializer", "testing"):
            importlib.import_module(f"beautyspot_async.{module}")

    def test_exception_tree(self) -> None:
        for exc in (
            bs.ConfigurationError,
            bs.SerializationError,
            bs.CacheCorruptedError,
            bs.BackendError,
            bs.RateLimitError,
        ):
            assert issubclass(exc, bs.BeautySpotError)
        assert issubclass(bs.ConfigurationError, ValueError)

    def test_py_typed_ships(self) -> None:
        assert (Path(bs.__file__).parent / "py.typed").is_file()

    def test_version(self) -> None:
        assert bs.__version__.count(".") >= 2


class TestOptionalDependencies:
    """Importing the package never imports the optional drivers."""

    def test_import_is_light(self) -> None:
        code = (
            "import sys, beautyspot_async, beautyspot_async.db, beautyspot_async.storage, "
            "beautyspot_async.limiter\n"
            "heavy = {'asyncpg', 'redis', 'aiobotocore', 'botocore', 'starlette', 'uvicorn',"
            " 'typer', 'pandas'}\n"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.strip()
        assert out == "[]"

    def test_missing_extra_gives_install_hint(self, tmp_path: Path) -> None:
        # Simulate an environment without asyncpg by hiding it from the import system.
        code = (
            "import sys; sys.modules['asyncpg'] = None\n"
            "import beautyspot_async as bs\n"
            "try:\n"
            "    bs.Spot('x', db='postgresql://u@127.0.0.1/db')\n"
            "except bs.ConfigurationError as e:\n"
            "    print(e)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path
        ).stdout
        assert "pip install asyncpg" in out
        assert out.count("pip install") == 1  # the hint, once
        assert "beautyspot-async[" not in out  # it is not published on an index
