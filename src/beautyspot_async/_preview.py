"""What an entry remembers of the call that made it: argument previews and digests.

``Spot(store_args="preview")`` stores, with each fresh result, a short
JSON-ish preview of every argument that is part of the key and a short
digest of its canonical encoding (so a later call can tell which argument
changed, even for redacted ones). Pure and bounded: a preview is at most
:data:`MAX_ARG_CHARS` characters, all of an entry's at most
:data:`MAX_TOTAL_CHARS`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any, Final

from ._canonical import Unkeyable, encode, hexdigest
from ._display import to_jsonable

__all__ = [
    "DIGEST_CHARS",
    "ELLIPSIS",
    "MAX_ARG_CHARS",
    "MAX_TOTAL_CHARS",
    "REDACTED",
    "argument_meta",
    "digest",
    "is_secret_name",
    "preview",
]

logger = logging.getLogger("beautyspot_async")

#: Longest preview of one argument, in characters.
MAX_ARG_CHARS: Final = 512
#: Longest sum of an entry's previews (names included), in characters.
MAX_TOTAL_CHARS: Final = 4096
#: Hex characters kept of an argument's digest: enough to tell values apart.
DIGEST_CHARS: Final = 16
#: What a cut preview ends with.
ELLIPSIS: Final = "…"
#: The preview of an argument whose name says it holds a secret.
REDACTED: Final = "<redacted>"

_SECRET: Final = re.compile(r"key|token|secret|password|authorization", re.IGNORECASE)
# Below this a cut preview says nothing; it is dropped to the marker instead.
_MIN_CUT: Final = 24


def is_secret_name(name: str) -> bool:
    """Whether an argument called ``name`` is stored as :data:`REDACTED`."""
    return _SECRET.search(name) is not None


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS


# One encoder for every preview: json.dumps() with options builds a new one per call.
_ENCODE: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
_SMALL_INT: Final = 10**18


def preview(value: Any, limit: int = MAX_ARG_CHARS) -> str:
    """``value`` as compact JSON text of at most ``limit`` characters; never raises."""
    kind = type(value)
    try:
        # Scalars, most arguments, skip the generic rendering (a few us each).
        if kind is str:
            text = _ENCODE(value[:limit])
        elif value is None or kind is bool or kind is float:
            text = _ENCODE(value)
        elif kind is int and -_SMALL_INT < value < _SMALL_INT:
            text = str(value)
        else:
            # The bounds keep the rendering itself cheap: no more is converted
            # than can be shown.
            text = _ENCODE(to_jsonable(value, max_items=20, max_depth=4, max_str=limit))
    except Exception:  # a pathological value: its preview is not worth failing the call
        text = f"<{type(value).__name__}>"
    return _cut(text, limit)


def digest(value: Any) -> str | None:
    """A short hex digest of ``value``'s canonical encoding; None when it has none."""
    try:
        return hexdigest(encode(value))[:DIGEST_CHARS]
    except (Unkeyable, RecursionError, TypeError, ValueError):
        return None


def _bound_total(previews: dict[str, str]) -> None:
    """Cut the longest previews, in place, until all fit :data:`MAX_TOTAL_CHARS`."""
    total = sum(len(k) + len(v) for k, v in previews.items())
    while total > MAX_TOTAL_CHARS:
        name = max(previews, key=lambda k: len(previews[k]))
        text = previews[name]
        if len(text) <= len(ELLIPSIS):
            # Even the previews alone are too many names: drop the rest.
            del previews[name]
            total -= len(name) + len(text)
            continue
        keep = len(text) - (total - MAX_TOTAL_CHARS)
        cut = _cut(text, keep) if keep >= _MIN_CUT else ELLIPSIS
        previews[name] = cut
        total -= len(text) - len(cut)


def argument_meta(arguments: Iterable[tuple[str, Any, Any]]) -> dict[str, Any]:
    """``{"args": {name: preview}, "digests": {name: digest}}`` for the call's arguments.

    ``arguments`` holds ``(name, value, keyed_value)`` triples: the value as
    passed and as the key encodes it (after a ``KeyGen.map`` transform).
    Arguments whose name says they hold a secret are previewed as
    :data:`REDACTED`; their digest is kept (it cannot be reversed).
    """
    previews: dict[str, str] = {}
    digests: dict[str, str] = {}
    for name, value, keyed in arguments:
        previews[name] = REDACTED if is_secret_name(name) else preview(value)
        found = digest(keyed)
        if found is not None:
            digests[name] = found
    _bound_total(previews)
    meta: dict[str, Any] = {"args": previews}
    if digests:
        meta["digests"] = digests
    return meta
