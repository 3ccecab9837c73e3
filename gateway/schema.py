"""The schema, assembled from the resolver modules."""

from __future__ import annotations

import functools
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from core.errors import client_error
from gateway.limits import Limits
from gateway.operations import OperationCache, OperationRules
from resolvers.authors import AuthorQuery
from resolvers.directory_mutations import DirectoryMutation
from resolvers.institutions import InstitutionQuery
from resolvers.lookup import NodeQuery
from resolvers.mutations import ReportMutation
from resolvers.report_types import ReportTypeQuery
from resolvers.reports import ReportQuery
from resolvers.service import ServiceQuery
from resolvers.subscriptions import Subscription
from resolvers.technologies import TechnologyQuery

Query = merge_types(
    "Query",
    (
        ReportQuery, AuthorQuery, InstitutionQuery, TechnologyQuery, ReportTypeQuery, NodeQuery,
        ServiceQuery,
    ),
)  # fmt: skip


Mutation = merge_types("Mutation", (ReportMutation, DirectoryMutation))


class ExecutionContextFreedByCounting(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, whose helpers for resolvers are methods bound to the
    executor: a cycle through everything the operation touched (its context, request,
    loaders and rows), which only the cycle collector could free. Every mutation left one
    behind, and collecting them paused the process for tens of milliseconds at a time.
    Once the response is built, the helpers are done with, and dropping them lets the
    operation be freed by reference counting as soon as it is over."""

    def build_response(self, data: dict[str, Any] | None) -> Any:
        try:
            return super().build_response(data)
        finally:
            vars(self).pop("async_helpers", None)


class GatewaySchema(strawberry.Schema):
    """The catalogue's schema, which masks every error it returns. Its operations take their
    prepared documents from the cache of the application that runs them (see
    ``operation_cache``)."""

    def __init__(self) -> None:
        super().__init__(
            query=Query,
            mutation=Mutation,
            subscription=Subscription,
            # A class: each operation gets its own extension instance.
            extensions=[OperationRules],
            execution_context_class=ExecutionContextFreedByCounting,
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Every result's errors pass through here on every transport before they are sent
        (HTTP, both WebSocket protocols), so this is where they are coded and masked; the
        list is the result's own, rewritten in place."""
        context = execution_context.context if execution_context else None
        request_id = getattr(context, "request_id", None)
        errors[:] = [client_error(error, request_id) for error in errors]


@functools.cache
def catalogue_schema() -> GatewaySchema:
    """The schema, built once per process: it is the same for every application, and
    building it (Strawberry converting every type) costs about 10 ms of CPU."""
    return GatewaySchema()


def operation_cache(limits: Limits | None = None) -> OperationCache:
    """A cache of documents prepared for the schema under ``limits``: an application's
    own, since what it prepared (and how often) is what its requests observe."""
    return OperationCache(catalogue_schema()._schema, limits or Limits())


def export_sdl() -> str:
    return catalogue_schema().as_str() + "\n"
