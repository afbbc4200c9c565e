"""The dashboard's Starlette application: HTML pages over a Spot, and JSON twins.

Routes (read-only unless ``allow_delete``):

* ``GET /`` -- the paged index over every entry, newest first, with totals
  per function; ``?func=``, ``?version=``, ``?status=ok|expired|failed``,
  ``?q=`` (search over argument previews, keys, function names), ``?page=``,
  ``?per_page=``. ``GET /api/index`` is the same page as JSON.
* ``GET /entries/{key}`` -- one entry: metadata, stored arguments, and the
  value rendered by its content type; ``/entries/{key}/raw`` serves an image
  value's bytes; ``POST /entries/{key}/delete`` invalidates it (only with
  ``allow_delete``, and only with the page's CSRF token).
* ``GET /failures`` -- recorded failures.
* ``GET /api/history``, ``/api/entries/{key}``, ``/api/stats`` -- JSON.
* ``/static/...`` -- the one stylesheet and script, served from the package.

Every page is rendered by Jinja2 with autoescaping; the only markup not
escaped is markdown and SVG passed through the allowlist sanitizers of
``_sanitize``. Every response carries a strict Content-Security-Policy (no
inline script, no request to another origin).

Every read goes through the maintenance layer, which runs the Spot's backends
on its own I/O loop, so the app can be served by any ASGI server on any loop.

Requests whose ``Host`` header is not a loopback name (``localhost``,
``127.0.0.1``, ``[::1]``, any port) or one of ``allowed_hosts`` get a 400: a
page on another site could otherwise point a DNS name at 127.0.0.1 (DNS
rebinding) and read the stored results through the visitor's browser.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _browse as browse
from .. import _display as display
from .. import _maintenance as maint
from ..exceptions import BeautySpotError
from ._render import entry_view, image_bytes

if TYPE_CHECKING:
    from .._spot import Spot

__all__ = ["CSP", "LOOPBACK_HOSTS", "bind", "create_app", "host_name", "serve", "url_of"]

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


#: The policy of every page: only this origin's files, no inline script or
#: style, images also as ``data:`` URLs (markdown may embed them).
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# An image opened on its own (its /raw URL) runs nothing and loads nothing;
# SVG keeps its inline styles.
_RAW_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; sandbox"

_HERE: Final = Path(__file__).parent


class SecurityHeaders:
    """ASGI middleware: the CSP and companions on every response that has none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {name.lower() for name, _ in headers}
                extra = {
                    b"content-security-policy": CSP.encode(),
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"no-referrer",
                    b"x-frame-options": b"DENY",
                    b"cache-control": b"no-store",
                }
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _when(value: Any) -> str:
    # ISO text or POSIX seconds -> "2024-01-02 03:04:05" (pages say UTC)
    if value is None:
        return "-"
    if isinstance(value, int | float):
        try:
            value = _dt.datetime.fromtimestamp(value, _dt.UTC).isoformat()
        except (OverflowError, ValueError, OSError):
            return "after 9999-12-31" if value > 0 else "-"
    return str(value)[:19].replace("T", " ")


