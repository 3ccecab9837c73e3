"""Checks on write inputs, collected into field-level messages rather than failing at the first."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import bson
import strawberry

from core.errors import GatewayError
from resolvers.nodes import database_ids, from_global_id

MAX_DOCUMENT_BYTES = 1_000_000
MAX_METADATA_DEPTH = 10
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
ORCID = re.compile(r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]")
WEB_ADDRESS = re.compile(r"https?://[^\s/$.?#][^\s]*")


@dataclass
class Problems:
    found: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.found.append((path, message))

    def length(self, path: str, value: str | None, low: int, high: int) -> None:
        if value is not None and not low <= len(value) <= high:
            self.add(path, f"must be {low} to {high} characters long (is {len(value)})")

    def count(self, path: str, values: list[Any] | None, high: int) -> None:
        if values is not None and len(values) > high:
            self.add(path, f"at most {high} items (has {len(values)})")

    def pattern(self, path: str, value: str | None, pattern: re.Pattern[str], what: str) -> None:
        if value is not None and not pattern.fullmatch(value):
            self.add(path, f"is not {what}")

    def database_id(self, path: str, value: str, type_name: str) -> int | None:
        """The database id in a global ID of ``type_name``; None (and a problem) otherwise."""
        try:
            found, database_id = from_global_id(value)
        except GatewayError:
            self.add(path, "is not a valid ID")
            return None
        if found != type_name:
            self.add(path, f"expects a {type_name} ID, got a {found} ID")
            return None
        return database_id

    def database_ids(self, path: str, values: list[Any], type_name: str) -> list[int]:
        try:
            return list(database_ids(values, type_name, path))
        except GatewayError as error:
            self.add(path, str(error))
            return []

    def __bool__(self) -> bool:
        return bool(self.found)


def given_fields(value: object) -> dict[str, Any]:
    """The fields of a partial-update input that the client gave (null included)."""
    return {name: field for name, field in vars(value).items() if field is not strawberry.UNSET}


# The smallest integer MongoDB stores; the largest is one less than its opposite.
INT64 = -(2**63)


def check_metadata(problems: Problems, path: str, value: Any, depth: int = 0) -> None:
    """Keys that MongoDB would read as operators or paths, and integers it cannot store,
    are refused, at every depth."""
    if depth > MAX_METADATA_DEPTH:
        problems.add(path, f"nested deeper than {MAX_METADATA_DEPTH} levels")
        return
    if isinstance(value, dict):
        for key, nested in value.items():
            if not isinstance(key, str) or not key or key.startswith("$") or "." in key:
                problems.add(f"{path}.{key}", "keys may not be empty, start with $ or contain .")
            else:
                check_metadata(problems, f"{path}.{key}", nested, depth + 1)
    elif isinstance(value, list):
        for index, nested in enumerate(value):
            check_metadata(problems, f"{path}[{index}]", nested, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64 <= value < -INT64:
        problems.add(path, "integers must fit in 64 bits, as MongoDB stores them")


def check_document_size(problems: Problems, path: str, document: dict[str, Any]) -> None:
    try:
        size = len(bson.encode(document))
    except OverflowError:
        return  # an integer MongoDB cannot store, refused by check_metadata
    if size > MAX_DOCUMENT_BYTES:
        problems.add(path, f"at most {MAX_DOCUMENT_BYTES} bytes once encoded (is {size})")
