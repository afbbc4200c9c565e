"""How one stored value is shown on its entry page, chosen by its ``content_type``.

Pure and never raising: :func:`entry_view` turns an :class:`Entry` into an
:class:`EntryView` the template lays out. Only markdown and SVG become HTML,
and only through the allowlist sanitizers; everything else is data the
template escapes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import markdown
from markupsafe import Markup

from .._display import to_jsonable
from ._sanitize import sanitize_html, sanitize_svg

if TYPE_CHECKING:
    from .._maintenance import Entry

__all__ = ["EntryView", "entry_view", "image_bytes", "media_type"]

#: Characters of text (markdown, CSV, plain text, sources) shown at most.
MAX_TEXT: Final = 100_000
#: CSV rows and columns shown at most.
MAX_ROWS: Final = 500
MAX_COLUMNS: Final = 50

_MERMAID: Final = frozenset({"text/vnd.mermaid", "text/x-mermaid", "application/vnd.mermaid"})
_GRAPHVIZ: Final = frozenset({"text/vnd.graphviz", "text/x-graphviz", "text/x-dot"})
_IMAGES: Final = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}


@dataclass(slots=True)
class EntryView:
    """What the entry page shows for a value.

    ``kind`` is one of ``markdown``, ``image``, ``svg``, ``tree``, ``table``,
    ``text``, ``diagram`` and ``none``. ``notes`` say what was cut, ignored
    or could not be shown.
    """

    kind: str
    html: Markup | None = None
    text: str | None = None
    tree: Any = None
    table: list[list[str]] = field(default_factory=list)
    language: str | None = None
    notes: list[str] = field(default_factory=list)


def media_type(content_type: str | None) -> str:
    """``content_type`` without parameters, lowercased; "" when not set."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _textual(kind: str) -> bool:
    return kind.startswith("text/") or kind in ("application/json", "image/svg+xml")


def _as_text(value: Any, kind: str) -> str | None:
    if isinstance(value, str):
        return value
    # Bytes are text only when the content type says so; otherwise they are
    # shown as data (a size and a hex summary), not as mojibake.
    if isinstance(value, bytes | bytearray) and _textual(kind):
        return bytes(value).decode("utf-8", "replace")
    return None


def _cut(text: str, notes: list[str], limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    notes.append(f"showing the first {limit:,} of {len(text):,} characters")
    return text[:limit]


def _tree(value: Any) -> Any:
    return to_jsonable(value, max_items=200, max_depth=12, max_str=2000)


def _markdown(text: str, notes: list[str]) -> EntryView:
    rendered = markdown.markdown(_cut(text, notes), extensions=["tables", "fenced_code"])
    return EntryView("markdown", html=Markup(sanitize_html(rendered)), notes=notes)


def _csv(text: str, notes: list[str]) -> EntryView:
    rows: list[list[str]] = []
    try:
        for i, row in enumerate(csv.reader(io.StringIO(text))):
            if i == MAX_ROWS:
                notes.append(f"showing the first {MAX_ROWS} rows")
                break
            if len(row) > MAX_COLUMNS:
                row = row[:MAX_COLUMNS]
                if "columns cut" not in " ".join(notes):
                    notes.append(f"showing the first {MAX_COLUMNS} columns (columns cut)")
            rows.append([cell[:1000] for cell in row])
    except csv.Error as exc:
        notes.append(f"not readable as CSV ({exc}); shown as text")
        return EntryView("text", text=_cut(text, notes), notes=notes)
    return EntryView("table", table=rows, notes=notes)


def entry_view(entry: Entry) -> EntryView:
    """The view of ``entry``'s value by its content type; never raises."""
    try:
        return _view(entry)
    except Exception as exc:  # a renderer choking on odd data must not break the page
        notes = [f"cannot render as {media_type(entry.record.content_type) or 'data'}: {exc!r}"]
        return EntryView("tree", tree=_tree(entry.value), notes=notes)


def _view(entry: Entry) -> EntryView:
    value = entry.value
    kind = media_type(entry.record.content_type)
    notes: list[str] = []
    if entry.problem is not None and value is None:
        return EntryView("none", notes=notes)
    text = _as_text(value, kind)
    if kind in _IMAGES:
        if image_bytes(entry) is not None:
            return EntryView("image", notes=notes)
        notes.append(f"the value is not {kind} data; shown as data")
        return EntryView("tree", tree=_tree(value), notes=notes)
    if kind == "image/svg+xml" and text is not None:
        return EntryView("svg", text=_cut(text, notes), notes=notes)
    if text is None or kind == "application/json":
        if text is not None:
            try:
                value = json.loads(text)
            except ValueError as exc:
                notes.append(f"not valid JSON ({exc}); shown as text")
                return EntryView("text", text=_cut(text, notes), notes=notes)
        return EntryView("tree", tree=_tree(value), notes=notes)
    if kind == "text/markdown":
        return _markdown(text, notes)
    if kind == "text/csv":
        return _csv(text, notes)
    if kind in _MERMAID or kind in _GRAPHVIZ:
        language = "Mermaid" if kind in _MERMAID else "Graphviz"
        notes.append(f"{language} source: no diagram renderer is bundled with the dashboard")
        return EntryView("diagram", text=_cut(text, notes), language=language, notes=notes)
    return EntryView("text", text=_cut(text, notes), notes=notes)


def image_bytes(entry: Entry) -> tuple[bytes, str] | None:
    """``(data, media type)`` for an entry whose value is an image to show inline.

    PNG and JPEG bytes are served as they are when their signature matches
    the content type; SVG text is served sanitized. ``None`` for anything else.
    """
    kind = media_type(entry.record.content_type)
    value = entry.value
    if kind in _IMAGES:
        if isinstance(value, bytes | bytearray) and bytes(value).startswith(_IMAGES[kind]):
            return bytes(value), kind
        return None
    if kind == "image/svg+xml":
        text = _as_text(value, kind)
        if text is not None:
            return sanitize_svg(text).encode(), kind
    return None
