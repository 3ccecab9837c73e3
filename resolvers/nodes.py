"""Global object identification: every entity has an opaque, globally unique id."""

from __future__ import annotations

import base64
import binascii
import functools

import strawberry

from core.errors import ErrorCode, GatewayError


@strawberry.interface(description="An object with a global ID, which `node(id:)` fetches.")
class Node:
    id: strawberry.ID = strawberry.field(description="The object's global ID.")


@functools.lru_cache(maxsize=65536)
def to_global_id(type_name: str, database_id: int) -> strawberry.ID:
    encoded = base64.urlsafe_b64encode(f"{type_name}:{database_id}".encode()).decode()
    return strawberry.ID(encoded.rstrip("="))


def from_global_id(value: str) -> tuple[str, int]:
    """The type name and database id in a global ID; ``BAD_USER_INPUT`` if it is not one."""
    try:
        padded = value + "=" * (-len(value) % 4)
        type_name, _, database_id = base64.urlsafe_b64decode(padded).decode().partition(":")
        if not type_name or not database_id.isdigit():
            raise ValueError(value)
        return type_name, int(database_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise GatewayError(
            f"{value!r} is not a valid ID", ErrorCode.BAD_USER_INPUT, argument="id"
        ) from error


def database_ids(
    values: list[strawberry.ID] | None, type_name: str, argument: str
) -> tuple[int, ...]:
    """Database ids from global IDs that must all be of ``type_name``."""
    ids = []
    for value in values or ():
        found, database_id = from_global_id(value)
        if found != type_name:
            raise GatewayError(
                f"{argument} expects {type_name} IDs, got a {found} ID",
                ErrorCode.BAD_USER_INPUT,
                argument=argument,
            )
        ids.append(database_id)
    return tuple(ids)
