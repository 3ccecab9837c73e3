"""The response cache: what a query answered, kept for the next caller of the same scope
who sends the same request, until a mutation changes something it read or its time is up.

Two tiers. Redis holds entries for every process (see datasources/response_cache.py);
each process keeps the entries it met last in memory, bounded by bytes, in front of it. A
process's own tier stays correct across processes through Redis: every invalidation is
published, and each process drops its entries that carry an invalidated tag. A process
uses its tier only while it is subscribed: when the subscription fails, it empties the
tier and reads Redis alone until it is subscribed again. With Redis down, nothing is
looked up or stored: requests are executed, as they would be with no cache.

An entry carries the tags of everything its response read (see core/sources.py) and lives
as long as the shortest time to live of their types: the live counters' (``Counters``)
is a second by default, whatever the others'.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import orjson
from redis.asyncio import Redis

from core.outages import Bypassed, Outage
from core.pubsub import REDIS_FAILURES, Hub
from core.sources import COUNTERS
from datasources.response_cache import (
    CHANNEL,
    EntryReader,
    cached,
    invalidate_tags,
    store_entry,
)

logger = logging.getLogger(__name__)

# Connections of the hit path kept open between hits.
READERS_KEPT = 32
# Every entry of the process's tier is dropped by this message (a flush).
EVERYTHING = "*"


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached response: its JSON (``data`` only), when it was stored, until when it
    holds, its HTTP entity tag, and the tags of what it read.

    Stored as a small header, the body, then the tags: a hit read from Redis decodes the
    header only, and the tags (hundreds, for a page with its authors) only when it is kept
    in memory, where invalidations need them.
    """

    body: bytes | memoryview
    stored_at: float
    expires_at: float
    etag: str
    _tags: tuple[str, ...] | memoryview

    @classmethod
    def of(cls, body: bytes, ttl: float, tags: Iterable[str]) -> Entry:
        now = time.time()
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        return cls(body, now, now + ttl, etag, tuple(sorted(tags)))

    @property
    def tags(self) -> tuple[str, ...]:
        tags = self._tags
        return tags if isinstance(tags, tuple) else tuple(orjson.loads(tags))

    def encode(self) -> bytes:
        header = orjson.dumps([self.stored_at, self.expires_at, self.etag, len(self.body)])
        return b"".join((header, b"\n", self.body, orjson.dumps(self.tags)))

    @classmethod
    def decode(cls, stored: bytes) -> Entry:
        # Views, not copies: the body goes out as it came in.
        whole = memoryview(stored)
        end = stored.index(b"\n")
        stored_at, expires_at, etag, length = orjson.loads(whole[:end])
        body_end = end + 1 + length
        return cls(whole[end + 1 : body_end], stored_at, expires_at, etag, whole[body_end:])

    @property
    def age(self) -> int:
        return max(0, int(time.time() - self.stored_at))

    @property
    def remaining(self) -> int:
        return max(0, int(self.expires_at - time.time()))


@dataclass(frozen=True, slots=True)
class Found:
    """What a look-up found: an entry and the tier it came from, or none; and the Redis
    epoch and local generation read before, which a fill of the same response needs."""

    entry: Entry | None
    tier: str | None
    epoch: bytes | None
    generation: int


@dataclass(frozen=True, slots=True)
class Flight:
    """One caller's computing of a response, which others asking for it meanwhile wait
    for: ``leads`` for that caller, who must land it (``ResponseCache.landed``). It
    carries the count of invalidations when it took off: what it computes may be what an
    invalidation since then dropped."""

    landing: asyncio.Future[Entry | None]
    invalidations: int
    leads: bool


@dataclass
class CacheCounters:
    """Kept for the metrics endpoint to read."""

    hits: dict[str, int] = field(default_factory=lambda: {"memory": 0, "redis": 0})
    misses: int = 0
    stored: int = 0
    stored_bytes: int = 0
    invalidations: int = 0
    single_flight_waits: int = 0


