"""The live progress line of ``spot.map`` on a terminal (rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._batch import MapProgress

__all__ = ["LiveDisplay", "progress_text"]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(p: MapProgress) -> str:
    """One line: done/total, cached, executed, failed, retrying, waiting, rate, ETA."""
    done = f"{p.done}/{p.total}" if p.total is not None else f"{p.done}"
    parts = [
        done,
        f"cached {p.hits}",
        f"executed {p.executed}",
        f"failed {p.failed}",
        f"running {p.running}",
    ]
    if p.retrying:
        parts.append(f"retrying {p.retrying}")
    if p.waiting:
        parts.append(f"waiting on rate limit {p.waiting}")
    parts.append(f"{p.rate:.1f}/s")
    if p.total is not None:
        parts.append(f"ETA {_duration(p.eta)}")
    parts.append(f"elapsed {_duration(p.elapsed)}")
    return " | ".join(parts)


class LiveDisplay:
    """A rich ``Live`` line on stderr, refreshed a few times a second."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._text = Text
        self._live: Any = Live(
            Text("starting..."),
            console=Console(stderr=True),
            refresh_per_second=4,
            transient=False,
        )
        self._live.start()

    def update(self, progress: MapProgress) -> None:
        self._live.update(self._text(progress_text(progress)))

    def close(self) -> None:
        self._live.stop()
