"""The DataLoaders of one operation, made from the table of sources (core/sources.py).

A ``Loaders`` lives for one operation, so its caches never outlive it. Each loader wraps a
source's batch function and turns a failing store (down, or slower than the drivers' time
limits) into a ``SERVICE_UNAVAILABLE`` error on the fields that needed it. With ``naive``
set, every loader sends one store call per key, uncached: the per-field lookups the
benchmark compares the batched variant with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

from aiodataloader import DataLoader
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core.connections import Connections
from core.errors import ErrorCode, GatewayError
from core.sources import Read, Source, Store

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

STORE_FAILURES: dict[Store, tuple[type[BaseException], ...]] = {
    # Connection-level failures only: a constraint violation means the store answered.
    # SQLAlchemy's TimeoutError: no pooled connection came free within the pool timeout.
    Store.POSTGRES: (OperationalError, InterfaceError, PoolTimeout, OSError, TimeoutError),
    Store.MONGODB: (PyMongoError, OSError, TimeoutError),
    Store.REDIS: (RedisError, OSError, TimeoutError),
}


class Loaders:
    def __init__(
        self,
        connections: Connections,
        *,
        naive: bool = False,
        deadline: float | None = None,
        record_tags: bool = False,
    ) -> None:
        self._connections = connections
        # The cache tags of everything read (see core/sources.py), when the operation's
        # response may be cached: its value is the set of them.
        self.tags: set[str] | None = set() if record_tags else None
        self._naive = naive
        self._deadline = deadline
        self._loaders: dict[Source[Any, Any], DataLoader[Any, Any]] = {}
        # Values already read elsewhere in the operation (a listed page's rows): a plain
        # dict, where a DataLoader's prime costs a future per key.
        self._primed: dict[Source[Any, Any], dict[Any, Any]] = {}

    async def load(self, source: Source[K, V], key: K) -> V:
        primed = self._primed.get(source)
        if primed is not None and key in primed:
            found: V = primed[key]
            return found
        return await self.loader(source).load(key)

    async def load_many(self, source: Source[K, V], keys: Iterable[K]) -> list[V]:
        keys = list(keys)
        primed = self._primed.get(source, {})
        missing = [key for key in keys if key not in primed]
        loaded = dict(zip(missing, await self.loader(source).load_many(missing), strict=True))
        return [primed[key] if key in primed else loaded[key] for key in keys]

    async def batch(self, source: Source[K, V], keys: Sequence[K]) -> list[V]:
        """The values of ``keys`` in one call of the source, a key asked twice fetched once,
        with no future per key: how the planner loads a whole level. Its values are not
        kept for later loads."""
        unique = list(dict.fromkeys(keys))
        fetched = await self.call(source.store, source.fetch(self._connections, unique))
        if self.tags is not None:
            self.tags.update(source.tags(unique, fetched))
        found = dict(zip(unique, fetched, strict=True))
        return [found[key] for key in keys]

    async def read(self, read: Read[V]) -> V:
        """A root field's read, under the same rules as every store call."""
        value = await self.call(read.store, read.fetch(self._connections))
        if self.tags is not None:
            self.tags.update(read.tags(value))
        return value

    def prime(self, source: Source[K, V], key: K, value: V) -> None:
        if not self._naive:  # naive lookups keep nothing
            self._primed.setdefault(source, {}).setdefault(key, value)

    def clear(self, source: Source[K, V], key: K) -> None:
        self._primed.get(source, {}).pop(key, None)
        self.loader(source).clear(key)

    def loader(self, source: Source[K, V]) -> DataLoader[K, V]:
        """The operation's loader of ``source``: one per distinct source, so that every
        parent asking for the same relation (the same page of it) shares one batch."""
        found = self._loaders.get(source)
        if found is None:

            async def batch(keys: list[K]) -> list[V]:
                fetched = await self.call(source.store, source.fetch(self._connections, keys))
                if self.tags is not None:
                    self.tags.update(source.tags(keys, fetched))
                return list(fetched)

            found = self._loaders[source] = (
                DataLoader(batch, batch=False, cache=False) if self._naive else DataLoader(batch)
            )
        return found

    async def call(self, store: Store, operation: Awaitable[V]) -> V:
        """One store call outside a loader (a root list), under the same rules.

        Time limits are the drivers' own (see core/connections.py), never a
        cancellation from out here: cancelling PyMongo's async pool while it waits for a
        connection corrupts the pool's lock and hangs every later operation. For the same
        reason a cancelled caller (a client gone, a sibling field failed) stops waiting,
        but the store call itself runs to its end. Past the operation's deadline no new
        call starts: the operation winds down with errors instead of going on working for
        a client that has been answered.
        """
        if self._deadline is not None and asyncio.get_running_loop().time() > self._deadline:
            if asyncio.iscoroutine(operation):
                operation.close()  # never started: nothing to wait for
            raise GatewayError("the operation ran past its time limit", ErrorCode.DEADLINE_EXCEEDED)
        try:
            return await _run_to_completion(operation)
        except STORE_FAILURES[store] as error:
            raise GatewayError(
                f"{store.value} is unavailable; try again later",
                ErrorCode.SERVICE_UNAVAILABLE,
                store=store.value,
            ) from error


async def _run_to_completion(operation: Awaitable[V]) -> V:
    task = asyncio.ensure_future(operation)
    # Nobody may await the task once its caller is cancelled: retrieve its outcome anyway,
    # so that a failure is not reported as "never retrieved".
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
