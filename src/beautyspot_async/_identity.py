"""Function identity: the name a marked function's cache keys are scoped by.

Pure and synchronous. A partial, bound method or static/class method has the
identity of the function underneath; its bound arguments belong to the input
id instead (see ``_keygen``).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from .exceptions import ConfigurationError

__all__ = ["describe", "function_identity", "underlying_function", "unwrap"]


def unwrap(fn: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """The underlying function plus the arguments bound in front of a call's."""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    while True:
        if isinstance(fn, functools.partial):
            args = fn.args + args
            kwargs = {**fn.keywords, **kwargs}
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            args = (fn.__self__, *args)
            fn = fn.__func__
        elif isinstance(fn, staticmethod | classmethod):
            fn = fn.__func__
        else:
            return fn, args, kwargs


def underlying_function(fn: Any) -> Any:
    """The function behind ``fn``'s partials, bound methods and static/class methods."""
    return unwrap(fn)[0]


def function_identity(fn: Callable[..., Any], name: str | None = None) -> str:
    """Return the identity a function's cache keys are scoped by.

    ``name`` when given; otherwise ``module.qualname`` of the function. A
    ``functools.partial`` or bound method has the identity of its underlying
    function (its bound arguments belong to the input id); a callable object
    has that of ``type(obj).__call__``. A lambda has no stable identity and
    raises :class:`ConfigurationError` asking for ``name=``.
    """
    if name is not None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name= must be a non-empty str, got {name!r}")
        return name
    target, _, _ = unwrap(fn)
    if not isinstance(getattr(target, "__qualname__", None), str) and callable(target):
        # An instance with __call__: instances have no __qualname__ of their own.
        target = type(target).__call__
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(qualname, str):
        raise ConfigurationError(f"cannot name {fn!r}: it has no __qualname__; pass name=")
    if not isinstance(module, str):
        owner = getattr(target, "__self__", None)
        module = type(owner).__module__ if owner is not None else "builtins"
    if "<lambda>" in qualname:
        raise ConfigurationError(
            f"cannot derive a stable identity for the lambda {module}.{qualname}: "
            "every lambda has the same name; pass name= or use a def"
        )
    return f"{module}.{qualname}"


def describe(fn: Any) -> str:
    try:
        return function_identity(fn)
    except ConfigurationError:
        target, _, _ = unwrap(fn)
        module = getattr(target, "__module__", "?")
        return f"{module}.{getattr(target, '__qualname__', type(target).__qualname__)}"
