"""Authors, institutions and technologies: writes, validation, conflicts, roles."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from core.connections import Connections
from resolvers.nodes import to_global_id
from tests.clients import Caller, footprint
from tests.test_mutations import HOSTILE

ERRORS = """
  ... on ValidationFailed { fields { field message } }
  ... on NotFound { id }
  ... on Forbidden { requiredRole }
  ... on Conflict { message }
"""
CREATE_AUTHOR = f"""mutation($input: AuthorInput!) {{ createAuthor(input: $input) {{ __typename
  ... on AuthorSaved {{ author {{ databaseId name email orcid institution {{ databaseId }} }} }}
  {ERRORS} }} }}"""
UPDATE_AUTHOR = f"""mutation($id: ID!, $input: AuthorInput!) {{
  updateAuthor(id: $id, input: $input) {{ __typename
  ... on AuthorSaved {{ author {{ name email orcid }} }} {ERRORS} }} }}"""
DELETE_AUTHOR = """mutation($id: ID!) { deleteAuthor(id: $id) { __typename
  ... on NotFound { id } ... on Forbidden { requiredRole } ... on Conflict { message } } }"""
CREATE_INSTITUTION = f"""mutation($input: InstitutionInput!) {{
  createInstitution(input: $input) {{ __typename
  ... on InstitutionSaved {{ institution {{ databaseId name website }} }} {ERRORS} }} }}"""
UPDATE_INSTITUTION = f"""mutation($id: ID!, $input: InstitutionInput!) {{
  updateInstitution(id: $id, input: $input) {{ __typename
  ... on InstitutionSaved {{ institution {{ name country }} }} {ERRORS} }} }}"""
CREATE_TECHNOLOGY = """mutation($input: TechnologyInput!) { createTechnology(input: $input) {
  __typename ... on TechnologySaved { technology { name version } }
  ... on ValidationFailed { fields { field message } } ... on Forbidden { requiredRole }
  ... on Conflict { message } } }"""


# An input field left out.
ABSENT = object()


def author(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Grace Hopper", "email": "grace@navy.example", "orcid": "0000-0002-1825-0097",
        "institutionId": to_global_id("Institution", 1),
    } | overrides  # fmt: skip


async def test_authors_are_created_updated_and_deleted(call: Caller) -> None:
    created = await call(CREATE_AUTHOR, {"input": author(email="Grace@Navy.example")})
    saved = created["createAuthor"]["author"]
    assert saved["email"] == "grace@navy.example"
    assert saved["institution"] == {"databaseId": 1}
    author_id = to_global_id("Author", saved["databaseId"])
    updated = await call(UPDATE_AUTHOR, {"id": author_id, "input": {"orcid": None}})
    assert updated["updateAuthor"]["author"] == {
        "name": "Grace Hopper", "email": "grace@navy.example", "orcid": None,
    }  # fmt: skip
    deleted = await call(DELETE_AUTHOR, {"id": author_id}, role="admin")
    assert deleted["deleteAuthor"] == {"__typename": "AuthorDeleted"}
    again = await call(DELETE_AUTHOR, {"id": author_id}, role="admin")
    assert again["deleteAuthor"]["__typename"] == "NotFound"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "two@@example.org"}, "email"),
        ({"email": None}, "email"),
        ({"name": "  "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"firstName": "Grace", "lastName": "Hopper"}, "name"),
        ({"name": ABSENT}, "lastName"),
        ({"name": ABSENT, "firstName": "Grace", "lastName": " "}, "lastName"),
        ({"name": ABSENT, "firstName": "x" * 201, "lastName": "Hopper"}, "firstName"),
        ({"orcid": "12345"}, "orcid"),
        ({"institutionId": to_global_id("Report", 1)}, "institutionId"),
    ],
)
async def test_author_validation(refusals: Caller, overrides: dict[str, Any], field: str) -> None:
    given = {key: value for key, value in (author() | overrides).items() if value is not ABSENT}
    before = await footprint(refusals.connections)
    result = (await refusals(CREATE_AUTHOR, {"input": given}))["createAuthor"]
    assert result["__typename"] == "ValidationFailed"
    assert field in [problem["field"] for problem in result["fields"]]
    assert await footprint(refusals.connections) == before


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        (CREATE_INSTITUTION, {"input": {"website": "https://lab.example"}}),
        (UPDATE_INSTITUTION, {"id": to_global_id("Institution", 1), "input": {"name": None}}),
    ],
)
async def test_an_institution_keeps_its_name(
    refusals: Caller, document: str, variables: dict[str, Any]
) -> None:
    before = await footprint(refusals.connections)
    (result,) = (await refusals(document, variables)).values()
    assert result["__typename"] == "ValidationFailed"
    assert {"field": "name", "message": "is required"} in result["fields"]
    assert await footprint(refusals.connections) == before


async def test_uniqueness_is_a_conflict_not_a_crash(call: Caller) -> None:
    await call(CREATE_AUTHOR, {"input": author()})
    duplicate = (await call(CREATE_AUTHOR, {"input": author(name="Another")}))["createAuthor"]
    assert duplicate["__typename"] == "Conflict"
    elsewhere = author(email="x@y.example", institutionId=to_global_id("Institution", 999))
    unknown_institution = await call(CREATE_AUTHOR, {"input": elsewhere})
    assert unknown_institution["createAuthor"]["__typename"] == "Conflict"
    institution = {"name": "University of Oslo", "website": "https://www.uio.example"}
    first = await call(CREATE_INSTITUTION, {"input": institution})
    assert first["createInstitution"]["__typename"] == "InstitutionSaved"
    second = await call(CREATE_INSTITUTION, {"input": institution})
    assert second["createInstitution"]["__typename"] == "Conflict"
    technology = {"name": "Rust", "version": "1.90", "technologyType": "language"}
    assert (await call(CREATE_TECHNOLOGY, {"input": technology}))["createTechnology"][
        "__typename"
    ] == "TechnologySaved"
    assert (await call(CREATE_TECHNOLOGY, {"input": technology}))["createTechnology"][
        "__typename"
    ] == "Conflict"


async def test_a_primary_author_cannot_be_deleted(call: Caller, connections: Connections) -> None:
    async with connections.engine.connect() as connection:
        primary = await connection.scalar(
            text("SELECT author_id FROM report_authors WHERE is_primary_author LIMIT 1")
        )
    result = await call(DELETE_AUTHOR, {"id": to_global_id("Author", primary)}, role="admin")
    assert result["deleteAuthor"]["__typename"] == "Conflict"


async def test_institutions_validate_and_update(call: Caller) -> None:
    bad = await call(CREATE_INSTITUTION, {"input": {"name": "X", "website": "javascript:alert(1)"}})
    assert bad["createInstitution"]["__typename"] == "ValidationFailed"
    updated = await call(
        UPDATE_INSTITUTION, {"id": to_global_id("Institution", 2), "input": {"country": "NO"}}
    )
    assert updated["updateInstitution"]["institution"]["country"] == "NO"
    missing = await call(
        UPDATE_INSTITUTION, {"id": to_global_id("Institution", 999), "input": {"country": "NO"}}
    )
    assert missing["updateInstitution"]["__typename"] == "NotFound"


async def test_names_round_trip_exactly(call: Caller) -> None:
    saved = await call(CREATE_AUTHOR, {"input": author(name=HOSTILE.strip(), email="h@x.example")})
    assert saved["createAuthor"]["author"]["name"] == HOSTILE.strip()
    technology = await call(CREATE_TECHNOLOGY, {"input": {
        "name": HOSTILE[:200], "version": "1'--", "technologyType": "language",
    }})  # fmt: skip
    assert technology["createTechnology"]["technology"] == {
        "name": HOSTILE[:200].strip(), "version": "1'--",
    }  # fmt: skip


ROLE_CASES = [
    (CREATE_AUTHOR, lambda: {"input": author()}, "createAuthor", "editor"),
    (UPDATE_AUTHOR, lambda: {"id": to_global_id("Author", 1), "input": {"name": "N"}},
     "updateAuthor", "editor"),
    (DELETE_AUTHOR, lambda: {"id": to_global_id("Author", 999)}, "deleteAuthor", "admin"),
    (CREATE_INSTITUTION, lambda: {"input": {"name": "New Lab"}}, "createInstitution", "editor"),
    (UPDATE_INSTITUTION, lambda: {"id": to_global_id("Institution", 1), "input": {"country": "SE"}},
     "updateInstitution", "editor"),
    (CREATE_TECHNOLOGY, lambda: {"input": {"name": "Zig", "version": "0.15",
                                           "technologyType": "language"}},
     "createTechnology", "editor"),
]  # fmt: skip
LEVELS = ["anonymous", "reader", "editor", "admin"]


def _at_levels(allowed: bool) -> list[Any]:
    return [
        pytest.param(document, variables, name, needed, role, id=f"{name}-{role}")
        for document, variables, name, needed in ROLE_CASES
        for role in LEVELS
        if (LEVELS.index(role) >= LEVELS.index(needed)) == allowed
    ]


@pytest.mark.parametrize(("document", "variables", "name", "needed", "role"), _at_levels(True))
async def test_every_directory_mutation_runs_from_its_role(  # noqa: PLR0917 - parametrized
    call: Caller, document: str, variables: Any, name: str, needed: str, role: str
) -> None:
    result = (await call(document, variables(), role=role))[name]
    assert result["__typename"] != "Forbidden"


@pytest.mark.parametrize(("document", "variables", "name", "needed", "role"), _at_levels(False))
async def test_every_directory_mutation_is_refused_below_its_role(  # noqa: PLR0917 - parametrized
    refusals: Caller, document: str, variables: Any, name: str, needed: str, role: str
) -> None:
    before = await footprint(refusals.connections)
    result = (await refusals(document, variables(), role=role))[name]
    assert result == {"__typename": "Forbidden", "requiredRole": needed}
    assert await footprint(refusals.connections) == before


NAMES = "author { name firstName lastName }"
CREATE_NAMED = CREATE_AUTHOR.replace("author { databaseId name", f"{NAMES[:-2]} databaseId")
UPDATE_NAMED = UPDATE_AUTHOR.replace("author { name email orcid }", NAMES)


async def test_an_author_is_named_by_first_and_last_name(call: Caller) -> None:
    given = author(firstName="Grace Brewster", lastName="Hopper", email="gbh@navy.example")
    del given["name"]
    created = (await call(CREATE_NAMED, {"input": given}))["createAuthor"]["author"]
    assert (created["name"], created["firstName"], created["lastName"]) == (
        "Grace Brewster Hopper", "Grace Brewster", "Hopper",
    )  # fmt: skip
    author_id = to_global_id("Author", created["databaseId"])
    # One of the two names alone: the full name is made of it and the stored other one.
    renamed = await call(UPDATE_NAMED, {"id": author_id, "input": {"lastName": "Murray"}})
    assert renamed["updateAuthor"]["author"] == {
        "name": "Grace Brewster Murray", "firstName": "Grace Brewster", "lastName": "Murray",
    }  # fmt: skip
    single = await call(UPDATE_NAMED, {"id": author_id, "input": {"firstName": ""}})
    assert single["updateAuthor"]["author"] == {
        "name": "Murray", "firstName": "", "lastName": "Murray",
    }  # fmt: skip
    mononym = author(lastName="Hypatia", email="hypatia@alexandria.example")
    del mononym["name"]
    alone = (await call(CREATE_NAMED, {"input": mononym}))["createAuthor"]["author"]
    assert (alone["name"], alone["firstName"], alone["lastName"]) == ("Hypatia", "", "Hypatia")
    # The full name, deprecated, is split at its first space.
    full = await call(UPDATE_NAMED, {"id": author_id, "input": {"name": "Jean de la Fontaine"}})
    assert full["updateAuthor"]["author"] == {
        "name": "Jean de la Fontaine", "firstName": "Jean", "lastName": "de la Fontaine",
    }  # fmt: skip


async def test_an_institution_has_a_location_which_the_country_answers(call: Caller) -> None:
    located = UPDATE_INSTITUTION.replace("name country", "name location country")
    institution = to_global_id("Institution", 2)
    moved = await call(located, {"id": institution, "input": {"location": "Oslo, Norway"}})
    assert moved["updateInstitution"]["institution"]["location"] == "Oslo, Norway"
    assert moved["updateInstitution"]["institution"]["country"] == "Oslo, Norway"
    both = await call(located, {"id": institution, "input": {"location": "A", "country": "B"}})
    assert both["updateInstitution"]["__typename"] == "ValidationFailed"
