"""The read API against reference queries written directly against the stores."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any, cast

import pytest
from sqlalchemy import select

from datasources import keyset, reports
from datasources.counters import Counter, leaderboard_key
from datasources.document_migrations import REPORT_DOCUMENTS
from datasources.keyset import PageRequest
from datasources.portable_sql import equals_any
from datasources.records import COUNTED
from datasources.reports import ReportFilter, ReportSort
from resolvers.nodes import to_global_id
from tests.clients import Seeded

PAGE = """
query Page($first: Int, $after: String, $last: Int, $before: String,
           $filter: ReportFilterInput, $orderBy: ReportOrder) {
  reports(first: $first, after: $after, last: $last, before: $before,
          filter: $filter, orderBy: $orderBy) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { databaseId } }
  }
}
"""
SQL_ORDER = {
    "PUBLICATION_DATE": "coalesce(publication_date, '0001-01-01')",
    "TITLE": "title",
    "WORD_COUNT": "word_count",
    "VIEWS": "coalesce((SELECT views FROM report_counter_snapshots s WHERE s.report_id = r.id), 0)",
}


async def walk(
    seeded: Seeded,
    *,
    size: int,
    order: dict[str, str] | None = None,
    filter: dict[str, Any] | None = None,
    backward: bool = False,
) -> tuple[list[int], int]:
    """Every report id of a list, page by page; and the list's totalCount."""
    seen: list[list[int]] = []
    cursor: str | None = None
    total = -1
    while True:
        variables: dict[str, Any] = {"filter": filter, "orderBy": order}
        if backward:
            variables |= {"last": size, "before": cursor}
        else:
            variables |= {"first": size, "after": cursor}
        connection = (await seeded.data(PAGE, variables))["reports"]
        ids = [edge["node"]["databaseId"] for edge in connection["edges"]]
        info = connection["pageInfo"]
        total = connection["totalCount"]
        assert len(ids) <= size
        seen.append(ids)
        more = info["hasPreviousPage"] if backward else info["hasNextPage"]
        if not more:
            break
        cursor = info["startCursor"] if backward else info["endCursor"]
        assert len(seen) < 1000
    if backward:
        seen.reverse()
    return [report_id for page in seen for report_id in page], total


async def reference(
    seeded: Seeded, where: str = "TRUE", order: dict[str, str] | None = None, **parameters: Any
) -> list[int]:
    field = (order or {}).get("field", "PUBLICATION_DATE")
    direction = (order or {}).get("direction", "DESC")
    rows = await seeded.sql(
        f"SELECT id FROM reports r WHERE {where} "  # noqa: S608 - the test's own fragments
        f"ORDER BY {SQL_ORDER[field]} {direction}, id {direction}",
        **parameters,
    )
    return [row.id for row in rows]


ORDERS = [
    {"field": field, "direction": direction}
    for field in ("PUBLICATION_DATE", "TITLE", "WORD_COUNT", "VIEWS")
    for direction in ("ASC", "DESC")
]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: f"{o['field']}-{o['direction']}")
async def test_forward_and_backward_pages_cover_the_list_once_in_order(
    seeded: Seeded, order: dict[str, str]
) -> None:
    expected = await reference(seeded, order=order)
    forward, total = await walk(seeded, size=37, order=order)
    backward, _ = await walk(seeded, size=37, order=order, backward=True)
    assert forward == expected
    assert backward == expected
    assert total == len(expected)


async def test_first_and_last_pages_say_where_they_stand(seeded: Seeded) -> None:
    first = (await seeded.data(PAGE, {"first": 10}))["reports"]["pageInfo"]
    assert (first["hasPreviousPage"], first["hasNextPage"]) == (False, True)
    last = (await seeded.data(PAGE, {"last": 10}))["reports"]["pageInfo"]
    assert (last["hasPreviousPage"], last["hasNextPage"]) == (True, False)
    empty = (await seeded.data(PAGE, {"first": 0}))["reports"]
    assert empty["edges"] == []
    assert empty["pageInfo"]["startCursor"] is None


