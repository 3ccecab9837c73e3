"""Error codes the gateway gives clients, and the masking of everything unexpected.

Every error leaves through ``client_error``, whatever the transport: it gives the error a
code, cuts its message to a sane length (messages quote the client's input) and replaces
anything unexpected by a generic message with a request id, logging the original under
that same id.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from graphql import GraphQLError
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

logger = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH = 300
INTERNAL_MESSAGE = "Internal server error"


class ErrorCode(StrEnum):
    BAD_USER_INPUT = "BAD_USER_INPUT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    RATE_LIMITED = "RATE_LIMITED"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    PERSISTED_QUERY_NOT_IN_LIST = "PERSISTED_QUERY_NOT_IN_LIST"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class GatewayError(Exception):
    """An error meant for the client: its message is shown, with its code."""

    def __init__(self, message: str, code: ErrorCode, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extensions = extensions


# What graphql-core and Strawberry put under an error raised before execution: the
# client's document, variables or operation name were wrong.
REQUEST_MISTAKES = (
    GraphQLError,
    ValueError,
    TypeError,
    CannotGetOperationTypeError,
    InvalidOperationTypeError,
    MissingQueryError,
)


def request_error(message: str, code: ErrorCode = ErrorCode.BAD_USER_INPUT) -> GraphQLError:
    return GraphQLError(message, original_error=GatewayError(message, code))


def client_error(error: GraphQLError, request_id: str | None = None) -> GraphQLError:
    """``error`` as a client may see it. Idempotent: a processed error stays as it is."""
    original = error.original_error
    extensions = dict(error.extensions or {})
    if isinstance(original, GatewayError):
        extensions.update(original.extensions)
        extensions["code"] = original.code.value
    elif original is None:
        # Syntax and validation errors, and errors this function made already.
        extensions.setdefault("code", ErrorCode.BAD_USER_INPUT.value)
    elif error.path is None and isinstance(original, REQUEST_MISTAKES):
        # Before execution: a variable that does not coerce, an operation that is not there.
        extensions["code"] = ErrorCode.BAD_USER_INPUT.value
    else:
        logger.error(
            "unexpected error at %s (request %s)", error.path, request_id, exc_info=original
        )
        return GraphQLError(
            INTERNAL_MESSAGE,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": ErrorCode.INTERNAL_SERVER_ERROR.value}
            | ({"requestId": request_id} if request_id else {}),
        )
    return GraphQLError(
        shorten(error.message),
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


def shorten(message: str) -> str:
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    return message[: MAX_MESSAGE_LENGTH - 1] + "…"
