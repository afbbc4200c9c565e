"""Why a call hits or misses: ``f.explain(...)`` and the message of a replay miss.

The status comes from the stored entry (``hit``, ``expired``), a lease
another caller holds on the key (``leased``), a recorded failure
(``failed``) or nothing (``miss``). For anything but a hit, the entries of
the same function that are stored are compared with the call: which
``version`` they were stored under and, where arguments were stored with
them, which arguments differ (by digest) with the stored and current
previews. The closest ones -- fewest differences, newest first -- are
reported.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ._preview import argument_meta
from .exceptions import BeautySpotError

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Candidate", "Difference", "Explanation", "explain_call"]

logger = logging.getLogger("beautyspot_async")

#: How many stored entries of the function are compared, and how many reported.
_SCAN_LIMIT: Final = 5000
_REPORTED: Final = 3


@dataclass(frozen=True, slots=True)
class Difference:
    """One way a stored entry differs from the call: ``version`` or an argument."""

    name: str
    stored: str | None
    current: str | None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A stored entry of the same function, and how it differs from the call."""

    cache_key: str
    version: str | None
    created_at: float | None
    differences: tuple[Difference, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    """The answer of ``f.explain(...)``; ``str()`` is a readable report."""

    #: ``"hit"``, ``"miss"``, ``"expired"``, ``"leased"`` or ``"failed"``.
    status: str
    #: The call's cache key.
    key: str
    func_name: str
    version: str | None
    #: The closest stored entries of the same function (not for a hit).
    closest: tuple[Candidate, ...] = ()
    #: More about the status: when it expired, who holds the lease, the failure.
    detail: str | None = None

    def __str__(self) -> str:
        head = f"{self.func_name} (version {self.version!r}), key {self.key}: {self.status}"
        lines = [head + (f" -- {self.detail}" if self.detail else "")]
        if self.status == "hit":
            return lines[0]
        if not self.closest:
            lines.append("  no entry of this function is stored")
        for candidate in self.closest:
            when = _iso(candidate.created_at)
            lines.append(f"  closest stored entry {candidate.cache_key} ({when}):")
            if not candidate.differences:
                lines.append("    no recorded difference (its arguments were not stored)")
            for diff in candidate.differences:
                lines.append(f"    {diff.name}: stored {diff.stored!s} -> now {diff.current!s}")
        return "\n".join(lines)


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return "unknown time"
    try:
        return _dt.datetime.fromtimestamp(seconds, _dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return "unknown time"


async def explain_call(
    engine: Engine,
    *,
    func_name: str,
    version: str | None,
    key: str,
    loads: Callable[[bytes], Any],
    current_args: Mapping[str, tuple[str, str]] | None,
) -> Explanation:
    """Explain one call; see the module docstring. Runs where the backends live."""
    status, detail = await _status(engine, func_name, key, loads)
    closest: tuple[Candidate, ...] = ()
    if status != "hit":
        closest = await _closest(engine, func_name, version, key, current_args)
    return Explanation(status, key, func_name, version, closest, detail)


async def _status(
    engine: Engine, func_name: str, key: str, loads: Callable[[bytes], Any]
) -> tuple[str, str | None]:
    record = await engine.fetch(key)
    if record is not None:
        if record.is_expired(engine.clock()):
            return "expired", f"it expired at {_iso(record.expires_at)}"
        try:
            loads(await engine.load_payload(record))
        except BeautySpotError as exc:
            return "miss", f"the stored entry cannot be read: {exc}"
        return "hit", None
    try:
        holders = await engine.store.lease_holders([key])
    except (NotImplementedError, BeautySpotError):
        holders = {}
    holder = holders.get(key)
    if holder is not None:
        return "leased", f"another caller is computing it ({holder})"
    try:
        failures = await engine.store.get_failures(func_name, _SCAN_LIMIT)
    except BeautySpotError:
        failures = []
    for failure in failures:
        if failure.cache_key == key:
            return "failed", (
                f"it failed after {failure.attempts} attempt(s): {failure.exc_type}: "
                f"{failure.message}"
            )
    return "miss", None


async def _closest(
    engine: Engine,
    func_name: str,
    version: str | None,
    key: str,
    current_args: Mapping[str, tuple[str, str]] | None,
) -> tuple[Candidate, ...]:
    try:
        frame = await engine.store.history(_SCAN_LIMIT)
    except BeautySpotError as exc:
        logger.debug("explain could not list the stored entries: %s", exc)
        return ()
    if frame is None or len(frame) == 0 or "func_name" not in frame.columns:
        return ()
    rows = frame[frame["func_name"] == func_name]
    candidates = []
    for row in rows.to_dict("records"):
        if row.get("cache_key") == key:
            continue
        candidates.append(_compare(row, version, current_args))
    candidates.sort(key=lambda c: (len(c.differences) or 99, -(c.created_at or 0.0)))
    return tuple(candidates[:_REPORTED])


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    timestamp = getattr(value, "timestamp", None)
    try:
        return float(timestamp()) if callable(timestamp) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _compare(
    row: Mapping[str, Any],
    version: str | None,
    current_args: Mapping[str, tuple[str, str]] | None,
) -> Candidate:
    differences: list[Difference] = []
    stored_version = row.get("version")
    if isinstance(stored_version, float):  # pandas' missing value
        stored_version = None
    if stored_version != version:
        differences.append(Difference("version", _text(stored_version), _text(version)))
    meta = row.get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    stored_args = meta.get("args")
    stored_digests = meta.get("digests")
    if current_args is not None and isinstance(stored_digests, Mapping):
        previews = stored_args if isinstance(stored_args, Mapping) else {}
        for name in sorted(set(current_args) | set(stored_digests)):
            now = current_args.get(name)
            if now is None or stored_digests.get(name) != now[1]:
                differences.append(
                    Difference(
                        name,
                        _text(previews.get(name)) if name in stored_digests else None,
                        None if now is None else now[0],
                    )
                )
    return Candidate(
        cache_key=str(row.get("cache_key")),
        version=stored_version,
        created_at=_seconds(row.get("created_at")),
        differences=tuple(differences),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def current_arguments(
    keyer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Mapping[str, tuple[str, str]] | None:
    """The call's arguments as ``name -> (preview, digest)``, as entries store them."""
    try:
        meta = argument_meta(keyer.key_arguments(args, kwargs))
    except Exception as exc:
        logger.debug("explain could not describe the call's arguments: %r", exc)
        return None
    previews = meta.get("args") or {}
    digests = meta.get("digests") or {}
    return {name: (str(previews.get(name)), str(d)) for name, d in digests.items()}
