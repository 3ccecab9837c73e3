"""What needs no store: global IDs, cursors, page arguments, keyset conditions and the
problems found in write inputs. Their answers through a real gateway are tested beside the
resolvers that use them; here every edge case costs microseconds."""

from __future__ import annotations

import base64
import json
import string
from datetime import date
from typing import Any

import pytest
from graphql import GraphQLSyntaxError, parse, validate
from graphql.validation.validate import ValidationAbortedError
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import ClauseElement, Column, Date, Integer, MetaData, String, Table, select
from sqlalchemy.engine import make_url

import datasources.dialects  # noqa: F401 - registers each backend's SQL for the conditions
from core.errors import ErrorCode, GatewayError
from core.store_urls import server_address
from datasources.keyset import Ordering, PageRequest, _conditions, _order
from datasources.models import LARGEST_INTEGER, SMALLEST_INTEGER, Report
from datasources.portable_sql import MatchesSearch, equals_any
from gateway.operations import MAX_VALIDATION_ERRORS, RULES_AS_ONE, VALIDATION_RULES
from gateway.schema import catalogue_schema
from resolvers.nodes import database_ids, from_global_id, to_global_id
from resolvers.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_cursor,
    encode_cursor,
    page_request,
    parse_date,
    parse_int,
    parse_text,
)
from resolvers.validation import MAX_METADATA_DEPTH, Problems, check_document_size, check_metadata
from tests.test_fuzz import generated_probes

TYPE_NAMES = st.text(string.ascii_letters + "ÄéßΩ東京", min_size=1, max_size=30)
DATABASE_IDS = st.integers(min_value=0, max_value=LARGEST_INTEGER)
# What a text column holds: anything but a NUL or a lone surrogate.
STORABLE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


def _refused(error: pytest.ExceptionInfo[GatewayError], argument: str) -> None:
    assert error.value.code is ErrorCode.BAD_USER_INPUT
    assert error.value.extensions == {"argument": argument}


# Global IDs --------------------------------------------------------------------------------


@given(TYPE_NAMES, DATABASE_IDS)
def test_a_global_id_gives_back_its_type_and_database_id(type_name: str, database_id: int) -> None:
    global_id = to_global_id(type_name, database_id)
    assert "=" not in global_id
    assert from_global_id(global_id) == (type_name, database_id)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64!",
        base64.urlsafe_b64encode(b"Report").decode(),  # no separator
        base64.urlsafe_b64encode(b":12").decode(),  # no type
        base64.urlsafe_b64encode(b"Report:-1").decode(),
        base64.urlsafe_b64encode(b"Report:1.5").decode(),
        base64.urlsafe_b64encode(b"Report:").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe:1").decode(),  # not UTF-8
    ],
)
def test_anything_else_is_not_a_global_id(value: str) -> None:
    with pytest.raises(GatewayError) as error:
        from_global_id(value)
    _refused(error, "id")


def test_ids_of_another_type_are_refused_naming_the_argument() -> None:
    reports = [to_global_id("Report", 1), to_global_id("Report", 2)]
    assert database_ids(reports, "Report", "reportIds") == (1, 2)
    assert database_ids(None, "Report", "reportIds") == ()
    with pytest.raises(GatewayError) as error:
        database_ids([*reports, to_global_id("Author", 3)], "Report", "reportIds")
    _refused(error, "reportIds")
    assert "got a Author ID" in str(error.value)


# Cursors -----------------------------------------------------------------------------------

POSITIONS = st.one_of(
    st.tuples(st.dates(), DATABASE_IDS).map(lambda pair: (pair, parse_date)),
    st.tuples(STORABLE_TEXT, DATABASE_IDS).map(lambda pair: (pair, parse_text)),
    st.tuples(st.integers(SMALLEST_INTEGER, LARGEST_INTEGER), DATABASE_IDS).map(
        lambda pair: (pair, parse_int)
    ),
)


@given(POSITIONS)
def test_a_cursor_gives_back_its_position(case: tuple[tuple[Any, int], Any]) -> None:
    position, parse = case
    cursor = encode_cursor("TITLE", position)
    assert decode_cursor(cursor, "TITLE", parse, "after") == position


