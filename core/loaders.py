"""The DataLoaders of one operation, made from the table of sources (core/sources.py).

A ``Loaders`` lives for one operation, so its caches never outlive it. Each loader wraps a
source's batch function and turns a failing store (down, or slower than the drivers' time
limits) into a ``SERVICE_UNAVAILABLE`` error on the fields that needed it. With ``naive``
set, every loader sends one store call per key, uncached: the per-field lookups the
benchmark compares the batched variant with.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

from aiodataloader import DataLoader

from core import metrics, telemetry
from core.connections import Connections
from core.errors import ErrorCode, GatewayError
from core.sources import Read, Source
from core.stores import Store, StoreDownError, unavailable
from datasources.explain import Recording

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Loaders:
    def __init__(
        self,
        connections: Connections,
        *,
        naive: bool = False,
        deadline: float | None = None,
        read_limit: float | None = None,
        record_tags: bool = False,
        explained: Recording | None = None,
    ) -> None:
        self._connections = connections
        # What each store call sent, when the operation is explained (datasources/explain.py).
        self.explained = explained
        self._read_limit = read_limit
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
        fetched = await self._read(
            source.store, source.fetch(self._connections, unique), source.name, len(unique)
        )
        if self.tags is not None:
            self.tags.update(source.tags(unique, fetched))
        found = dict(zip(unique, fetched, strict=True))
        return [found[key] for key in keys]

    async def read(self, read: Read[V]) -> V:
        """A root field's read, under the same rules as every store call."""
        value = await self._read(read.store, read.fetch(self._connections), read.name)
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
            # The batch function reaches these loaders through a weak reference: a closure
            # over them would close a cycle (loaders, loader, function, loaders) per source
            # per operation, left for the cycle collector, whose passes over thousands of
            # them paused a busy process for a tenth of a second and more.
            loaders = weakref.ref(self)

            async def batch(keys: list[K]) -> list[V]:
                owner = loaders()
                assert owner is not None  # a loader is only used while its operation runs
                fetched = await owner._read(
                    source.store, source.fetch(owner._connections, keys), source.name, len(keys)
                )
                if owner.tags is not None:
                    owner.tags.update(source.tags(keys, fetched))
                return list(fetched)

            found = self._loaders[source] = (
                DataLoader(batch, batch=False, cache=False) if self._naive else DataLoader(batch)
            )
        return found

    async def call(
        self, store: Store, operation: Awaitable[V], *, also: tuple[Store, ...] = ()
    ) -> V:
        """One store call outside a loader (a write, say), under the same rules: a store
        that is down fails it with ``SERVICE_UNAVAILABLE``, at once while its circuit is
        open (see core/stores.py). A write that uses ``also`` other stores does not start
        while one of them is known to be down: it would hold its transaction, and a pooled
        connection, only to wait for that store.

        Its time limits are the drivers' own (see core/connections.py): a call is never
        cancelled from out here (see ``completed_within``), and a cancelled caller (a
        client gone, a sibling field failed) stops waiting while the call runs to its end.
        Past the operation's deadline no new call starts: the operation winds down with
        errors instead of going on working for a client that has been answered.
        """
        down = next((other for other in also if self._connections.circuits[other].is_open), None)
        if down is not None:
            _never_started(operation)
            raise _unavailable(down)
        return await self._observed(store, operation, None, "write")

    async def _read(
        self, store: Store, operation: Awaitable[V], source: str, keys: int | None = None
    ) -> V:
        """A read, which also stops being waited for at the read limit: the sum of the
        drivers' limits (a pool wait, a connection, a statement) may be several times
        one of them. Writes are always waited for, lest a write cut off be reported as
        failed and commit after all."""
        if keys is not None:
            metrics.batch_size(store.value, source)(keys)
        call: Awaitable[V] = self._observed(store, operation, self._read_limit, source, keys)
        if self.explained is not None:
            call = self.explained.step(store.value, source, keys, call)
        return await call

    async def _observed(
        self,
        store: Store,
        operation: Awaitable[V],
        limit: float | None,
        source: str,
        keys: int | None = None,
    ) -> V:
        """``_guarded``, in a span of its own when store calls are traced."""
        tracer = telemetry.tracer
        if tracer is None:
            return await self._guarded(store, operation, limit)
        with telemetry.store_call(tracer, store.value, source, keys):
            return await self._guarded(store, operation, limit)

    async def _guarded(self, store: Store, operation: Awaitable[V], limit: float | None) -> V:
        if self._deadline is not None and asyncio.get_running_loop().time() > self._deadline:
            _never_started(operation)
            raise GatewayError("the operation ran past its time limit", ErrorCode.DEADLINE_EXCEEDED)
        try:
            return await self._connections.circuits[store].call(operation, limit)
        except StoreDownError as down:
            raise _unavailable(store) from down
        except Exception as error:
            # A write across stores (a report's row and its document) may fail in the other.
            other = next((other for other in Store if unavailable(other, error)), None)
            if other is None:
                raise
            self._connections.circuits[other].failed(error)
            raise _unavailable(other) from error


def _unavailable(store: Store) -> GatewayError:
    return GatewayError(
        f"{store.value} is unavailable; try again later",
        ErrorCode.SERVICE_UNAVAILABLE,
        store=store.value,
    )


def _never_started(operation: Awaitable[Any]) -> None:
    if asyncio.iscoroutine(operation):
        operation.close()  # nothing to wait for
