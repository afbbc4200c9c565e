"""The allowlist sanitizers behind the only unescaped HTML the dashboard shows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from beautyspot_async.dashboard._sanitize import sanitize_html, sanitize_svg

from ._services import require_module

require_module("markupsafe", extra="dashboard")


class TestHtml:
    @pytest.mark.parametrize(
        "hostile",
        [
            "<script>window.__pwned=1</script>",
            "<SCRIPT SRC=//evil/x.js></SCRIPT>",
            "<img src=x onerror=alert(1)>",
            '<img src="javascript:alert(1)">',
            '<a href="javascript:alert(1)">x</a>',
            '<a href="JaVa\tScRiPt:alert(1)">x</a>',
            '<a href="data:text/html,<script>alert(1)</script>">x</a>',
            '<a href="vbscript:msgbox(1)">x</a>',
            "<svg onload=alert(1)><script>alert(1)</script></svg>",
            "<iframe src=//evil></iframe>",
            "<style>body{background:url(//evil)}</style>",
            '<p style="background:url(//evil)">x</p>',
            '<form action="//evil"><input name=a></form>',
            "<math><mi xlink:href=javascript:alert(1)>x</mi></math>",
            '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
            "<!--<script>alert(1)//--><p>ok</p>",
            "<object data=//evil></object><embed src=//evil>",
            "<base href=//evil/>",
            "<meta http-equiv=refresh content=0;url=//evil>",
        ],
    )
    def test_nothing_runnable_survives(self, hostile: str) -> None:
        out = sanitize_html(hostile).lower()
        for bad in ("<script", "onerror", "onload", "javascript", "vbscript", "<iframe", "style"):
            assert bad not in out, (hostile, out)
        for bad in ("<object", "<embed", "<base", "<meta", "<form", "<input", "data:text"):
            assert bad not in out, (hostile, out)
        assert "//evil" not in out.replace("&", "")

    def test_formatting_is_kept(self) -> None:
        source = (
            '<h2 id="t">Title</h2><p>a <strong>b</strong> <em>c</em> <code class="language-py">'
            'x</code></p><ul><li>one</li></ul><table><thead><tr><th align="left">h</th></tr>'
            '</thead><tbody><tr><td>d</td></tr></tbody></table><a href="https://example.org/x">l</a>'
            '<a href="#frag">f</a><a href="other/page">r</a>'
            '<img src="data:image/png;base64,iVBORw0KGgo=" alt="p">'
        )
        assert sanitize_html(source) == source

    def test_text_is_escaped_and_tags_balanced(self) -> None:
        assert sanitize_html("<p>1 &lt; 2 & <b>bold</p>") == "<p>1 &lt; 2 &amp; <b>bold</b></p>"
        assert sanitize_html("<b><i>x</b>") == "<b><i>x</i></b>"
        assert sanitize_html("</p>stray<blink>kept text</blink>") == "straykept text"
        assert sanitize_html('<a href="x" title="a&quot;b">t</a>') == (
            '<a href="x" title="a&quot;b">t</a>'
        )


class TestSvg:
    HOSTILE = (
        '<?xml version="1.0"?><!DOCTYPE svg><svg width="10" height="10" viewBox="0 0 10 10" '
        'onload="alert(1)" xmlns:ev="http://www.w3.org/2001/xml-events">'
        "<script>alert(1)</script><style>*{fill:url(//evil)}</style>"
        '<linearGradient id="g"><stop offset="0" stop-color="red"/></linearGradient>'
        '<rect width="10" height="10" fill="url(#g)" onclick="alert(1)"/>'
        '<rect width="5" height="5" fill="url(http://evil/x)"/>'
        '<use href="http://evil/sprite.svg#a"/><use xlink:href="#g"/>'
        '<image href="http://evil/x.png"/><a href="javascript:alert(1)"><text>t</text></a>'
        '<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">html</div></foreignObject>'
        '<animate attributeName="href" to="javascript:alert(1)"/><set attributeName="onload"/>'
        "</svg>"
    )

    def test_static_drawing_kept_everything_else_dropped(self) -> None:
        out = sanitize_svg(self.HOSTILE)
        for bad in ("script", "onload", "onclick", "evil", "javascript", "<image", "foreign"):
            assert bad not in out, out
        for bad in ("<style", "<animate", "<set", "<a ", "html"):
            assert bad not in out, out
        assert 'viewBox="0 0 10 10"' in out
        assert '<linearGradient id="g">' in out
        assert 'fill="url(#g)"' in out
        assert '<use xlink:href="#g" />' in out

    def test_output_is_well_formed_svg(self) -> None:
        root = ET.fromstring(sanitize_svg(self.HOSTILE))
        assert root.tag == "{http://www.w3.org/2000/svg}svg"

    def test_missing_namespace_is_added_and_garbage_is_empty(self) -> None:
        root = ET.fromstring(sanitize_svg('<svg width="1"><circle r="1"/>'))
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert sanitize_svg("not svg at all") == ""


class TestEntryView:
    """Which view a value gets, by content type, and the fallbacks."""

    @staticmethod
    def entry(value: object, content_type: str | None, problem: str | None = None) -> Any:
        from beautyspot_async._maintenance import Entry
        from beautyspot_async._record import TaskRecord

        record = TaskRecord("k" * 32, "f", "i", None, "inline", content_type)
        return Entry(record=record, value=value, problem=problem)

    def test_jpeg_needs_its_signature(self) -> None:
        from beautyspot_async.dashboard._render import entry_view, image_bytes

        good = self.entry(b"\xff\xd8\xff\xe0rest", "image/jpeg")
        assert entry_view(good).kind == "image"
        assert image_bytes(good) == (b"\xff\xd8\xff\xe0rest", "image/jpeg")
        bad = self.entry(b"<html>", "image/jpeg; q=1")
        view = entry_view(bad)
        assert (view.kind, image_bytes(bad)) == ("tree", None)
        assert "not image/jpeg data" in view.notes[0]

    def test_bytes_are_text_only_for_textual_types(self) -> None:
        from beautyspot_async.dashboard._render import entry_view

        assert entry_view(self.entry(b"a,b\n1,2\n", "text/csv")).table == [["a", "b"], ["1", "2"]]
        view = entry_view(self.entry(b"\x00\x01binary", None))
        assert view.kind == "tree"
        assert str(view.tree).startswith("<8 bytes")

    def test_bad_json_text_is_shown_as_text(self) -> None:
        from beautyspot_async.dashboard._render import entry_view

        view = entry_view(self.entry("{not json", "application/json"))
        assert view.kind == "text"
        assert "not valid JSON" in view.notes[0]

    def test_nothing_decoded(self) -> None:
        from beautyspot_async.dashboard._render import entry_view

        assert entry_view(self.entry(None, "text/plain", problem="blob missing")).kind == "none"
