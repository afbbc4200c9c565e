"""Turn ``db=`` / ``storage=`` options (instances, paths, URLs) into backends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._extras import install_hint
from .db import MemoryTaskDB, SQLiteTaskDB, TaskDB
from .exceptions import ConfigurationError
from .storage import BlobStorageBase, LocalStorage

__all__ = ["resolve_db", "resolve_storage"]

DB_ENV = "BEAUTYSPOT_DB"
STORAGE_ENV = "BEAUTYSPOT_STORAGE"

_EXTRA_FOR = {"postgresql": "postgres", "redis": "redis", "s3": "s3"}


def _missing_name(exc: ImportError) -> str:
    # The backends re-raise with their own sentence; the module is on the cause.
    cause = exc.__cause__
    name = exc.name or (cause.name if isinstance(cause, ImportError) else None)
    return name or "see the cause below"


def _missing_extra(scheme: str, exc: ImportError) -> ConfigurationError:
    extra = _EXTRA_FOR[scheme]
    error = ConfigurationError(
        f"the {scheme}:// backend needs an optional dependency that is not installed "
        f"({_missing_name(exc)}); install it with: {install_hint(extra)}"
    )
    error.__cause__ = exc
    return error


def _sqlite_path(url: str) -> str:
    # sqlite:///rel.db -> "rel.db" (relative to the working directory);
    # sqlite:////abs.db -> "/abs.db"; the SQLAlchemy convention users know.
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        raise ConfigurationError(
            f"invalid SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
        )
    path = rest[1:]
    if not path:
        raise ConfigurationError(f"SQLite URL {url!r} names no file")
    return path


def _sqlite_file(path: str | os.PathLike[str], spec: Any) -> SQLiteTaskDB:
    # Made absolute now, so a later os.chdir() cannot move the database; and
    # an explicit path must be in a directory that exists: creating one from
    # a typo would hide the results somewhere nobody looks.
    if os.fspath(path) == ":memory:":
        return SQLiteTaskDB(":memory:")
    absolute = Path(os.fspath(path)).absolute()
    if not absolute.parent.is_dir():
        raise ConfigurationError(
            f"the directory of the database {os.fspath(path)!r} (from db={spec!r}) "
            f"does not exist: {absolute.parent}; create it first"
        )
    return SQLiteTaskDB(absolute)


def resolve_db(spec: Any, name: str) -> TaskDB:
    """Return the task database an explicit ``db=`` (or the environment) names.

    Relative paths are resolved against the working directory now, when the
    Spot is created, not when the database is first opened.
    """
    if spec is None:
        spec = os.environ.get(DB_ENV)
        if not spec:  # the default file in the working directory
            return SQLiteTaskDB(Path(f"{name}.db").absolute())
    if isinstance(spec, TaskDB):
        return spec
    if isinstance(spec, os.PathLike):
        return _sqlite_file(spec, spec)
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"db must be a TaskDB instance, a path or a URL, got {type(spec).__qualname__}"
        )
    if "://" not in spec:
        return _sqlite_file(spec, spec)
    scheme = spec.split("://", 1)[0].lower()
    if scheme == "sqlite":
        return _sqlite_file(_sqlite_path(spec), spec)
    if scheme == "memory":
        return MemoryTaskDB()
    if scheme in ("postgresql", "postgres"):
        try:
            from .db._postgres import PostgresTaskDB
        except ImportError as exc:
            raise _missing_extra("postgresql", exc) from exc
        return PostgresTaskDB(spec)
    if scheme in ("redis", "rediss", "unix"):
        try:
            from .db._redis import RedisTaskDB
        except ImportError as exc:
            raise _missing_extra("redis", exc) from exc
        return RedisTaskDB(spec)
    raise ConfigurationError(
        f"unknown database URL scheme {scheme!r} in {spec!r}; use a path, sqlite:///..., "
        "memory://, postgresql://... or redis://..."
    )


def resolve_storage(spec: Any, name: str) -> BlobStorageBase:
    """Return the blob storage an explicit ``storage=`` (or the environment) names."""
    if spec is None:
        spec = os.environ.get(STORAGE_ENV) or f"{name}_blobs"
    if isinstance(spec, BlobStorageBase):
        return spec
    if isinstance(spec, os.PathLike):
        return LocalStorage(os.fspath(spec))
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"storage must be a BlobStorageBase instance, a path or a URL, got "
            f"{type(spec).__qualname__}"
        )
    if "://" not in spec:
        return LocalStorage(spec)
    scheme = spec.split("://", 1)[0].lower()
    if scheme == "file":
        return LocalStorage(Path(spec.split("://", 1)[1]))
    if scheme == "s3":
        try:
            from .storage._s3 import S3Storage
        except ImportError as exc:
            raise _missing_extra("s3", exc) from exc
        return S3Storage.from_url(spec)
    raise ConfigurationError(
        f"unknown storage URL scheme {scheme!r} in {spec!r}; use a directory path, "
        "file://... or s3://bucket/prefix"
    )
