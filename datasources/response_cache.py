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

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

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


def entry_key(digest: str) -> str:
    return f"cache:entry:{digest}"


def tag_key(tag: str) -> str:
    return f"cache:tag:{tag}"


async def cached(*, redis: Redis, digest: str) -> tuple[Any, Any]:
    """The entry under ``digest``, if any, and the epoch, in one round trip."""
    # Bytes: the client decodes no responses.
    entry, epoch = await redis.mget(entry_key(digest), EPOCH)
    return entry, epoch or b"0"


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
    await redis.eval(_INVALIDATE, len(keys), *keys, CHANNEL, message)
