"""The schema, assembled from the resolver modules."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from gateway.errors import CodedErrors
from resolvers.service import ServiceQuery

Query = merge_types("Query", (ServiceQuery,))


class GatewaySchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Client mistakes are not the server's errors: CodedErrors logs the unexpected ones."""


def build_schema() -> strawberry.Schema:
    return GatewaySchema(query=Query, extensions=[CodedErrors])


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
