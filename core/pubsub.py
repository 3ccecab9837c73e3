"""A process's one Redis pub/sub connection, shared by everything in it that listens: the
response cache's invalidations and the subscriptions' channels.

A channel is subscribed while at least one listener in the process wants it, and
unsubscribed when the last one leaves. Messages are handed to listeners synchronously,
in the order Redis sent them; a listener must not block (the live subscriptions only
mark themselves changed). When the connection fails, every listener hears so; when it is
back (every channel subscribed again), every listener hears that too, since messages sent
meanwhile are lost: they read the state again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from core.outages import Outage
from core.waiting import set_within
from datasources.channels import on_server

logger = logging.getLogger(__name__)

REDIS_FAILURES = (RedisError, OSError, TimeoutError)
# Seconds between attempts to connect again after the connection failed.
RECONNECT_AFTER = 1.0
# Seconds the reader waits for a message at a time, so that it notices a stop.
LISTEN_FOR = 1.0
# Always subscribed, so that the connection is open (and its failure seen) even while no
# listener wants anything.
HEARTBEAT = "gateway:pubsub"


class Listener(Protocol):
    def message(self, data: bytes) -> None:
        """A message on a channel it listens to."""

    def connected(self) -> None:
        """Its channels are subscribed (again): messages may have been missed before."""

    def disconnected(self, error: BaseException) -> None:
        """The connection failed: no message arrives until ``connected``."""


class Changes:
    """A listener that only remembers that something happened since it last looked: a
    subscriber that falls behind reads the latest state once, never a queue of events."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        # Whether a message came, rather than only a (re)connection.
        self._heard = False

    def message(self, data: bytes) -> None:
        self._heard = True
        self._changed.set()

    def connected(self) -> None:
        self._changed.set()

    def disconnected(self, error: BaseException) -> None:
        pass

    def forget_connecting(self) -> None:
        """The subscription being made is no change: only messages count, from the
        moment the channel was subscribed."""
        if not self._heard:
            self._changed.clear()

    async def next(self, within: float | None = None) -> None:
        """Wait until something changed since the last call (or since subscribing), or
        ``within`` seconds have passed."""
        await set_within(self._changed, within)
        self._changed.clear()
        self._heard = False


