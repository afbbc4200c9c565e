"""The dashboard app, driven by starlette's TestClient over a real Spot's SQLite file."""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import beautyspot_async as bs
from beautyspot_async.cli import app as cli_app

from ._dashboard_data import FILLER, ContentSpot, build_content, tiny_png
from ._services import require_module
from .test_cli import BIG, Built, build, runner

require_module("starlette", extra="dashboard")
require_module("httpx", extra="dev")

with warnings.catch_warnings():
    # starlette >= 1.x prefers "httpx2" and warns about httpx, which the [dev]
    # extra installs; the client works with either.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

from beautyspot_async.dashboard import create_app  # noqa: E402  (needs the dashboard extra)


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build(tmp_path)


@pytest.fixture
def client(built: Built) -> Iterator[TestClient]:
    spot = bs.Spot("exp", db=built.db, storage=built.blobs)
    app = create_app(spot, preview_chars=100)
    with spot, TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


class TestIndexPage:
    """The HTML index lists every entry with its true count, filterable by function."""

    def test_lists_every_entry_with_entry_links(self, client: TestClient, built: Built) -> None:
        response = client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "6 entries" in response.text
        for key in built.keys.values():
            assert f'href="/entries/{key}"' in response.text

    def test_func_filter_and_page_size(self, client: TestClient, built: Built) -> None:
        text = client.get("/", params={"func": "small", "per_page": "2"}).text
        assert "3 entries matching, of 6 stored" in text
        assert "showing 1\u20132" in text
        assert built.keys["big"] not in text

    def test_bad_numbers_fall_back_to_defaults(self, client: TestClient) -> None:
        text = client.get("/", params={"page": "lots", "per_page": "-3"}).text
        assert "6 entries" in text

    def test_expired_entries_are_marked(self, client: TestClient, built: Built) -> None:
        text = client.get("/", params={"status": "expired"}).text
        assert "1 entry matching, of 6 stored" in text
        assert built.keys["stale"] in text
        assert '<span class="badge expired">expired</span>' in text


class TestJsonEndpoints:
    """The JSON endpoints return history rows, entries with previews, and stats."""

    def test_history(self, client: TestClient) -> None:
        rows = client.get("/api/history", params={"func": "small"}).json()
        assert [r["func_name"] for r in rows] == ["small"] * 3
        assert all(r["expires_at"] is None for r in rows)

    def test_entry_has_value_and_preview(self, client: TestClient, built: Built) -> None:
        entry = client.get(f"/api/entries/{built.keys['small']}").json()
        assert entry["func_name"] == "small"
        assert entry["value"]["when"] == "2024-01-02T00:00:00+00:00"
        assert '"when": "2024-01-02T00:00:00+00:00"' in entry["preview"]
        assert entry["problem"] is None

    def test_large_preview_is_truncated(self, client: TestClient, built: Built) -> None:
        entry = client.get(f"/api/entries/{built.keys['big']}").json()
        assert entry["result_type"] == "blob"
        assert entry["location"]
        assert len(entry["preview"]) < len(BIG)
        assert entry["preview"].endswith("more chars)")

    def test_unknown_ext_is_reported(self, client: TestClient, built: Built) -> None:
        entry = client.get(f"/api/entries/{built.keys['custom']}").json()
        assert entry["value"][0] == "<unknown msgpack ext code 7, 1 bytes>"
        assert "ext code 7" in entry["problem"]

    def test_unknown_key_is_404(self, client: TestClient) -> None:
        response = client.get("/api/entries/" + "0" * 32)
        assert response.status_code == 404
        assert "no entry" in response.json()["error"]

    def test_stats(self, client: TestClient) -> None:
        stats = {s["func_name"]: s for s in client.get("/api/stats").json()}
        assert stats["small"]["entries"] == 3
        assert stats["stale"]["expired"] == 1


