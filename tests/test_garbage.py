"""What an operation allocates is freed by reference counting as soon as it is over: none
of it is left in reference cycles for the cycle collector, whose passes pause the whole
process (every subscriber's deliveries with it) for as long as they take."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.requests import Request

from core.context import Context
from gateway.schema import ExecutionContextFreedByCounting
from resolvers.nodes import to_global_id
from tests.clients import Caller

REPORT = to_global_id("Report", 3)
VIEW = "mutation($id: ID!) { recordView(reportId: $id) { ... on Counted { stats { views } } } }"
PLANNED = "query($id: ID!) { report(id: $id) { title authors { author { name } } } }"
# Answered by graphql-core's executor rather than the planner: introspection.
EXECUTED = '{ __schema { queryType { name } } report(id: "UmVwb3J0OjM=") { title } }'
# What a request's objects are reached through: if one of these is left to the cycle
# collector, so is everything the operation read.
ROOTS = (Context, Request, ExecutionContextFreedByCounting)


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """The objects the cycle collector would free, of what runs inside the block."""
    gc.collect()
    found: list[object] = []
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
    finally:
        gc.set_debug(0)
        found.extend(gc.garbage)
        gc.garbage.clear()


async def test_operations_over_http_leave_no_cycles(call: Caller) -> None:
    operations = [(VIEW, {"id": REPORT}), (PLANNED, {"id": REPORT}), (EXECUTED, {})]
    for query, variables in operations:  # caches, pools and plans made once
        response = await call.client.post("/graphql", json={"query": query, "variables": variables})
        assert "errors" not in response.json()
    with cyclic_garbage() as garbage:
        for query, variables in operations:
            await call.client.post("/graphql", json={"query": query, "variables": variables})
    assert [type(each).__name__ for each in garbage if isinstance(each, ROOTS)] == []