@pytest.mark.parametrize(
    ("position", "parse"),
    [
        (("x", LARGEST_INTEGER + 1), parse_text),
        ((LARGEST_INTEGER + 1, 1), parse_int),
        ((SMALLEST_INTEGER - 1, 1), parse_int),
        (("a\x00b", 1), parse_text),
        (("\ud800", 1), parse_text),
    ],
)
def test_a_cursor_holding_what_no_column_can_is_refused(position: Any, parse: Any) -> None:
    # Written as a forger would: the gateway's own encoder refuses a lone surrogate.
    payload = json.dumps(["TITLE", *position]).encode()
    cursor = base64.urlsafe_b64encode(payload).decode()
    with pytest.raises(GatewayError) as error:
        decode_cursor(cursor, "TITLE", parse, "after")
    _refused(error, "after")


def test_an_id_no_row_can_have_is_refused() -> None:
    assert from_global_id(to_global_id("Report", LARGEST_INTEGER)) == ("Report", LARGEST_INTEGER)
    digits = base64.urlsafe_b64encode(b"Report:" + b"9" * 5000).decode()
    for value in (to_global_id("Report", LARGEST_INTEGER + 1), digits):
        with pytest.raises(GatewayError) as error:
            from_global_id(value)
        _refused(error, "id")


def test_a_cursor_of_another_ordering_or_list_is_refused() -> None:
    cursor = encode_cursor("TITLE", ("Caching", 4))
    with pytest.raises(GatewayError) as error:
        decode_cursor(cursor, "PUBLICATION_DATE", parse_date, "before")
    _refused(error, "before")
    with pytest.raises(GatewayError):
        decode_cursor(cursor, "TITLE", parse_int, "after")


@pytest.mark.parametrize(
    "payload",
    [b'["TITLE", "x", true]', b'["TITLE", "x", "4"]', b'["TITLE", "x"]', b"{}", b"not json"],
)
def test_a_forged_cursor_is_refused(payload: bytes) -> None:
    cursor = base64.urlsafe_b64encode(payload).decode()
    with pytest.raises(GatewayError) as error:
        decode_cursor(cursor, "TITLE", parse_text, "after")
    _refused(error, "after")


def test_a_date_cursor_holds_a_date() -> None:
    cursor = encode_cursor("PUBLICATION_DATE", ("2025-13-01", 1))
    with pytest.raises(GatewayError):
        decode_cursor(cursor, "PUBLICATION_DATE", parse_date, "after")
    assert decode_cursor(
        encode_cursor("PUBLICATION_DATE", (date(2025, 3, 1), 9)),
        "PUBLICATION_DATE",
        parse_date,
        "after",
    ) == (date(2025, 3, 1), 9)


# Page arguments ----------------------------------------------------------------------------


def _request(**arguments: Any) -> PageRequest:
    given_arguments = {"first": None, "after": None, "last": None, "before": None} | arguments
    return page_request(**given_arguments, ordering="ID", parse=parse_int)


def test_page_arguments_read_as_relay_says() -> None:
    assert _request() == PageRequest(limit=DEFAULT_PAGE_SIZE)
    assert _request(first=0) == PageRequest(limit=0)
    assert _request(last=5) == PageRequest(limit=5, backward=True)
    before = encode_cursor("ID", (7, 7))
    # Only a cursor to end before: the page that ends there.
    assert _request(before=before) == PageRequest(
        limit=DEFAULT_PAGE_SIZE, before=(7, 7), backward=True
    )
    after = encode_cursor("ID", (3, 3))
    assert _request(first=2, after=after, before=before) == PageRequest(
        limit=2, after=(3, 3), before=(7, 7)
    )