def _bytes(n: Any) -> str:
    size = float(n or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(n)  # unreachable: the loop returns at GB


def _cut(value: Any, limit: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(when=_when, bytes=_bytes, cut=_cut)
    return env


def _int(raw: str | None, default: int) -> int:
    try:
        return default if raw is None else int(raw)
    except ValueError:
        return default


def _stored_args(record: Any) -> list[tuple[str, str]]:
    # Entries gain stored argument previews (record.meta["args"]); older
    # entries and backends have none.
    meta = getattr(record, "meta", None)
    args = meta.get("args") if isinstance(meta, Mapping) else None
    if isinstance(args, str):
        text = browse.args_text(args)
        return [("arguments", text)] if text else []
    if isinstance(args, Mapping):
        return [(str(k), str(v)) for k, v in args.items()]
    return []


def create_app(
    spot: Spot,
    *,
    limit: int = 200,
    per_page: int = 50,
    preview_chars: int = 4000,
    allowed_hosts: Iterable[str] = (),
    allow_delete: bool = False,
) -> Starlette:
    """A Starlette app showing ``spot``'s stored results.

    ``per_page`` is the index's default page size, ``limit`` the default row
    count of ``/api/history``; ``preview_chars`` cuts the text preview of
    ``/api/entries``. Requests are answered only when their ``Host`` is a
    loopback name or one of ``allowed_hosts`` (names without port; any port
    is accepted), and get a 400 otherwise. ``allow_delete`` shows an
    *invalidate* button on each entry page, guarded by a CSRF token made
    for this app. The app does not own ``spot``: whoever created it closes
    it (:func:`serve` does).
    """
    env = _environment()
    csrf = secrets.token_urlsafe(32)
    cache = browse.HistoryCache()

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html_text = env.get_template(name).render(spot_name=spot.name, **context)
        return HTMLResponse(html_text, status_code=status_code)

    def index_query(request: Request) -> browse.IndexQuery:
        params = request.query_params
        return browse.IndexQuery(
            func=params.get("func"),
            version=params.get("version"),
            status=params.get("status"),
            search=params.get("q"),
            page=_int(params.get("page"), 1),
            per_page=_int(params.get("per_page"), per_page),
        )

    def row_limit(request: Request) -> int:
        return min(max(_int(request.query_params.get("limit"), limit), 0), MAX_LIMIT)

    async def index(request: Request) -> Response:
        query = index_query(request)
        found = await browse.browse(spot, query, cache=cache)

        def link(**changes: Any) -> str:
            params = {
                "func": query.func,
                "version": query.version,
                "status": query.status,
                "q": query.search,
                "page": query.page,
                "per_page": query.per_page if query.per_page != per_page else None,
                **changes,
            }
            return "/?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})

        message = None
        if request.query_params.get("deleted"):
            message = f"invalidated entry {request.query_params['deleted']}"
        return page(
            "index.html",
            page=found,
            q=query,
            link=link,
            statuses=browse.STATUSES,
            message=message,
        )

    async def api_index(request: Request) -> Response:
        found = await browse.browse(spot, index_query(request), cache=cache)
        return JSONResponse(
            {
                "total": found.total,
                "stored": found.stored,
                "page": found.query.page,
                "pages": found.pages,
                "per_page": found.query.per_page,
                "rows": found.rows,
                "totals": [_totals_json(t) for t in found.totals],
            }
        )

    async def entry_page(request: Request) -> Response:
        key = request.path_params["key"]
        entry = await maint.show(spot, key)
        if entry is None:
            return page("missing.html", status_code=404, key=key)
        r = entry.record
        return page(
            "entry.html",
            r=r,
            created=r.created_at,
            updated=r.updated_at,
            expires=r.expires_at,
            expired=r.is_expired(time.time()),
            args=_stored_args(r),
            problem=entry.problem,
            view=entry_view(entry),
            allow_delete=allow_delete,
            csrf=csrf,
        )

    async def entry_raw(request: Request) -> Response:
        entry = await maint.show(spot, request.path_params["key"])
        found = None if entry is None else image_bytes(entry)
        if found is None:
            return Response("no image stored under this key", status_code=404)
        data, kind = found
        return Response(data, media_type=kind, headers={"content-security-policy": _RAW_CSP})

    async def entry_delete(request: Request) -> Response:
        if not allow_delete:
            return Response("read-only dashboard: start it with --allow-delete", 403)
        # Parsed by hand: starlette's form parsing needs python-multipart.
        body = await request.body()
        fields = parse_qs(body[:4096].decode("latin-1")) if len(body) <= 4096 else {}
        token = (fields.get("csrf") or [""])[0]
        if not token or not hmac.compare_digest(token.encode(), csrf.encode()):
            return Response("missing or wrong CSRF token", status_code=403)
        key = request.path_params["key"]
        deleted = await maint.delete(spot, key)
        cache.clear()
        if not deleted:
            return Response("no entry with this key", status_code=404)
        return RedirectResponse("/?" + urlencode({"deleted": key}), status_code=303)

    async def failures_page(request: Request) -> Response:
        func = (request.query_params.get("func") or "").strip() or None
        wanted = _int(request.query_params.get("limit"), MAX_LIMIT)
        frame = await maint.failures(spot, limit=min(max(wanted, 0), MAX_LIMIT))
        found = browse.filter_failures(frame, browse.IndexQuery(func=func))
        rows = display.failure_rows(found)
        for row in rows:
            row["args"] = browse.args_text(row.get("args"))
        return page("failures.html", rows=rows, func=func)

    async def api_history(request: Request) -> Response:
        func = request.query_params.get("func") or None
        frame = await maint.history(spot, limit=row_limit(request), func_name=func)
        return JSONResponse(display.history_rows(frame))

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
            Route("/failures", failures_page),
            Route("/entries/{key}", entry_page),
            Route("/entries/{key}/raw", entry_raw),
            Route("/entries/{key}/delete", entry_delete, methods=["POST"]),
            Route("/api/index", api_index),
            Route("/api/history", api_history),
            Route("/api/entries/{key}", api_entry),
            Route("/api/stats", api_stats),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ],
        exception_handlers={BeautySpotError: backend_failed},
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HostCheck, allowed=LOOPBACK_HOSTS | set(allowed_hosts))
    return app


def _totals_json(totals: browse.FuncTotals) -> dict[str, Any]:
    return {name: getattr(totals, name) for name in totals.__slots__}


#: Addresses that mean "every interface": no Host name to add for them.
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    """The ``http://`` URL a bound socket answers on."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(
    spot: Spot,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    allowed_hosts: Iterable[str] = (),
    allow_delete: bool = False,
    announce: Callable[[str], object] | None = None,
) -> None:
    """Serve the dashboard with uvicorn until interrupted, then close ``spot``.

    The Spot is opened first, so an unreachable database fails here, before
    the server starts listening. ``port=0`` picks a free port; ``announce``
    is called with the URL once the socket listens. ``host``, when it is a
    name rather than a wildcard address, is answered as a ``Host`` too;
    ``allowed_hosts`` are further names (see :func:`create_app`).
    """
    import uvicorn

    hosts = set(allowed_hosts)
    if host not in _WILDCARDS:
        hosts.add(host)
    with spot:
        app = create_app(spot, allowed_hosts=hosts, allow_delete=allow_delete)
        sock = bind(host, port)
        with sock:
            if announce is not None:
                announce(url_of(sock))
            server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
            server.run(sockets=[sock])
