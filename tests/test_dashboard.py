"""The dashboard app, driven by starlette's TestClient over a real Spot's SQLite file."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import beautyspot_async as bs
from beautyspot_async.cli import app as cli_app

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
from beautyspot_async.dashboard._app import render_index  # noqa: E402


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build(tmp_path)


@pytest.fixture
def client(built: Built) -> Iterator[TestClient]:
    spot = bs.Spot("exp", db=built.db, storage=built.blobs)
    app = create_app(spot, preview_chars=100)
    with spot, TestClient(app, base_url="http://localhost") as test_client:
        yield test_client


class TestHistoryPage:
    """The HTML page lists the history, filterable by function."""

    def test_lists_every_entry_with_preview_links(self, client: TestClient, built: Built) -> None:
        response = client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "6 entries" in response.text
        for key in built.keys.values():
            assert f'href="/api/entries/{key}"' in response.text

    def test_func_filter_and_limit(self, client: TestClient, built: Built) -> None:
        text = client.get("/", params={"func": "small", "limit": "2"}).text
        assert "2 entries of small" in text
        assert built.keys["big"] not in text
        assert "0 entries" in client.get("/", params={"limit": "0"}).text

    def test_a_bad_limit_falls_back_to_the_default(self, client: TestClient) -> None:
        assert "6 entries" in client.get("/", params={"limit": "lots"}).text

    def test_values_are_html_escaped(self) -> None:
        row: dict[str, Any] = {
            "cache_key": "k1",
            "func_name": "<script>alert(1)</script>",
            "version": "v<1>",
            "result_type": "inline",
            "size_bytes": 3,
            "updated_at": "2024-01-02T03:04:05+00:00",
            "expires_at": None,
        }
        page = render_index([row], title="t&t", func=None, limit=10)
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "v&lt;1&gt;" in page
        assert "t&amp;t" in page
        assert "2024-01-02 03:04:05" in page


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
