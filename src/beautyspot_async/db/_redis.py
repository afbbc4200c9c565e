# Over 500 lines: one backend; its key layout, scripts and error translation read together.
"""Redis task database on redis.asyncio (extra ``[redis]``).

Over 500 lines because its Lua scripts are inline, next to their callers
(and the failure records' key space sits beside the records').

Key space, all under ``<prefix>:`` so one prefix is one database::

    <prefix>:schema            layout version (string)
    <prefix>:rec:<cache_key>   HASH, one per record; absent fields are None
    <prefix>:idx:updated       ZSET cache_key -> updated_at (history, iteration)
    <prefix>:idx:expires       ZSET cache_key -> expires_at (delete_expired)
    <prefix>:lease:<cache_key> STRING owner, with a server-side PX expiry
    <prefix>:saved             pub/sub channel; payload is the cache key
    <prefix>:fail:<cache_key>  HASH, one per failed call (the batch runner's)
    <prefix>:idx:failed        ZSET cache_key -> failed_at (newest first)
    <prefix>:idx:used          ZSET cache_key -> last recorded hit (size budgets)

Writes run as Lua scripts so a record and its index entries change together,
stamped with the server's ``TIME``. Targets a single Redis node (or a primary
with replicas); the keys of one prefix are not co-located for Redis Cluster.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import anyio

from beautyspot_async._errormap import ErrorMap
from beautyspot_async._extras import install_hint
from beautyspot_async._failure import FailureRecord, checked_failure
from beautyspot_async._lazy import LazyClient
from beautyspot_async._record import TaskRecord, checked_record, meta_text, parse_meta
from beautyspot_async.db._base import EvictionCandidate, LeaseHolder, RecordTaskDB
from beautyspot_async.db._common import LoopReads, WaitStatistics, WaitTracker
from beautyspot_async.exceptions import ConfigurationError

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"RedisTaskDB needs {install_hint('redis')}") from exc

from beautyspot_async.db._redis_here import HereReader

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RedisTaskDB"]

T = TypeVar("T")

SCHEMA_VERSION = 1

_META_FIELDS = (
    "func_name",
    "input_id",
    "version",
    "result_type",
    "content_type",
    "expires_at",
    "size_bytes",
    "created_at",
    "updated_at",
    "meta",
)

# What the hit-path reads fetch: every field but meta, which only the readers
# that show it (history, iter_records, get_meta) fetch.
_RECORD_FIELDS = (
    "func_name",
    "input_id",
    "version",
    "result_type",
    "content_type",
    "result_value",
    "result_data",
    "expires_at",
    "size_bytes",
    "created_at",
    "updated_at",
)


def _present(row: list[bytes | None]) -> dict[bytes, bytes]:
    # HMGET answers None for a missing field, and for every field of a missing hash.
    return {f.encode(): v for f, v in zip(_RECORD_FIELDS, row, strict=True) if v is not None}


# KEYS: record hash, updated index, expires index.
# ARGV: cache_key, expires_at ('' = never), channel, n, n field/value pairs,
#       then the fields to delete (the None-valued ones).
# created_at survives an overwrite because HSET only touches named fields --
# unless it is no number: a rewrite must repair a row checked_record rejected.
_SAVE = """
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local created = redis.call('HGET', KEYS[1], 'created_at')
local seconds = created and tonumber(created)
if not seconds or seconds ~= seconds then created = now end
local n = tonumber(ARGV[4])
local fields = {'created_at', created, 'updated_at', now}
for i = 5, 4 + 2 * n do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if #ARGV > 4 + 2 * n then
    redis.call('HDEL', KEYS[1], unpack(ARGV, 5 + 2 * n, #ARGV))
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
if ARGV[2] == '' then
    redis.call('ZREM', KEYS[3], ARGV[1])
else
    redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return now
"""

# KEYS: updated index, expires index. ARGV: record key prefix, cutoff ('' =
# server time), batch size. Deletes up to one batch; returns how many.
_DELETE_EXPIRED = """
local cutoff = ARGV[2]
if cutoff == '' then
    local t = redis.call('TIME')
    cutoff = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local doomed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[3]))
for _, key in ipairs(doomed) do
    redis.call('DEL', ARGV[1] .. key)
    redis.call('ZREM', KEYS[1], key)
    redis.call('ZREM', KEYS[2], key)
