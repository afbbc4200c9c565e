"""The dashboard's Starlette application: one HTML page and a few JSON endpoints.

Routes (all read-only):

* ``GET /`` -- the history as an HTML table, newest first; ``?func=`` filters
  by function, ``?limit=`` caps the rows. Each row links to its entry.
* ``GET /api/history`` -- the same rows as JSON.
* ``GET /api/entries/{key}`` -- one entry's metadata and its decoded value
  (structured under ``value``, as text cut at ``preview_chars`` under
  ``preview``); 404 when the key is not stored.
* ``GET /api/stats`` -- per-function counts and sizes (walks every record).

Every read goes through the maintenance layer, which runs the Spot's backends
on its own I/O loop, so the app can be served by any ASGI server on any loop.

Requests whose ``Host`` header is not a loopback name (``localhost``,
``127.0.0.1``, ``[::1]``, any port) or one of ``allowed_hosts`` get a 400: a
page on another site could otherwise point a DNS name at 127.0.0.1 (DNS
rebinding) and read the stored results through the visitor's browser.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import _display as display
from .. import _maintenance as maint
from ..exceptions import BeautySpotError

if TYPE_CHECKING:
    from .._spot import Spot

__all__ = ["LOOPBACK_HOSTS", "create_app", "host_name", "render_index", "serve"]

#: Most rows one request may ask for.
MAX_LIMIT = 10_000

#: Host names the dashboard answers by default.
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})

_HOST_RE: Final = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::[0-9]{1,5})?")


def host_name(header: str) -> str | None:
    """The name part of a ``Host`` header, lowercased; None when malformed.

    ``"LocalHost:8000"`` -> ``"localhost"``, ``"[::1]:80"`` -> ``"[::1]"``.
    """
    match = _HOST_RE.fullmatch(header.strip().lower())
    return match[1] if match else None


def _normalize_host(name: str) -> str:
    name = name.strip().lower()
    if ":" in name and not name.startswith("["):  # a bare IPv6 address
        return f"[{name}]"
    return name


class HostCheck:
    """ASGI middleware: answer only requests addressed to an allowed host name."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(_normalize_host(h) for h in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # the app has no websocket routes
            header = ""
            for name, value in scope.get("headers", ()):
                if name == b"host":
                    header = value.decode("latin-1")
                    break
            if host_name(header) not in self.allowed:
                response = JSONResponse(
                    {"error": f"host {header!r} is not allowed; see --allow-host"},
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    spot: Spot,
    *,
    limit: int = 200,
    preview_chars: int = 4000,
    allowed_hosts: Iterable[str] = (),
) -> Starlette:
    """A Starlette app showing ``spot``'s stored results.

    ``limit`` is the default number of history rows; ``preview_chars`` cuts
    each entry's text preview. Requests are answered only when their
    ``Host`` is a loopback name or one of ``allowed_hosts`` (names without
    port; any port is accepted), and get a 400 otherwise. The app does not
    own ``spot``: whoever created it closes it (:func:`serve` does).
    """

    def row_limit(request: Request) -> int:
        raw = request.query_params.get("limit")
        try:
            wanted = limit if raw is None else int(raw)
        except ValueError:
            wanted = limit
        return min(max(wanted, 0), MAX_LIMIT)

    async def rows(request: Request) -> list[dict[str, Any]]:
        func = request.query_params.get("func") or None
        frame = await maint.history(spot, limit=row_limit(request), func_name=func)
        return display.history_rows(frame)

    async def index(request: Request) -> Response:
        found = await rows(request)
        page = render_index(
            found,
            title=spot.name,
            func=request.query_params.get("func") or None,
            limit=row_limit(request),
        )
        return HTMLResponse(page)

    async def api_history(request: Request) -> Response:
        return JSONResponse(await rows(request))

    async def api_entry(request: Request) -> Response:
        key = request.path_params["key"]
        entry = await maint.show(spot, key)
        if entry is None:
            return JSONResponse({"error": f"no entry with key {key!r}"}, status_code=404)
        return JSONResponse(display.entry_json(entry, max_chars=preview_chars))

    async def api_stats(request: Request) -> Response:
        return JSONResponse([display.summary_json(s) for s in await maint.summary(spot)])

    async def backend_failed(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=503)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/history", api_history),
            Route("/api/entries/{key}", api_entry),
            Route("/api/stats", api_stats),
        ],
        exception_handlers={BeautySpotError: backend_failed},
    )
    app.add_middleware(HostCheck, allowed=LOOPBACK_HOSTS | set(allowed_hosts))
    return app


