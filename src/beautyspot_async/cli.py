# Over 500 lines: one typer app; every command is a thin shell over _maintenance.
"""The ``beautyspot-async`` command line: inspect and maintain a Spot's results.

Every command takes the task database as ``DB``: a path to a SQLite file or a
URL as ``Spot(db=...)`` accepts it (``sqlite:///x.db``, ``postgresql://...``,
``redis://...``). Blobs are looked up in ``--storage``, by default the
``<stem>_blobs`` directory next to a SQLite file (the layout a Spot creates).

The commands go through the public Spot API and the maintenance layer
(:mod:`beautyspot_async._maintenance`), never through a backend's queries.
Exit codes: 0 success, 1 "not found", 2 usage errors, a missing database
file, a bad URL or a backend that cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import _display as display
from . import _maintenance as maint
from ._budget import parse_age as parse_max_age
from ._budget import parse_size
from ._extras import install_hint
from ._gc import DEFAULT_ORPHAN_GRACE, DEFAULT_TEMP_GRACE
from ._spot import Spot
from ._version import __version__
from .exceptions import BeautySpotError, ConfigurationError

__all__ = ["app", "main"]

T = TypeVar("T")

#: Spot name used when ``DB`` is a URL (it has no file stem to borrow).
URL_SPOT_NAME = "cli"
#: Characters of a cache key shown in tables; ``show`` accepts such a prefix.
KEY_CHARS = 12

app = typer.Typer(
    name="beautyspot-async",
    help="Inspect and maintain the results stored by beautyspot-async.",
    no_args_is_help=True,
    add_completion=False,
)

DbArg = Annotated[
    str,
    typer.Argument(
        metavar="DB", help="SQLite file, or a database URL (sqlite:///, postgresql://, redis://)."
    ),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        "-s",
        help="Blob storage (directory or s3://bucket/prefix). "
        "Default: <stem>_blobs next to a SQLite file.",
    ),
]
FuncOpt = Annotated[
    str | None,
    typer.Option("--func", "-f", help="Only this function (its identity or bare name)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


# -- resolving DB / --storage into a Spot ------------------------------------------------


class UsageProblem(Exception):
    """A command-line argument that cannot be used as given (exit code 2)."""


def _sqlite_url_path(url: str) -> str | None:
    # Same convention as Spot(db=...): sqlite:///rel.db, sqlite:////abs.db.
    rest = url.split("://", 1)[1]
    return rest[1:] if rest.startswith("/") and len(rest) > 1 else None


def spot_name_for(path: Path) -> str:
    """A valid Spot name from a database file name (its stem, sanitized)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("_")
    return name or URL_SPOT_NAME


def spot_arguments(db: str, storage: str | None) -> tuple[str, str, str | None]:
    """``(name, db, storage)`` for ``Spot(...)`` from the command-line values.

    A path (or ``sqlite://`` URL) must name an existing file: the CLI never
    creates an empty database. Raises :class:`UsageProblem` otherwise.
    """
    if "://" in db:
        scheme = db.split("://", 1)[0].lower()
        if scheme == "sqlite":
            path_text = _sqlite_url_path(db)
            if path_text is not None and not Path(path_text).is_file():
                raise UsageProblem(f"no such database file: {path_text} (from {db})")
        return URL_SPOT_NAME, db, storage
    path = Path(db)
    if not path.exists():
        raise UsageProblem(f"no such database file: {db}")
    if not path.is_file():
        raise UsageProblem(f"not a database file: {db}")
    name = spot_name_for(path)
    if storage is None:
        storage = os.fspath(path.parent / f"{path.stem}_blobs")
    return name, os.fspath(path), storage


def _open_spot(db: str, storage: str | None) -> Spot:
    name, db_spec, storage_spec = spot_arguments(db, storage)
    return Spot(name, db=db_spec, storage=storage_spec)


def _fail(message: str, code: int = 2) -> NoReturn:
    # escape(): backend messages start with "[sqlite]", which rich reads as markup.
    Console(stderr=True).print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _run(db: str, storage: str | None, action: Callable[[Spot], Awaitable[T]]) -> T:
    """Build the Spot, run ``action`` on an event loop, always close the Spot."""
    try:
        spot = _open_spot(db, storage)
    except (UsageProblem, ConfigurationError) as exc:
        _fail(str(exc))

    async def go() -> T:
        try:
            return await action(spot)
        finally:
            await spot.aclose()

    try:
        return anyio.run(go)
    except BeautySpotError as exc:
        _fail(str(exc))
    except NotImplementedError as exc:
        _fail(f"this database does not support the operation: {exc}")