@pytest.mark.parametrize(
    ("arguments", "refused"),
    [
        ({"first": 1, "last": 1}, "last"),
        ({"first": -1}, "first"),
        ({"first": MAX_PAGE_SIZE + 1}, "first"),
        ({"last": MAX_PAGE_SIZE + 1}, "last"),
        ({"after": "garbage"}, "after"),
        ({"before": encode_cursor("TITLE", ("x", 1))}, "before"),
    ],
)
def test_page_arguments_out_of_bounds_name_themselves(
    arguments: dict[str, Any], refused: str
) -> None:
    with pytest.raises(GatewayError) as error:
        _request(**arguments)
    _refused(error, refused)


# Keyset conditions -------------------------------------------------------------------------

REPORTS = Table(
    "reports",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("title", String),
    Column("publication_date", Date),
)


def _sql(ordering: Ordering, request: PageRequest) -> tuple[list[str], list[str]]:
    def compiled(clause: ClauseElement) -> str:
        return str(clause.compile())

    return (
        [compiled(condition) for condition in _conditions(ordering, request)],
        [compiled(column) for column in _order(ordering, request)],
    )


@pytest.mark.parametrize(
    ("descending", "backward", "conditions", "order"),
    [
        (False, False, [">", "<"], ["ASC", "ASC"]),
        (True, False, ["<", ">"], ["DESC", "DESC"]),
        # A backward page reads the rows nearest its end first.
        (False, True, [">", "<"], ["DESC", "DESC"]),
        (True, True, ["<", ">"], ["ASC", "ASC"]),
    ],
)
def test_a_page_starts_after_and_ends_before_its_cursors_by_sort_value_then_id(
    descending: bool, backward: bool, conditions: list[str], order: list[str]
) -> None:
    ordering = Ordering(REPORTS.c.title, REPORTS.c.id, descending)
    request = PageRequest(limit=5, after=("a", 1), before=("z", 9), backward=backward)
    where, ordered = _sql(ordering, request)
    assert where == [
        f"(reports.title, reports.id) {conditions[0]} (:param_1, :param_2)",
        f"(reports.title, reports.id) {conditions[1]} (:param_1, :param_2)",
    ]
    assert ordered == [f"reports.title {order[0]}", f"reports.id {order[1]}"]


def test_a_first_page_has_no_condition() -> None:
    ordering = Ordering(REPORTS.c.publication_date, REPORTS.c.id, descending=False)
    assert _sql(ordering, PageRequest(limit=5))[0] == []


# Conditions as each backend is sent them ---------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite"])
def test_conditions_are_sent_as_they_are_not_compared_to_true(backend: str) -> None:
    """Where booleans are integers (MySQL, SQLite), a condition compared to 1 is one that no
    index serves. See the plans in tests/test_explain.py."""
    dialect = make_url(f"{backend}://").get_dialect()()
    reports: Any = Report.__table__
    keyed = equals_any(reports.c.id, [1, 2])
    searched = MatchesSearch(reports.c.title, reports.c.abstract, "stream")
    for condition in (keyed, searched):
        statement = select(reports.c.id).where(condition)
        where = str(statement.compile(dialect=dialect)).partition("WHERE ")[2]
        assert where == str(condition.compile(dialect=dialect))


# Input problems ----------------------------------------------------------------------------


def _problems_of(value: Any) -> list[tuple[str, str]]:
    problems = Problems()
    check_metadata(problems, "metadata", value)
    check_document_size(problems, "document", {"metadata": value})
    return problems.found


def test_metadata_that_mongodb_would_read_otherwise_is_refused_at_every_depth() -> None:
    assert _problems_of({"funding": {"agency": "ERC"}, "pages": [1, 2**63 - 1]}) == []
    found = dict(
        _problems_of({"$where": 1, "a.b": 2, "": 3, "deep": [{"$gt": ""}], "big": -(2**63) - 1})
    )
    assert set(found) == {
        "metadata.$where", "metadata.a.b", "metadata.", "metadata.deep[0].$gt", "metadata.big",
    }  # fmt: skip
    assert "64 bits" in found["metadata.big"]


def test_metadata_nested_too_deep_is_one_problem() -> None:
    nested: Any = "leaf"
    for _ in range(MAX_METADATA_DEPTH + 5):
        nested = {"level": nested}
    assert [path for path, _ in _problems_of(nested)] == [
        "metadata" + ".level" * (MAX_METADATA_DEPTH + 1)
    ]