class TestHostCheck:
    """Only loopback Host names are answered unless others are allowed (no DNS rebinding)."""

    @pytest.mark.parametrize(
        "host", ["localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:9", "[::1]", "[::1]:8000"]
    )
    def test_loopback_names_are_answered(self, client: TestClient, host: str) -> None:
        assert client.get("/", headers={"host": host}).status_code == 200
        assert client.get("/api/history", headers={"host": host}).status_code == 200

    @pytest.mark.parametrize(
        "host", ["testserver", "evil.example", "localhost.evil.example", "127.0.0.1.nip.io:80", ""]
    )
    def test_other_names_are_refused(self, client: TestClient, host: str) -> None:
        for path in ("/", "/api/history", "/api/stats"):
            response = client.get(path, headers={"host": host})
            assert response.status_code == 400, (path, host)

    def test_allowed_hosts_extend_the_list(self, built: Built) -> None:
        spot = bs.Spot("exp", db=built.db, storage=built.blobs)
        app = create_app(spot, allowed_hosts=["dash.internal"])
        with spot, TestClient(app, base_url="http://dash.internal:8080") as test_client:
            assert test_client.get("/").status_code == 200
            assert test_client.get("/", headers={"host": "localhost"}).status_code == 200
            assert test_client.get("/", headers={"host": "evil.example"}).status_code == 400

    def test_ui_command_passes_allow_host(
        self, built: Built, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import beautyspot_async.dashboard as dashboard

        seen: dict[str, Any] = {}

        def fake_serve(spot: bs.Spot, **options: Any) -> None:
            seen.update(options)

        monkeypatch.setattr(dashboard, "serve", fake_serve)
        result = runner.invoke(
            cli_app, ["ui", str(built.db), "--allow-host", "a.example", "--allow-host", "b"]
        )
        assert result.exit_code == 0, result.output
        assert seen["allowed_hosts"] == ["a.example", "b"]


class TestServe:
    """`ui` listens on loopback, port 0 picks a free port, and the URL is printed."""

    def test_ui_prints_the_url_and_passes_the_flags(
        self, built: Built, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import beautyspot_async.dashboard as dashboard

        seen: dict[str, Any] = {}

        def fake_serve(spot: bs.Spot, **options: Any) -> None:
            seen.update(options)
            options["announce"]("http://127.0.0.1:43210/")

        monkeypatch.setattr(dashboard, "serve", fake_serve)
        result = runner.invoke(cli_app, ["ui", str(built.db), "--port", "0", "--allow-delete"])
        assert result.exit_code == 0, result.output
        assert "http://127.0.0.1:43210/" in result.stdout
        assert (seen["host"], seen["port"], seen["allow_delete"]) == ("127.0.0.1", 0, True)
        result = runner.invoke(cli_app, ["ui", str(built.db)])
        assert (seen["host"], seen["allow_delete"]) == ("127.0.0.1", False)

    def test_port_zero_binds_a_free_loopback_port(self) -> None:
        from beautyspot_async.dashboard._app import bind, url_of

        with bind("127.0.0.1", 0) as sock:
            url = url_of(sock)
            assert url.startswith("http://127.0.0.1:")
            assert not url.endswith(":0/")

    def test_a_host_name_given_to_serve_is_answered(
        self, built: Built, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import uvicorn

        from beautyspot_async.dashboard import _app

        apps: list[Any] = []
        real_bind = _app.bind
        monkeypatch.setattr(_app, "bind", lambda host, port: real_bind("127.0.0.1", 0))
        monkeypatch.setattr(
            uvicorn.Server, "run", lambda self, sockets: apps.append(self.config.app)
        )
        spot = bs.Spot("exp", db=built.db, storage=built.blobs)
        _app.serve(spot, host="dash.internal", port=0)
        with TestClient(apps[0], base_url="http://dash.internal") as test_client:
            assert test_client.get("/api/stats").status_code == 200
            assert test_client.get("/", headers={"host": "evil.example"}).status_code == 400


class TestMalformedRows:
    """One damaged row does not take the history page down."""

    def test_index_survives_a_row_with_a_bad_timestamp(self, built: Built) -> None:
        import sqlite3

        with sqlite3.connect(built.db) as connection:
            connection.execute(
                "UPDATE tasks SET updated_at = 'garbage', size_bytes = 'lots' WHERE cache_key = ?",
                (built.keys["big"],),
            )
        connection.close()
        spot = bs.Spot("exp", db=built.db, storage=built.blobs)
        with spot, TestClient(create_app(spot), base_url="http://localhost") as test_client:
            response = test_client.get("/")
            assert response.status_code == 200, response.text
            assert "6 entries" in response.text
            assert built.keys["small"] in response.text
            rows = test_client.get("/api/history").json()
            assert len(rows) == 6


class TestUiCommand:
    """`ui` refuses a database it cannot open before serving anything."""

    def test_missing_extra_is_named_with_one_hint(
        self, built: Built, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import sys

        for name in list(sys.modules):
            if name.startswith("beautyspot_async.dashboard"):
                monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "jinja2", None)
        result = runner.invoke(cli_app, ["ui", str(built.db)])
        assert result.exit_code == 2
        message = " ".join(result.stderr.split())
        assert "(jinja2)" in message
        assert message.count("pip install") == 1

    def test_missing_database(self, tmp_path: Path) -> None:
        result = runner.invoke(cli_app, ["ui", str(tmp_path / "nope.db")])
        assert result.exit_code == 2
        assert "no such database file" in result.stderr

    def test_unopenable_database(self, tmp_path: Path) -> None:
        junk = tmp_path / "junk.db"
        junk.write_bytes(b"not sqlite at all" * 64)
        result = runner.invoke(cli_app, ["ui", str(junk), "--port", "1"])
        assert result.exit_code == 2
        assert "not a database" in " ".join(result.stderr.split())


# -- content rendering, paging, search, safety ----------------------------------------------


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> ContentSpot:
    return build_content(tmp_path_factory.mktemp("content"))


def content_client(content: ContentSpot, **options: Any) -> Any:
    spot = bs.Spot("content", db=content.db, storage=content.blobs)
    return spot, TestClient(create_app(spot, **options), base_url="http://localhost")


@pytest.fixture
def cclient(content: ContentSpot) -> Iterator[TestClient]:
    spot, test_client = content_client(content)
    with spot, test_client:
        yield test_client


def value_html(page: str) -> str:
    """The entry page's value block."""
    start = page.index('<div class="value')
    return page[start : page.index("</main>", start)]


class TestPaging:
    """Server-side pages over every entry, newest first, with the true total."""

    def test_total_and_pages(self, cclient: TestClient, content: ContentSpot) -> None:
        total = FILLER + len(content.keys)
        data = cclient.get("/api/index", params={"per_page": "50"}).json()
        assert data["total"] == data["stored"] == total
        assert data["pages"] == 3
        assert len(data["rows"]) == 50
        last = cclient.get("/api/index", params={"per_page": "50", "page": "3"}).json()
        assert len(last["rows"]) == total - 100
        assert cclient.get("/api/index", params={"page": "99"}).json()["rows"] == []

    def test_pages_do_not_overlap_and_are_newest_first(self, cclient: TestClient) -> None:
        seen: list[dict[str, Any]] = []
        for page in (1, 2, 3):
            seen += cclient.get("/api/index", params={"page": str(page)}).json()["rows"]
        keys = [r["cache_key"] for r in seen]
        assert len(keys) == len(set(keys))
        times = [r["updated_at"] for r in seen]
        assert times == sorted(times, reverse=True)

    def test_pager_links_keep_the_filters(self, cclient: TestClient) -> None:
        text = cclient.get("/", params={"func": "filler", "page": "2"}).text
        assert 'href="/?func=filler&amp;page=1"' in text
        assert 'href="/?func=filler&amp;page=3"' in text
        assert "page 2 of 3" in text

    def test_totals_per_function(self, cclient: TestClient) -> None:
        totals = {t["func_name"]: t for t in cclient.get("/api/index").json()["totals"]}
        assert totals["filler"]["entries"] == FILLER
        assert totals["filler"]["size_bytes"] > 0
        assert totals["expiring"]["expired"] == 1
        assert totals["broken"] == {
            "func_name": "broken",
            "entries": 0,
            "size_bytes": 0,
            "expired": 0,
            "failures": 1,
        }


class TestFilters:
    """Function, version, status and a text search narrow the index."""

    def test_version(self, cclient: TestClient) -> None:
        data = cclient.get("/api/index", params={"version": "v2"}).json()
        assert data["total"] == FILLER
        assert {r["func_name"] for r in data["rows"]} == {"filler"}

    def test_status(self, cclient: TestClient, content: ContentSpot) -> None:
        expired = cclient.get("/api/index", params={"status": "expired"}).json()
        assert [r["cache_key"] for r in expired["rows"]] == [content.keys["expiring"]]
        ok = cclient.get("/api/index", params={"status": "ok"}).json()
        assert ok["total"] == FILLER + len(content.keys) - 1
        failed = cclient.get("/api/index", params={"status": "failed"}).json()
        assert [(r["func_name"], r["exc_type"]) for r in failed["rows"]] == [
            ("broken", "ValueError")
        ]

    def test_search_by_key_and_function(self, cclient: TestClient, content: ContentSpot) -> None:
        key = content.keys["csv"]
        data = cclient.get("/api/index", params={"q": key[:10].upper()}).json()
        assert [r["cache_key"] for r in data["rows"]] == [key]
        assert cclient.get("/api/index", params={"q": "MERMA"}).json()["total"] == 1

    def test_search_over_argument_previews(self, cclient: TestClient) -> None:
        rows = cclient.get("/api/index", params={"per_page": "1"}).json()["rows"]
        if "args" not in rows[0] or not rows[0]["args"]:
            pytest.skip("this build stores no argument previews in history()")
        data = cclient.get("/api/index", params={"q": "topic-csv"}).json()
        assert [r["func_name"] for r in data["rows"]] == ["csv"]

    def test_unknown_status_is_ignored(self, cclient: TestClient) -> None:
        assert cclient.get("/api/index", params={"status": "weird"}).json()["total"] > FILLER


class TestEntryPage:
    """Each entry has its own page, its value rendered by content type."""

    def test_metadata(self, cclient: TestClient, content: ContentSpot) -> None:
        key = content.keys["expiring"]
        text = cclient.get(f"/entries/{key}").text
        for part in ("expiring", key, "created", "updated", "inline", "text/plain"):
            assert part in text
        assert '<span class="badge expired">expired</span>' in text

    def test_stored_arguments(self, cclient: TestClient, content: ContentSpot) -> None:
        text = cclient.get(f"/entries/{content.keys['csv']}").text
        if "no stored argument previews" in text:
            pytest.skip("this build stores no argument previews with entries")
        section = text[text.index("<h2>arguments</h2>") : text.index("<h2>result</h2>")]
        assert "<th>topic</th>" in section
        assert "topic-csv" in section

    def test_markdown_is_rendered_and_sanitized(
        self, cclient: TestClient, content: ContentSpot
    ) -> None:
        block = value_html(cclient.get(f"/entries/{content.keys['markdown']}").text)
        assert "<h1>Report title</h1>" in block
        assert "<em>emphasis</em>" in block
        assert "<script" not in block
        assert "onerror" not in block

    def test_png_is_an_image_served_with_its_type(
        self, cclient: TestClient, content: ContentSpot
    ) -> None:
        key = content.keys["png"]
        assert (
            f'<img class="inline" src="/entries/{key}/raw"' in cclient.get(f"/entries/{key}").text
        )
        raw = cclient.get(f"/entries/{key}/raw")
        assert raw.headers["content-type"] == "image/png"
        assert raw.content == tiny_png()
        assert raw.headers["x-content-type-options"] == "nosniff"

    def test_svg_is_served_sanitized(self, cclient: TestClient, content: ContentSpot) -> None:
        raw = cclient.get(f"/entries/{content.keys['svg']}/raw")
        assert raw.headers["content-type"].startswith("image/svg+xml")
        assert "sandbox" in raw.headers["content-security-policy"]
        svg = raw.text
        assert "<rect" in svg
        assert "<circle" in svg
        for bad in ("script", "onload", "example.invalid", "<image"):
            assert bad not in svg

    def test_json_is_a_tree(self, cclient: TestClient, content: ContentSpot) -> None:
        block = value_html(cclient.get(f"/entries/{content.keys['json']}").text)
        assert "<details open><summary>{3 keys}</summary>" in block
        assert "[3 items]" in block
        assert "&lt;script&gt;" in block

    def test_csv_is_a_table(self, cclient: TestClient, content: ContentSpot) -> None:
        block = value_html(cclient.get(f"/entries/{content.keys['csv']}").text)
        assert "<th>name</th><th>score</th>" in block
        assert "<td>alice</td><td>3</td>" in block
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in block

    def test_plain_text_and_diagrams_are_preformatted(
        self, cclient: TestClient, content: ContentSpot
    ) -> None:
        block = value_html(cclient.get(f"/entries/{content.keys['plain']}").text)
        assert block.count("<pre>") == 1
        assert "&lt;img src=x onerror=" in block
        page = cclient.get(f"/entries/{content.keys['mermaid']}").text
        assert "no diagram renderer is bundled" in page
        assert "graph TD; A--&gt;B" in page

    def test_undecodable_entry_explains(self, built: Built) -> None:
        spot = bs.Spot("exp", db=built.db, storage=built.blobs)
        with spot, TestClient(create_app(spot), base_url="http://localhost") as test_client:
            response = test_client.get(f"/entries/{built.keys['custom']}")
            assert response.status_code == 200
            assert "cannot fully decode this entry" in response.text
            assert "ext code 7" in response.text
            for blob in built.blobs.rglob("*"):
                if blob.is_file():
                    blob.unlink()
            response = test_client.get(f"/entries/{built.keys['big']}")
            assert response.status_code == 200
            assert "payload unavailable" in response.text

    def test_large_text_is_truncated_with_a_note(self, tmp_path: Path) -> None:
        async def main() -> str:
            spot = bs.Spot("large", db=tmp_path / "l.db", storage=tmp_path / "b")

            @spot.mark(content_type="text/plain")
            async def long_text() -> str:
                return "x" * 150_000

            async with spot:
                await long_text()
                return long_text.key()

        key = asyncio.run(main())
        spot = bs.Spot("large", db=tmp_path / "l.db", storage=tmp_path / "b")
        with spot, TestClient(create_app(spot), base_url="http://localhost") as test_client:
            text = test_client.get(f"/entries/{key}").text
            assert "showing the first 100,000 of 150,000 characters" in text

    def test_unknown_key(self, cclient: TestClient) -> None:
        response = cclient.get("/entries/" + "0" * 32)
        assert response.status_code == 404
        assert "no entry" in response.text
        assert cclient.get("/entries/" + "0" * 32 + "/raw").status_code == 404


class TestFailuresPage:
    def test_lists_exception_and_attempts(self, cclient: TestClient) -> None:
        text = cclient.get("/failures").text
        assert "1 failure" in text
        assert "<strong>ValueError</strong>: bad input 13" in text
        assert cclient.get("/failures", params={"func": "filler"}).text.count("<strong>") == 0


class TestSafety:
    """Escaping, CSP, static assets, the Host check and CSRF-protected deletes."""

    def test_every_page_has_a_strict_csp(self, cclient: TestClient, content: ContentSpot) -> None:
        for path in ("/", "/failures", f"/entries/{content.keys['json']}", "/static/app.js"):
            headers = cclient.get(path).headers
            csp = headers["content-security-policy"]
            assert "default-src 'self'" in csp
            assert "script-src 'self';" in csp
            assert "img-src 'self' data:" in csp
            assert "unsafe-inline" not in csp
            assert headers["x-frame-options"] == "DENY"

    def test_no_inline_script_or_external_url(
        self, cclient: TestClient, content: ContentSpot
    ) -> None:
        for label in content.keys:
            page = cclient.get(f"/entries/{content.keys[label]}").text
            assert "<script>" not in page, label
            assert page.count("<script") == 1  # the packaged /static/app.js
            # Stored text may mention URLs (escaped); no attribute may point at one.
            assert '="http' not in page, label
            assert '="//' not in page, label

    def test_static_assets_are_served(self, cclient: TestClient) -> None:
        assert cclient.get("/static/style.css").headers["content-type"].startswith("text/css")
        assert "javascript" in cclient.get("/static/app.js").headers["content-type"]

    def test_stored_markup_is_escaped_in_the_index(self, cclient: TestClient) -> None:
        text = cclient.get("/", params={"func": "<script>alert(1)</script>"}).text
        assert "<script>alert(1)" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text

    def test_foreign_host_refused(self, cclient: TestClient, content: ContentSpot) -> None:
        for path in ("/", f"/entries/{content.keys['png']}/raw", "/static/app.js"):
            assert cclient.get(path, headers={"host": "evil.example"}).status_code == 400

    def test_read_only_by_default(self, cclient: TestClient, content: ContentSpot) -> None:
        key = content.keys["plain"]
        assert "invalidate this entry" not in cclient.get(f"/entries/{key}").text
        assert cclient.post(f"/entries/{key}/delete", data={"csrf": "x"}).status_code == 403
        assert cclient.get(f"/entries/{key}").status_code == 200
        assert cclient.get(f"/entries/{key}/delete").status_code == 405

    def test_delete_needs_the_csrf_token(self, tmp_path: Path) -> None:
        content = build_content(tmp_path, filler=0)
        key = content.keys["plain"]
        spot, test_client = content_client(content, allow_delete=True)
        with spot, test_client:
            page = test_client.get(f"/entries/{key}").text
            assert "invalidate this entry" in page
            token = re.search(r'name="csrf" value="([^"]+)"', page)
            assert token is not None
            for bad in ({}, {"csrf": ""}, {"csrf": token[1] + "x"}):
                response = test_client.post(f"/entries/{key}/delete", data=bad)
                assert response.status_code == 403, bad
            assert test_client.get(f"/entries/{key}").status_code == 200
            response = test_client.post(
                f"/entries/{key}/delete", data={"csrf": token[1]}, follow_redirects=False
            )
            assert response.status_code == 303
            assert test_client.get(f"/entries/{key}").status_code == 404
            assert "invalidated entry" in test_client.get(response.headers["location"]).text
