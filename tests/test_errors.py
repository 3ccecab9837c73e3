"""Coding and masking of errors: pure logic, no stores."""

from __future__ import annotations

import logging

import pytest
from graphql import GraphQLError

from core.errors import (
    MAX_MESSAGE_LENGTH,
    ErrorCode,
    GatewayError,
    client_error,
    request_error,
)


def test_unexpected_errors_are_masked_and_logged_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    internal = RuntimeError("connection to 10.0.0.5:5432 refused")  # not for clients
    with caplog.at_level(logging.ERROR, logger="core.errors"):
        error = client_error(
            GraphQLError("boom", path=["broken"], original_error=internal), "req-1"
        )
    assert error.message == "Internal server error"
    assert error.extensions == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-1"}
    assert error.path == ["broken"]
    assert "10.0.0.5" in caplog.text
    assert "req-1" in caplog.text


def test_gateway_errors_keep_their_message_code_and_details() -> None:
    error = client_error(
        GraphQLError(
            "No report 42",
            path=["report"],
            original_error=GatewayError("", ErrorCode.NOT_FOUND, id="42"),
        )
    )
    assert error.message == "No report 42"
    assert error.extensions == {"code": "NOT_FOUND", "id": "42"}


def test_syntax_and_validation_errors_are_bad_user_input() -> None:
    assert client_error(GraphQLError("Cannot query field 'nope'")).extensions == {
        "code": "BAD_USER_INPUT"
    }


def test_variable_coercion_errors_are_the_clients_not_the_servers() -> None:
    # graphql-core keeps the scalar's own error as the original error of a coercion error.
    coercion = GraphQLError(
        "Variable '$n' has invalid value: Int cannot represent non-integer value: 'abc'",
        original_error=GraphQLError("Int cannot represent non-integer value: 'abc'"),
    )
    assert client_error(coercion).extensions == {"code": "BAD_USER_INPUT"}


def test_an_unexpected_exception_before_execution_is_still_masked() -> None:
    error = client_error(GraphQLError("pool exhausted", original_error=KeyError("pool")))
    assert error.extensions is not None
    assert error.extensions["code"] == "INTERNAL_SERVER_ERROR"


def test_long_messages_are_cut() -> None:
    error = client_error(request_error("x" * 2_000_000))
    assert len(error.message) == MAX_MESSAGE_LENGTH
    assert error.message.endswith("…")


def test_processing_twice_changes_nothing() -> None:
    once = client_error(GraphQLError("boom", path=["a"], original_error=RuntimeError()), "r")
    twice = client_error(once, "r")
    assert twice.formatted == once.formatted
