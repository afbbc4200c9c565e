"""Who holds a lease: an identity that says whether its process still lives.

A lease owner string is ``host|pid|start|token``. ``host`` names this
machine *and* its process namespace, so that a caller can tell for certain
that a holder ran next to it; ``start`` is the holder's process start time
(from ``/proc``), so a pid the kernel has since handed to another process
does not pass for the holder; ``token`` tells two Spots of one process
apart. Pure: reads ``/proc`` and the host name, nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import uuid
from typing import Final, NamedTuple

__all__ = ["Holder", "holder_is_gone", "new_owner", "parse_owner", "this_host"]

_SEP: Final = "|"


class Holder(NamedTuple):
    """A parsed lease owner."""

    host: str
    pid: int
    start: str
    token: str


@functools.cache
def _boot_and_namespace() -> str:
    # Two containers may share a host name (host networking) yet not see
    # each other's pids: the pid namespace is part of "same host".
    parts = []
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
        parts.append(f.read().strip()[:8])
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return ".".join(parts)


def this_host() -> str:
    """This machine and pid namespace, as it appears in lease owners."""
    name = socket.gethostname().replace(_SEP, "_")
    extra = _boot_and_namespace()
    return f"{name}/{extra}" if extra else name


def process_start(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot), or ``""`` if unknown."""
    stat = _stat_fields(pid)
    return stat[19] if stat is not None and len(stat) > 19 else ""


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself contain them.
    return raw[raw.rfind(")") + 2 :].split()


def new_owner() -> str:
    """A fresh owner identity for this process."""
    pid = os.getpid()
    return _SEP.join((this_host(), str(pid), process_start(pid), uuid.uuid4().hex[:12]))


def parse_owner(owner: str) -> Holder | None:
    """Split an owner string; None for owners written by other software.

    Owners of releases before 0.2 (``host:pid:token``, no start time) parse
    too, so leases left behind by an older version are recognised as well.
    """
    parts = owner.split(_SEP)
    if len(parts) == 4 and parts[1].isdigit():
        return Holder(parts[0], int(parts[1]), parts[2], parts[3])
    parts = owner.split(":")
    if len(parts) == 3 and parts[1].isdigit():
        return Holder(parts[0], int(parts[1]), "", parts[2])
    return None


def holder_is_gone(owner: str) -> bool:
    """Whether ``owner`` certainly ran on this host and its process has ended.

    False whenever that cannot be known for sure (another host, an owner
    string of another format): such a lease is left to expire.
    """
    holder = parse_owner(owner)
    if holder is None:
        return False
    legacy = _SEP not in owner
    if holder.host != (socket.gethostname() if legacy else this_host()):
        return False
    if holder.pid == os.getpid():
        return False  # our own process: alive by definition
    stat = _stat_fields(holder.pid)
    if stat is None:
        return not _pid_exists(holder.pid)
    state = stat[0] if stat else ""
    if state in ("Z", "X"):  # killed but not yet reaped by its parent
        return True
    started = stat[19] if len(stat) > 19 else ""
    return bool(holder.start) and bool(started) and started != holder.start


def _pid_exists(pid: int) -> bool:
    if os.path.isdir("/proc/self"):
        return False  # /proc is mounted and has no entry for it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True