end
return #doomed
"""

# KEYS: record hash, updated index, expires index. ARGV: cache_key.
_DELETE = """
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return n
"""

# KEYS: lease key. ARGV: owner, ttl in ms. Take a free lease or renew our own.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""


def _if_holder(action: str) -> str:
    """A lease script that runs ``action`` only while ARGV[1] holds KEYS[1]; 1 if it ran."""
    return (
        "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
        f"    {action}\n"
        "    return 1\n"
        "end\n"
        "return 0\n"
    )


# KEYS: lease key. ARGV: owner, channel, cache_key. Only the holder releases.
_RELEASE = _if_holder("redis.call('DEL', KEYS[1]); redis.call('PUBLISH', ARGV[2], ARGV[3])")

# KEYS: lease key. ARGV: owner, ttl in ms. Extend our own lease only.
_RENEW = _if_holder("redis.call('PEXPIRE', KEYS[1], ARGV[2])")

# KEYS: lease key. ARGV: dead owner, new owner, ttl in ms. Swap only while the dead one holds it.
_TAKE_OVER = _if_holder("redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])")

# KEYS: record hash, lease key. ARGV: owner, ttl in ms, then the record's
# fields. The record's fields when it is stored (any field present); else
# take the lease if it is free or ours (1), or say another owner holds it
# (0). Atomic, so no re-read is needed: a holder saves before it releases.
_LOOKUP_OR_LEASE = """
local row = redis.call('HMGET', KEYS[1], unpack(ARGV, 3))
for i = 1, #row do
    if row[i] then return row end
end
local holder = redis.call('GET', KEYS[2])
if holder == false or holder == ARGV[1] then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""

_EXPIRE_BATCH = 500

#: The scripts run by their SHA1 in pipelines (see RedisTaskDB._eval_pipelined).
_PIPELINED = {
    "save": _SAVE,
    "release": _RELEASE,
    "renew": _RENEW,
    "take_over": _TAKE_OVER,
    "lookup_or_lease": _LOOKUP_OR_LEASE,
}
_SHA1 = {
    name: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    for name, source in _PIPELINED.items()
}

_ERRORS = ErrorMap("redis", {RedisError: None, OSError: None})


def _text(value: bytes | None) -> str | bytes | None:
    # Invalid UTF-8 stays bytes, for checked_record to flag.
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


def _number(value: bytes | None, kind: type[float] | type[int]) -> Any:
    # Garbage stays as it is, for checked_record to flag.
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        return value


def _size(value: bytes | None) -> int:
    # Budgets only add sizes up: an unreadable one counts as nothing.
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


async def _close(client: aioredis.Redis) -> None:
    with anyio.CancelScope(shield=True):
        await client.aclose()


def _from_hash(cache_key: str, h: dict[bytes, bytes], *, with_meta: bool = False) -> TaskRecord:
    # Hash fields are whatever anyone wrote there: parse leniently, then check.
    # The hit path leaves meta undecoded (with_meta false): hits never pay for it.
    return checked_record(
        cache_key,
        _text(h.get(b"func_name")),
        _text(h.get(b"input_id")),
        _text(h.get(b"version")),
        _text(h.get(b"result_type")),
        _text(h.get(b"content_type")),
        _text(h.get(b"result_value")),
        h.get(b"result_data"),
        _number(h.get(b"expires_at"), float),
        _number(h.get(b"size_bytes", b"0"), int),
        _number(h.get(b"created_at"), float),
        _number(h.get(b"updated_at"), float),
        h.get(b"meta") if with_meta else None,
    )


def _from_row(cache_key: str, row: list[bytes | None]) -> TaskRecord | None:
    """:func:`_from_hash` of an HMGET reply in ``_RECORD_FIELDS`` order (None: no hash)."""
    (
        func_name,
        input_id,
        version,
        result_type,
        content_type,
        result_value,
        result_data,
        expires_at,
        size_bytes,
        created_at,
        updated_at,
    ) = row
    if func_name is None and all(v is None for v in row):
        return None
    return checked_record(
        cache_key,
        _text(func_name),
        _text(input_id),
        _text(version),
        _text(result_type),
        _text(content_type),
        _text(result_value),
        result_data,
        _number(expires_at, float),
        _number(b"0" if size_bytes is None else size_bytes, int),
        _number(created_at, float),
        _number(updated_at, float),
    )


