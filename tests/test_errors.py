from __future__ import annotations

import logging

import pytest
import strawberry

from gateway.errors import CodedErrors, ErrorCode, GatewayError


@strawberry.type
class Query:
    @strawberry.field
    def broken(self) -> int | None:
        raise RuntimeError("connection to 10.0.0.5:5432 refused")  # internals, not for clients

    @strawberry.field
    def refused(self) -> int:
        raise GatewayError("No report 42", ErrorCode.NOT_FOUND, id="42")

    @strawberry.field
    def fine(self) -> int:
        return 1


schema = strawberry.Schema(query=Query, extensions=[CodedErrors])


async def test_unexpected_errors_are_masked_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.errors"):
        result = await schema.execute("{ fine broken }")
    assert result.data == {"fine": 1, "broken": None}
    (error,) = result.errors or []
    assert error.message == "Internal server error"
    assert error.extensions == {"code": "INTERNAL_SERVER_ERROR"}
    assert error.path == ["broken"]
    assert "10.0.0.5" in caplog.text


async def test_gateway_errors_keep_their_message_code_and_details() -> None:
    result = await schema.execute("{ refused }")
    (error,) = result.errors or []
    assert error.message == "No report 42"
    assert error.extensions == {"code": "NOT_FOUND", "id": "42"}


async def test_invalid_documents_are_bad_user_input() -> None:
    result = await schema.execute("{ nope }")
    (error,) = result.errors or []
    assert error.extensions == {"code": "BAD_USER_INPUT"}
