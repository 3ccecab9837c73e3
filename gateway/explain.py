"""Explaining an operation: what each store ran for it, in order and by level, with the
stores' own plans, and hints where a plan reads a whole table that an index would spare.

Asked for with ``x-gateway-explain: 1`` on a request (the answer in
``extensions.explain``) or with ``gateway explain FILE``. The operation runs as usual,
recording its store calls (datasources/explain.py); once it has answered, each SELECT is
run again under ``EXPLAIN (ANALYZE, BUFFERS)`` and each MongoDB read under ``explain``, and
the Redis commands are listed as sent.

For admins only, refused (``FORBIDDEN``, 403) for anyone else rather than ignored: a plan
shows tables, indexes and the values of other callers' filters, and a client that asked
should learn why it got none. Only queries are explained: ``ANALYZE`` runs a statement, and
a mutation explained would write twice, or be explained without the writes that are the
point of it, so a mutation with the header is refused before it runs. Explained requests
are neither answered from the response cache nor kept in it (the header is one of its
diagnostic headers).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from graphql import GraphQLError, OperationDefinitionNode, OperationType
from pymongo.errors import PyMongoError
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from strawberry.types import ExecutionResult

from core.auth import Access, Viewer
from core.connections import Connections
from core.context import Context
from core.errors import ErrorCode, client_error, request_error
from core.settings import Settings
from datasources.dialects import backend_of
from datasources.explain import (
    EXPLAINABLE_COMMANDS,
    MONGODB,
    POSTGRES,
    Recording,
    Sent,
    Step,
    explain_command,
    explain_statement,
    is_select,
)
from gateway.limits import Limits
from gateway.schema import catalogue_schema, operation_cache
from planner.execute import Planner, plannable

# A sequential scan that reads more rows than this, to keep some by a condition on a
# column, is one an index could spare; a smaller table is read whole faster than through
# an index.
SCANNED_ROWS_WORTH_AN_INDEX = 1000
# Who runs ``gateway explain``: whoever may reach the stores has every right already.
OPERATOR = Viewer(Access.ADMIN, "gateway explain")


class ExplainRefusedError(Exception):
    def __init__(self, status: int, error: GraphQLError) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error


def check_explainable(viewer: Viewer, operation: OperationDefinitionNode) -> None:
    if viewer.access is not Access.ADMIN:
        raise ExplainRefusedError(
            403, request_error("explaining an operation is for admins", ErrorCode.FORBIDDEN)
        )
    if operation.operation is not OperationType.QUERY:
        raise ExplainRefusedError(
            400,
            request_error(
                f"only queries are explained: a {operation.operation.value} would run its "
                "writes again"
            ),
        )


async def explained(result: ExecutionResult, context: Context) -> ExecutionResult:
    """``result`` with the explanation of its operation in its extensions."""
    recording = context.scope.loaders.explained if context.scope is not None else None
    if recording is None:
        return result
    extensions = dict(result.extensions or {})
    extensions["explain"] = await explanation(recording, context.connections)
    return ExecutionResult(data=result.data, errors=result.errors, extensions=extensions)


async def explanation(recording: Recording, connections: Connections) -> dict[str, Any]:
    """The recorded store calls with their plans, one after another: explained together,
    plans would slow each other down."""
    steps = []
    hints: list[str] = []
    for number, step in enumerate(recording.steps, start=1):
        sent = []
        for item in step.sent:
            described = await _described(item, connections)
            for hint in described.get("hints", ()):
                hints.append(f"step {number} ({step.store}, {step.source}): {hint}")
            sent.append(described)
        steps.append(_step(number, step, sent))
    return {"steps": steps, "hints": hints}


def _step(number: int, step: Step, sent: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "step": number,
        "level": step.level,
        "store": step.store,
        "source": step.source,
        "keys": step.keys,
        "rows": step.rows,
        "startedMs": round(step.started * 1000, 3),
        "durationMs": round(step.seconds * 1000, 3),
        "failed": step.failed,
        "sent": sent,
    }


async def _described(sent: Sent, connections: Connections) -> dict[str, Any]:
    if sent.store == POSTGRES:
        return await _statement(sent, connections)
    if sent.store == MONGODB:
        return await _command(sent, connections)
    return {"command": sent.text, "arguments": sent.arguments}


async def _statement(sent: Sent, connections: Connections) -> dict[str, Any]:
    described: dict[str, Any] = {"sql": sent.text, "parameters": _plain(sent.arguments)}
    if not is_select(sent.text):
        described["unexplained"] = "not a read: it is not run again"
        return described
    try:
        plan = await explain_statement(
            engine=connections.engine, statement=sent.text, parameters=sent.arguments
        )
    except DBAPIError as error:
        described["unexplained"] = str(error.orig)
        return described
    except ValueError:
        # A plan the server wrote as no document can be read: that statement goes
        # unexplained, and the rest of the operation's account stands.
        described["unexplained"] = "the server's plan could not be read"
        return described
    described["plan"] = plan
    hints = backend_of(connections.engine).plan_hints(plan, SCANNED_ROWS_WORTH_AN_INDEX)
    described["hints"] = list(hints)
    return described


async def _command(sent: Sent, connections: Connections) -> dict[str, Any]:
    command = sent.arguments
    described: dict[str, Any] = {
        "command": sent.text,
        "collection": command.get(sent.text),
        "document": _plain(command),
    }
    if sent.text not in EXPLAINABLE_COMMANDS:
        return described
    database = connections.mongo[sent.database or connections.documents.name]
    try:
        explain = await explain_command(database=database, command=command)
    except PyMongoError as error:
        described["unexplained"] = str(error)
        return described
    winning = explain.get("queryPlanner", {}).get("winningPlan")
    statistics = {
        name: value
        for name, value in explain.get("executionStats", {}).items()
        if name not in ("executionStages", "allPlansExecution")
    }
    described["explain"] = _plain({"winningPlan": winning, "executionStats": statistics})
    described["hints"] = list(command_hints(command, sent.text, winning, statistics))
    return described


def command_hints(
    command: Mapping[str, Any],
    name: str,
    winning: Any,
    statistics: Mapping[str, Any],
) -> Iterator[str]:
    """A collection scan of a read with a filter."""
    condition = command.get("filter") or command.get("query")
    if name == "aggregate":
        condition = next(
            (stage["$match"] for stage in command.get("pipeline", ()) if "$match" in stage), None
        )
    if condition and _collection_scan(winning):
        yield (
            f"COLLSCAN of {command.get(name)} examined {statistics.get('totalDocsExamined', '?')}"
            f" documents to return {statistics.get('nReturned', '?')}: an index on "
            f"{', '.join(condition)} would serve it"
        )


def _collection_scan(plan: Any) -> bool:
    """Whether a winning plan reads the whole collection: MongoDB's ``COLLSCAN`` stage, or
    a ``SCAN`` of a server that keeps collections in SQLite tables (nx-27017), which gives
    SQLite's query plan instead of stages."""
    if isinstance(plan, list):
        return any(_collection_scan(part) for part in plan)
    if not isinstance(plan, Mapping):
        return False
    if plan.get("stage") == "COLLSCAN" or str(plan.get("detail", "")).startswith("SCAN "):
        return True
    inner = [plan[name] for name in ("inputStage", "queryPlan") if name in plan]
    return _collection_scan([*inner, *plan.get("inputStages", ())])