def _failure_from_hash(member: bytes, h: dict[bytes, bytes]) -> FailureRecord | None:
    # An index entry whose hash is gone (deleted in between) reads as None.
    if not h:
        return None
    return checked_failure(
        member.decode("utf-8", "replace"),
        h.get(b"func_name"),
        h.get(b"input_id"),
        h.get(b"version"),
        h.get(b"exc_type"),
        h.get(b"message"),
        h.get(b"attempts"),
        h.get(b"failed_at"),
        h.get(b"args"),
    )


class RedisTaskDB(RecordTaskDB):
    """Task database on Redis, shared by every process using ``url`` and ``prefix``.

    One prefix is one namespace: two Spots with different prefixes never see
    each other's records. Connection errors are retried ``retries`` times
    with exponential backoff (a restarted server, a killed client
    connection); when Redis stays unreachable the call raises
    :class:`~beautyspot_async.BackendError`. A request not answered within
    ``socket_timeout`` seconds fails at once, without retries. Extra keyword arguments go to
    ``redis.asyncio.Redis.from_url``.
    """

    loop_bound: ClassVar[bool] = True
    backend_name: ClassVar[str] = "redis"
    supports_leases: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "beautyspot",
        retries: int = 3,
        backoff_base: float = 0.05,
        backoff_cap: float = 1.0,
        socket_timeout: float | None = 10.0,
        **client_kwargs: Any,
    ) -> None:
        if not prefix or any(c in prefix for c in "\x00\r\n "):
            raise ConfigurationError(f"invalid Redis key prefix {prefix!r}")
        self.url = url
        self.prefix = prefix
        self._retries = retries
        self._backoff = (backoff_cap, backoff_base)
        self._socket_timeout = socket_timeout
        # Name our connections so operators can find them in CLIENT LIST
        # (an explicit client_name wins).
        client_kwargs.setdefault("client_name", "beautyspot-async")
        self._client_kwargs = client_kwargs
        self._rec = f"{prefix}:rec:".encode()
        self._updated = f"{prefix}:idx:updated".encode()
        self._expires = f"{prefix}:idx:expires".encode()
        self._lease = f"{prefix}:lease:".encode()
        self._schema = f"{prefix}:schema".encode()
        self._fail = f"{prefix}:fail:".encode()
        self._failed = f"{prefix}:idx:failed".encode()
        self._used = f"{prefix}:idx:used".encode()
        self.channel = f"{prefix}:saved".encode()
        self._client = LazyClient(self._open, _close)
        # The hit path's reads, on the caller's own loop (get_many_here).
        self._here_reader = HereReader(
            self._here_client, self._rec, _RECORD_FIELDS, _from_row, _ERRORS
        )
        self._here = LoopReads(
            self._here_reader.open, self._here_reader.close, self._here_reader.read
        )
        self._scripts: dict[str, Any] = {}
        self._waits = WaitTracker()

    def __repr__(self) -> str:
        return f"RedisTaskDB(prefix={self.prefix!r})"

    # -- connection management ------------------------------------------------

    async def _open(self) -> aioredis.Redis:
        client = await self._new_client(self._socket_timeout)
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("save", _SAVE),
                ("delete", _DELETE),
                ("expire", _DELETE_EXPIRED),
                ("acquire", _ACQUIRE),
                ("release", _RELEASE),
                ("renew", _RENEW),
                ("take_over", _TAKE_OVER),
            )
        }
        return client

    async def _new_client(self, socket_timeout: float | None) -> aioredis.Redis:
        # Creating the client opens nothing: connections are made on demand.
        return aioredis.Redis.from_url(
            self.url,
            decode_responses=False,
            socket_timeout=socket_timeout,
            socket_connect_timeout=self._socket_timeout,
            # Retry lost connections only. A server that did not answer
            # within socket_timeout will not answer a retry sooner: retrying
            # timeouts made a frozen Redis block (retries + 1) x
            # socket_timeout, each retry re-handshaking into the silence.
            retry=Retry(
                ExponentialBackoff(*self._backoff),
                self._retries,
                supported_errors=(RedisConnectionError,),
            ),
            retry_on_error=[RedisConnectionError, OSError],
            **self._client_kwargs,
        )

    async def _call(self, fn: Callable[[aioredis.Redis], Awaitable[T]], what: str) -> T:
        with _ERRORS.translating(what):
            return await fn(await self._client.get())

    async def aclose(self) -> None:
        """Close the connection pool and the per-loop readers. Idempotent."""
        await self._client.aclose()
        await self._here.aclose()

    # -- reads on the caller's loop ----------------------------------------------

    async def _here_client(self) -> aioredis.Redis:
        # No socket timeout: see _redis_here (the caller's deadline bounds reads).
        return await self._new_client(None)

    async def get_many_here(
        self,
        cache_keys: Sequence[str],
        timeout: float | None,  # noqa: ASYNC109 - a deadline without a timer per hit
    ) -> dict[str, TaskRecord | None]:
        """Read ``cache_keys`` on the calling loop, on a client of that loop's own.

        One round trip (see ``_redis_here``: a packed ``HMGET``, pipelined
        for several keys); concurrent lookups of one loop share it. No lease.
        """
        return await self._here.get_many(list(cache_keys), timeout)

    def statistics(self) -> WaitStatistics:
        """Waits parked on pub/sub and the messages they received."""
        return self._waits.snapshot()

    # -- schema ---------------------------------------------------------------

    async def init_schema(self) -> None:
        """Stamp the namespace's layout version; refuse a newer one.

        Redis needs no DDL; this also checks that the server is reachable.
        """

        async def op(r: aioredis.Redis) -> bytes | None:
            await r.set(self._schema, str(SCHEMA_VERSION), nx=True)
            return cast("bytes | None", await r.get(self._schema))

        found = await self._call(op, "init_schema")
        if found is not None and int(found) > SCHEMA_VERSION:
            raise ConfigurationError(
                f"Redis prefix {self.prefix!r} has layout version {int(found)}, newer than "
                f"{SCHEMA_VERSION} which this beautyspot-async understands; upgrade it"
            )

    async def schema_exists(self) -> bool:
        """Whether the prefix's layout-version key exists; writes nothing."""

        async def op(r: aioredis.Redis) -> int:
            return int(await r.exists(self._schema))

        return bool(await self._call(op, "schema_exists"))

    # -- records --------------------------------------------------------------

    async def get(self, cache_key: str) -> TaskRecord | None:
        """Return the record stored under ``cache_key``, or ``None``."""

        async def op(r: aioredis.Redis) -> list[bytes | None]:
            key = self._rec + cache_key.encode()
            return cast("list[bytes | None]", await r.hmget(key, _RECORD_FIELDS))

        h = _present(await self._call(op, "get"))
        return _from_hash(cache_key, h) if h else None

    async def _pipelined(
        self, keys: Sequence[str], queue: Callable[[Any, str], object], what: str
    ) -> list[Any]:
        """Queue ``queue(pipe, key)`` for every key; send them in one round trip."""

        async def op(r: aioredis.Redis) -> list[Any]:
            async with r.pipeline(transaction=False) as pipe:
                for key in keys:
                    queue(pipe, key)
                return await pipe.execute()

        return await self._call(op, what)

    async def get_many(self, cache_keys: Sequence[str]) -> dict[str, TaskRecord]:
        """Return the records found among ``cache_keys`` in one pipelined round trip."""
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return {}

        rows = await self._pipelined(
            keys, lambda pipe, key: pipe.hmget(self._rec + key.encode(), _RECORD_FIELDS), "get_many"
        )
        found = ((k, _present(row)) for k, row in zip(keys, rows, strict=True))
        return {k: _from_hash(k, h) for k, h in found if h}

    def _save_args(self, r: TaskRecord) -> tuple[list[bytes], list[Any]]:
        values: dict[str, Any] = {
            "func_name": r.func_name,
            "input_id": r.input_id,
            "version": r.version,
            "result_type": r.result_type,
            "content_type": r.content_type,
            "result_value": r.result_value,
            "result_data": r.result_data,
            "expires_at": None if r.expires_at is None else repr(float(r.expires_at)),
            "size_bytes": str(r.size_bytes),
            "meta": meta_text(r.meta),
        }
        present = [(k, v) for k, v in values.items() if v is not None]
        absent = [k for k, v in values.items() if v is None]
        args: list[Any] = [
            r.cache_key,
            values["expires_at"] or "",
            self.channel,
            len(present),
        ]
        for k, v in present:
            args += [k, v]
        args += absent
        keys = [self._rec + r.cache_key.encode(), self._updated, self._expires]
        return keys, args

    async def _save_record(self, record: TaskRecord) -> None:
        """Upsert one record atomically (``created_at`` kept) and publish its key."""
        keys, args = self._save_args(record)

        async def op(r: aioredis.Redis) -> None:
            await self._scripts["save"](keys=keys, args=args)

        await self._call(op, "save")

    async def _eval_pipelined(
        self, r: aioredis.Redis, calls: Sequence[tuple[str, list[Any], list[Any]]], *, atomic: bool
    ) -> list[Any]:
        """Run ``(script, keys, args)`` calls in one pipeline: one round trip.

        By SHA1 (``EVALSHA``), loading the scripts only when the server says
        it lacks them: redis-py's Script objects in a pipeline would ask with
        ``SCRIPT EXISTS`` first, a second round trip every time. ``atomic``:
        inside MULTI/EXEC. Every call of one pipeline runs the same scripts,
        so a NOSCRIPT reply means none of them ran and the retry is safe.
        """
        for attempt in range(2):
            try:
                async with r.pipeline(transaction=atomic) as pipe:
                    for name, keys, args in calls:
                        pipe.evalsha(_SHA1[name], len(keys), *keys, *args)
                    replies: list[Any] = await pipe.execute()
                    return replies
            except NoScriptError:
                if attempt:
                    raise
                for name in dict.fromkeys(name for name, _, _ in calls):
                    await r.script_load(_PIPELINED[name])
        raise AssertionError("unreachable")  # pragma: no cover

    async def save_many(self, records: Iterable[TaskRecord]) -> None:
        """Upsert every record in one MULTI/EXEC transaction: one round trip."""
        calls: list[tuple[str, list[Any], list[Any]]] = [
            ("save", *self._save_args(rec)) for rec in records
        ]
        if not calls:
            return

        async def op(r: aioredis.Redis) -> None:
            await self._eval_pipelined(r, calls, atomic=True)

        await self._call(op, "save_many")

    async def delete(self, cache_key: str) -> bool:
        """Remove ``cache_key`` and its index entries; return whether it existed."""
        keys = [self._rec + cache_key.encode(), self._updated, self._expires]

        async def op(r: aioredis.Redis) -> Any:
            existed = await self._scripts["delete"](keys=keys, args=[cache_key])
            await r.zrem(self._used, cache_key)
            return existed

        return bool(await self._call(op, "delete"))

    async def delete_expired(self, now: float | None = None) -> int:
        """Remove records expired at ``now`` (default: the server clock), via the index."""
        cutoff = "" if now is None else repr(float(now))
        removed = 0
        while True:

            async def op(r: aioredis.Redis) -> Any:
                return await self._scripts["expire"](
                    keys=[self._updated, self._expires],
                    args=[self._rec, cutoff, _EXPIRE_BATCH],
                )

            # Batches keep each script run short: Redis blocks while it runs.
            n = int(await self._call(op, "delete_expired"))
            removed += n
            if n < _EXPIRE_BATCH:
                return removed

    async def iter_records(self) -> AsyncIterator[TaskRecord]:
        """Yield every record, walking the updated_at index with ZSCAN."""
        with _ERRORS.translating("iter_records"):
            client = await self._client.get()
            chunk: list[str] = []
            async for member, _score in client.zscan_iter(self._updated, count=256):
                chunk.append(member.decode())
                if len(chunk) >= 256:
                    for record in await self._with_meta(chunk):
                        yield record
                    chunk = []
            if chunk:
                for record in await self._with_meta(chunk):
                    yield record

    async def _with_meta(self, keys: list[str]) -> list[TaskRecord]:
        hashes = await self._pipelined(
            keys, lambda pipe, key: pipe.hgetall(self._rec + key.encode()), "iter_records"
        )
        return [_from_hash(k, h, with_meta=True) for k, h in zip(keys, hashes, strict=True) if h]

    async def get_meta(self, cache_key: str) -> Mapping[str, Any] | None:
        """The ``meta`` field of the record's hash, alone."""

        async def op(r: aioredis.Redis) -> Any:
            return await r.hget(self._rec + cache_key.encode(), "meta")

        return parse_meta(await self._call(op, "get_meta"))

    async def get_history(self, limit: int = 1000) -> pd.DataFrame:
        """Return up to ``limit`` records' metadata, newest first, from the index."""
        from beautyspot_async.db._history import records_to_frame

        async def op(r: aioredis.Redis) -> list[tuple[str, list[Any]]]:
            if limit <= 0:
                return []
            members = cast("list[bytes]", await r.zrevrange(self._updated, 0, limit - 1))
            async with r.pipeline(transaction=False) as pipe:
                for m in members:
                    pipe.hmget(self._rec + m, list(_META_FIELDS))
                rows = await pipe.execute()
            return [(m.decode(), row) for m, row in zip(members, rows, strict=True)]

        records = []
        for key, row in await self._call(op, "get_history"):
            h = {f.encode(): v for f, v in zip(_META_FIELDS, row, strict=True) if v is not None}
            if b"func_name" in h:  # deleted between the two reads
                records.append(_from_hash(key, h, with_meta=True))
        return records_to_frame(records)

    # -- size budgets ----------------------------------------------------------------

    async def touch(self, cache_keys: Sequence[str], now: float) -> None:
        """Raise the keys' scores in the last-use index (``ZADD GT``), one round trip.

        Keys deleted meanwhile may get a member; :meth:`eviction_candidates`
        drops such members when it meets them.
        """
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return

        async def op(r: aioredis.Redis) -> None:
            await r.zadd(self._used, dict.fromkeys(keys, float(now)), gt=True)

        await self._call(op, "touch")

    async def usage_totals(self) -> tuple[int, int]:
        """Walk the updated_at index, reading ``size_bytes`` a pipelined page at a time."""
        entries = total = 0
        with _ERRORS.translating("usage_totals"):
            client = await self._client.get()
            page: list[bytes] = []

            async def add(members: list[bytes]) -> tuple[int, int]:
                async with client.pipeline(transaction=False) as pipe:
                    for m in members:
                        pipe.hget(self._rec + m, "size_bytes")
                    sizes = await pipe.execute()
                found = [s for s in sizes if s is not None]
                return len(found), sum(_size(s) for s in found)

            async for member, _score in client.zscan_iter(self._updated, count=512):
                page.append(member)
                if len(page) >= 512:
                    n, b = await add(page)
                    entries, total, page = entries + n, total + b, []
            if page:
                n, b = await add(page)
                entries, total = entries + n, total + b
        return entries, total

    async def eviction_candidates(self, limit: int) -> list[EvictionCandidate]:
        """Least recently used first, from the union of the update and last-use indexes.

        ``ZUNIONSTORE ... AGGREGATE MAX`` into a temporary key gives each entry
        the later of its last write and last hit, in one transaction.
        """
        if limit <= 0:
            return []
        scratch = f"{self.prefix}:tmp:lru:{uuid.uuid4().hex}".encode()

        async def op(r: aioredis.Redis) -> list[Any]:
            async with r.pipeline(transaction=True) as pipe:
                pipe.zunionstore(scratch, [self._updated, self._used], aggregate="MAX")
                pipe.zrange(scratch, 0, limit - 1, withscores=True)
                pipe.delete(scratch)
                replies: list[Any] = await pipe.execute()
            ranked = cast("list[tuple[bytes, float]]", replies[1])
            async with r.pipeline(transaction=False) as pipe:
                for member, _ in ranked:
                    pipe.hmget(self._rec + member, ["size_bytes", "result_type", "result_value"])
                rows = await pipe.execute()
            gone = [m for (m, _), row in zip(ranked, rows, strict=True) if row[1] is None]
            if gone:  # last-use members of deleted entries
                await r.zrem(self._used, *gone)
            return [
                (m.decode(), score, row)
                for (m, score), row in zip(ranked, rows, strict=True)
                if row[1] is not None
            ]

        return [
            EvictionCandidate(
                key,
                _size(row[0]),
                row[1].decode(),
                None if row[2] is None else row[2].decode(),
                float(score),
            )
            for key, score, row in await self._call(op, "eviction_candidates")
        ]

    # -- failure records -------------------------------------------------------

    async def save_failure(self, failure: FailureRecord) -> None:
        """Replace the failure's hash and index it by time, in one MULTI/EXEC."""
        f = failure
        values = {
            "func_name": f.func_name,
            "input_id": f.input_id,
            "version": f.version,
            "exc_type": f.exc_type,
            "message": f.message,
            "attempts": str(f.attempts),
            "failed_at": repr(float(f.failed_at)),
            "args": f.args,
        }
        mapping: dict[Any, Any] = {k: v for k, v in values.items() if v is not None}
        key = self._fail + f.cache_key.encode()

        async def op(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.delete(key)  # fields set to None before must not linger
                pipe.hset(key, mapping=mapping)
                pipe.zadd(self._failed, {f.cache_key: float(f.failed_at)})
                await pipe.execute()

        await self._call(op, "save_failure")

    async def get_failures(
        self, func_name: str | None = None, limit: int = 1000
    ) -> list[FailureRecord]:
        """Up to ``limit`` failures, newest first, walking the time index a page at a time."""
        found: list[FailureRecord] = []
        if limit <= 0:
            return found
        page = max(limit, 256)
        start = 0
        while len(found) < limit:

            async def op(r: aioredis.Redis, start: int = start) -> list[tuple[bytes, Any]]:
                members = cast(
                    "list[bytes]", await r.zrevrange(self._failed, start, start + page - 1)
                )
                async with r.pipeline(transaction=False) as pipe:
                    for m in members:
                        pipe.hgetall(self._fail + m)
                    hashes = await pipe.execute()
                return list(zip(members, hashes, strict=True))

            batch = await self._call(op, "get_failures")
            for member, h in batch:
                failure = _failure_from_hash(member, h)
                if failure is not None and (func_name is None or failure.func_name == func_name):
                    found.append(failure)
            if len(batch) < page:
                break
            start += page
        return found[:limit]

    async def delete_failures(self, cache_keys: Sequence[str]) -> int:
        """Delete the failures of ``cache_keys`` and their index entries in one MULTI/EXEC."""
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return 0

        async def op(r: aioredis.Redis) -> list[Any]:
            async with r.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.delete(self._fail + key.encode())
                pipe.zrem(self._failed, *keys)
                replies: list[Any] = await pipe.execute()
                return replies

        replies = await self._call(op, "delete_failures")
        return sum(int(n) for n in replies[:-1])

    # -- leases ---------------------------------------------------------------

    async def acquire_lease(self, cache_key: str, owner: str, ttl: float) -> bool:
        """Take or renew the lease on ``cache_key``; it expires on the server clock."""
        ttl_ms = max(1, round(ttl * 1000))

        async def op(r: aioredis.Redis) -> Any:
            return await self._scripts["acquire"](
                keys=[self._lease + cache_key.encode()], args=[owner, ttl_ms]
            )

        return bool(await self._call(op, "acquire_lease"))

    async def release_lease(self, cache_key: str, owner: str) -> None:
        """Drop ``owner``'s lease on ``cache_key`` (if held) and wake its waiters."""

        async def op(r: aioredis.Redis) -> Any:
            return await self._scripts["release"](
                keys=[self._lease + cache_key.encode()], args=[owner, self.channel, cache_key]
            )

        await self._call(op, "release_lease")

    async def _scripted_many(
        self, script: str, keys: Sequence[str], args: Callable[[str], list[Any]], what: str
    ) -> list[Any]:
        """Run one Lua script per key, pipelined: one round trip for the batch."""
        if not keys:
            return []

        calls = [(script, [self._lease + key.encode()], args(key)) for key in keys]

        async def op(r: aioredis.Redis) -> list[Any]:
            return await self._eval_pipelined(r, calls, atomic=False)

        return await self._call(op, what)

    async def release_leases(self, cache_keys: Sequence[str], owner: str) -> None:
        """Drop ``owner``'s leases on ``cache_keys`` in one round trip (waking waiters)."""
        await self._scripted_many(
            "release", cache_keys, lambda key: [owner, self.channel, key], "release_leases"
        )

    async def renew_leases(self, cache_keys: Sequence[str], owner: str, ttl: float) -> None:
        """Extend ``owner``'s leases on ``cache_keys`` in one round trip."""
        ttl_ms = max(1, round(ttl * 1000))
        await self._scripted_many("renew", cache_keys, lambda _key: [owner, ttl_ms], "renew_leases")

    async def lease_holders(self, cache_keys: Sequence[str]) -> dict[str, LeaseHolder]:
        """Owners of the live leases among ``cache_keys`` and their remaining PTTL."""
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return {}

        def queue(pipe: Any, key: str) -> None:
            pipe.get(self._lease + key.encode())
            pipe.pttl(self._lease + key.encode())

        replies = await self._pipelined(keys, queue, "lease_holders")
        found: dict[str, LeaseHolder] = {}
        for i, key in enumerate(keys):
            holder, pttl = replies[2 * i], replies[2 * i + 1]
            if holder is not None and isinstance(pttl, int) and pttl > 0:
                found[key] = LeaseHolder(holder.decode("utf-8", "replace"), pttl / 1000)
        return found

    async def take_over_leases(self, stale: Mapping[str, str], owner: str, ttl: float) -> list[str]:
        """Swap each dead owner's lease for ``owner``'s, atomically per key."""
        keys = list(stale)
        ttl_ms = max(1, round(ttl * 1000))
        taken = await self._scripted_many(
            "take_over", keys, lambda key: [stale[key], owner, ttl_ms], "take_over_leases"
        )
        return [key for key, ok in zip(keys, taken, strict=True) if ok]

    async def lookup_or_lease(
        self, cache_keys: Sequence[str], owner: str, ttl: float
    ) -> dict[str, TaskRecord | bool]:
        """Read each key, or lease it when it is missing: one script per key, one round trip.

        Each script reads and leases atomically, so no re-read is needed: a
        holder stores its result before it releases its lease.
        """
        keys = list(dict.fromkeys(cache_keys))
        if not keys:
            return {}
        ttl_ms = max(1, round(ttl * 1000))
        fields = list(_RECORD_FIELDS)
        calls = [
            (
                "lookup_or_lease",
                [self._rec + key.encode(), self._lease + key.encode()],
                [owner, ttl_ms, *fields],
            )
            for key in keys
        ]

        async def op(r: aioredis.Redis) -> list[Any]:
            return await self._eval_pipelined(r, calls, atomic=False)

        found: dict[str, TaskRecord | bool] = {}
        for key, reply in zip(keys, await self._call(op, "lookup_or_lease"), strict=True):
            if isinstance(reply, list):
                record = _from_row(key, reply)
                # The script returns a row only when a field is present.
                found[key] = False if record is None else record
            else:
                found[key] = bool(reply)
        return found

    async def wait_for_result(self, cache_key: str, timeout: float) -> None:  # noqa: ASYNC109 - the TaskDB signature
        """Return when ``cache_key`` is published (saved or lease released).

        Returns at once when the record exists or no lease is held, and after
        ``timeout`` at the latest. Each wait subscribes on its own connection
        for its duration; waits happen only under cross-process contention.
        """
        wanted = cache_key.encode()
        rec = self._rec + wanted
        lease = self._lease + wanted

        async def op(r: aioredis.Redis) -> None:
            pubsub = r.pubsub(ignore_subscribe_messages=True)
            try:
                with anyio.move_on_after(timeout):
                    await pubsub.subscribe(self.channel)
                    # Subscribed first, then checked: a save in between is
                    # either seen here or published to us.
                    async with r.pipeline(transaction=False) as pipe:
                        pipe.exists(rec)
                        pipe.exists(lease)
                        has_record, has_lease = await pipe.execute()
                    if has_record or not has_lease:
                        return
                    with self._waits.parked(cache_key):
                        while True:
                            try:
                                msg = await pubsub.get_message(timeout=None)
                            except (RedisConnectionError, OSError):
                                # A lost subscription may have missed the
                                # message: return early, the caller re-checks.
                                return
                            if msg is not None:
                                self._waits.notified()
                                if msg.get("data") == wanted:
                                    return
            finally:
                with anyio.CancelScope(shield=True):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

        await self._call(op, "wait_for_result")
