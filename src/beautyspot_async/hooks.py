"""Hooks: observe every call of a marked function.

Subclass :class:`HookBase` and override any of its methods, as plain or
``async def`` methods. A hook that raises is logged and ignored: observing a
call must never break it. When no hook is configured the pipeline does not
build contexts at all.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CacheHitContext",
    "CacheMissContext",
    "HookBase",
    "HookContext",
    "PreExecuteContext",
    "SaveErrorContext",
]

logger = logging.getLogger("beautyspot_async")


@dataclass(frozen=True, slots=True)
class HookContext:
    """What every hook is told about the call.

    ``kwargs`` is a read-only mapping; ``args`` a tuple.
    """

    func_name: str
    cache_key: str
    input_id: str
    version: str | None
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PreExecuteContext(HookContext):
    """Before the cache is consulted, on every call."""


@dataclass(frozen=True, slots=True)
class CacheHitContext(HookContext):
    """A stored (or concurrently computed) result was returned."""

    result: Any = None


@dataclass(frozen=True, slots=True)
class CacheMissContext(HookContext):
    """The function was executed; ``result`` is what it returned."""

    result: Any = None


@dataclass(frozen=True, slots=True)
class SaveErrorContext(HookContext):
    """A result could not be serialized or written; ``error`` says why."""

    result: Any = None
    error: BaseException | None = None


class HookBase:
    """Base class for hooks; override the events you care about.

    Each method may be a plain method or a coroutine function. Async hooks
    run on the caller's event loop (for sync marked functions, on the Spot's
    I/O loop); write-behind save errors are reported from the I/O loop.
    """

    def pre_execute(self, context: PreExecuteContext) -> Awaitable[None] | None:
        """Called on every call, before the cache is consulted."""
        return None

    def on_cache_hit(self, context: CacheHitContext) -> Awaitable[None] | None:
        """Called after a call was answered without executing the function."""
        return None

    def on_cache_miss(self, context: CacheMissContext) -> Awaitable[None] | None:
        """Called after the function executed and returned."""
        return None

    def on_save_error(self, context: SaveErrorContext) -> Awaitable[None] | None:
        """Called when a result could not be stored."""
        return None


EVENTS = ("pre_execute", "on_cache_hit", "on_cache_miss", "on_save_error")

_Handler = Callable[[Any], Any]


class HookSet:
    """Hooks resolved once per marked function: which are overridden, sync or async."""

    __slots__ = ("_async", "_sync")

    def __init__(self, hooks: Iterable[Any]) -> None:
        self._sync: dict[str, list[_Handler]] = {}
        self._async: dict[str, list[_Handler]] = {}
        for hook in hooks:
            if not isinstance(hook, HookBase):
                from .exceptions import ConfigurationError

                raise ConfigurationError(
                    f"hooks must be HookBase instances, got {type(hook).__qualname__}; "
                    "subclass beautyspot_async.HookBase"
                )
            for event in EVENTS:
                if getattr(type(hook), event) is getattr(HookBase, event):
                    continue
                handler = getattr(hook, event)
                target = self._async if inspect.iscoroutinefunction(handler) else self._sync
                target.setdefault(event, []).append(handler)

    def __bool__(self) -> bool:
        return bool(self._sync or self._async)

    def wants(self, event: str) -> bool:
        return event in self._sync or event in self._async

    def has_async(self, event: str) -> bool:
        return event in self._async

    def fire_sync(self, event: str, context: HookContext) -> None:
        for handler in self._sync.get(event, ()):
            try:
                handler(context)
            except Exception:
                logger.exception("hook %r raised during %s; ignored", handler, event)

    async def fire_async(self, event: str, context: HookContext) -> None:
        for handler in self._async.get(event, ()):
            try:
                await handler(context)
            except Exception:
                logger.exception("hook %r raised during %s; ignored", handler, event)

    def merged(self, other: HookSet) -> HookSet:
        combined = HookSet(())
        for src in (self, other):
            for event, handlers in src._sync.items():
                combined._sync.setdefault(event, []).extend(handlers)
            for event, handlers in src._async.items():
                combined._async.setdefault(event, []).extend(handlers)
        return combined