class ResponseCache:
    def __init__(
        self,
        redis: Redis,
        hub: Hub,
        *,
        ttl: float,
        ttls: Mapping[str, float],
        volatile_ttl: float,
        memory_bytes: int,
        timeout: float,
    ) -> None:
        self._redis = redis
        self._hub = hub
        # Hits are read past redis-py where the connection allows it (see EntryReader).
        self._reader = EntryReader.of(redis, timeout=timeout, kept=READERS_KEPT)
        self._ttl = ttl
        self._ttls = dict(ttls)
        self._volatile_ttl = volatile_ttl
        self._memory_bytes = memory_bytes
        self._local: OrderedDict[str, Entry] = OrderedDict()
        self._local_size = 0
        self._by_tag: defaultdict[str, set[str]] = defaultdict(set)
        # Invalidations this process has applied: a look-up or fill that saw another number
        # may hold what they dropped, and is not kept in memory.
        self._generation = 0
        # Invalidations heard, this process's and the others': a response computed across
        # one may hold what it dropped. Unlike the generation, losing Redis or the hub
        # changes nothing here: what a store answers is not stale for that.
        self._invalidations = 0
        self._subscribed = False
        self._outage = Bypassed(
            Outage(
                logger,
                began="the response cache is bypassed while Redis is unavailable",
                ended="the response cache is in use again",
            ),
            timeout=timeout,
        )
        # Tags a mutation invalidated while Redis was unavailable: invalidated first when it
        # is back, before any entry is read from it.
        self._pending: set[str] = set()
        self._flights: dict[str, Flight] = {}
        self.counters = CacheCounters()

    def start(self) -> None:
        self._hub.listen(CHANNEL, self)

    def stop(self) -> None:
        self._hub.leave(CHANNEL, self)
        if self._reader is not None:
            self._reader.close()

    def time_to_live(self, tags: Iterable[str]) -> float:
        ttl = self._ttl
        for tag in tags:
            type_name = tag.partition(":")[0]
            if type_name == COUNTERS:
                ttl = min(ttl, self._volatile_ttl)
            else:
                ttl = min(ttl, self._ttls.get(type_name, self._ttl))
        return ttl

    async def find(self, digest: str) -> Found:
        generation = self._generation
        entry = self._local.get(digest)
        if entry is not None:
            if entry.expires_at > time.time():
                self._local.move_to_end(digest)
                self.counters.hits["memory"] += 1
                return Found(entry, "memory", None, generation)
            self._drop(digest)
        if not await self._available():
            return Found(None, None, None, generation)
        try:
            stored, epoch = await (
                self._reader.read(digest)
                if self._reader is not None
                else cached(redis=self._redis, digest=digest)
            )
        except REDIS_FAILURES as error:
            self._failed(error)
            return Found(None, None, None, generation)
        self._outage.answered()
        if stored is None:
            return Found(None, None, epoch, generation)
        entry = Entry.decode(stored)
        self.counters.hits["redis"] += 1
        self._keep(digest, entry, generation)
        return Found(entry, "redis", epoch, generation)

    def missed(self) -> None:
        self.counters.misses += 1

    async def store(self, digests: list[str], entry: Entry, found: Found) -> None:
        """Keep ``entry`` under ``digests``, unless what it read was invalidated since
        ``found`` was looked up."""
        if found.epoch is None:  # Redis was down at the look-up
            return
        # What the entry has left: an entry found under one key and stored under another
        # (two spellings) must not outlive its first storing.
        milliseconds = int((entry.expires_at - time.time()) * 1000)
        if milliseconds <= 0 or not await self._available():
            return
        try:
            stored = await store_entry(
                redis=self._redis,
                digests=digests,
                entry=entry.encode(),
                tags=entry.tags,
                milliseconds=milliseconds,
                epoch=found.epoch,
            )
        except REDIS_FAILURES as error:
            self._failed(error)
            return
        self._outage.answered()
        if stored:
            self.counters.stored += 1
            self.counters.stored_bytes += len(entry.body)
            for digest in digests:
                self._keep(digest, entry, found.generation)

    async def invalidate(self, tags: Iterable[str]) -> None:
        """Drop every entry that read one of ``tags``, in every process; this process's
        at once."""
        unique = sorted(set(tags))
        if not unique:
            return
        self.counters.invalidations += 1
        self._drop_tagged(unique)
        self._pending.update(unique)
        await self._available()

    async def _available(self) -> bool:
        """Whether Redis may be used now (see ``Bypassed``), with every invalidation made
        while it was unavailable applied."""
        if not self._outage.asks():
            return False
        if self._pending:
            tags = sorted(self._pending)
            try:
                await invalidate_tags(redis=self._redis, tags=tags, message=orjson.dumps(tags))
            except REDIS_FAILURES as error:
                self._failed(error)
                return False
            self._pending.difference_update(tags)
            self._outage.answered()
        return True

    async def single_flight(self, digest: str, wait: float) -> Flight:
        """A flight the caller leads if nobody is computing ``digest`` since the last
        invalidation, else the one under way, waited for ``wait`` seconds at most: a
        caller asking after an invalidation (its own mutation's, say) never gets what was
        computed from before it."""
        flight = self._flights.get(digest)
        if flight is None or flight.invalidations != self._invalidations:
            landing = asyncio.get_running_loop().create_future()
            flight = self._flights[digest] = Flight(landing, self._invalidations, leads=True)
            return flight
        self.counters.single_flight_waits += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(flight.landing), wait)
        return replace(flight, leads=False)

    def landed(self, digest: str, flight: Flight, entry: Entry | None) -> None:
        """``flight``'s end: ``entry`` for those waiting, unless an invalidation came
        since it took off (they compute their own then)."""
        if self._flights.get(digest) is flight:
            del self._flights[digest]
        if not flight.landing.done():
            current = flight.invalidations == self._invalidations
            flight.landing.set_result(entry if current else None)

    def _keep(self, digest: str, entry: Entry, generation: int) -> None:
        if not self._subscribed or generation != self._generation:
            return
        if len(entry.body) > self._memory_bytes // 8:
            return  # one response may not push out most of the others
        self._drop(digest)
        tags = entry.tags
        # Kept with its tags decoded: dropping it reads them.
        entry = replace(entry, _tags=tags)
        self._local[digest] = entry
        self._local_size += len(entry.body)
        for tag in tags:
            self._by_tag[tag].add(digest)
        while self._local_size > self._memory_bytes:
            self._drop(next(iter(self._local)))

    def _drop(self, digest: str) -> None:
        entry = self._local.pop(digest, None)
        if entry is None:
            return
        self._local_size -= len(entry.body)
        for tag in entry.tags:
            tagged = self._by_tag.get(tag)
            if tagged is not None:
                tagged.discard(digest)
                if not tagged:
                    del self._by_tag[tag]

    def _drop_tagged(self, tags: Iterable[str]) -> None:
        self._generation += 1
        self._invalidations += 1
        for tag in tags:
            if tag == EVERYTHING:
                self._clear()
                return
            for digest in list(self._by_tag.get(tag, ())):
                self._drop(digest)

    def _clear(self) -> None:
        self._generation += 1
        self._local.clear()
        self._by_tag.clear()
        self._local_size = 0

    # The invalidations of every process reach this one through the hub (core/pubsub.py):
    # while it is not subscribed, the tier is empty and unused.
    def message(self, data: bytes) -> None:
        self._drop_tagged(orjson.loads(data))

    def connected(self) -> None:
        # Anything kept before this point may have missed an invalidation.
        self._clear()
        self._subscribed = True

    def disconnected(self, error: BaseException) -> None:
        self._subscribed = False
        self._failed(error)

    def _failed(self, error: BaseException) -> None:
        self._clear()
        self._outage.failed(error)
