"""GraphQL over HTTP, as the specification's current draft puts it.

- ``application/graphql-response+json`` to clients that accept it: a request that fails
  before execution (unreadable, refused by a limit, invalid, variables that do not
  coerce) gets a 4xx status and no ``data`` entry. ``application/json`` to the others,
  with 200 for every well-formed GraphQL response, as they expect.
- Every error is a GraphQL JSON body with a code, whatever went wrong; never plain text.
- Queries over GET and POST; mutations over POST only (a GET gets 405 with ``Allow:
  POST``), so that a link or an image cannot change anything. POST bodies must be
  ``application/json``, a type a browser cannot send cross-site without a CORS preflight.
- Batched requests (a JSON array) are refused: each operation is its own request, so
  limits, deadlines and status codes apply to one operation, and HTTP/1.1 keep-alive or
  HTTP/2 already send many requests over one connection.
- Bodies over ``GATEWAY_MAX_REQUEST_BYTES`` get 413 before the rest is read.
- Subscriptions, to requests that accept ``text/event-stream``, as server-sent events
  (GraphQL over SSE, distinct connections mode): ``next`` events, then ``complete``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import orjson
from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, OperationType
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from strawberry.types import ExecutionResult

from core import telemetry
from core.auth import (
    ANONYMOUS,
    AuthenticationError,
    Authenticator,
    CredentialsUncheckableError,
)
from core.context import EXECUTOR_HEADER, LOOKUPS_HEADER, REQUEST_ID_HEADER, Context
from core.errors import ErrorCode, client_error, request_error
from core.response_cache import Entry, Found, ResponseCache
from core.settings import Settings
from gateway.cached_responses import (
    EARLY_LOOKUP,
    cache_key,
    cached,
    canonical,
    entry_response,
    may_cache,
    scope_of,
)
from gateway.explain import ExplainRefusedError, check_explainable, explained
from gateway.live import Ended, Feeds, LiveOperation, live_operation
from gateway.metrics import (
    EVENTS,
    FAILED,
    OK,
    REJECTED,
    SERVED,
    RequestMetrics,
    Served,
    answered_with,
    failed_with,
    served_of,
)
from gateway.operations import (
    PLANNER,
    STRAWBERRY,
    OperationCache,
    PreparedDocument,
    operation_extensions,
)
from gateway.pages import graphiql_page
from gateway.persisted_queries import PersistedQueries, PersistedQueryError, requested_digest
from gateway.rate_limits import RateLimitError, RateLimits
from gateway.responses import (
    EVENT_STREAM,
    GRAPHQL_RESPONSE_JSON,
    JSON,
    accepts_events,
    json_response,
    response_type,
    shutting_down,
)
from gateway.schema import GatewaySchema
from planner.execute import Planner, plannable

logger = logging.getLogger(__name__)

ALLOWED_METHODS = "GET, HEAD, POST"
QUERY = OperationType.QUERY
# Where an operation's spending leaves what its caller has left, for the response's headers.
QUOTA = "gateway.rate_limit_quota"


@dataclass
class RequestError(Exception):
    """A request answered without a result: ``status`` tells what went wrong.

    ``graphql`` marks a well-formed GraphQL request that failed before or instead of
    execution (a document that does not parse or validate, variables that do not coerce,
    a limit): ``application/json`` clients get those with 200, as that media type's rules
    say, while a request that is not GraphQL over HTTP at all keeps its 4xx.
    """

    status: int
    errors: list[GraphQLError]
    headers: dict[str, str] = field(default_factory=dict)
    graphql: bool = False

    @classmethod
    def of(
        cls, status: int, message: str, code: ErrorCode = ErrorCode.BAD_USER_INPUT
    ) -> RequestError:
        return cls(status, [request_error(message, code)])


@dataclass(frozen=True)
class GraphQLRequest:
    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    # The hash of a persisted query sent with its document, to keep once it validates.
    registering: str | None = None


@dataclass(frozen=True)
class _Asked:
    """A request whose operation passed every check, about to be answered."""

    request: Request
    graphql: GraphQLRequest
    context: Context
    media_type: str
    prepared: PreparedDocument
    operation: OperationDefinitionNode


class GraphQLOverHTTP:
    """The ASGI endpoint of ``/graphql`` for HTTP (WebSocket has its own)."""

    def __init__(
        self,
        schema: GatewaySchema,
        settings: Settings,
        persisted: PersistedQueries,
        feeds: Feeds,
        *,
        operations: OperationCache,
        rate_limits: RateLimits,
        requests: RequestMetrics,
    ) -> None:
        self._schema = schema
        self._operations = operations
        self._feeds = feeds
        self._settings = settings
        self._requests = requests
        self._planner = Planner(schema._schema)
        # Operations whose client was answered at the deadline, finishing their store calls.
        self._overdue: set[asyncio.Task[ExecutionResult]] = set()
        self._turns = asyncio.Semaphore(settings.max_concurrent_operations)
        self._persisted = persisted
        self._rate_limits = rate_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self._observed(request)
        except asyncio.CancelledError:
            # The server is shutting down and this request ran past its grace period: the
            # client still gets a GraphQL answer rather than the server's plain-text 500.
            await shutting_down(request.headers)(scope, receive, send)
            raise
        quota = scope.get(QUOTA)
        if quota is not None:
            response.headers.update(quota.headers)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        media_type = response_type(request.headers.get("accept"))
        events = accepts_events(request.headers.get("accept"))
        context: Context | None = None
        try:
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"allow": ALLOWED_METHODS})
            if request.method not in ("GET", "HEAD", "POST"):
                raise RequestError(
                    405,
                    [request_error(f"{request.method} is not a GraphQL method here")],
                    {"allow": ALLOWED_METHODS},
                )
            if request.method in ("GET", "HEAD") and _wants_ide(request):
                return graphiql_page()
            if media_type is None and not events:
                raise _not_acceptable()
            context = await self._context(request)
            raw = await self._body(request) if request.method == "POST" else b""
            # Looked up before anything is parsed (EarlyHits did for anonymous callers): a
            # hit costs a hash and a look-up.
            lookup = request.scope.get(EARLY_LOOKUP)
            if lookup is None and context.cache is not None and not events and may_cache(request):
                query_string = request.scope["query_string"]
                key = cache_key(scope_of(context), request.method, raw or query_string)
                found = await context.cache.find(key)
                if found.entry is not None:
                    return cached(request, context, found, media_type or JSON)
                lookup = (key, found)
            graphql_request = await self._read(request, raw)
            if events and (live := self._live(graphql_request)) is not None:
                prepared = self._operations.prepare(live.query)
                await self._spend(request, context, prepared, graphql_request)
                self._requests.subscribed(live.named, EVENTS, OK)
                # Not one of the operations executing at once: it runs as long as its client.
                return self._events(live, context)
            if media_type is None:
                raise _not_acceptable()
            return await self._execute(request, graphql_request, context, media_type, lookup)
        except RequestError as refusal:
            request_id = context.request_id if context else None
            errors = [client_error(error, request_id) for error in refusal.errors]
            failed_with(request, errors, refusal.status)
            return json_response(
                {"errors": [error.formatted for error in errors]},
                200 if refusal.graphql and media_type == JSON else refusal.status,
                media_type or JSON,
                refusal.headers | ({REQUEST_ID_HEADER: request_id} if request_id else {}),
            )

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """One of the operations this process executes at once, in arrival order.

        A burst of clients costs a bounded amount of memory and store connections, and the
        operations running are not slowed by every other one interleaved with them (see
        README.md, Limits). An operation that waits longer than it may run is answered that
        the gateway is busy.
        """
        try:
            async with asyncio.timeout(self._settings.execution_timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise RequestError(
                503,
                [request_error("the gateway is busy; try again", ErrorCode.SERVICE_UNAVAILABLE)],
                {"retry-after": "1"},
            ) from None
        try:
            yield
        finally:
            self._turns.release()

    async def _observed(self, request: Request) -> Response:
        """``_respond``, counted and timed, in the request's span when tracing."""
        started = perf_counter()
        served = request.scope[SERVED] = Served()
        try:
            with telemetry.span(f"{request.method} {request.url.path}") as span:
                try:
                    response = await self._respond(request)
                except BaseException:
                    served.outcome = FAILED
                    self._requests.record(served, perf_counter() - started)
                    raise
                if served.answered(response):
                    seconds = perf_counter() - started
                    self._requests.record(served, seconds)
                    slow = self._settings.slow_operation_seconds
                    if slow and seconds > slow:
                        served.log_slow(seconds)
                if span is not None:
                    served.describe(span, response)
        finally:
            # The scope holds what the request came to, which holds its context, which
            # holds the request: a cycle that would leave the whole request, and all it
            # read, to the cycle collector.
            del request.scope[SERVED]
        return response

    async def _context(self, request: Request) -> Context:
        authenticator: Authenticator = request.app.state.authenticator
        try:
            viewer = await authenticator.viewer(request.headers.get("authorization"))
        except AuthenticationError as error:
            raise RequestError(
                401,
                [request_error(str(error), ErrorCode.UNAUTHENTICATED)],
                {"www-authenticate": "Bearer"},
            ) from error
        except CredentialsUncheckableError as error:
            raise RequestError(
                503,
                [request_error(str(error), ErrorCode.SERVICE_UNAVAILABLE)],
                {"retry-after": "1"},
            ) from error
        context = served_of(request).context = Context.of(request, None, viewer)
        return context

    async def _read(self, request: Request, body: bytes) -> GraphQLRequest:
        if request.method == "POST":
            try:
                params = json.loads(body)
            except (ValueError, UnicodeDecodeError) as error:
                raise RequestError.of(400, f"the body is not JSON: {error}") from error
            if isinstance(params, list):
                raise RequestError.of(
                    400, "batched requests are not supported: send one operation per request"
                )
            if not isinstance(params, dict):
                raise RequestError.of(400, "the body must be a JSON object")
        else:
            params = {name: request.query_params.get(name) for name in request.query_params}
            for name in ("variables", "extensions"):
                if isinstance(params.get(name), str):
                    try:
                        params[name] = json.loads(params[name])
                    except ValueError as error:
                        raise RequestError.of(400, f"{name} is not JSON: {error}") from error
        extensions = params.get("extensions")
        if extensions is not None and not isinstance(extensions, dict):
            raise RequestError.of(400, "extensions must be a JSON object")
        query = params.get("query")
        persisted = self._persisted
        try:
            digest = requested_digest(extensions)
            if (digest is not None or persisted.only) and (query is None or isinstance(query, str)):
                stores = request.app.state.connections
                params = {**params, "query": await persisted.document(stores, digest, query)}
        except PersistedQueryError as refusal:
            raise RequestError(refusal.status, [refusal.error], graphql=True) from refusal
        return _graphql_request(params, registering=digest if query is not None else None)

    async def _body(self, request: Request) -> bytes:
        content_type = request.headers.get("content-type", "")
        media_type, _, parameters = content_type.partition(";")
        charset = parameters.partition("charset=")[2].strip().strip('"').lower()
        if media_type.strip().lower() != JSON or charset not in ("", "utf-8", "utf8"):
            raise RequestError.of(415, f"send the request as {JSON} (UTF-8), not {content_type!r}")
        limit = self._settings.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
        except ClientDisconnect as error:
            raise RequestError.of(400, "the request body ended early") from error
        return b"".join(chunks)

    async def _execute(
        self,
        request: Request,
        graphql_request: GraphQLRequest,
        context: Context,
        media_type: str,
        lookup: tuple[str, Found] | None,
    ) -> Response:
        prepared = self._operations.prepare(graphql_request.query)
        if prepared.errors:
            raise RequestError(400, list(prepared.errors), graphql=True)
        operation = prepared.operation(graphql_request.operation_name)
        if isinstance(operation, GraphQLError):
            raise RequestError(400, [operation], graphql=True)
        served_of(request).runs(
            operation, prepared, graphql_request.operation_name, graphql_request.variables
        )
        if graphql_request.registering is not None:
            await self._persisted.register(
                request.app.state.connections, graphql_request.registering, graphql_request.query
            )
        if operation.operation is OperationType.SUBSCRIPTION:
            raise RequestError.of(
                400,
                "subscriptions are served over WebSocket at this same path, or as server-sent "
                f"events to requests that accept {EVENT_STREAM}",
            )
        if operation.operation is OperationType.MUTATION and request.method != "POST":
            raise RequestError(
                405, [request_error("mutations are sent with POST")], {"allow": "POST"}
            )
        if context.explain:
            try:
                check_explainable(context.viewer, operation)
            except ExplainRefusedError as refused:
                raise RequestError(refused.status, [refused.error]) from refused
        asked = _Asked(request, graphql_request, context, media_type, prepared, operation)
        if operation.operation is OperationType.MUTATION:
            # Writes are few and wait on the stores, not on the processor: they take no
            # turn, lest writes held up by a store that is down hold up every query.
            return self._respond_with(await self._result(asked), context, media_type)
        if context.cache is not None and lookup is not None and not context.explain:
            return await self._through_cache(asked, context.cache, lookup)
        async with self._turn():
            if context.explain:
                result = await explained(await self._result(asked), context)
                return self._respond_with(result, context, media_type)
            return self._respond_with(await self._result(asked), context, media_type)

    def _live(self, graphql_request: GraphQLRequest) -> LiveOperation | None:
        live = live_operation(
            self._operations,
            graphql_request.query,
            graphql_request.operation_name,
            graphql_request.variables,
        )
        if isinstance(live, list):
            self._requests.subscribed(None, EVENTS, REJECTED)
            raise RequestError(400, live, graphql=True)
        return live

    def _events(self, live: LiveOperation, context: Context) -> StreamingResponse:
        return StreamingResponse(
            self._stream(live, context),
            media_type=EVENT_STREAM,
            headers={
                "cache-control": "no-cache",
                # Proxies that buffer responses would hold events back.
                "x-accel-buffering": "no",
                REQUEST_ID_HEADER: context.request_id,
            },
        )

    async def _stream(self, live: LiveOperation, context: Context) -> AsyncIterator[str]:
        keep_alive = self._settings.ws_keep_alive or None
        async with self._feeds.subscribed(live, context) as subscriber:
            while True:
                try:
                    event = await asyncio.wait_for(subscriber.next(), keep_alive)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if isinstance(event, Ended):
                    break
                yield f"event: next\ndata: {event}\n\n"
        if event.errors:
            yield f"event: next\ndata: {orjson.dumps({'errors': event.errors}).decode()}\n\n"
        yield "event: complete\ndata:\n\n"

    async def _through_cache(
        self, asked: _Asked, cache: ResponseCache, lookup: tuple[str, Found]
    ) -> Response:
        """A query's answer from the cache under its canonical key, from a caller who is
        computing the same one, or computed and kept. Only computing it takes a turn:
        callers waiting for another's answer would otherwise hold up every other query."""
        request, context, media_type = asked.request, asked.context, asked.media_type
        raw_key, found = lookup
        key = cache_key(
            scope_of(context),
            "operation",
            asked.prepared.normalized,
            asked.operation.name.value if asked.operation.name else "",
            canonical(asked.graphql.variables),
        )
        spelled_alike = await cache.find(key)
        if spelled_alike.entry is not None:
            await cache.store([raw_key], spelled_alike.entry, found)
            return cached(request, context, spelled_alike, media_type)
        cache.missed()
        flight = await cache.single_flight(key, self._settings.execution_timeout)
        if not flight.leads:
            landing = flight.landing
            computed = landing.result() if landing.done() else None
            if computed is None:  # the first caller failed, or is slow: this one runs its own
                return self._respond_with(await self._result_in_turn(asked), context, media_type)
            return cached(request, context, Found(computed, "single flight", None, 0), media_type)
        entry = None
        context.caching = True
        try:
            result = await self._result_in_turn(asked)
            if result.data is not None and not result.errors and context.scope is not None:
                tags = context.scope.loaders.tags or set()
                with telemetry.span("encode"):
                    body = orjson.dumps({"data": result.data})
                entry = Entry.of(body, cache.time_to_live(tags), tags)
                await cache.store([raw_key, key], entry, found)
        finally:
            cache.landed(key, flight, entry)
        if entry is None:
            return self._respond_with(result, context, media_type)
        extensions = dict(result.extensions or {})
        if context.settings.is_development:
            extensions["cache"] = {"hit": False}
        return entry_response(
            entry,
            media_type,
            hit=False,
            extensions=extensions,
            method=request.method,
            if_none_match=request.headers.get("if-none-match", ""),
            request_id=context.request_id,
            public=context.viewer == ANONYMOUS,
        )

    async def _result_in_turn(self, asked: _Asked) -> ExecutionResult:
        async with self._turn():
            return await self._result(asked)

    async def _result(self, asked: _Asked) -> ExecutionResult:
        request, prepared, operation = asked.request, asked.prepared, asked.operation
        graphql_request, context = asked.graphql, asked.context
        # Checked here on both executors (Strawberry's checks again, as on every transport),
        # so that an operation spends its rate limit only once it may run.
        problems = prepared.check(graphql_request.operation_name, graphql_request.variables)
        if problems:
            raise RequestError(400, problems, graphql=True)
        await self._spend(request, context, prepared, graphql_request)
        if self._planned(request, prepared.document, operation):
            return await self._run(
                self._execute_planned(prepared, operation, graphql_request, context),
                graphql_request,
                context,
            )
        return await self._run(
            self._schema.execute(
                graphql_request.query,
                variable_values=graphql_request.variables,
                context_value=context,
                operation_name=graphql_request.operation_name,
            ),
            graphql_request,
            context,
        )

    async def _spend(
        self,
        request: Request,
        context: Context,
        prepared: PreparedDocument,
        graphql_request: GraphQLRequest,
    ) -> None:
        try:
            request.scope[QUOTA] = await self._rate_limits.spend(
                context, prepared, graphql_request.operation_name, graphql_request.variables
            )
        except RateLimitError as refused:
            raise RequestError(
                refused.status, [refused.error], refused.headers, graphql=refused.status != 429
            ) from refused

    def _respond_with(self, result: ExecutionResult, context: Context, media_type: str) -> Response:
        headers = {REQUEST_ID_HEADER: context.request_id}
        if result.data is None and result.errors and all(e.path is None for e in result.errors):
            # Failed before execution: variables that do not coerce, or a request check.
            raise RequestError(400, result.errors, graphql=True)
        answered_with(context.request, result.errors)
        with telemetry.span("encode"):
            payload: dict[str, Any] = {}
            if result.errors:
                payload["errors"] = [
                    error.formatted for error in sorted(result.errors, key=_in_order)
                ]
            payload["data"] = result.data
            if result.extensions:
                payload["extensions"] = result.extensions
            return json_response(payload, 200, media_type, headers)

    def _planned(
        self, request: Request, document: DocumentNode | None, operation: OperationDefinitionNode
    ) -> bool:
        return (
            document is not None
            and request.headers.get(EXECUTOR_HEADER, "").lower() != STRAWBERRY
            # Naive lookups (benchmarks) are a DataLoader matter: Strawberry's executor.
            and request.headers.get(LOOKUPS_HEADER, "").lower() != "naive"
            and plannable(document, operation)
        )

    async def _execute_planned(
        self,
        prepared: PreparedDocument,
        operation: OperationDefinitionNode,
        graphql_request: GraphQLRequest,
        context: Context,
    ) -> ExecutionResult:
        """A query on the planned executor, under the same checks, scope, masking and
        extensions as on Strawberry's."""
        assert prepared.document is not None
        scope = context.begin_operation()
        scope.executor = PLANNER
        if context.report_cost:
            scope.cost = prepared.cost(graphql_request.operation_name, graphql_request.variables)
        outcome = await self._planner.execute(
            prepared.document, operation, graphql_request.variables, context
        )
        errors = [client_error(error, context.request_id) for error in outcome.errors]
        extensions = operation_extensions(context, self._operations.limits, PLANNER)
        return ExecutionResult(data=outcome.data, errors=errors or None, extensions=extensions)

    async def _run(
        self,
        execution: Coroutine[Any, Any, ExecutionResult],
        graphql_request: GraphQLRequest,
        context: Context,
    ) -> ExecutionResult:
        """Execute, and answer at the deadline whatever the operation is doing; it stops
        starting store calls then, and finishes those under way on its own."""
        with telemetry.span("execute"):
            # Started within the span: the operation's own spans are its children.
            task = asyncio.ensure_future(execution)
            done, _ = await asyncio.wait({task}, timeout=self._settings.execution_timeout)
        if done:
            return task.result()
        self._overdue.add(task)
        task.add_done_callback(self._overdue.discard)
        logger.warning(
            "operation %s ran past %gs (request %s)",
            graphql_request.operation_name or "(anonymous)",
            self._settings.execution_timeout,
            context.request_id,
        )
        message = f"the operation did not finish within {self._settings.execution_timeout:g}s"
        raise RequestError(504, [request_error(message, ErrorCode.DEADLINE_EXCEEDED)], graphql=True)