def test_a_document_too_large_once_encoded_is_a_problem() -> None:
    found = _problems_of({"blob": "x" * 1_000_001})
    assert [path for path, _ in found] == ["document"]


def test_problems_collect_instead_of_stopping_at_the_first() -> None:
    problems = Problems()
    problems.length("title", "", 1, 500)
    problems.length("title", "fine", 1, 500)
    problems.count("tags", list(range(21)), 20)
    assert problems.database_id("typeId", to_global_id("Author", 1), "ReportType") is None
    assert problems.database_id("typeId", "nonsense", "ReportType") is None
    assert problems.database_id("typeId", to_global_id("ReportType", 2), "ReportType") == 2
    assert problems.database_ids("authors", [to_global_id("Report", 1)], "Author") == []
    assert [path for path, _ in problems.found] == [
        "title", "tags", "typeId", "typeId", "authors",
    ]  # fmt: skip
    assert problems
    assert not Problems()


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("postgresql://gw:secret@db.test:5432/catalogue?sslmode=require", "db.test:5432"),
        ("postgresql://gw@/catalogue?host=a.test:5432&host=b.test", "a.test:5432,b.test"),
        ("mysql+asyncmy://root:secret@127.0.0.1:3306/catalogue", "127.0.0.1:3306"),
        ("sqlite+aiosqlite:////var/lib/gateway/catalogue.db", "/var/lib/gateway/catalogue.db"),
        ("sqlite+aiosqlite:///catalogue.db", "catalogue.db"),
        ("mongodb://gw:secret@m1.test:27017,m2.test/?replicaSet=rs", "m1.test:27017,m2.test"),
        ("rediss://:secret@cache.example:6380/0", "cache.example:6380"),
        ("unix:///run/redis.sock?db=2", "/run/redis.sock"),
        ("redis+sentinel://:secret@s1.test:26379,s2.test/main/0", "s1.test:26379,s2.test"),
    ],
)  # fmt: skip
def test_a_server_s_address_names_its_hosts_or_its_file_and_never_its_password(
    url: str, address: str
) -> None:
    assert server_address(url) == address
    assert "secret" not in server_address(url)


# Documents that break several rules several times each: past the error limit.
WRONG_MANY_TIMES = (
    "{ first second third fourth }",
    "query A { reports { totalCount } } query A { nothing } { reports { nothing } }",
    "fragment F on Report { ...G } fragment G on Report { ...F } { report(id: 1) { ...F } }",
    'query ($a: Int, $a: String) { reports(first: "x", last: true, none: 1) { totalCount } }',
)


def test_the_rules_run_as_one_give_graphql_core_s_errors_in_its_order() -> None:
    """A fifth of the fuzz's generated documents, valid or broken in one way or another, get
    from the rules run as one what graphql-core's own side-by-side run gives: the same
    errors, in the same order, and the same stop at the error limit. (All of them cost some
    18 CPU-seconds, for no kind of document that a fifth lacks.)"""
    schema = catalogue_schema()._schema
    refused = stopped = 0
    for text in [*WRONG_MANY_TIMES, *(str(probe.document) for probe in generated_probes()[::5])]:
        try:
            document = parse(text)
        except GraphQLSyntaxError:
            continue
        expected = validate(schema, document, VALIDATION_RULES, max_errors=MAX_VALIDATION_ERRORS)
        found = validate(schema, document, RULES_AS_ONE, max_errors=MAX_VALIDATION_ERRORS)
        assert [error.formatted for error in found] == [error.formatted for error in expected]
        if len(expected) > 2:
            expected = validate(schema, document, VALIDATION_RULES, max_errors=2)
            found = validate(schema, document, RULES_AS_ONE, max_errors=2)
            assert [error.formatted for error in found] == [error.formatted for error in expected]
            stopped += isinstance(expected[-1], ValidationAbortedError)
        refused += bool(expected)
    assert refused >= 100
    assert stopped >= 1
