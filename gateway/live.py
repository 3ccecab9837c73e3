"""Subscriptions fanned out to their subscribers, on every transport (both WebSocket
protocols, and server-sent events).

Subscribers of one operation, with the same variables and in the same scope (role) share
a feed: the operation runs once (see resolvers/subscriptions.py), and each of its events
is executed and encoded once, then handed to every subscriber. A subscriber holds the
latest event it has not sent yet, never a queue: a client that reads slowly skips to the
latest state, and slows no one else. When the last subscriber of a feed leaves, the feed
stops, and with it its channel's subscription in Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLFormattedError,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
)
from graphql.execution.values import get_variable_values
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.utils.aio import aclosing

from core.context import Context
from core.errors import INTERNAL_MESSAGE, ErrorCode, client_error, request_error
from gateway.cached_responses import canonical, scope_of
from gateway.operations import OperationCache
from gateway.schema import GatewaySchema
from resolvers.subscriptions import CURRENT_STATE

logger = logging.getLogger(__name__)

FeedKey = tuple[str, str | None, bytes, str]


@dataclass(frozen=True)
class LiveOperation:
    """A subscription that passed every check, ready to be fed."""

    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    # Its name in the document ("" for an unnamed one).
    named: str
    # The document in its canonical spelling: two spellings share a feed.
    normalized: str
    # Whether each event is the whole current state, sent at once to a subscriber who
    # joins a running feed.
    replays: bool


def live_operation(
    operations: OperationCache,
    query: object,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> LiveOperation | list[GraphQLError] | None:
    """The subscription a request asks for; the errors that refuse it; or None when it
    asks for something else (a query, a mutation, a document that does not validate),
    which the transport answers as it answers any operation."""
    if not isinstance(query, str):
        return None
    prepared = operations.prepare(query)
    if prepared.document is None or prepared.errors:
        return None
    operation = prepared.operation(operation_name)
    if isinstance(operation, GraphQLError) or operation.operation is not OperationType.SUBSCRIPTION:
        return None
    problems = prepared.check(operation_name, variables)
    if problems:
        return problems
    # Variables that do not coerce refuse it now, before any feed starts.
    coerced = get_variable_values(
        operations.schema, operation.variable_definitions or (), dict(variables or {})
    )
    if isinstance(coerced, list):
        return coerced
    roots = _field_names(prepared.document, operation.selection_set)
    return LiveOperation(
        query=query,
        operation_name=operation_name,
        variables=dict(variables) if variables is not None else None,
        named=operation.name.value if operation.name else "",
        normalized=prepared.normalized,
        replays=bool(roots) and roots <= CURRENT_STATE,
    )


@dataclass(frozen=True)
class Ended:
    """A feed's end: complete, or refused with ``errors`` (formatted)."""

    errors: list[GraphQLFormattedError] | None = None


class Subscriber:
    """One client's subscription to a feed: the latest event it has not sent yet."""

    # What a subscriber waits on is a bare future rather than an event (whose wait is a
    # coroutine and a queue of futures): thousands of subscribers each make one per event,
    # and what is alive at a pass of the cycle collector is what the pass walks.
    __slots__ = ("_ended", "_latest", "_waiter")

    def __init__(self) -> None:
        self._latest: str | None = None
        self._ended: Ended | None = None
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, payload: str) -> None:
        self._latest = payload
        self._wake()

    def end(self, ended: Ended) -> None:
        self._ended = ended
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> str | Ended:
        """The latest event (a GraphQL response, in JSON), or the end once every event
        was taken."""
        while True:
            if self._latest is not None:
                payload, self._latest = self._latest, None
                return payload
            if self._ended is not None:
                return self._ended
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


@dataclass(eq=False)
class _Feed:
    key: FeedKey
    replays: bool
    subscribers: set[Subscriber] = field(default_factory=set)
    last: str | None = None
    task: asyncio.Task[None] | None = None

    def join(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        if self.replays and self.last is not None:
            subscriber.offer(self.last)

    def publish(self, payload: str) -> None:
        self.last = payload
        for subscriber in self.subscribers:
            subscriber.offer(payload)

    def end(self, ended: Ended) -> None:
        for subscriber in self.subscribers:
            subscriber.end(ended)


class Feeds:
    """Every running feed of a process, by operation, variables and scope."""

    def __init__(self, schema: GatewaySchema) -> None:
        self._schema = schema
        self._feeds: dict[FeedKey, _Feed] = {}

    @property
    def running(self) -> int:
        return len(self._feeds)

    @property
    def subscribers(self) -> int:
        return sum(len(feed.subscribers) for feed in self._feeds.values())

    @asynccontextmanager
    async def subscribed(self, live: LiveOperation, context: Context) -> AsyncIterator[Subscriber]:
        """A subscriber of ``live``'s feed (started if none runs) until the block ends."""
        key = (live.normalized, live.operation_name, canonical(live.variables), scope_of(context))
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(key, live.replays)
            feed.task = asyncio.create_task(self._run(feed, live, context))
        subscriber = Subscriber()
        feed.join(subscriber)
        try:
            yield subscriber
        finally:
            feed.subscribers.discard(subscriber)
            if not feed.subscribers:
                self._stop(feed)

    async def stop(self) -> None:
        feeds = list(self._feeds.values())
        for feed in feeds:
            self._stop(feed)
        await asyncio.gather(*(feed.task for feed in feeds if feed.task), return_exceptions=True)

    def _stop(self, feed: _Feed) -> None:
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]
        if feed.task is not None:
            feed.task.cancel()

    async def _run(self, feed: _Feed, live: LiveOperation, context: Context) -> None:
        try:
            stream = await self._schema.subscribe(
                live.query,
                variable_values=live.variables,
                context_value=context,
                operation_name=live.operation_name,
            )
            async with aclosing(stream):
                first = True
                async for result in stream:
                    # Refused before any event: by a check, or by the subscription itself
                    # (no such report), which can only fail once its stream starts.
                    if first and (
                        isinstance(result, PreExecutionError)
                        or (result.data is None and result.errors)
                    ):
                        feed.end(Ended([error.formatted for error in result.errors or ()]))
                        return
                    first = False
                    feed.publish(_encoded(result))
            feed.end(Ended())
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("a subscription's feed failed (request %s)", context.request_id)
            error = request_error(INTERNAL_MESSAGE, ErrorCode.INTERNAL_SERVER_ERROR)
            feed.end(Ended([client_error(error, context.request_id).formatted]))
        finally:
            if self._feeds.get(feed.key) is feed:
                del self._feeds[feed.key]


def _encoded(result: ExecutionResult) -> str:
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [error.formatted for error in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return orjson.dumps(payload).decode()


def _field_names(document: DocumentNode, selection_set: SelectionSetNode) -> frozenset[str]:
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    names: set[str] = set()
    pending = [selection_set]
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode) and (
                fragment := fragments.get(selection.name.value)
            ):
                pending.append(fragment.selection_set)
    return frozenset(names)
