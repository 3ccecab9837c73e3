"""The schema, assembled from the resolver modules."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from gateway.errors import CodedErrors
from resolvers.authors import AuthorQuery
from resolvers.directory_mutations import DirectoryMutation
from resolvers.institutions import InstitutionQuery
from resolvers.lookup import NodeQuery
from resolvers.mutations import ReportMutation
from resolvers.report_types import ReportTypeQuery
from resolvers.reports import ReportQuery
from resolvers.service import ServiceQuery
from resolvers.technologies import TechnologyQuery

Query = merge_types(
    "Query",
    (
        ReportQuery, AuthorQuery, InstitutionQuery, TechnologyQuery, ReportTypeQuery, NodeQuery,
        ServiceQuery,
    ),
)  # fmt: skip


Mutation = merge_types("Mutation", (ReportMutation, DirectoryMutation))


class RoundTripReport(SchemaExtension):
    """Adds the request's round trips per store to the response's extensions, when asked."""

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        if not getattr(context, "report_round_trips", False):
            return {}
        return {"roundTrips": context.round_trips.as_dict()}


class GatewaySchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Client mistakes are not the server's errors: CodedErrors logs the unexpected ones."""


def build_schema() -> strawberry.Schema:
    return GatewaySchema(query=Query, mutation=Mutation, extensions=[CodedErrors, RoundTripReport])


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
