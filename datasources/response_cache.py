"""The response cache's part in Redis: entries, the tags that index them, and the epoch
that orders fills after invalidations.

- An entry is a response's bytes under its key, with a time to live.
- A tag (``Report:42``, ``Report:list``) is a set of the keys of the entries that read it.
- Invalidating tags deletes their entries and their sets, bumps the epoch and publishes
  the tags to every process (which drop their own copies), in one script: atomic, with no
  ``KEYS`` or ``SCAN``.
- A fill stores its entry only if the epoch is still the one read before the response was
  computed: a response computed while a mutation invalidated what it read is not kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import (
    Connection,
    RedisSSLContext,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from datasources.channels import on_server

EPOCH = "cache:epoch"
CHANNEL = "cache:invalidated"
# Keys deleted per DEL in the invalidation script, within Lua's limit on unpacked values.
DELETED_AT_ONCE = 500

_STORE = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
local milliseconds = tonumber(ARGV[2])
local entries = tonumber(ARGV[3])
for i = 2, entries + 1 do redis.call('SET', KEYS[i], ARGV[4], 'PX', milliseconds) end
for i = entries + 2, #KEYS do
  for j = 2, entries + 1 do redis.call('SADD', KEYS[i], KEYS[j]) end
  if redis.call('PTTL', KEYS[i]) < milliseconds then
    redis.call('PEXPIRE', KEYS[i], milliseconds)
  end
end
return 1
"""

_INVALIDATE = f"""
for i = 2, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  for first = 1, #members, {DELETED_AT_ONCE} do
    redis.call('DEL', unpack(members, first, math.min(first + {DELETED_AT_ONCE - 1}, #members)))
  end
  redis.call('DEL', KEYS[i])
end
redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""


# A server's host and port, or its Unix socket's path.
Address = tuple[str, int] | str


@dataclass(frozen=True)
class _Connection:
    address: Address
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


def entry_key(digest: str) -> str:
    return f"cache:entry:{digest}"


def tag_key(tag: str) -> str:
    return f"cache:tag:{tag}"


async def cached(*, redis: Redis, digest: str) -> tuple[Any, Any]:
    """The entry under ``digest``, if any, and the epoch, in one round trip."""
    # Bytes: the client decodes no responses.
    entry, epoch = await redis.mget(entry_key(digest), EPOCH)
    return entry, epoch or b"0"


class EntryReader:
    """``cached``, the one command of a hit from Redis, over connections of its own.

    Around a command, redis-py's machinery (its pool's condition, its response callbacks, a
    timeout per socket read) cost more than the round trip itself: about 110 µs against
    50 µs for an entry of 64 KB, measured in one process on loopback. This speaks the
    protocol for that command alone; everything else goes through redis-py. A connection
    that fails, times out or is interrupted mid-reply is closed, never reused.
    """

    def __init__(
        self,
        *,
        address: Address | SentinelConnectionPool,
        handshake: list[bytes],
        timeout: float,
        kept: int,
        tls: RedisSSLContext | None = None,
    ) -> None:
        # Where the server is, or the pool whose sentinels say where the master is.
        self._address = address
        self._handshake = handshake
        # The context of the driver's own connections, where they are over TLS.
        self._tls = tls
        self._timeout = timeout
        self._kept = kept
        self._idle: list[_Connection] = []

    @classmethod
    def of(cls, redis: Redis, *, timeout: float, kept: int) -> EntryReader | None:
        """A reader for the server ``redis`` talks to, over TCP, TLS or a Unix socket;
        None where its connections speak RESP3."""
        pool = redis.connection_pool
        options = pool.connection_kwargs
        if options.get("protocol") not in (None, 2, "2"):
            return None
        address: Address | SentinelConnectionPool
        kind = pool.connection_class
        tls = None
        if issubclass(kind, SSLConnection):
            # The pool's own context, made once for the pool's connections (core/pools.py).
            connection = pool.make_connection()  # type: ignore[no-untyped-call]
            assert isinstance(connection, SSLConnection)
            tls = connection.ssl_context
        if isinstance(pool, SentinelConnectionPool):
            address = pool
        elif issubclass(kind, UnixDomainSocketConnection):
            address = options["path"]
        elif issubclass(kind, Connection):
            address = (options.get("host", "localhost"), int(options.get("port", 6379)))
        else:
            return None
        handshake = []
        if options.get("password"):
            credentials = [options["username"]] if options.get("username") else []
            handshake.append(_command("AUTH", *credentials, options["password"]))
        if int(options.get("db") or 0):
            handshake.append(_command("SELECT", str(options["db"])))
        return cls(address=address, handshake=handshake, timeout=timeout, kept=kept, tls=tls)

    async def read(self, digest: str) -> tuple[bytes | None, bytes]:
        connection = self._idle.pop() if self._idle else None
        if connection is not None and self._moved(connection):
            connection.writer.close()
            connection = None
        try:
            async with asyncio.timeout(self._timeout):
                if connection is None:
                    connection = await self._connect()
                reader = connection.reader
                connection.writer.write(_command("MGET", entry_key(digest), EPOCH))
                if await _line(reader) != b"*2\r\n":
                    raise ResponseError("unexpected reply to MGET")
                entry, epoch = await _bulk(reader), await _bulk(reader)
        except BaseException as error:
            if connection is not None:
                connection.writer.close()
            if isinstance(error, (OSError, asyncio.IncompleteReadError)):
                raise RedisConnectionError(str(error)) from error
            raise
        if len(self._idle) < self._kept:
            self._idle.append(connection)
        else:
            connection.writer.close()
        return entry, epoch or b"0"

    def _moved(self, connection: _Connection) -> bool:
        """Whether the master changed since ``connection`` was opened to it: a demoted master
        still answers reads, from a copy that may lag behind the new one's."""
        if not isinstance(self._address, SentinelConnectionPool):
            return False
        master = self._address.master_address
        return master is not None and master != connection.address

    async def _connect(self) -> _Connection:
        address = self._address
        if isinstance(address, SentinelConnectionPool):
            # The pool's connections learn of a new master this way too.
            address = await address.get_master_address()  # type: ignore[no-untyped-call]
        if isinstance(address, str):
            reader, writer = await asyncio.open_unix_connection(address, limit=2**20)
        else:
            tls = self._tls.get() if self._tls is not None else None
            reader, writer = await asyncio.open_connection(*address, limit=2**20, ssl=tls)
        for command in self._handshake:
            writer.write(command)
            reply = await _line(reader)
            if not reply.startswith(b"+"):
                writer.close()
                raise ResponseError(reply.decode(errors="replace").strip())
        return _Connection(address, reader, writer)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().writer.close()


