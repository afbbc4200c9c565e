"""beautyspot-async: async-native task memoization.

Put ``@spot.mark`` on an ``async def`` and every result is persisted under a
stable hash of its arguments, so a rerun of a batch script executes only what
is missing.
"""

from ._engine import SpotStatistics as SpotStatistics
from ._explain import Explanation as Explanation
from ._report import BatchError as BatchError
from ._report import Failure as Failure
from ._report import MapProgress as MapProgress
from ._report import MapReport as MapReport
from ._spot import Project as Project
from ._spot import Spot as Spot
from ._version import __version__ as __version__
from .cachekey import KeyGen as KeyGen
from .db import TaskDB as TaskDB
from .exceptions import BackendError as BackendError
from .exceptions import BeautySpotError as BeautySpotError
from .exceptions import CacheCorruptedError as CacheCorruptedError
from .exceptions import CacheMissError as CacheMissError
from .exceptions import ConfigurationError as ConfigurationError
from .exceptions import RateLimitError as RateLimitError
from .exceptions import SerializationError as SerializationError
from .hooks import CacheHitContext as CacheHitContext
from .hooks import CacheMissContext as CacheMissContext
from .hooks import HookBase as HookBase
from .hooks import HookContext as HookContext
from .hooks import PreExecuteContext as PreExecuteContext
from .hooks import SaveErrorContext as SaveErrorContext
from .limiter import Limiter as Limiter
from .serializer import MsgpackSerializer as MsgpackSerializer
from .serializer import Serializer as Serializer
from .storage import BlobStorageBase as BlobStorageBase

__all__ = [
    "BackendError",
    "BatchError",
    "BeautySpotError",
    "BlobStorageBase",
    "CacheCorruptedError",
    "CacheHitContext",
    "CacheMissContext",
    "CacheMissError",
    "ConfigurationError",
    "Explanation",
    "Failure",
    "HookBase",
    "HookContext",
    "KeyGen",
    "Limiter",
    "MapProgress",
    "MapReport",
    "MsgpackSerializer",
    "PreExecuteContext",
    "Project",
    "RateLimitError",
    "SaveErrorContext",
    "SerializationError",
    "Serializer",
    "Spot",
    "SpotStatistics",
    "TaskDB",
    "__version__",
]

# Public objects report their public path (beautyspot_async.Spot), not the
# private module they happen to live in.
for _name in (
    "Spot",
    "Project",
    "SpotStatistics",
    "MapReport",
    "MapProgress",
    "Failure",
    "BatchError",
    "Explanation",
):
    globals()[_name].__module__ = __name__
del _name
