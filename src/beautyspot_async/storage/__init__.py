"""Blob storages: where results above ``blob_threshold`` live.

``BlobStorageBase`` is the protocol; ``LocalStorage`` ships with the core
install and ``S3Storage`` (extra ``[s3]``) is imported on first access so that
``import beautyspot_async`` never imports aiobotocore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import BlobStorageBase
from ._local import LocalStorage

if TYPE_CHECKING:
    from ._s3 import S3Storage

__all__ = ["BlobStorageBase", "LocalStorage", "S3Storage"]

for _cls in (BlobStorageBase, LocalStorage):
    _cls.__module__ = __name__
del _cls


def __getattr__(name: str) -> Any:
    if name == "S3Storage":
        from ._s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