async def test_a_page_is_read_with_its_list_s_length_only_when_asked_and_still_has_it_empty(
    seeded: Seeded,
) -> None:
    """A root list's totalCount comes with its page, in one statement; a page with no row
    to carry it counts on its own."""
    expected = len(await reference(seeded))

    async def trips_and_total(document: str, variables: dict[str, Any]) -> tuple[int, Any]:
        result = await seeded.query(document, variables, **{"x-gateway-round-trips": "1"})
        assert "errors" not in result, result["errors"]
        return result["extensions"]["roundTrips"]["postgres"], result["data"]["reports"]

    trips, page = await trips_and_total(PAGE, {"first": 3})
    assert (trips, page["totalCount"]) == (1, expected)
    fragment = (
        "query($first: Int) { reports(first: $first) { ...Counted edges { node { title } } } }"
        " fragment Counted on ReportConnection { ... on ReportConnection { totalCount } }"
    )
    trips, page = await trips_and_total(fragment, {"first": 3})
    assert (trips, page["totalCount"]) == (1, expected)
    last = (await seeded.data(PAGE, {"last": 1}))["reports"]["pageInfo"]["endCursor"]
    # The row read to tell whether a next page exists carries it past a page of none.
    for empty, statements in (({"first": 5, "after": last}, 2), ({"first": 0}, 1)):
        trips, page = await trips_and_total(PAGE, empty)
        assert page["edges"] == []
        assert (trips, page["totalCount"]) == (statements, expected)


def _forged(cursor: str, *, value: Any = None, row_id: int | None = None) -> str:
    """A cursor of the same ordering as ``cursor``, with another sort value or row id."""
    tag, old_value, old_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * 4))
    forged = [tag, old_value if value is None else value, old_id if row_id is None else row_id]
    return base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")


async def test_ids_and_cursors_no_row_can_have_are_the_client_s_mistake(seeded: Seeded) -> None:
    """Past the 32-bit keys and counters of every backend, or text no column can hold, an
    id or a cursor is refused as BAD_USER_INPUT, never sent to the store to fail there."""
    beyond = 2**31
    by_words = {"field": "WORD_COUNT", "direction": "ASC"}
    by_title = {"field": "TITLE", "direction": "ASC"}
    words = (await seeded.data(PAGE, {"first": 1, "orderBy": by_words}))["reports"]
    title = (await seeded.data(PAGE, {"first": 1, "orderBy": by_title}))["reports"]
    words_cursor = words["pageInfo"]["endCursor"]
    title_cursor = title["pageInfo"]["endCursor"]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("query($id: ID!) { report(id: $id) { title } }", {"id": str(beyond)}),
        ("query($id: ID!) { report(id: $id) { title } }", {"id": "9" * 5000}),
        ("query($id: ID!) { report(id: $id) { title } }", {"id": "\u00b2"}),
        ("query($id: ID!) { node(id: $id) { id } }", {"id": to_global_id("Report", beyond)}),
        (
            "query($ids: [ID!]) { reports(filter: {authorIds: $ids}) { totalCount } }",
            {"ids": [to_global_id("Author", beyond)]},
        ),
        (PAGE, {"first": 1, "orderBy": by_words, "after": _forged(words_cursor, row_id=beyond)}),
        (PAGE, {"first": 1, "orderBy": by_words, "after": _forged(words_cursor, value=beyond)}),
        (PAGE, {"first": 1, "orderBy": by_title, "after": _forged(title_cursor, value="a\x00b")}),
        (PAGE, {"first": 1, "orderBy": by_title, "after": _forged(title_cursor, value="\ud800")}),
    ]
    for query, variables in cases:
        result = await seeded.query(query, variables)
        codes = [error["extensions"]["code"] for error in result.get("errors", [])]
        assert codes == ["BAD_USER_INPUT"], (variables, result)