def _graphql_request(params: Mapping[str, Any], registering: str | None) -> GraphQLRequest:
    query = params.get("query")
    operation_name = params.get("operationName")
    variables = params.get("variables")
    if query is None:
        raise RequestError.of(400, "the request has no query")
    if not isinstance(query, str):
        raise RequestError.of(400, "query must be a string")
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestError.of(400, "operationName must be a string")
    if variables is not None and not isinstance(variables, dict):
        raise RequestError.of(400, "variables must be a JSON object")
    return GraphQLRequest(query, operation_name, variables, registering)


def _in_order(error: GraphQLError) -> tuple[Any, ...]:
    """Errors in the order of the document, then of their paths: the same order whatever
    order the fields happened to finish in, on either executor."""
    location = (error.locations[0].line, error.locations[0].column) if error.locations else (0, 0)
    path = tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, part) for part in error.path or ()
    )
    return location, path, error.message


def _not_acceptable() -> RequestError:
    return RequestError.of(
        406, f"responses are {GRAPHQL_RESPONSE_JSON} or {JSON}; accept one of them"
    )


def _too_large(limit: int) -> RequestError:
    return RequestError.of(
        413, f"the request body is over the limit of {limit} bytes", ErrorCode.QUERY_TOO_COMPLEX
    )


def _wants_ide(request: Request) -> bool:
    return "query" not in request.query_params and "text/html" in request.headers.get("accept", "")
