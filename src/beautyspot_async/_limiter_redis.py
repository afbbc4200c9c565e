"""GCRA budgets shared across processes through Redis.

Imported only when a ``Limiter`` is given ``backend="redis://..."``, so
``import beautyspot_async.limiter`` never imports redis.

One Lua script runs the same rules as ``beautyspot_async._gcra`` on the
server, atomically, on the server's clock (``TIME``): every process sees one
timeline per budget, so N processes together never exceed the budget, and
clock skew between machines does not matter. State lives in one hash,
``beautyspot:limiter:{key}``, which expires a minute after the budget goes
idle.

Fairness: within a process the limiter's FIFO queue decides who asks Redis
next. Across processes it is best effort: each process's head retries after
the ``retry_after`` Redis returned, and whichever retry reaches the server
first after the budget frees up wins. A large cost can therefore be delayed
by small costs from *other* processes (never from its own).

The client is the synchronous redis-py client: async waiters call it from a
worker thread, which works under asyncio and trio alike and never shares a
connection between event loops. Corrections (``settle``, ``penalize``) go
through one background thread so they never block the caller.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from . import _gcra
from ._extras import install_hint
from .exceptions import BackendError, ConfigurationError

__all__ = ["KEY_PREFIX", "RedisBudgetStore"]

logger = logging.getLogger("beautyspot_async")

KEY_PREFIX = "beautyspot:limiter:"

# ARGV: op, n, then per-op fields. Numbers travel as '%.17g' strings both ways
# because Redis truncates Lua numbers in replies to integers.
_SCRIPT = r"""
local key = KEYS[1]
local op = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local eps = 1e-9

local function fmt(x) return string.format('%.17g', x) end
local function num(field, default)
  local v = redis.call('HGET', key, field)
  if v then return tonumber(v) end
  return default
end

local paused = num('paused', now)
local tats, shifted = {}, {}
for i = 1, n do
  tats[i] = num('tat' .. i, now)
  shifted[i] = num('shifted' .. i, 0)
end

local function store()
  local horizon = paused
  for i = 1, n do
    redis.call('HSET', key, 'tat' .. i, fmt(tats[i]), 'shifted' .. i, fmt(shifted[i]))
    if tats[i] > horizon then horizon = tats[i] end
  end
  redis.call('HSET', key, 'paused', fmt(paused))
  local ttl = math.max(horizon - now, 0) + 60
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
end

