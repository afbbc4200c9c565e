"""Redis reads on the caller's own loop: what ``RedisTaskDB.get_many_here`` sends.

``LoopReads`` (``db._common``) gives each asyncio loop one :class:`Here`
connection and one request at a time on it; this module makes those requests
cheap, since a hit costs little more than one of them:

* The connection is used directly (send, then read): with one request at a
  time, redis-py's pool and retry layers would only add their cost.
* No socket timeout on it: redis-py enforces one with a task per request;
  the caller's deadline (``LoopReads``' watchdog) bounds the read instead.
* The request bytes are built once per connection: only the key varies.
* The record's fields come back packed into one msgpack string by a Lua
  script (``cmsgpack``): redis-py parses a multi-bulk reply field by field
  in Python (an 11-field HMGET took ~40 us longer than a GET of the same
  bytes), msgpack unpacks the one string in C. A server without cmsgpack
  gets plain ``HMGET``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from beautyspot_async._errormap import ErrorMap
from beautyspot_async._record import TaskRecord

__all__ = ["Here", "HereReader"]

# KEYS: record hash. ARGV: the fields. Missing fields pack as false.
_READ_PACKED = "return cmsgpack.pack(redis.call('HMGET', KEYS[1], unpack(ARGV)))"

Row = list[bytes | None]


def _bulk(part: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(part), part)


class Here:
    """One caller loop's reading connection and its request bytes."""

    __slots__ = ("client", "conn", "head", "packed", "tail")

    def __init__(
        self, client: aioredis.Redis, conn: Any, sha: str | None, fields: Sequence[str]
    ) -> None:
        self.client = client
        self.conn = conn
        #: Whether replies are the packed script's (else plain HMGET replies).
        self.packed = sha is not None
        if sha is None:
            self.head = b"*%d\r\n" % (2 + len(fields)) + _bulk(b"HMGET")
        else:
            self.head = (
                b"*%d\r\n" % (4 + len(fields))
                + _bulk(b"EVALSHA")
                + _bulk(sha.encode())
                + _bulk(b"1")
            )
        self.tail = b"".join(_bulk(f.encode()) for f in fields)

    def command(self, name: bytes) -> bytes:
        """The request reading the record hash ``name``."""
        return self.head + _bulk(name) + self.tail

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.conn.disconnect()
            finally:
                await self.client.aclose()


class HereReader:
    """``open``, ``read`` and ``close`` of ``LoopReads`` for one RedisTaskDB.

    ``new_client()`` makes a client without a socket timeout; ``rec`` is the
    record hashes' key prefix; ``fields`` the fields read, in the order
    ``parse(cache_key, row)`` takes them (None: no such hash).
    """

    def __init__(
        self,
        new_client: Callable[[], Awaitable[aioredis.Redis]],
        rec: bytes,
        fields: Sequence[str],
        parse: Callable[[str, Row], TaskRecord | None],
        errors: ErrorMap,
    ) -> None:
        self._new_client = new_client
        self._rec = rec
        self._fields = tuple(fields)
        self._parse = parse
        self._errors = errors
        #: Whether the server runs the packed read (cmsgpack in its Lua).
        self.packed = True

    async def open(self) -> Here:
        """A client and one connection of its own, for one loop's reads."""
        client = await self._new_client()
        conn = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        sha = None
        try:
            with self._errors.translating("lookup"):
                await conn.connect()
                if self.packed:
                    await conn.send_command("SCRIPT", "LOAD", _READ_PACKED)
                    sha = (await conn.read_response()).decode()
        except BaseException:
            await Here(client, conn, None, self._fields).aclose()
            raise
        return Here(client, conn, sha, self._fields)

    @staticmethod
    async def close(here: Here) -> None:
        await here.aclose()

    async def read(self, here: Here, keys: list[str]) -> dict[str, TaskRecord]:
        """The records stored among ``keys``: one pipelined request, one round trip."""
        conn = here.conn
        rec = self._rec
        errors = self._errors
        try:
            await conn.send_packed_command(
                [here.command(rec + key.encode()) for key in keys], check_health=False
            )
            replies = [await conn.read_response() for _ in keys]
            rows = [self._unpacked(reply) for reply in replies] if here.packed else replies
        except ResponseError as exc:
            # An error reply leaves the rest unread: LoopReads drops the connection.
            if here.packed and not isinstance(exc, NoScriptError):
                # Say, no cmsgpack on this server: plain HMGET from now on.
                self.packed = False
            raise errors.error("lookup", exc) from exc
        except Exception as exc:  # errors.translating, inlined: this is the hit path
            if not errors.translates(exc):
                raise
            raise errors.error("lookup", exc) from exc
        found = {}
        parse = self._parse
        for key, row in zip(keys, rows, strict=True):
            record = parse(key, row)
            if record is not None:
                found[key] = record
        return found

    def _unpacked(self, reply: bytes) -> Row:
        row = msgpack.unpackb(reply, raw=True)
        if type(row) is not list or len(row) != len(self._fields):
            raise ResponseError(f"unexpected packed HMGET reply {row!r:.80}")
        return [None if v is False else v for v in row]
