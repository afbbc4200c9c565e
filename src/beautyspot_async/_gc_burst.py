"""Fewer full garbage collections while a burst of concurrent calls is in flight.

A ``gather`` over 10 000 calls keeps 10 000 tasks alive, each holding a few
dozen small objects (its coroutine, the pipeline's generators, a waiter, a
future). They survive the young collections, so CPython promotes them and,
every time the older generations grow by a quarter, runs a full collection
over all of them: four full collections cost about half of the GC time of
such a gather, and the GC time a quarter of its wall time. None of that
finds garbage -- the tasks are alive.

So when the library sees a burst (one loop turn batching at least
:data:`BURST` calls, see ``_coalesce.LoopTurns``) it raises the middle
generation's threshold, which stops the promotions that lead to full
collections, and puts the thresholds back exactly as it found them once no
burst has been seen for :data:`QUIET` seconds, when the Spot closes, or at
exit. Young collections keep running, so short-lived cycles are still freed
as before. ``BEAUTYSPOT_GC_BURST=0`` turns this off.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import threading
import time
from typing import Final

__all__ = ["BURST", "QUIET", "burst", "end_burst", "enabled"]

#: Calls batched in one loop turn that make a burst.
BURST: Final = 256
#: Seconds without a burst after which the thresholds go back.
QUIET: Final = 0.05
#: The middle generation's threshold during a burst: promotions become rare.
_BURST_THRESHOLD1: Final = 1000

enabled = os.environ.get("BEAUTYSPOT_GC_BURST", "1") != "0"

_lock = threading.Lock()
#: The thresholds found when the current burst began (None: no burst).
_saved: tuple[int, int, int] | None = None
#: The thresholds this module set (restored only if nobody changed them since).
_ours: tuple[int, int, int] | None = None
_last = 0.0
_armed: asyncio.AbstractEventLoop | None = None


def burst(loop: asyncio.AbstractEventLoop) -> None:
    """Note a burst on ``loop`` (from a callback on it); start one if none is on."""
    global _saved, _ours, _last, _armed
    if not enabled:
        return
    _last = time.monotonic()
    with _lock:
        if _saved is None:
            found = gc.get_threshold()
            if found[0] == 0 or found[1] >= _BURST_THRESHOLD1:
                return  # collection is off, or tuned by the program: leave it alone
            _saved = found
            _ours = (found[0], _BURST_THRESHOLD1, found[2])
            gc.set_threshold(*_ours)
        if _armed is loop:
            return
        _armed = loop
    loop.call_later(QUIET, _check, loop)


def _check(loop: asyncio.AbstractEventLoop) -> None:
    global _armed
    if time.monotonic() - _last < QUIET:
        loop.call_later(QUIET, _check, loop)
        return
    with _lock:
        if _armed is loop:
            _armed = None
    end_burst()


def end_burst() -> None:
    """Put the thresholds back as they were before the burst (idempotent)."""
    global _saved, _ours
    with _lock:
        saved, ours = _saved, _ours
        _saved = _ours = None
        # A program that set its own thresholds meanwhile keeps them.
        if saved is not None and gc.get_threshold() == ours:
            gc.set_threshold(*saved)


atexit.register(end_burst)