# -- formatting (pure) -------------------------------------------------------------------


def format_time(seconds: float | None) -> str:
    """POSIX seconds as ``YYYY-MM-DD HH:MM:SS`` in UTC, ``-`` for none."""
    if seconds is None:
        return "-"
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        # Past what datetime holds (year 9999): say so rather than crash `show`.
        return "after 9999-12-31" if seconds > 0 else "before 0001-01-01"


def format_size(size: int) -> str:
    """A byte count for humans (``512 B``, ``1.5 KiB``)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _iso_text(iso: str | None) -> str:
    """An ISO timestamp as :func:`format_time` text, ``-`` for none."""
    return "-" if iso is None else format_time(datetime.fromisoformat(iso).timestamp())


# -- commands ----------------------------------------------------------------------------


@app.command("history")
def history_command(
    db: DbArg,
    storage: StorageOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="Rows to show.")] = 50,
    func: FuncOpt = None,
    as_json: JsonOpt = False,
    wide: Annotated[
        bool, typer.Option("--wide", "-w", help="Show the full 32-character keys.")
    ] = False,
) -> None:
    """List stored results, newest first."""
    frame = _run(db, storage, lambda spot: maint.history(spot, limit=limit, func_name=func))
    if as_json:
        _print_json(display.history_rows(frame))
        return
    table = Table(title=f"{len(frame)} entries (newest first)")
    # Optional columns appear only when some row fills them, so the common
    # case fits a narrow terminal; --json always carries every field.
    show_version = bool(frame["version"].notna().any())
    show_expiry = bool(frame["expires_at"].notna().any())
    show_args = "args" in frame.columns and bool(frame["args"].notna().any())
    table.add_column("updated (UTC)")
    table.add_column("function", overflow="fold", ratio=1, min_width=12)
    table.add_column("key", no_wrap=True)
    if show_version:
        table.add_column("version", overflow="fold")
    table.add_column("stored", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    if show_expiry:
        table.add_column("expires (UTC)")
    if show_args:
        table.add_column("args", overflow="ellipsis", no_wrap=True, ratio=2, min_width=12)
    for row in display.history_rows(frame):
        cells: list[str | Text] = [
            _iso_text(row["updated_at"]),
            str(row["func_name"]),
            str(row["cache_key"]) if wide else str(row["cache_key"])[:KEY_CHARS],
        ]
        if show_version:
            cells.append("-" if row["version"] is None else str(row["version"]))
        cells += [str(row["result_type"]), format_size(row["size_bytes"])]
        if show_expiry:
            cells.append(_iso_text(row["expires_at"]))
        if show_args:
            # Plain text: a preview like [1, 2] must not be read as markup.
            cells.append(Text(display.args_line(row.get("args"))))
        table.add_row(*cells)
    Console().print(table)


@app.command("failures")
def failures_command(
    db: DbArg,
    storage: StorageOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="Rows to show.")] = 50,
    func: FuncOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List calls that failed for good in batch runs, newest first."""
    frame = _run(db, storage, lambda spot: maint.failures(spot, limit=limit, func_name=func))
    if as_json:
        _print_json(display.failure_rows(frame))
        return
    table = Table(title=f"{len(frame)} failures (newest first)")
    table.add_column("failed (UTC)")
    table.add_column("function", overflow="fold", ratio=1, min_width=12)
    table.add_column("key", no_wrap=True)
    table.add_column("error", overflow="fold", ratio=2, min_width=12)
    table.add_column("tries", justify="right", no_wrap=True)
    for row in display.failure_rows(frame):
        message = str(row["message"])
        # The table is an overview; the whole (bounded) message is in --json.
        short = message if len(message) <= 200 else message[:199] + "…"
        table.add_row(
            _iso_text(row["failed_at"]),
            escape(str(row["func_name"])),
            str(row["cache_key"])[:KEY_CHARS],
            escape(f"{row['exc_type']}: {short}" if short else str(row["exc_type"])),
            str(row["attempts"]),
        )
    Console().print(table)


