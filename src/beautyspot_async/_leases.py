"""Cross-process leases: the one owner of take, renew, release, take over and wait.

A lease says "this process is executing that key; wait for its result
instead of running it too". Its whole lifecycle lives here:

* **take**: the reader's batched ``lookup_or_lease`` grants them; the
  pipeline then :meth:`Leases.hold`\\ s each granted lease;
* **renew**: one task renews every held lease each ``ttl / 3``, so a slow
  live holder keeps its keys however long it runs;
* **release**: with the result, in the writer's ``save_and_release``
  (:meth:`Leases.done`), or at once, batched, on every other exit path
  (:meth:`Leases.release_soon`), and everything still held on close;
* **take over**: a lease whose holder ran on this host and has exited (kill
  -9, a crash) is taken at once instead of after it expires;
* **wait**: calls whose key another process holds wait in one loop per Spot
  that re-checks every waited key in a single batch with a gentle back-off,
  instead of one poll per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ._drain import QueueDrain
from ._holder import holder_is_gone, new_owner, parse_owner
from ._portal import Outcome, Waiter, io_loop, settle_all
from ._reader import Absent, read_answer
from ._record import TaskRecord
from ._store import ResultStore
from .db import LeaseHolder
from .exceptions import BackendError

__all__ = ["Leases"]

logger = logging.getLogger("beautyspot_async")

#: Back-off of the wait loop between two checks of the waited keys (seconds).
_FIRST_DELAY: Final = 0.02
_MAX_DELAY: Final = 0.5
#: How often the wait loop repeats its INFO line about one holder (seconds).
_LOG_EVERY: Final = 30.0


class _Releaser(QueueDrain[tuple[str, str]]):
    """Releases leases in batches on the I/O loop; callers never wait."""

    def __init__(self, store: ResultStore) -> None:
        super().__init__()
        self._store = store

    def submit(self, key: str, owner: str) -> None:
        self._enqueue((key, owner))

    async def _drain_once(self) -> None:
        while self._queue:
            owners: dict[str, list[str]] = {}
            while self._queue:
                key, owner = self._queue.popleft()
                owners.setdefault(owner, []).append(key)
            try:
                await self._store.release_many(owners)
            except Exception as exc:  # the lease expires anyway; say why it lingers
                count = sum(map(len, owners.values()))
                logger.warning(
                    "releasing %d lease(s) failed (%s); other processes wait for them to expire",
                    count,
                    exc,
                )


@dataclass(slots=True)
class _Waiting:
    key: str
    owner: str
    waiter: Waiter


class Leases:
    """Every lease one Spot takes, from grant to release."""

    def __init__(
        self, store: ResultStore, ttl: float | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        #: Seconds a lease lasts without renewal; None when leases are off.
        self.ttl = ttl if store.supports_leases else None
        self._clock = clock
        self._owner = ""
        self._owner_pid = 0
        #: Leases held and renewed, key -> owner. Touched from any thread;
        #: single dict operations are atomic, and the renewer copies it.
        self._held: dict[str, str] = {}
        self.releaser = _Releaser(store)
        self._renewer: asyncio.Task[None] | None = None
        self._waiting: dict[str, list[_Waiting]] = {}
        self._wait_task: asyncio.Task[None] | None = None
        self._poke: asyncio.Event | None = None
        self._logged: dict[str, float] = {}

    # -- identity ------------------------------------------------------------------

    def owner(self) -> str | None:
        """This process's lease identity, or None when leases are off."""
        if self.ttl is None:
            return None
        pid = os.getpid()
        if self._owner_pid != pid:  # a forked child is another holder
            self._owner = new_owner()
            self._owner_pid = pid
        return self._owner

    @property
    def held(self) -> int:
        """How many leases this Spot holds right now."""
        return len(self._held)

    # -- from any thread -------------------------------------------------------------

    def hold(self, key: str, owner: str) -> None:
        """Keep ``owner``'s freshly granted lease on ``key`` renewed until it is let go."""
        self._held[key] = owner

    def done(self, key: str) -> None:
        """The lease on ``key`` went with its result (``save_and_release``)."""
        self._held.pop(key, None)

    def release_soon(self, key: str, owner: str) -> None:
        """Give the lease on ``key`` back without waiting (safe in a cancelled scope)."""
        self._held.pop(key, None)
        self.releaser.submit(key, owner)

    def wait(self, key: str, owner: str, waiter: Waiter) -> None:
        """Settle ``waiter`` once ``key`` is stored (its record) or leased to us (``Absent.OURS``).

        For a key whose lease another process holds. The step submit of a
        ``Wait``: callable from any thread, never waits.
        """
        loop = io_loop.loop()
        # An empty context: the wait task must not inherit the caller's
        # (sniffio would tell anyio it runs under trio).
        loop.call_soon_threadsafe(
            self._add_waiting, _Waiting(key, owner, waiter), context=contextvars.Context()
        )

    # -- lifecycle, on the I/O loop ----------------------------------------------------

    def start(self) -> None:
        """Start releasing and renewing; call on the I/O loop when the Spot opens."""
        self.releaser.start()
        if self.ttl is not None and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever(self.ttl))

    async def stop(self) -> None:
        """Release every lease still held and stop; call on the I/O loop when closing.

        Calls still waiting for a key held elsewhere fail: the Spot they
        belong to was closed under them.
        """
        renewer, self._renewer = self._renewer, None
        await _cancel(renewer)
        held, self._held = self._held, {}
        for key, owner in held.items():
            self.releaser.submit(key, owner)
        await self.releaser.stop()
        task, self._wait_task = self._wait_task, None
        await _cancel(task)
        waiting, self._waiting = self._waiting, {}
        error = BackendError(
            "the Spot was closed while this call waited for another process's result",
            backend=self._store.db.backend_name,
        )
        settle_all([(w.waiter, None, error) for ws in waiting.values() for w in ws])

    # -- renewing -----------------------------------------------------------------------

    async def _renew_forever(self, ttl: float) -> None:
        # A lease must outlive the execution it guards, however long that
        # takes, yet lapse soon after a holder on another host dies: it is
        # granted for ttl and renewed every third of that while held.
        while True:
            await asyncio.sleep(ttl / 3)
            by_owner: dict[str, list[str]] = {}
            for key, owner in list(self._held.items()):
                by_owner.setdefault(owner, []).append(key)
            for owner, keys in by_owner.items():
                try:
                    await self._store.renew(keys, owner, ttl)
                except Exception as exc:  # the next round may succeed; expiry is the fallback
                    logger.warning("renewing %d lease(s) failed: %s", len(keys), exc)

    # -- waiting --------------------------------------------------------------------------

    def _add_waiting(self, entry: _Waiting) -> None:
        self._waiting.setdefault(entry.key, []).append(entry)
        if self._wait_task is None or self._wait_task.done():
            self._poke = asyncio.Event()
            self._wait_task = asyncio.get_running_loop().create_task(self._wait_forever())
        elif self._poke is not None:
            self._poke.set()  # a new key: look at once, then back off afresh

    async def _wait_forever(self) -> None:
        poke = self._poke
        assert poke is not None
        delay = _FIRST_DELAY
        while self._waiting:
            poke.clear()
            await self._check_waiting()
            if not self._waiting:
                break
            try:
                await asyncio.wait_for(poke.wait(), delay)
                delay = _FIRST_DELAY
            except TimeoutError:
                delay = min(delay * 1.5, _MAX_DELAY)
        self._logged.clear()

    async def _check_waiting(self) -> None:
        """One round: settle every waited key that was stored, freed or abandoned."""
        for key in list(self._waiting):
            live = [w for w in self._waiting[key] if not w.waiter.future.done()]
            if live:
                self._waiting[key] = live
            else:
                del self._waiting[key]
        if not self._waiting:
            return
        owner = self.owner()
        assert owner is not None
        assert self.ttl is not None
        keys = list(self._waiting)
        try:
            found = await self._store.lookup_many(keys, owner, self.ttl)
            blocked = [key for key in keys if found.get(key, True) is False]
            holders = await self._store.lease_holders(blocked) if blocked else {}
            found.update(await self._take_over(holders, owner, self.ttl))
        except Exception as exc:
            waiting, self._waiting = self._waiting, {}
            settle_all([(w.waiter, None, exc) for ws in waiting.values() for w in ws])
            return
        outcomes: list[Outcome] = []
        leased: dict[int, tuple[str, str]] = {}
        for key in keys:
            value = found.get(key, True)
            if value is False:
                continue
            for entry in self._waiting.pop(key, ()):
                outcomes.append((entry.waiter, read_answer(value), None))
                leased[id(entry.waiter)] = (key, entry.owner)
        if outcomes:
            settle_all(outcomes, on_abandoned=self._release_if_granted(leased))
        still = {key: h for key, h in holders.items() if key in self._waiting}
        if still:
            self._log_waits(still)

    async def _take_over(
        self, holders: dict[str, LeaseHolder], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """Take the leases whose holder ran here and has exited; their keys' answers."""
        stale = {key: h.owner for key, h in holders.items() if holder_is_gone(h.owner)}
        if not stale:
            return {}
        taken = await self._store.take_over(stale, owner, self.ttl or ttl)
        if not taken:
            return {}
        dead = sorted({stale[key] for key in taken})
        logger.info(
            "took over %d lease(s) left by exited process(es) on this host (%s); running "
            "their calls here",
            len(taken),
            ", ".join(_describe(d) for d in dead),
        )
        # A holder may have stored a result and died before releasing.
        late = await self._store.lookup_many(taken, None, 0.0)
        if late:
            await self._store.release_many({owner: list(late)})
        return {key: late.get(key, True) for key in taken}

    def _release_if_granted(self, key_of: dict[int, tuple[str, str]]) -> Any:
        def release(waiter: Waiter, value: Any) -> None:
            # The caller went away after the lease came through: give it back.
            if value is Absent.OURS:
                key, owner = key_of[id(waiter)]
                self.release_soon(key, owner)

        return release

    def _log_waits(self, holders: dict[str, LeaseHolder]) -> None:
        now = self._clock()
        by_owner: dict[str, list[LeaseHolder]] = {}
        for holder in holders.values():
            by_owner.setdefault(holder.owner, []).append(holder)
        for owner, leases in by_owner.items():
            if now - self._logged.get(owner, -_LOG_EVERY) < _LOG_EVERY:
                continue
            self._logged[owner] = now
            logger.info(
                "%d call(s) wait for keys that %s is executing; its leases expire in "
                "%.0f s unless it renews them",
                len(leases),
                _describe(owner),
                max(h.expires_in for h in leases),
            )


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _describe(owner: str) -> str:
    holder = parse_owner(owner)
    if holder is None:
        return f"lease holder {owner!r}"
    return f"process {holder.pid} on {holder.host.split('/')[0]}"