class Hub:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        # Listeners name channels plainly; on the server each carries its database's prefix.
        self._server_prefix = on_server(redis, "")
        self._listeners: dict[str, set[Listener]] = {}
        self._pubsub: PubSub | None = None
        # SUBSCRIBE commands sent and confirmed per channel on the current connection: a
        # channel is subscribed once every SUBSCRIBE sent for it has been confirmed, so the
        # confirmation of one sent before an UNSUBSCRIBE does not count for a later one.
        # Counted until an UNSUBSCRIBE is confirmed with nothing sent since.
        self._sent: dict[str, int] = {}
        self._confirmed: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._commands = asyncio.Lock()
        self._ready = False
        # The client reconnects a pub/sub connection on its own, subscribing its channels
        # again: messages sent meanwhile are lost, so this hub starts over as after a
        # failure, and tells its listeners.
        self._reconnected = False
        self._reader: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._outage = Outage(
            logger,
            began="live events and cache invalidations are not received while Redis is unavailable",
            ended="live events and cache invalidations are received again",
        )

    @property
    def channels(self) -> frozenset[str]:
        """The channels some listener of this process wants."""
        return frozenset(self._listeners)

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        # The reader only waits for messages: cancelling it leaves nothing half-done.
        self._stop.set()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def listen(self, channel: str, listener: Listener) -> None:
        listeners = self._listeners.setdefault(channel, set())
        listeners.add(listener)
        if len(listeners) == 1:
            self._command("subscribe", channel)

    def leave(self, channel: str, listener: Listener) -> None:
        listeners = self._listeners.get(channel)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[channel]
            self._command("unsubscribe", channel)

    async def subscribed(self, channel: str) -> None:
        """Wait until ``channel`` is subscribed: a message published from then on reaches
        this process's listeners. Waits through an outage."""
        while not self._is_subscribed(channel):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(channel, set()).add(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # A caller that left (a subscriber gone during an outage) is forgotten: a
                # channel nobody listens to any more is never woken, and would keep it.
                waiters = self._waiters.get(channel, set())
                waiters.discard(waiter)
                if not waiters:
                    self._waiters.pop(channel, None)
                raise

    @asynccontextmanager
    async def watching(self, channel: str) -> AsyncIterator[Changes]:
        """Changes on ``channel`` from the moment it is subscribed: read the state after
        entering, and again after each ``next``, and no change is missed."""
        changes = Changes()
        self.listen(channel, changes)
        try:
            await self.subscribed(channel)
            yield changes
        finally:
            self.leave(channel, changes)

    async def announce(self, channel: str) -> None:
        """Tell every process's listeners of ``channel`` that something changed."""
        await self._redis.publish(self._on_server(channel), b"")

    def _on_server(self, channel: str) -> str:
        return self._server_prefix + channel

    def _is_subscribed(self, channel: str) -> bool:
        return (
            self._ready
            and channel in self._listeners
            and self._sent.get(channel, 0) == self._confirmed.get(channel, 0) > 0
        )

    def _command(self, command: str, channel: str) -> None:
        if self._pubsub is not None:
            # Sent in order, one at a time: Redis answers them in the order they arrive.
            task = asyncio.create_task(self._send(self._pubsub, command, channel))
            task.add_done_callback(_retrieve)
        # Otherwise the next connection subscribes every channel wanted then.

    async def _send(self, pubsub: PubSub, command: str, channel: str) -> None:
        async with self._commands:
            if pubsub is not self._pubsub:
                return  # that connection is gone; the next one subscribes anew
            wanted = channel in self._listeners
            if (command == "subscribe") != wanted:
                return  # the last listener left, or a new one came, since this was asked
            try:
                if wanted:
                    self._sent[channel] = self._sent.get(channel, 0) + 1
                    await pubsub.subscribe(self._on_server(channel))
                else:
                    await pubsub.unsubscribe(self._on_server(channel))
            except REDIS_FAILURES:
                pass  # the reader meets the same failure, and reconnects

    async def _read(self) -> None:
        while not self._stop.is_set():
            pubsub = self._redis.pubsub()
            self._reconnected = False
            try:
                async with self._commands:
                    self._sent = dict.fromkeys((HEARTBEAT, *self._listeners), 1)
                    self._confirmed = {}
                    self._pubsub = pubsub
                    await pubsub.subscribe(*map(self._on_server, self._sent))
                    assert pubsub.connection is not None
                    pubsub.connection.register_connect_callback(self._on_reconnect)
                while not self._stop.is_set():
                    message = await pubsub.get_message(timeout=LISTEN_FOR)
                    if self._reconnected:
                        raise RedisConnectionError("the pub/sub connection was reconnected")
                    if message is not None:
                        self._dispatch(message)
            except REDIS_FAILURES as error:
                self._lost(error)
            finally:
                self._pubsub = None
                with contextlib.suppress(*REDIS_FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await set_within(self._stop, RECONNECT_AFTER)

    def _on_reconnect(self, _: object) -> None:
        self._reconnected = True

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = _text(message.get("channel")).removeprefix(self._server_prefix)
        if kind == "message":
            for listener in list(self._listeners.get(channel, ())):
                try:
                    listener.message(message["data"])
                except Exception:
                    # One listener's failure (a message it cannot read, say) is its own:
                    # raised here, it would end the reader, and every listener would go
                    # deaf with nothing said.
                    logger.exception("a listener of %s failed on a message", channel)
        elif kind == "subscribe":
            self._confirmed[channel] = self._confirmed.get(channel, 0) + 1
            if not self._ready:
                if self._confirmed.keys() >= self._sent.keys():
                    self._connected()
            elif self._is_subscribed(channel):
                # A channel subscribed on a working connection: its listeners start now.
                for listener in list(self._listeners.get(channel, ())):
                    listener.connected()
                self._wake(channel)
        elif (
            kind == "unsubscribe"
            and channel not in self._listeners
            and self._sent.get(channel) == self._confirmed.get(channel)
        ):
            self._sent.pop(channel, None)
            self._confirmed.pop(channel, None)

    def _connected(self) -> None:
        self._ready = True
        self._outage.recovered()
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                listener.connected()
        for channel in list(self._waiters):
            self._wake(channel)

    def _lost(self, error: BaseException) -> None:
        was_ready, self._ready = self._ready, False
        self._outage.failed(error)
        if was_ready:
            for listeners in list(self._listeners.values()):
                for listener in list(listeners):
                    listener.disconnected(error)

    def _wake(self, channel: str) -> None:
        if not self._is_subscribed(channel):
            return
        for waiter in self._waiters.pop(channel, set()):
            if not waiter.done():
                waiter.set_result(None)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