async def test_filters_past_their_limits_are_refused_by_their_names_in_the_schema(
    seeded: Seeded,
) -> None:
    too_many_authors = [to_global_id("Author", 1)] * 101
    cases = [
        ({"authorIds": too_many_authors}, "authorIds", "filter.authorIds: at most 100 values"),
        ({"tags": ["graphql"] * 101}, "tags", "filter.tags: at most 100 values"),
        ({"search": "x" * 201}, "search", "filter.search: at most 200 characters"),
    ]
    for given, argument, message in cases:
        result = await seeded.query(
            "query($filter: ReportFilterInput) { reports(filter: $filter) { totalCount } }",
            {"filter": given},
        )
        (error,) = result["errors"]
        assert error["message"] == message
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": argument}


async def test_default_page_size_is_twenty(seeded: Seeded) -> None:
    connection = (await seeded.data(PAGE))["reports"]
    assert len(connection["edges"]) == 20


async def _some(seeded: Seeded, statement: str, count: int) -> list[int]:
    return [row[0] for row in await seeded.sql(statement)][:count]


# A search in each backend's own SQL, which the search filter must agree with.
SEARCHES = {
    "postgresql": "to_tsvector('english', coalesce(title, '') || ' ' || coalesce(abstract, ''))"
    " @@ websearch_to_tsquery('english', :search)",
    "sqlite": "id IN (SELECT rowid FROM reports_search WHERE reports_search MATCH :search)",
    "mysql": "MATCH (title, abstract) AGAINST (:search IN BOOLEAN MODE)",
}
# The searches below in each backend's own syntax, written out (PostgreSQL takes them as
# they are).
BACKEND_QUERIES = {
    "sqlite": {
        "stream processing": "stream processing",
        '"rate limiting" -clinical': '"rate limiting" NOT clinical',
        "replication or caching": "replication OR caching",
    },
    "mysql": {
        "stream processing": "+stream +processing",
        '"rate limiting" -clinical': '+"rate limiting" -clinical',
        "replication or caching": "replication caching",
    },
}