def _command(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"".join(
        [
            f"*{len(encoded)}\r\n".encode(),
            *(b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded),
        ]
    )


async def _line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line:
        raise RedisConnectionError("the server closed the connection")
    return line


async def _bulk(reader: asyncio.StreamReader) -> bytes | None:
    header = await _line(reader)
    if header[:1] == b"-":
        raise ResponseError(header[1:].decode(errors="replace").strip())
    if header[:1] != b"$":
        raise ResponseError("unexpected reply")
    length = int(header[1:])
    if length < 0:
        return None
    value = await reader.readexactly(length + 2)
    return value[:-2]


async def store_entry(
    *,
    redis: Redis,
    digests: Sequence[str],
    entry: bytes,
    tags: Sequence[str],
    milliseconds: int,
    epoch: bytes,
) -> bool:
    """Store ``entry`` under each of ``digests`` unless tags were invalidated since
    ``epoch`` was read; True if stored."""
    keys = [EPOCH, *(entry_key(digest) for digest in digests), *(tag_key(tag) for tag in tags)]
    stored: Any = await redis.eval(
        _STORE, len(keys), *keys, epoch, milliseconds, len(digests), entry
    )
    return bool(stored)


async def invalidate_tags(*, redis: Redis, tags: Sequence[str], message: bytes) -> None:
    keys = [EPOCH, *(tag_key(tag) for tag in tags)]
    await redis.eval(_INVALIDATE, len(keys), *keys, on_server(redis, CHANNEL), message)
