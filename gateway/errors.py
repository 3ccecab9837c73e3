"""Error codes the gateway gives clients, and the masking of everything unexpected."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

logger = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    BAD_USER_INPUT = "BAD_USER_INPUT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    RATE_LIMITED = "RATE_LIMITED"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class GatewayError(Exception):
    """An error meant for the client: its message is shown, with its code."""

    def __init__(self, message: str, code: ErrorCode, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extensions = extensions


def is_client_safe(error: GraphQLError) -> bool:
    """Errors of the request itself (syntax, validation) and our own coded errors are shown;
    anything else raised while resolving may carry internals and is masked."""
    original = error.original_error
    return original is None or isinstance(original, GatewayError)


def with_code(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    extensions = dict(error.extensions or {})
    if isinstance(original, GatewayError):
        extensions.update(original.extensions)
        extensions["code"] = original.code.value
    else:
        # No original error: the document failed to parse or to validate.
        extensions.setdefault("code", ErrorCode.BAD_USER_INPUT.value)
    error.extensions = extensions
    return error


class CodedErrors(SchemaExtension):
    """Gives every error a code, and replaces unexpected ones by a generic message.

    Runs once per operation, never per field: it rewrites the finished result's errors.
    """

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [_client_error(error) for error in result.errors]


def _client_error(error: GraphQLError) -> GraphQLError:
    if is_client_safe(error):
        return with_code(error)
    logger.error("unexpected error at %s", error.path, exc_info=error.original_error)
    return GraphQLError(
        "Internal server error",
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": ErrorCode.INTERNAL_SERVER_ERROR.value},
    )
