"""``/graphql`` over WebSocket: graphql-transport-ws and the older graphql-ws, through
Strawberry's protocol handlers, with three things added on the way in and out.

- The handshake: pages of origins the CORS policy does not allow are refused, so that no
  other site can act over a socket with its user's cookies.
- Messages in: one that is not what the protocol says (not an object, an id that is not a
  string, a payload that is not an object, a query that is not a string) closes the
  socket with 4400, instead of
  escaping the handler and dropping the connection without a close frame.
- Messages out: every error carries a code. Operations' errors have one already (see
  core.errors); this covers the few that the protocol handlers write themselves.
- Persisted queries: an operation may name its document by hash, and in the allow-list
  mode must be one of the allow-list's, as over HTTP (see gateway/persisted_queries.py).
- Rate limits: an operation its caller's budget does not allow gets an ``error`` message
  with ``RATE_LIMITED`` and never runs; the connection stays open (see
  gateway/rate_limits.py).
- Subscriptions: fed by the process's shared feeds (see gateway/live.py) rather than run
  once per subscriber. A connection may hold ``GATEWAY_MAX_SUBSCRIPTIONS_PER_CONNECTION``
  operations at once; one more closes it with 4429. Both protocols keep idle connections
  alive (``ka`` messages, or pings that graphql-transport-ws clients answer).
- Metrics: queries and mutations are counted and timed as requests, subscriptions as they
  are asked for (see gateway/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any, cast

import orjson
from graphql import GraphQLError, GraphQLFormattedError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.async_base_view import AsyncWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.unset import UNSET, UnsetType

from core.auth import (
    ANONYMOUS,
    AuthenticationError,
    Authenticator,
    CredentialsUncheckableError,
)
from core.context import Context
from core.errors import ErrorCode, client_error
from core.settings import Settings
from gateway.cors import OriginPolicy
from gateway.live import Ended, Feeds, LiveOperation, live_operation
from gateway.metrics import (
    OK,
    REJECTED,
    WEBSOCKET,
    RequestMetrics,
    StreamedOperations,
    count_formatted,
)
from gateway.operations import OperationCache
from gateway.persisted_queries import PersistedQueries, PersistedQueryError, requested_digest
from gateway.rate_limits import RateLimits
from gateway.schema import GatewaySchema

INVALID_MESSAGE = 4400
TOO_MANY = 4429
# WebSocket's own code for a server that cannot serve now: credentials that cannot be
# checked while their store is down.
TRY_AGAIN_LATER = 1013
# What sending on a connection the client has closed raises.
CLOSED = (WebSocketDisconnect, WebSocketDisconnected, RuntimeError, OSError)
# Messages whose payload, when present, must be an object, and those that name an operation.
OBJECT_PAYLOADS = frozenset({"connection_init", "ping", "pong", "subscribe", "start"})
WITH_ID = frozenset({"subscribe", "complete", "start", "stop"})


def well_formed(message: object) -> bool:
    if not isinstance(message, Mapping) or not isinstance(message.get("type"), str):
        return False
    kind = message["type"]
    if kind in WITH_ID and not isinstance(message.get("id"), str):
        return False
    payload = message.get("payload")
    if kind in ("subscribe", "start"):
        return (
            isinstance(payload, Mapping)
            # Absent where a persisted query's hash names the document.
            and (payload.get("query") is None or isinstance(payload["query"], str))
            and isinstance(payload.get("variables") or {}, Mapping)
            and isinstance(payload.get("operationName") or "", str)
        )
    return kind not in OBJECT_PAYLOADS or payload is None or isinstance(payload, Mapping)


async def admitted(persisted: PersistedQueries, context: Context, message: Any) -> tuple[Any, Any]:
    """``message`` with the document its operation runs, or the error that refuses it."""
    if message["type"] not in ("subscribe", "start"):
        return message, None
    payload = message["payload"]
    query, extensions = payload.get("query"), payload.get("extensions")
    try:
        digest = requested_digest(extensions if isinstance(extensions, Mapping) else None)
        if digest is None and not persisted.only:
            return message, None
        document = await persisted.document(context.connections, digest, query)
    except PersistedQueryError as refusal:
        return None, client_error(refusal.error, context.request_id).formatted
    return {**message, "payload": {**payload, "query": document}}, None


async def _send_text(websocket: AsyncWebSocketAdapter, text: str) -> None:
    """A message already encoded: an event's payload is encoded once for all its
    subscribers."""
    await cast("ASGIWebSocketAdapter", websocket).ws.send_text(text)


def with_codes(message: Mapping[str, Any]) -> Mapping[str, Any]:
    """``message`` with a code on each of its errors that has none."""
    payload = message.get("payload")
    if message.get("type") == "error":
        errors = payload if isinstance(payload, list) else [payload]
    elif isinstance(payload, Mapping):
        errors = payload.get("errors") or []
    else:
        errors = []
    for error in errors:
        if isinstance(error, dict):
            extensions = error.setdefault("extensions", {})
            extensions.setdefault("code", ErrorCode.BAD_USER_INPUT.value)
    return message


@dataclass(frozen=True)
class Routed:
    """Where a message goes, the same in both protocols: refused (with the formatted
    error), to the shared feeds (a subscription), or on to Strawberry's handler (with its
    persisted query's document in place)."""

    message: Any
    # When the message arrived, and the name in its document of the operation that it
    # starts, if it starts one that Strawberry's handler runs ("" for an unnamed one).
    arrived: float
    refusal: Any = None
    live: LiveOperation | list[GraphQLError] | None = None
    operation: str | None = None

    def counts(self, streamed: StreamedOperations, id: str) -> None:
        """Where the operation this message starts, if it starts one, is counted."""
        if self.refusal is not None:
            streamed.refused([self.refusal], self.arrived)
        elif self.live is None and self.message["type"] in ("subscribe", "start"):
            streamed.started(id, self.operation, self.arrived)
        else:
            streamed.forget(id)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    keep_alive_task: asyncio.Task[None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streamed = cast("GraphQLOverWebSocket", self.view).streamed_operations()

    async def handle_message(self, message: Any) -> None:
        if not well_formed(message):
            await self.handle_invalid_message("Invalid message")
            return
        view = cast("GraphQLOverWebSocket", self.view)
        routed = await view.route(
            self.context, message, starts="subscribe", acknowledged=self.connection_acknowledged
        )
        routed.counts(self.streamed, message.get("id"))
        if routed.refusal is not None:
            await self.send_message(
                {"type": "error", "id": message["id"], "payload": [routed.refusal]}
            )
        elif routed.live is not None:
            await self._subscribe(message["id"], routed.live)
        else:
            await super().handle_message(routed.message)

    async def handle_connection_init(self, message: Any) -> None:
        try:
            await super().handle_connection_init(message)
        except CredentialsUncheckableError as error:
            await self.websocket.close(code=TRY_AGAIN_LATER, reason=str(error)[:120])
            return
        interval = cast("GraphQLOverWebSocket", self.view).keep_alive_interval
        if self.connection_acknowledged and interval and self.keep_alive_task is None:
            self.keep_alive_task = asyncio.create_task(self._keep_alive(interval))

    async def shutdown(self) -> None:
        if self.keep_alive_task is not None:
            self.keep_alive_task.cancel()
        await super().shutdown()

    async def _keep_alive(self, interval: float) -> None:
        # The first wait is drawn at random, in the second half of the interval: connections
        # opened together (a restart's reconnections) would otherwise ping together, every
        # interval, for good; and none pings a client in its first moments.
        await asyncio.sleep(random.uniform(interval / 2, interval))
        with contextlib.suppress(*CLOSED):
            while True:
                await self.send_message({"type": "ping"})
                await asyncio.sleep(interval)

    async def _subscribe(self, id: str, live: LiveOperation | list[GraphQLError]) -> None:
        if not self.connection_acknowledged:
            await self.websocket.close(code=4401, reason="Unauthorized")
        elif id in self.operations:
            await self.websocket.close(code=4409, reason=f"Subscriber for {id} already exists")
        elif isinstance(live, list):
            errors = [client_error(error, self.context.request_id).formatted for error in live]
            cast("GraphQLOverWebSocket", self.view).subscribed(None, errors)
            await self.send_message({"type": "error", "id": id, "payload": errors})
        elif len(self.operations) >= cast("int", self.max_subscriptions_per_connection):
            await self.websocket.close(code=TOO_MANY, reason="Too many subscriptions")
        else:
            cast("GraphQLOverWebSocket", self.view).subscribed(live.named)
            operation = Operation(self, id, live.query, live.variables, live.operation_name)
            operation.task = asyncio.create_task(self._feed(operation, live))
            operation.task.add_done_callback(self._task_done)
            self.operations[id] = operation

    async def _feed(self, operation: Operation[Context, None], live: LiveOperation) -> None:
        prefix = f'{{"id":{orjson.dumps(operation.id).decode()},"type":"next","payload":'
        view = cast("GraphQLOverWebSocket", self.view)
        with contextlib.suppress(*CLOSED):
            async with view.feeds.subscribed(live, self.context) as subscriber:
                while not isinstance(event := await subscriber.next(), Ended):
                    await _send_text(self.websocket, f"{prefix}{event}}}")
            last: Any = (
                {"id": operation.id, "type": "error", "payload": event.errors}
                if event.errors
                else {"id": operation.id, "type": "complete"}
            )
            await operation.send_operation_message(last)

    async def send_message(self, message: Any) -> None:
        self.streamed.sent(with_codes(message))
        await super().send_message(message)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streamed = cast("GraphQLOverWebSocket", self.view).streamed_operations()

    async def handle_message(self, message: Any) -> None:
        if not well_formed(message):
            await self.websocket.close(code=INVALID_MESSAGE, reason="Invalid message")
            return
        view = cast("GraphQLOverWebSocket", self.view)
        routed = await view.route(
            self.context, message, starts="start", acknowledged=self.connection_acknowledged
        )
        routed.counts(self.streamed, message.get("id"))
        if routed.refusal is not None:
            await self.send_message(
                {"type": "error", "id": message["id"], "payload": routed.refusal}
            )
        elif routed.live is not None:
            await self._start(message["id"], routed.live)
        else:
            await super().handle_message(routed.message)

    async def handle_connection_init(self, message: Any) -> None:
        try:
            await super().handle_connection_init(message)
        except CredentialsUncheckableError as error:
            payload = {"code": ErrorCode.SERVICE_UNAVAILABLE.value, "message": str(error)}
            await self.send_message({"type": "connection_error", "payload": payload})
            await self.websocket.close(code=TRY_AGAIN_LATER, reason="")

    async def _start(self, id: str, live: LiveOperation | list[GraphQLError]) -> None:
        if not self.connection_acknowledged:
            await self.websocket.close(code=4401, reason="Unauthorized")
            return
        await self.cleanup_operation(id)  # an id used again replaces its operation
        if isinstance(live, list):
            error = client_error(live[0], self.context.request_id).formatted
            cast("GraphQLOverWebSocket", self.view).subscribed(None, [error])
            await self.send_message({"type": "error", "id": id, "payload": error})
        elif len(self.tasks) >= cast("int", self.max_subscriptions_per_connection):
            await self.websocket.close(code=TOO_MANY, reason="Too many subscriptions")
        else:
            cast("GraphQLOverWebSocket", self.view).subscribed(live.named)
            self.tasks[id] = asyncio.create_task(self._feed(id, live))

    async def _feed(self, id: str, live: LiveOperation) -> None:
        prefix = f'{{"type":"data","id":{orjson.dumps(id).decode()},"payload":'
        view = cast("GraphQLOverWebSocket", self.view)
        try:
            with contextlib.suppress(*CLOSED):
                async with view.feeds.subscribed(live, self.context) as subscriber:
                    while not isinstance(event := await subscriber.next(), Ended):
                        await _send_text(self.websocket, f"{prefix}{event}}}")
                if event.errors:
                    await self.send_message({"type": "error", "id": id, "payload": event.errors[0]})
                else:
                    await self.send_message({"type": "complete", "id": id})
        except asyncio.CancelledError:
            # Stopped by the client: the protocol answers a stop with complete.
            with contextlib.suppress(*CLOSED):
                await self.send_message({"type": "complete", "id": id})
        finally:
            if self.tasks.get(id) is asyncio.current_task():
                del self.tasks[id]

    async def send_message(self, message: Any) -> None:
        self.streamed.sent(with_codes(message))
        await super().send_message(message)


class GraphQLOverWebSocket(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        schema: GatewaySchema,
        settings: Settings,
        origins: OriginPolicy,
        persisted: PersistedQueries,
        feeds: Feeds,
        *,
        operations: OperationCache,
        rate_limits: RateLimits,
        requests: RequestMetrics,
    ) -> None:
        keep_alive = settings.ws_keep_alive
        super().__init__(
            schema,
            graphql_ide=None,
            keep_alive=keep_alive > 0,
            keep_alive_interval=keep_alive,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        )
        self._operations = operations
        self._origins = origins
        self.persisted = persisted
        self.feeds = feeds
        self._rate_limits = rate_limits
        self._requests = requests

    def streamed_operations(self) -> StreamedOperations:
        return StreamedOperations(self._requests)

    def subscribed(self, operation: str | None, refused: list[Any] | None = None) -> None:
        """A subscription asked for: fed, or ``refused`` with those errors (formatted)."""
        self._requests.subscribed(operation, WEBSOCKET, REJECTED if refused else OK)
        if refused:
            count_formatted(refused)

    async def rate_limited(
        self, context: Context, payload: Mapping[str, Any]
    ) -> GraphQLFormattedError | None:
        """The error of an operation its caller's rate limit refuses, if it does."""
        refusal = await self._rate_limits.refusal(context, self._operations, payload)
        return client_error(refusal, context.request_id).formatted if refusal else None

    async def route(
        self, context: Context, message: Any, *, starts: str, acknowledged: bool
    ) -> Routed:
        """Where ``message`` goes; ``starts`` names the protocol's message that starts an
        operation."""
        arrived = perf_counter()
        resolved, refusal = await admitted(self.persisted, context, message)
        if resolved is None:
            return Routed(message, arrived, refusal=refusal)
        if resolved["type"] != starts:
            return Routed(resolved, arrived)
        payload = resolved["payload"]
        # Before connection_init, the viewer is unknown: the operation is refused anyway.
        if acknowledged and (refused := await self.rate_limited(context, payload)):
            return Routed(resolved, arrived, refusal=refused)
        live = self.live_operation(payload)
        if live is not None:
            return Routed(resolved, arrived, live=live)
        query = payload.get("query")
        named = (
            self._operations.prepare(query).operation_named(payload.get("operationName"))
            if isinstance(query, str)
            else None
        )
        return Routed(resolved, arrived, operation=named)

    def live_operation(
        self, payload: Mapping[str, Any]
    ) -> LiveOperation | list[GraphQLError] | None:
        return live_operation(
            self._operations,
            payload.get("query"),
            payload.get("operationName"),
            payload.get("variables"),
        )

    def is_websocket_origin_allowed(self, request: WebSocket, origin: str) -> bool:
        return self._origins.allows(origin)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None
    ) -> Context:
        return Context.of(request, response if isinstance(response, Response) else None, ANONYMOUS)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """A WebSocket authenticates once, with the Authorization of its connection_init."""
        params = context.connection_params or {}
        authorization = params.get("Authorization") or params.get("authorization")
        authenticator: Authenticator = context.request.app.state.authenticator
        try:
            context.viewer = await authenticator.viewer(
                authorization if isinstance(authorization, str) else None
            )
        except AuthenticationError as error:
            raise ConnectionRejectionError(
                {"code": ErrorCode.UNAUTHENTICATED.value, "message": str(error)}
            ) from error
        # UNSET: acknowledge with no payload.
        return cast("UnsetType", UNSET)