@app.command("stats")
def stats_command(db: DbArg, storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """Per-function entry counts, sizes and age."""
    summaries = _run(db, storage, maint.summary)
    if as_json:
        _print_json([display.summary_json(s) for s in summaries])
        return
    table = Table(title="Stored results per function")
    table.add_column("function", ratio=1, min_width=8)
    # "inline" (entries - blobs) is left to --json: eight columns do not fit 80.
    for heading in ("entries", "blobs", "size", "expired"):
        table.add_column(heading, justify="right")
    table.add_column("oldest (UTC)")
    table.add_column("newest (UTC)")
    width = max(16, Console().width - 64)
    for s in summaries:
        table.add_row(
            Text(wrap_name(s.func_name, width)),
            str(s.entries),
            str(s.blobs),
            format_size(s.size_bytes),
            str(s.expired),
            format_time(s.oldest),
            format_time(s.newest),
        )
    if len(summaries) > 1:
        table.add_section()
        table.add_row(
            "total",
            str(sum(s.entries for s in summaries)),
            str(sum(s.blobs for s in summaries)),
            format_size(sum(s.size_bytes for s in summaries)),
            str(sum(s.expired for s in summaries)),
            "",
            "",
        )
    Console().print(table)


async def _find_entry(spot: Spot, key: str) -> maint.Entry | list[str]:
    """The entry ``key`` (or a unique prefix of it) names, or every candidate."""
    keys = await maint.resolve_key(spot, key)
    if len(keys) != 1:
        return keys
    entry = await maint.show(spot, keys[0])
    return entry if entry is not None else []


@app.command("show")
def show_command(
    db: DbArg,
    key: Annotated[
        str, typer.Argument(metavar="KEY", help="A cache key, or a unique prefix of one.")
    ],
    storage: StorageOpt = None,
    max_chars: Annotated[
        int, typer.Option("--max-chars", min=1, help="Cut the value preview here.")
    ] = 4000,
    as_json: JsonOpt = False,
) -> None:
    """Show one stored result: its metadata and a preview of its value."""
    found = _run(db, storage, lambda spot: _find_entry(spot, key))
    if isinstance(found, list):
        if not found:
            short = len(key) < maint.MIN_PREFIX
            _fail(
                f"no entry with key {key!r}"
                + (
                    f" (a key prefix needs at least {maint.MIN_PREFIX} characters)" if short else ""
                ),
                code=1,
            )
        listing = ", ".join(found[:10]) + (" ..." if len(found) > 10 else "")
        _fail(f"{key!r} matches {len(found)} entries: {listing}")
    record = found.record
    if as_json:
        _print_json(display.entry_json(found, max_chars=max_chars))
        return
    console = Console()
    meta = Table.grid(padding=(0, 2))
    meta.add_column(style="bold")
    meta.add_column(overflow="fold")
    meta.add_row("cache key", record.cache_key)
    meta.add_row("function", record.func_name)
    meta.add_row("input id", record.input_id)
    meta.add_row("version", "-" if record.version is None else record.version)
    meta.add_row("stored", record.result_type)
    if record.result_type == "blob":
        meta.add_row("location", record.result_value or "-")
    meta.add_row("content type", record.content_type or "-")
    meta.add_row("size", format_size(record.size_bytes))
    meta.add_row("created", format_time(record.created_at))
    meta.add_row("updated", format_time(record.updated_at))
    meta.add_row("expires", format_time(record.expires_at))
    args = display.stored_args(record.meta)
    if args:
        meta.add_row("args", Text("\n".join(f"{k} = {v}" for k, v in args.items())))
    usage = (record.meta or {}).get("usage")
    if usage is not None:
        meta.add_row("usage", Text(json.dumps(usage) if isinstance(usage, dict) else str(usage)))
    console.print(meta)
    if found.problem is not None:
        console.print(f"[bold yellow]Warning:[/] {escape(found.problem)}", highlight=False)
    console.print("[bold]value[/]")
    console.print(found.preview(max_chars), markup=False, highlight=False)


@app.command("delete")
def delete_command(
    db: DbArg,
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY",
            help=f"A cache key, or a unique prefix of one (at least {maint.MIN_PREFIX} "
            "characters).",
        ),
    ],
    storage: StorageOpt = None,
) -> None:
    """Delete one stored result (its row and its blob)."""

    async def go(spot: Spot) -> list[str] | bool:
        keys = await maint.resolve_key(spot, key)
        if len(keys) != 1:
            return keys
        return await maint.delete(spot, keys[0])

    outcome = _run(db, storage, go)
    if isinstance(outcome, list):
        if not outcome:
            _fail(
                f"no entry with key {key!r} (a prefix needs at least "
                f"{maint.MIN_PREFIX} characters)",
                code=1,
            )
        shown = ", ".join(outcome[:5]) + (" ..." if len(outcome) > 5 else "")
        _fail(f"{key!r} is ambiguous: {len(outcome)} keys start with it ({shown})", code=1)
    if not outcome:
        _fail(f"no entry with key {key!r}", code=1)
    typer.echo(f"deleted {key}")


