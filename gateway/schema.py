"""The schema, assembled from the resolver modules."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
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


class GatewaySchema(strawberry.Schema):
    """The catalogue's schema, with its cache of prepared documents and the masking of
    every error it returns."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(
            query=Query,
            mutation=Mutation,
            subscription=Subscription,
            # A factory: each operation gets its own extension instance.
            extensions=[lambda: OperationRules(self.operations)],
        )
        self.operations = OperationCache(self._schema, limits)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Every result's errors pass through here on every transport before they are sent
        (HTTP, both WebSocket protocols), so this is where they are coded and masked; the
        list is the result's own, rewritten in place."""
        context = execution_context.context if execution_context else None
        request_id = getattr(context, "request_id", None)
        errors[:] = [client_error(error, request_id) for error in errors]


def build_schema(limits: Limits | None = None) -> GatewaySchema:
    return GatewaySchema(limits or Limits())


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