_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; }
td.num { text-align: right; }
code, pre { font: 12px ui-monospace, monospace; }
pre { background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; margin: 0; }
form { margin-bottom: 1em; }
"""

# Clicking "preview" fetches the entry's JSON and shows it under the row.
_SCRIPT = """
document.addEventListener("click", async (event) => {
  const link = event.target.closest("a.preview");
  if (!link) return;
  event.preventDefault();
  const row = link.closest("tr");
  const next = row.nextElementSibling;
  if (next && next.classList.contains("shown")) { next.remove(); return; }
  const data = await (await fetch(link.href)).json();
  const shown = document.createElement("tr");
  shown.className = "shown";
  const cell = shown.insertCell();
  cell.colSpan = row.cells.length;
  const pre = document.createElement("pre");
  pre.textContent = (data.problem ? "problem: " + data.problem + "\\n\\n" : "") + data.preview;
  cell.appendChild(pre);
  row.after(shown);
});
"""


def _text(value: Any) -> str:
    return "-" if value is None else html.escape(str(value))


def _time(iso: Any) -> str:
    # "2024-01-02T03:04:05.678+00:00" -> "2024-01-02 03:04:05" (the header says UTC)
    return "-" if iso is None else html.escape(str(iso)[:19].replace("T", " "))


def render_index(
    rows: Sequence[Mapping[str, Any]], *, title: str, func: str | None, limit: int
) -> str:
    """The HTML history page for ``rows`` (as :func:`history_rows` makes them).

    Every value is HTML-escaped: function names and versions come from user
    code and must not inject markup.
    """
    body: list[str] = []
    for row in rows:
        key = str(row["cache_key"])
        func_link = "/?" + urlencode({"func": row["func_name"], "limit": limit})
        body.append(
            "<tr>"
            f"<td>{_time(row['updated_at'])}</td>"
            f'<td><a href="{html.escape(func_link)}">{_text(row["func_name"])}</a></td>'
            f"<td><code>{_text(key)}</code></td>"
            f"<td>{_text(row['version'])}</td>"
            f"<td>{_text(row['result_type'])}</td>"
            f'<td class="num">{int(row["size_bytes"])}</td>'
            f"<td>{_time(row['expires_at'])}</td>"
            f'<td class="args">{html.escape(display.args_line(row.get("args"), 120))}</td>'
            f'<td><a class="preview" href="/api/entries/{quote(key, safe="")}">preview</a></td>'
            "</tr>"
        )
    heading = f"{len(rows)} entries" + (f" of {_text(func)}" if func else "")
    reset = ' <a href="/">all functions</a>' if func else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>beautyspot-async: {_text(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{_text(title)}</h1>
<form method="get" action="/">
  <label>function <input name="func" value="{html.escape(func or "")}"></label>
  <label>rows <input name="limit" type="number" min="0" value="{limit}"></label>
  <button type="submit">show</button>{reset}
  <a href="/api/stats">stats (JSON)</a>
</form>
<p>{heading}, newest first.</p>
<table>
<thead><tr><th>updated (UTC)</th><th>function</th><th>cache key</th><th>version</th>
<th>stored</th><th>bytes</th><th>expires (UTC)</th><th>args</th><th></th></tr></thead>
<tbody>
{"".join(body)}
</tbody>
</table>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def serve(
    spot: Spot,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Serve the dashboard with uvicorn until interrupted, then close ``spot``.

    The Spot is opened first, so an unreachable database fails here, before
    the server starts listening. ``allowed_hosts`` are the ``Host`` names
    answered besides loopback (see :func:`create_app`).
    """
    import uvicorn

    with spot:
        app = create_app(spot, allowed_hosts=allowed_hosts)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