async def _filter_cases(seeded: Seeded) -> list[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    authors = await _some(seeded, "SELECT author_id FROM report_authors GROUP BY 1 ORDER BY 1", 3)
    institutions = await _some(seeded, "SELECT id FROM institutions ORDER BY id", 2)
    technologies = await _some(seeded, "SELECT id FROM technologies ORDER BY id DESC", 3)
    documents = seeded.connections.documents[REPORT_DOCUMENTS].find({}, {"tags": 1})
    tagged = sorted([
        document["_id"]
        async for document in documents
        if {"graphql", "privacy"} & set(document.get("tags", []))
    ])  # fmt: skip
    backend = seeded.connections.engine.dialect.name
    search = SEARCHES[backend]

    def searched(words: str) -> dict[str, str]:
        return {"search": BACKEND_QUERIES.get(backend, {}).get(words, words)}

    return [
        ("status", {"status": ["PUBLISHED", "REVIEW"]},
         "status IN ('Published', 'Review')", {}),
        ("types", {"typeIds": [to_global_id("ReportType", 2), to_global_id("ReportType", 5)]},
         "report_type_id IN (2, 5)", {}),
        ("authors", {"authorIds": [to_global_id("Author", a) for a in authors]},
         "EXISTS (SELECT 1 FROM report_authors ra WHERE ra.report_id = r.id"
         " AND ra.author_id IN :ids)", {"ids": authors}),
        ("institutions", {"institutionIds": [to_global_id("Institution", i) for i in institutions]},
         "EXISTS (SELECT 1 FROM report_authors ra JOIN authors a ON a.id = ra.author_id"
         " WHERE ra.report_id = r.id AND a.institution_id IN :ids)", {"ids": institutions}),
        ("technologies", {"technologyIds": [to_global_id("Technology", t) for t in technologies]},
         "EXISTS (SELECT 1 FROM report_technologies rt WHERE rt.report_id = r.id"
         " AND rt.technology_id IN :ids)", {"ids": technologies}),
        ("dates", {"publishedFrom": "2016-01-01", "publishedTo": "2019-12-31"},
         "publication_date BETWEEN :start AND :end",
         {"start": date(2016, 1, 1), "end": date(2019, 12, 31)}),
        ("tags", {"tags": ["graphql", "privacy"]}, "id IN :ids", {"ids": tagged}),
        ("search", {"search": "stream processing"}, search, searched("stream processing")),
        ("phrase search", {"search": '"rate limiting" -clinical'}, search,
         searched('"rate limiting" -clinical')),
        ("combined", {"status": ["PUBLISHED"], "tags": ["graphql", "privacy"],
                      "publishedFrom": "2015-01-01", "search": "replication or caching"},
         f"status = 'Published' AND id IN :ids AND publication_date >= :start AND {search}",
         {"ids": tagged, "start": date(2015, 1, 1), **searched("replication or caching")}),
    ]  # fmt: skip


@pytest.mark.parametrize("order", [None, {"field": "TITLE", "direction": "ASC"}])
async def test_every_filter_agrees_with_a_reference_query(
    seeded: Seeded, order: dict[str, str] | None
) -> None:
    for name, criteria, where, parameters in await _filter_cases(seeded):
        expected = await reference(seeded, where, order, **parameters)
        found, total = await walk(seeded, size=50, order=order, filter=criteria)
        assert found == expected, name
        assert total == len(expected), name
        assert 0 < len(expected) < 400, f"{name} should select some reports, not all"


# Searches written in one backend's own query syntax or another's, or meant to break out of
# the statement: each is only words to every backend.
HOSTILE_SEARCHES = [
    'NEAR(stream processing)', "title:stream", "stream*", '"unbalanced', '"" ""', "-",
    "+stream -", "~stream <processing >caching @2", "(stream) AND NOT (caching)", "or", "OR or",
    "'; DROP TABLE reports; --", '" OR 1=1 --', "stream^2", "\\", "%_",
]  # fmt: skip


@pytest.mark.parametrize("search", HOSTILE_SEARCHES)
async def test_a_search_in_any_syntax_is_only_words(seeded: Seeded, search: str) -> None:
    """No backend reads a search's text as its own syntax: no error, and a search matches
    no more than its words would."""
    found, total = await walk(seeded, size=100, filter={"search": search})
    assert total == len(found) < 400
    assert (await seeded.sql("SELECT count(*) FROM reports"))[0][0] == 400


async def test_report_relations_agree_with_the_stores(seeded: Seeded) -> None:
    data = await seeded.data("""{ reports(first: 100) { edges { node {
        databaseId type { databaseId }
        authors { isPrimary position author { databaseId institution { databaseId } } }
        primaryAuthor { databaseId }
        technologies { databaseId }
        document { tags sections { heading body } revision metadata }
        stats { views downloads }
    } } } }""")
    nodes = [edge["node"] for edge in data["reports"]["edges"]]
    ids = [node["databaseId"] for node in nodes]
    links = await seeded.sql(
        "SELECT ra.report_id, ra.author_id, ra.is_primary_author, a.institution_id"
        " FROM report_authors ra JOIN authors a ON a.id = ra.author_id"
        " WHERE ra.report_id IN :ids ORDER BY ra.is_primary_author DESC, ra.position",
        ids=ids,
    )
    types = dict(await seeded.sql("SELECT id, report_type_id FROM reports WHERE id IN :ids",
                                  ids=ids))  # fmt: skip
    uses = await seeded.sql(
        "SELECT report_id, technology_id FROM report_technologies WHERE report_id IN :ids",
        ids=ids,
    )
    documents = {
        document["_id"]: document
        async for document in seeded.connections.documents[REPORT_DOCUMENTS].find(
            {"_id": {"$in": ids}}
        )
    }
    for node in nodes:
        report_id = node["databaseId"]
        mine = [link for link in links if link.report_id == report_id]
        assert [a["author"]["databaseId"] for a in node["authors"]] == [m.author_id for m in mine]
        assert [a["isPrimary"] for a in node["authors"]] == [m.is_primary_author for m in mine]
        assert [a["author"]["institution"] and a["author"]["institution"]["databaseId"]
                for a in node["authors"]] == [m.institution_id for m in mine]  # fmt: skip
        assert node["primaryAuthor"]["databaseId"] == mine[0].author_id
        assert node["type"]["databaseId"] == types[report_id]
        assert sorted(t["databaseId"] for t in node["technologies"]) == sorted(
            use.technology_id for use in uses if use.report_id == report_id
        )
        document = documents[report_id]
        assert node["document"]["tags"] == document["tags"]
        assert node["document"]["sections"] == document["sections"]
        assert node["document"]["metadata"] == document["metadata"]
        stats = await seeded.connections.redis.hgetall(f"report:{report_id}:stats")
        assert node["stats"] == {
            "views": int(stats[b"views"]), "downloads": int(stats[b"downloads"]),
        }  # fmt: skip


async def test_parents_list_their_reports_and_authors(seeded: Seeded) -> None:
    data = await seeded.data("""{
      authors(first: 15) { edges { node { databaseId
        reports(first: 100) { totalCount edges { node { databaseId } } } } } }
      technologies(first: 10) { edges { node { databaseId
        reports(first: 100, orderBy: {field: WORD_COUNT, direction: ASC}) {
          edges { node { databaseId } } } } } }
      institutions(first: 5) { edges { node { databaseId
        authors(first: 100) { totalCount edges { node { databaseId } } } } } }
      reportTypes { databaseId reports(first: 3) { edges { node { databaseId } } } }
    }""")  # fmt: skip
    for edge in data["authors"]["edges"]:
        author = edge["node"]
        expected = await reference(
            seeded,
            "EXISTS (SELECT 1 FROM report_authors ra"
            " WHERE ra.report_id = r.id AND ra.author_id = :a)",
            a=author["databaseId"],
        )
        found = [e["node"]["databaseId"] for e in author["reports"]["edges"]]
        assert found == expected
        assert author["reports"]["totalCount"] == len(expected)
    for edge in data["technologies"]["edges"]:
        technology = edge["node"]
        expected = await reference(
            seeded,
            "EXISTS (SELECT 1 FROM report_technologies rt WHERE rt.report_id = r.id"
            " AND rt.technology_id = :t)",
            {"field": "WORD_COUNT", "direction": "ASC"},
            t=technology["databaseId"],
        )
        assert [e["node"]["databaseId"] for e in technology["reports"]["edges"]] == expected
    for edge in data["institutions"]["edges"]:
        institution = edge["node"]
        rows = await seeded.sql(
            "SELECT id FROM authors WHERE institution_id = :i ORDER BY name, id",
            i=institution["databaseId"],
        )
        found = [e["node"]["databaseId"] for e in institution["authors"]["edges"]]
        assert found == [row.id for row in rows]
        assert institution["authors"]["totalCount"] == len(rows)
    for report_type in data["reportTypes"]:
        expected = await reference(seeded, "report_type_id = :t", t=report_type["databaseId"])
        assert [e["node"]["databaseId"] for e in report_type["reports"]["edges"]] == expected[:3]


async def test_root_lists_of_named_entities_page_by_name(seeded: Seeded) -> None:
    names: list[str] = []
    cursor = None
    while True:
        connection = (await seeded.data(
            "query($after: String) { authors(first: 33, after: $after) {"
            " totalCount pageInfo { hasNextPage endCursor } edges { node { name } } } }",
            {"after": cursor},
        ))["authors"]  # fmt: skip
        names += [edge["node"]["name"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        cursor = connection["pageInfo"]["endCursor"]
    rows = await seeded.sql("SELECT name FROM authors ORDER BY name, id")
    assert names == [row.name for row in rows]
    assert connection["totalCount"] == len(rows)


async def test_top_reports_follow_the_leaderboard(seeded: Seeded) -> None:
    for counter in Counter:
        data = await seeded.data(
            f"{{ topReports(by: {counter.name}, limit: 7)"
            f" {{ databaseId stats {{ {counter.value} }} }} }}"
        )
        leaders = await seeded.connections.redis.zrevrange(leaderboard_key(counter), 0, 6)
        top = [report["databaseId"] for report in data["topReports"]]
        assert top == [int(cast("bytes", member)) for member in leaders]
        scores = [report["stats"][counter.value] for report in data["topReports"]]
        assert scores == sorted(scores, reverse=True)


async def test_lookups_by_id(seeded: Seeded) -> None:
    report_id, author_id = to_global_id("Report", 5), to_global_id("Author", 3)
    data = await seeded.data(
        """query($r: ID!, $a: ID!, $missing: ID!) {
          byGlobal: report(id: $r) { databaseId }
          byNumber: report(id: "5") { databaseId }
          unknown: report(id: $missing) { databaseId }
          node(id: $a) { id ... on Author { databaseId } }
          nodes(ids: [$r, $a, $missing]) { id }
        }""",
        {"r": report_id, "a": author_id, "missing": to_global_id("Report", 999_999)},
    )
    assert data["byGlobal"] == data["byNumber"] == {"databaseId": 5}
    assert data["unknown"] is None
    assert data["node"] == {"id": author_id, "databaseId": 3}
    assert data["nodes"] == [{"id": report_id}, {"id": author_id}, None]


def test_a_page_asked_again_is_the_same_statement() -> None:
    """Kept by what it is made of, so that its building and its cache key are paid once;
    the ids of tagged reports, possibly thousands, are never kept."""

    def statement(
        criteria: ReportFilter,
        tagged_ids: list[int] | None,
        fields: frozenset[str] | None = None,
        *,
        counted: bool = False,
    ) -> Any:
        query = reports._filtered(criteria, tagged_ids, fields)
        ordering = reports.report_ordering(ReportSort.PUBLICATION_DATE, descending=True)
        counting = reports._filtered(criteria, tagged_ids, COUNTED) if counted else None
        request = PageRequest(10, after=(date(2020, 1, 1), 7))
        return keyset._page_statement(query, ordering, request, counting)

    first = statement(ReportFilter(statuses=("published",)), None)
    assert statement(ReportFilter(statuses=("published",)), None) is first
    assert statement(ReportFilter(statuses=("draft",)), None) is not first
    assert statement(ReportFilter(), [1, 2]) is not statement(ReportFilter(), [1, 2])
    # One statement per set of fields read, each kept.
    titles = statement(ReportFilter(statuses=("published",)), None, frozenset({"title"}))
    assert titles is not first
    assert statement(ReportFilter(statuses=("published",)), None, frozenset({"title"})) is titles
    # And one with the list's length, kept as well.
    counted = statement(ReportFilter(statuses=("published",)), None, counted=True)
    assert counted is not first
    assert statement(ReportFilter(statuses=("published",)), None, counted=True) is counted


async def test_a_condition_on_a_list_of_keys_reads_the_keys_of_each_use(seeded: Seeded) -> None:
    """Each backend sends a list of keys its own way (MySQL a placeholder per key, made as
    the statement is compiled): a statement compiled once and used again reads the keys of
    each use, however many."""
    table: Any = reports.REPORTS
    async with seeded.connections.engine.connect() as connection:
        for keys in ([1], [2, 3], [], [4, 5, 6], [7]):
            statement = select(table.c.id).where(equals_any(table.c.id, keys)).order_by("id")
            assert list((await connection.execute(statement)).scalars()) == keys
