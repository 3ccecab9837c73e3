"""``/graphql`` over WebSocket: graphql-transport-ws and the older graphql-ws, through
Strawberry's protocol handlers, with three things added on the way in and out.

- The handshake: pages of origins the CORS policy does not allow are refused, so that no
  other site can act over a socket with its user's cookies.
- Messages in: one that is not what the protocol says (not an object, an id that is not a
  string, a payload that is not an object) closes the socket with 4400, instead of
  escaping the handler and dropping the connection without a close frame.
- Messages out: every error carries a code. Operations' errors have one already (see
  core.errors); this covers the few that the protocol handlers write themselves.
- Persisted queries: an operation may name its document by hash, and in the allow-list
  mode must be one of the allow-list's, as over HTTP (see gateway/persisted_queries.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.unset import UNSET, UnsetType

from core.auth import ANONYMOUS, AuthenticationError, Authenticator
from core.context import Context
from core.errors import ErrorCode, client_error
from gateway.cors import OriginPolicy
from gateway.persisted_queries import PersistedQueries, PersistedQueryError, requested_digest
from gateway.schema import GatewaySchema

INVALID_MESSAGE = 4400
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
    if query is not None and not isinstance(query, str):
        return message, None  # the protocol handler refuses it
    try:
        digest = requested_digest(extensions if isinstance(extensions, Mapping) else None)
        if digest is None and not persisted.only:
            return message, None
        document = await persisted.document(context.connections, digest, query)
    except PersistedQueryError as refusal:
        return None, client_error(refusal.error, context.request_id).formatted
    return {**message, "payload": {**payload, "query": document}}, None


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


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    async def handle_message(self, message: Any) -> None:
        if not well_formed(message):
            await self.handle_invalid_message("Invalid message")
            return
        persisted = cast("GraphQLOverWebSocket", self.view).persisted
        resolved, refusal = await admitted(persisted, self.context, message)
        if resolved is None:
            await self.send_message({"type": "error", "id": message["id"], "payload": [refusal]})
            return
        await super().handle_message(resolved)

    async def send_message(self, message: Any) -> None:
        await super().send_message(cast("Any", with_codes(message)))


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    async def handle_message(self, message: Any) -> None:
        if not well_formed(message):
            await self.websocket.close(code=INVALID_MESSAGE, reason="Invalid message")
            return
        persisted = cast("GraphQLOverWebSocket", self.view).persisted
        resolved, refusal = await admitted(persisted, self.context, message)
        if resolved is None:
            await self.send_message({"type": "error", "id": message["id"], "payload": refusal})
            return
        await super().handle_message(resolved)

    async def send_message(self, message: Any) -> None:
        await super().send_message(cast("Any", with_codes(message)))


class GraphQLOverWebSocket(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self, schema: GatewaySchema, origins: OriginPolicy, persisted: PersistedQueries
    ) -> None:
        super().__init__(
            schema,
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        )
        self._origins = origins
        self.persisted = persisted

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
