"""Allowlist sanitizers for the only HTML the dashboard does not escape.

Stored values are untrusted: a markdown result can carry raw HTML, an SVG can
carry scripts, event handlers and references to other sites. Both are parsed
with :mod:`html.parser` and *re-serialized* from scratch: only allowlisted
elements and attributes are written, every text and attribute value is
escaped again, the content of script-like elements is dropped, and URLs are
limited to what cannot run code or make a request. The output is therefore
well-formed whatever the input, which leaves a browser nothing to re-parse
differently.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Final

__all__ = ["sanitize_html", "sanitize_svg"]


def _words(text: str) -> list[str]:
    return text.split()


# Elements whose content is dropped along with them, not shown as text.
_DROP_CONTENT: Final = frozenset(
    {
        "script",
        "style",
        "iframe",
        "object",
        "embed",
        "template",
        "noscript",
        "textarea",
        "title",
        "xmp",
        "noembed",
        "noframes",
        "plaintext",
        "foreignobject",
        "head",
        "svg",
        "math",
        "select",
        "button",
        "form",
    }
)

_HTML_TAGS: Final = frozenset(
    _words(
        "a abbr b blockquote br caption code dd del details div dl dt em h1 h2 h3 h4 h5 h6 hr i "
        "img ins kbd li mark ol p pre q s samp small span strong sub summary sup table tbody td "
        "tfoot th thead tr u ul"
    )
)
_HTML_VOID: Final = frozenset({"br", "hr", "img"})
_HTML_ATTRS: Final[dict[str, frozenset[str]]] = {
    "*": frozenset({"title", "id"}),
    "a": frozenset({"href"}),
    "img": frozenset({"src", "alt", "width", "height"}),
    "td": frozenset({"align", "colspan", "rowspan"}),
    "th": frozenset({"align", "colspan", "rowspan"}),
    "code": frozenset({"class"}),  # "language-python" from fenced code
    "ol": frozenset({"start"}),
}

_SCHEME: Final = re.compile(r"^([a-z][a-z0-9+.-]*):")
# Only embedded raster images: anything else would be a request or a script.
_SAFE_IMG: Final = re.compile(r"^data:image/(?:png|jpeg|gif|webp);base64,[a-z0-9+/=\s]*$", re.I)


def _html_url_ok(name: str, value: str) -> bool:
    if name == "href":
        # Browsers ignore control characters and spaces inside a scheme.
        scheme = _SCHEME.match(re.sub(r"[\x00-\x20\x7f]", "", value).lower())
        return scheme is None or scheme[1] in ("http", "https", "mailto")
    if name == "src":
        return bool(_SAFE_IMG.match(value))
    return True


# SVG names are case-sensitive; html.parser lowercases them.
_SVG_TAGS: Final = {
    t.lower(): t
    for t in _words(
        "svg g path rect circle ellipse line polyline polygon text tspan desc defs "
        "linearGradient radialGradient stop clipPath symbol use marker pattern mask"
    )
}
_SVG_ATTRS: Final = {
    a.lower(): a
    for a in _words(
        "viewBox width height x y x1 y1 x2 y2 cx cy r rx ry d points fill fill-opacity "
        "fill-rule stroke stroke-width stroke-opacity stroke-linecap stroke-linejoin "
        "stroke-dasharray transform opacity font-size font-family font-weight text-anchor "
        "dominant-baseline offset stop-color stop-opacity gradientUnits gradientTransform "
        "preserveAspectRatio id class clip-path clip-rule marker-start marker-mid marker-end "
        "markerWidth markerHeight refX refY orient patternUnits mask dx dy version href "
        "xlink:href"
    )
}
_SVG_NS: Final = "http://www.w3.org/2000/svg"
_XLINK_NS: Final = "http://www.w3.org/1999/xlink"
_URL_REF: Final = re.compile(r"url\(\s*['\"]?([^)'\"]*)", re.I)


def _svg_value_ok(name: str, value: str) -> bool:
    if name in ("href", "xlink:href"):
        return value.startswith("#")  # a reference inside the document only
    # fill="url(#grad)" is fine; url(http://...) would be a request.
    return all(ref.strip().startswith("#") for ref in _URL_REF.findall(value))


class _Rewriter(HTMLParser):
    def __init__(
        self,
        tags: dict[str, str],
        attrs_for: Callable[[str, str], str | None],
        void: frozenset[str],
        xml: bool,
    ) -> None:
        super().__init__(convert_charrefs=True)
        self.tags = tags
        self.attrs_for = attrs_for
        self.void = void
        self.xml = xml
        self.out: list[str] = []
        self.stack: list[str] = []
        self.dropping: list[str] = []

    def _open(self, tag: str, attrs: list[tuple[str, str | None]], closed: bool) -> None:
        if self.dropping:
            if tag in _DROP_CONTENT and not closed:
                self.dropping.append(tag)
            return
        name = self.tags.get(tag)
        if name is None:
            if tag in _DROP_CONTENT and not closed and tag not in self.void:
                self.dropping.append(tag)
            return
        parts = [name]
        for raw, value in attrs:
            attr = self.attrs_for(tag, raw)
            if attr is not None and value is not None:
                parts.append(f'{attr}="{html.escape(value, quote=True)}"')
        if self.xml and tag == "svg" and not self.stack:
            parts = [p for p in parts if not p.startswith("xmlns")]
            parts[1:1] = [f'xmlns="{_SVG_NS}"', f'xmlns:xlink="{_XLINK_NS}"']
        if tag in self.void or (self.xml and closed):
            self.out.append(f"<{' '.join(parts)}{' /' if self.xml else ''}>")
            return
        self.out.append(f"<{' '.join(parts)}>")
        self.stack.append(name)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, closed=True)

    def handle_endtag(self, tag: str) -> None:
        if self.dropping:
            if tag == self.dropping[-1]:
                self.dropping.pop()
            return
        name = self.tags.get(tag)
        if name is None or name not in self.stack:
            return
        while self.stack:
            top = self.stack.pop()
            self.out.append(f"</{top}>")
            if top == name:
                break

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        self.close()
        return "".join(self.out) + "".join(f"</{t}>" for t in reversed(self.stack))


def _html_attr(tag: str, name: str) -> str | None:
    if name in _HTML_ATTRS["*"] or name in _HTML_ATTRS.get(tag, ()):
        return name
    return None


class _HtmlRewriter(_Rewriter):
    def _open(self, tag: str, attrs: list[tuple[str, str | None]], closed: bool) -> None:
        kept = [(n, v) for n, v in attrs if v is None or _html_url_ok(n, v)]
        if tag == "img" and not any(n == "src" for n, _ in kept):
            return  # an image whose source was refused would show as broken
        super()._open(tag, kept, closed)


def sanitize_html(fragment: str) -> str:
    """``fragment`` reduced to an allowlist of text-formatting HTML.

    Kept: headings, paragraphs, lists, tables, code, emphasis, links to
    http(s)/mailto/relative targets and images embedded as ``data:`` PNG,
    JPEG, GIF or WebP. Dropped: scripts, styles, event handlers, forms,
    frames, any other element (its text stays) and any other attribute.
    """
    tags = {t: t for t in _HTML_TAGS}
    rewriter = _HtmlRewriter(tags, _html_attr, _HTML_VOID, xml=False)
    rewriter.feed(fragment)
    return rewriter.result()


class _SvgRewriter(_Rewriter):
    def _open(self, tag: str, attrs: list[tuple[str, str | None]], closed: bool) -> None:
        kept = [(n, v) for n, v in attrs if v is None or _svg_value_ok(n, v)]
        super()._open(tag, kept, closed)


def sanitize_svg(source: str) -> str:
    """``source`` reduced to an allowlist of static SVG drawing, as XML text.

    Kept: shapes, paths, text, gradients, clip paths and markers with their
    presentation attributes. Dropped: scripts, ``<foreignObject>``, styles,
    event handlers, animation, and every reference outside the document
    (``href`` and ``url(...)`` must start with ``#``). The root always
    declares the SVG namespace, so the result loads as an image.
    """
    start = source.lower().find("<svg")
    rewriter = _SvgRewriter(
        _SVG_TAGS, lambda tag, name: _SVG_ATTRS.get(name), frozenset(), xml=True
    )
    rewriter.feed(source[start:] if start >= 0 else "")
    return rewriter.result()