@app.command("invalidate")
def invalidate_command(
    db: DbArg,
    storage: StorageOpt = None,
    func: FuncOpt = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help='Only this version; "stale" = every version but the newest stored one.',
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Only entries created longer ago: 90d, 12h, 30m, 45s."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete; without it, only count (dry run).")
    ] = False,
) -> None:
    """Delete the stored results matching the filters (a dry run without --yes)."""
    if func is None and version is None and older_than is None and not yes:
        typer.echo("no filter given: this would delete every entry (add --yes to do it)")
    cutoff = None
    if older_than is not None:
        try:
            cutoff = time.time() - parse_age(older_than)
        except ValueError as exc:
            _fail(str(exc))
    keys = _run(
        db,
        storage,
        lambda spot: maint.invalidate(
            spot, func=func, version=version, created_before=cutoff, dry_run=not yes
        ),
    )
    noun = "entry" if len(keys) == 1 else "entries"
    typer.echo(f"{'deleted' if yes else 'would delete'} {len(keys)} {noun}")


def wrap_name(name: str, width: int) -> str:
    """``name`` on lines of at most ``width``, broken after dots, never inside a word."""
    lines: list[str] = []
    line = ""
    for part in name.replace(".", ".\0").split("\0"):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    lines.append(line)
    return "\n".join(lines)


