"""Global object identification: every entity has an opaque, globally unique id."""

from __future__ import annotations

import base64
import binascii
import functools

import strawberry

from core.errors import ErrorCode, GatewayError
from datasources.models import LARGEST_INTEGER


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
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise _not_an_id(value) from error
    if not type_name:
        raise _not_an_id(value)
    return type_name, database_id_of(database_id, value)


def database_id_of(digits: str, value: str | None = None) -> int:
    """A database id written in decimal; ``BAD_USER_INPUT`` for anything else, and for a
    number no row can have (beyond the keys' 32 bits)."""
    # Checked before int() reads them: it refuses thousands of digits with a ValueError.
    decimal = digits.isascii() and digits.isdecimal() and len(digits) <= len(str(LARGEST_INTEGER))
    if not decimal or (number := int(digits)) > LARGEST_INTEGER:
        raise _not_an_id(digits if value is None else value)
    return number


def _not_an_id(value: str) -> GatewayError:
    return GatewayError(f"{value!r} is not a valid ID", ErrorCode.BAD_USER_INPUT, argument="id")


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