if op == 'acquire' then
  -- per budget: interval, tolerance, cost
  local ready_at = paused
  for i = 1, n do
    local tol = tonumber(ARGV[2 + 3 * (i - 1) + 2])
    if tats[i] - tol > ready_at then ready_at = tats[i] - tol end
  end
  if ready_at > now + eps then
    return {0, fmt(ready_at - now)}
  end
  local reply = {1, '0'}
  for i = 1, n do
    local interval = tonumber(ARGV[2 + 3 * (i - 1) + 1])
    local cost = tonumber(ARGV[2 + 3 * (i - 1) + 3])
    tats[i] = math.max(tats[i], now) + cost * interval
    reply[#reply + 1] = fmt(tats[i])
    reply[#reply + 1] = fmt(shifted[i])
  end
  store()
  return reply
elseif op == 'settle' then
  -- per budget: interval, mark end, mark shifted, delta
  for i = 1, n do
    local base = 2 + 4 * (i - 1)
    local interval = tonumber(ARGV[base + 1])
    local mark_end = tonumber(ARGV[base + 2])
    local mark_shifted = tonumber(ARGV[base + 3])
    local delta = tonumber(ARGV[base + 4])
    if delta > 0 then
      tats[i] = math.max(tats[i], now) + delta * interval
    elseif delta < 0 and shifted[i] >= mark_shifted then
      -- shifted below the mark means the hash expired and was recreated:
      -- the booking is long past, nothing to hand back.
      local end_now = mark_end - (shifted[i] - mark_shifted)
      local give_back = math.min(-delta * interval, math.max(0, end_now - now))
      if give_back > 0 then
        tats[i] = tats[i] - give_back
        shifted[i] = shifted[i] + give_back
      end
    end
  end
  store()
  return 1
elseif op == 'penalize' then
  local seconds = tonumber(ARGV[3])
  if now + seconds > paused then paused = now + seconds end
  store()
  return 1
elseif op == 'debt' then
  -- per budget: interval
  local reply = {}
  for i = 1, n do
    local interval = tonumber(ARGV[2 + i])
    reply[i] = fmt(math.max(0, tats[i] - now) / interval)
  end
  return reply
end
return redis.error_reply('beautyspot limiter: unknown op ' .. tostring(op))
"""


def _fmt(x: float) -> str:
    return repr(float(x))


class RedisBudgetStore:
    """The budgets of one shared key, operated through the Lua script.

    Methods block on one round trip; the limiter calls them from worker
    threads (async waiters) or from the waiting thread itself (sync waiters).
    Driver errors surface as ``BackendError`` with the driver error chained.
    """

    def __init__(self, url: str, key: str, budgets: Sequence[_gcra.Budget]) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                f"a redis:// limiter backend needs redis-py: {install_hint('redis')}"
            ) from exc
        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        try:
            self._client: Any = redis.Redis.from_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"invalid limiter backend URL {url!r}: {exc}") from exc
        self.key = KEY_PREFIX + key
        self._budgets = tuple(budgets)
        self._script: Any = self._client.register_script(_SCRIPT)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def _call(self, *args: object) -> Any:
        try:
            return self._script(keys=[self.key], args=[str(a) for a in args])
        except self._redis_errors as exc:
            raise BackendError(
                f"limiter script on {self.key!r} failed: {exc}", backend="redis"
            ) from exc

    def attempt(self, costs: Sequence[float]) -> tuple[bool, float, tuple[_gcra.Mark, ...]]:
        """Try one atomic admission: ``(admitted, retry_after_seconds, marks)``."""
        args: list[object] = ["acquire", len(self._budgets)]
        for budget, cost in zip(self._budgets, costs, strict=True):
            args += [_fmt(budget.interval), _fmt(budget.tolerance), _fmt(cost)]
        reply = self._call(*args)
        if int(reply[0]) != 1:
            return False, float(reply[1]), ()
        values = [float(v) for v in reply[2:]]
        marks = tuple(
            _gcra.Mark(end=values[2 * i], shifted=values[2 * i + 1])
            for i in range(len(self._budgets))
        )
        return True, 0.0, marks

    def settle(self, marks: Sequence[_gcra.Mark], deltas: Sequence[float]) -> None:
        """Apply ``_gcra.settle`` on the server."""
        args: list[object] = ["settle", len(self._budgets)]
        for budget, mark, delta in zip(self._budgets, marks, deltas, strict=True):
            args += [_fmt(budget.interval), _fmt(mark.end), _fmt(mark.shifted), _fmt(delta)]
        self._call(*args)

    def penalize(self, seconds: float) -> None:
        """Pause every process's admissions for ``seconds`` of server time."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"penalize needs a finite number of seconds >= 0, got {seconds!r}")
        self._call("penalize", len(self._budgets), _fmt(seconds))

    def debt(self) -> tuple[float, ...]:
        """Units booked beyond the server's now, per budget."""
        reply = self._call("debt", len(self._budgets), *(_fmt(b.interval) for b in self._budgets))
        return tuple(float(v) for v in reply)

    def _background(self, fn: Callable[[], None], on_done: Callable[[], None]) -> Future[None]:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="beautyspot-limiter"
                )
            executor = self._executor

        def run() -> None:
            try:
                fn()
            except Exception:
                logger.exception("limiter correction on %r failed", self.key)
            finally:
                on_done()

        return executor.submit(run)

    def settle_soon(
        self, marks: Sequence[_gcra.Mark], deltas: Sequence[float], *, on_done: Callable[[], None]
    ) -> Future[None]:
        """``settle`` on the background thread; ``on_done`` runs after it."""
        return self._background(lambda: self.settle(marks, deltas), on_done)

    def penalize_soon(self, seconds: float, *, on_done: Callable[[], None]) -> Future[None]:
        """``penalize`` on the background thread (validated here, eagerly)."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"penalize needs a finite number of seconds >= 0, got {seconds!r}")
        return self._background(lambda: self.penalize(seconds), on_done)

    def close(self) -> None:
        """Finish pending corrections, then close the connection pool (idempotent)."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._client.close()

    def delete(self) -> None:
        """Forget the shared state (tests and maintenance)."""
        try:
            self._client.delete(self.key)
        except self._redis_errors as exc:
            raise BackendError(f"deleting {self.key!r} failed: {exc}", backend="redis") from exc