def _plain(value: Any) -> Any:
    """``value`` as JSON has it: BSON's and the drivers' types as text."""
    return orjson.loads(orjson.dumps(value, default=str))


async def explain_document(
    settings: Settings,
    connections: Connections,
    query: str,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> dict[str, Any]:
    """Run a query document as an admin and explain it: its response, with the explanation
    in its extensions (what ``gateway explain`` prints). Raises ``ExplainRefusedError``
    for a document that does not run, or is not a query."""
    schema = catalogue_schema()
    operations = operation_cache(Limits.from_settings(settings))
    prepared = operations.prepare(query)
    if prepared.errors or prepared.document is None:
        raise ExplainRefusedError(400, (*prepared.errors, request_error("no document"))[0])
    operation = prepared.operation(operation_name)
    if isinstance(operation, GraphQLError):
        raise ExplainRefusedError(400, operation)
    check_explainable(OPERATOR, operation)
    problems = prepared.check(operation_name, variables)
    if problems:
        raise ExplainRefusedError(400, problems[0])
    context = Context(
        request=Request({"type": "http", "headers": []}),
        response=None,
        settings=settings,
        connections=connections,
        request_id=os.urandom(16).hex(),
        operations=operations,
        explain=True,
        viewer=OPERATOR,
    )
    if plannable(prepared.document, operation):
        context.begin_operation()
        outcome = await Planner(schema._schema).execute(
            prepared.document, operation, variables, context
        )
        result = ExecutionResult(data=outcome.data, errors=outcome.errors or None)
    else:
        result = await schema.execute(
            query, variable_values=variables, context_value=context, operation_name=operation_name
        )
    result = await explained(result, context)
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        answer["errors"] = [client_error(error).formatted for error in result.errors]
    answer["extensions"] = result.extensions
    return answer
