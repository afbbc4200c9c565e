"""Fresh copies of plain decoded results, cheaper than decoding them again.

A warm hit must hand each caller its own mutable result, so the memory tier
used to decode the stored payload on every hit: for a 2 KB dict that decode
was most of the hit. For results made only of dicts, lists and tuples of
immutable scalars (what JSON-like LLM answers and most batch results are),
:func:`copier` plans a copy once: containers holding only scalars are
copied by one C call (``list.copy``, ``dict.copy``), tuples of scalars are
shared, and only the containers above them are rebuilt. Anything else (a
model, a set, an array, a subclass) gets no plan and keeps being decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

__all__ = ["copier"]

#: Exact types shared between copies: nothing can change them in place.
_SCALARS: Final = frozenset({str, int, float, bool, bytes, type(None), complex})
#: Exact types of dict keys shared between copies (a tuple key is hashable, so immutable).
_KEYS: Final = _SCALARS | {tuple}
#: Deeper or larger results are decoded, as before.
_MAX_DEPTH: Final = 16
_MAX_NODES: Final = 20_000

Copy = Callable[[], Any]


class _TooBig(Exception):
    pass


def copier(value: Any) -> Copy | None:
    """A function returning a fresh copy of ``value`` on each call, or None.

    The copy equals ``value``, has the same types at every level, and shares
    only immutable parts with it. ``value`` must stay private to the caller
    of this function: every copy is made from it.
    """
    if type(value) in _SCALARS:
        return None  # the memory tier returns scalars as they are
    budget = [_MAX_NODES]
    try:
        plan = _plan(value, 0, budget)
    except _TooBig:
        return None
    if plan is None:
        return None
    if plan is _SHARED:  # a tuple of scalars: one object serves every caller
        return lambda: value
    copy: Copy = plan
    return copy


#: A plan's marker for "immutable all the way down: share it".
_SHARED: Final[Any] = object()


def _plan(value: Any, depth: int, budget: list[int]) -> Any:
    """``_SHARED``, a zero-argument copy function, or None (not copyable)."""
    kind = type(value)
    if kind in _SCALARS:
        return _SHARED
    if depth >= _MAX_DEPTH:
        raise _TooBig
    if kind is dict:
        budget[0] -= len(value)
        if budget[0] < 0:
            raise _TooBig
        if _SCALARS.issuperset(map(type, value.values())) and _KEYS.issuperset(map(type, value)):
            return value.copy  # scanned in C: no per-item Python call
        rebuilt: list[tuple[Any, Copy]] = []
        for key, item in value.items():
            if type(key) not in _KEYS:
                return None
            sub = _plan(item, depth + 1, budget)
            if sub is None:
                return None
            if sub is not _SHARED:
                rebuilt.append((key, sub))
        if not rebuilt:
            return value.copy
        return _dict_copy(value, rebuilt)
    if kind is list or kind is tuple:
        budget[0] -= len(value)
        if budget[0] < 0:
            raise _TooBig
        if _SCALARS.issuperset(map(type, value)):
            return value.copy if kind is list else _SHARED
        subs = []
        for item in value:
            sub = _plan(item, depth + 1, budget)
            if sub is None:
                return None
            subs.append(sub)
        if all(sub is _SHARED for sub in subs):
            return value.copy if kind is list else _SHARED
        return _sequence_copy(value, subs, kind)
    return None


def _dict_copy(value: dict[Any, Any], rebuilt: list[tuple[Any, Copy]]) -> Copy:
    shallow = value.copy

    def copy() -> dict[Any, Any]:
        fresh = shallow()
        for key, sub in rebuilt:
            fresh[key] = sub()
        return fresh

    return copy


def _sequence_copy(value: list[Any] | tuple[Any, ...], subs: list[Any], kind: type) -> Copy:
    parts: list[tuple[Any, Copy | None]] = [
        (item, None if sub is _SHARED else sub) for item, sub in zip(value, subs, strict=True)
    ]
    if kind is list:

        def copy_list() -> list[Any]:
            return [item if sub is None else sub() for item, sub in parts]

        return copy_list

    def copy_tuple() -> tuple[Any, ...]:
        return tuple([item if sub is None else sub() for item, sub in parts])

    return copy_tuple
