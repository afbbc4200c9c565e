"""The serializer of one marked function: its return annotation is the schema.

``@spot.mark`` wraps the Spot's serializer in :class:`TypedResults` when the
function's return annotation may name a typed class (a pydantic model, a
dataclass, an Enum...). The annotation is compiled on first use, not at
decoration time, so that ``-> Model`` may name a class defined further down
the module (or a string annotation under ``from __future__ import
annotations``). An annotation that cannot be resolved (a name imported
only under ``TYPE_CHECKING``) is not an error: results are then stored as
if there were no annotation, and an error about an unknown type says why.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

from ._schema import ANY, Compiled, compile_annotation
from .exceptions import SerializationError
from .serializer import MsgpackSerializer, Serializer

__all__ = ["TypedResults", "typed_serializer"]


class _Plan:
    __slots__ = ("dump", "load", "note", "serializer")

    def __init__(
        self,
        serializer: Serializer,
        compiled: Compiled | None,
        note: str | None = None,
    ) -> None:
        root = compiled.root if compiled is not None else ANY
        if compiled is not None and compiled.scope and isinstance(serializer, MsgpackSerializer):
            serializer = serializer.scoped(compiled.scope)
        self.serializer = serializer
        self.dump: Callable[[Any], Any] | None = root.dump if root.converts else None
        self.load: Callable[[Any], Any] | None = root.load if root.converts else None
        self.note = note


class TypedResults:
    """A :class:`Serializer` converting one function's typed results to plain data and back."""

    __slots__ = ("_base", "_func", "_plan")

    def __init__(self, base: Serializer, func: Callable[..., Any]) -> None:
        self._base = base
        self._func = func
        self._plan: _Plan | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._base!r}, {_name(self._func)})"

    def _compile(self) -> _Plan:
        try:
            compiled = _compile_return(self._func)
        except Exception as exc:
            note = (
                f"(the return annotation of {_name(self._func)} could not be resolved, "
                f"{type(exc).__name__}: {exc}; results are stored as if it were absent)"
            )
            plan = _Plan(self._base, None, note)
        else:
            plan = _Plan(self._base, compiled)
        self._plan = plan
        return plan

    def dumps(self, obj: Any) -> bytes:
        plan = self._plan or self._compile()
        try:
            if plan.dump is not None:
                obj = plan.dump(obj)
            return plan.serializer.dumps(obj)
        except SerializationError as exc:
            if plan.note is not None:
                exc.args = (f"{exc} {plan.note}", *exc.args[1:])
            raise

    def loads(self, data: bytes) -> Any:
        plan = self._plan or self._compile()
        load = plan.load
        if load is None:
            return plan.serializer.loads(data)
        return load(plan.serializer.loads(data))


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _return_annotation(func: Callable[..., Any]) -> Any:
    target = inspect.unwrap(func)
    annotations = getattr(target, "__annotations__", None) or {}
    return annotations.get("return", inspect.Signature.empty)


def _compile_return(func: Callable[..., Any]) -> Compiled:
    target = inspect.unwrap(func)
    globalns = getattr(target, "__globals__", None)
    # A class defined in the enclosing function and used in the body is a
    # closure variable: that makes string annotations of local classes work.
    localns: dict[str, Any] = {}
    code = getattr(target, "__code__", None)
    closure = getattr(target, "__closure__", None)
    if code is not None and closure:
        for name, cell in zip(code.co_freevars, closure, strict=False):
            with contextlib.suppress(ValueError):  # an empty cell
                localns[name] = cell.cell_contents
    stream = inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target)
    return compile_annotation(_return_annotation(func), globalns, localns, stream=stream)


def typed_serializer(func: Callable[..., Any], base: Serializer) -> Serializer:
    """``base``, wrapped in :class:`TypedResults` when ``func``'s return annotation needs it.

    The annotation is compiled here when it can be: a plain one (``-> dict``,
    ``-> "str"``) then costs nothing per call. One naming a class not defined
    yet is compiled again on the first call.
    """
    if _return_annotation(func) in (inspect.Signature.empty, None):
        return base
    try:
        compiled = _compile_return(func)
    except Exception:
        return TypedResults(base, func)  # tried again, and explained, on first use
    if not compiled.complete:
        return TypedResults(base, func)
    if not compiled.root.converts and not compiled.scope:
        return base
    typed = TypedResults(base, func)
    typed._plan = _Plan(base, compiled)
    return typed