def parse_age(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``45s`` or plain seconds, as seconds."""
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    raw = text.strip().lower()
    factor = units.get(raw[-1:])
    number = raw[:-1] if factor is not None else raw
    try:
        value = float(number) * (factor or 1.0)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"--older-than must look like 90d, 12h, 30m, 45s or seconds, got {text!r}")
    return value


@app.command("purge-expired")
def purge_expired_command(db: DbArg, storage: StorageOpt = None) -> None:
    """Delete every result past its ttl (run `gc` afterwards to free their blobs)."""
    removed = _run(db, storage, maint.purge_expired)
    typer.echo(f"removed {removed} expired {'entry' if removed == 1 else 'entries'}")


@app.command("migrate")
def migrate_command(db: DbArg) -> None:
    """Convert a SQLite file from an older release to the faster table layout (once).

    Files up to 64 MiB are converted when first opened; larger ones keep
    working as they are until this runs. It holds the write lock while it
    copies (about a second per few hundred megabytes).
    """
    converted = _run(db, None, maint.convert_layout)
    if converted is None:
        typer.echo("nothing to migrate: only SQLite files have an older layout")
    elif converted:
        typer.echo("converted the results to the current table layout")
    else:
        typer.echo("already in the current table layout")


@app.command("gc")
def gc_command(
    db: DbArg,
    storage: Annotated[
        str,
        typer.Option("--storage", "-s", help="The blob storage to clean (required: no default)."),
    ],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete; without it, only list (dry run).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would go (the default without --yes).")
    ] = False,
    max_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-bytes",
            help="Evict least recently used entries (and their blobs) until the store "
            "holds at most this much: 10GB, 512MiB or bytes.",
        ),
    ] = None,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age",
            help="Evict entries not used (hit or written) for this long: 90d, 12h, 30m, 45s.",
        ),
    ] = None,
    orphan_grace: Annotated[
        float,
        typer.Option(
            "--orphan-grace",
            help="Seconds an orphaned blob is kept (its row may be on its way).",
        ),
    ] = DEFAULT_ORPHAN_GRACE,
    temp_grace: Annotated[
        float,
        typer.Option(
            "--temp-grace",
            help="Seconds a temp file of an unfinished write must sit untouched to be removed.",
        ),
    ] = DEFAULT_TEMP_GRACE,
) -> None:
    """Find (and with --yes delete) over-budget entries, orphaned blobs and stale temp files."""
    if yes and dry_run:
        _fail("pass --yes or --dry-run, not both")
    try:
        size = None if max_bytes is None else parse_size(max_bytes)
        age = None if max_age is None else parse_max_age(max_age)
    except ValueError as exc:
        _fail(str(exc))
    if "://" not in storage and not Path(storage).expanduser().is_dir():
        # Listing a directory that is not there finds nothing to delete, which
        # reads as "clean": a typo would hide every orphan.
        _fail(f"no blob storage directory at {storage!r}")
    report = _run(
        db,
        storage,
        lambda spot: maint.collect_garbage(
            spot,
            dry_run=not yes,
            temp_grace=temp_grace,
            orphan_grace=orphan_grace,
            max_bytes=size,
            max_age=age,
        ),
    )
    for key, nbytes in report.evicted:
        typer.echo(f"{key}  {format_size(nbytes)}")
    for location in report.orphans:
        typer.echo(location)
    for name in report.temp_files:
        typer.echo(name)
    done, suffix = ("deleted ", "") if yes else ("", " (dry run; pass --yes to delete)")
    if size is not None or age is not None:
        n = len(report.evicted)
        freed = format_size(sum(nbytes for _, nbytes in report.evicted))
        entries = f"{n} {'entry' if n == 1 else 'entries'}"
        if yes:
            typer.echo(f"evicted {entries}, {freed}")
        else:
            typer.echo(f"{entries} to evict, {freed}{suffix}")
    blobs = f"{len(report.orphans)} orphaned {'blob' if len(report.orphans) == 1 else 'blobs'}"
    typer.echo(f"{done}{blobs}{suffix}")
    if report.young_orphans:
        typer.echo(
            f"kept {report.young_orphans} younger orphaned "
            f"{'blob' if report.young_orphans == 1 else 'blobs'} (--orphan-grace)"
        )
    temps = len(report.temp_files)
    if temps:
        typer.echo(f"{done}{temps} stale temp {'file' if temps == 1 else 'files'}{suffix}")
    if report.refused:
        console = Console(stderr=True)
        for location, reason in report.refused:
            console.print(f"refused: {escape(location)}: {escape(reason)}", highlight=False)
        _fail(f"the storage refused to delete {len(report.refused)} of the orphans", code=1)


@app.command("ui")
def ui_command(
    db: DbArg,
    storage: StorageOpt = None,
    host: Annotated[
        str,
        typer.Option(help="Interface to listen on; a name given here is also answered as Host."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Also answer requests for this Host name (repeatable); "
            "by default only localhost, 127.0.0.1 and [::1].",
        ),
    ] = None,
    allow_delete: Annotated[
        bool,
        typer.Option(
            "--allow-delete", help="Show an invalidate button on each entry (read-only otherwise)."
        ),
    ] = False,
) -> None:
    """Serve the web dashboard on loopback and print its URL (needs the "dashboard" extra)."""
    try:
        from .dashboard import serve
    except ImportError as exc:
        _fail(
            f"the dashboard needs an optional dependency that is not installed "
            f"({exc.name or exc}); install it with: {install_hint('dashboard')}"
        )
    try:
        spot = _open_spot(db, storage)
    except (UsageProblem, ConfigurationError) as exc:
        _fail(str(exc))

    def announce(url: str) -> None:
        typer.echo(f"beautyspot-async dashboard on {url} (Ctrl+C to stop)")

    try:
        serve(
            spot,
            host=host,
            port=port,
            allowed_hosts=list(allow_host or ()),
            allow_delete=allow_delete,
            announce=announce,
        )
    except BeautySpotError as exc:
        _fail(str(exc))
    except OSError as exc:  # the port is taken, the interface does not exist
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@app.command("version")
def version_command() -> None:
    """Print the installed version."""
    typer.echo(f"beautyspot-async {__version__}")


def main() -> None:
    """Entry point of the ``beautyspot-async`` console script."""
    app()
