"""The response cache, against the real stores: hits and misses, invalidation by every
kind of write, scopes, volatility, single flight, HTTP caching, two processes on one Redis,
and Redis stopped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import make_url

from core.connections import Connections
from core.pubsub import Hub
from core.response_cache import ResponseCache
from core.settings import Settings
from datasources.counters import ReportCounters, set_report_counters
from datasources.response_cache import EPOCH, EntryReader, entry_key
from gateway.app import create_app
from gateway.cached_responses import ANONYMOUS_SCOPE, cache_key
from resolvers.nodes import to_global_id
from tests.clients import Caller, lifespan_client
from tests.faults import HeldStoreCall, own_redis
from tests.test_mutations import CREATE, report_input
from tests.waiting import eventually

REPORT = "query($id: ID!) { report(id: $id) { title wordCount authors { author { name } } } }"
LIST = "{ reports(first: 50) { totalCount edges { node { databaseId title } } } }"
# The same operation, spelled otherwise.
LIST_RESPELLED = """
# the same list
{ reports( first : 50 ) {
    totalCount
    edges { node { databaseId   title } }
} }"""
STATS = "query($id: ID!) { report(id: $id) { stats { views } } }"
REPORT_ID = to_global_id("Report", 3)


async def _ask(
    client: httpx.AsyncClient,
    document: str,
    variables: dict[str, Any] | None = None,
    key: str | None = None,
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = await client.post(
        "/graphql", json={"query": document, "variables": variables or {}}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response


async def _mutate(call: Caller, document: str, variables: dict[str, Any]) -> dict[str, Any]:
    return await call(document, variables, role="admin")


async def test_a_repeated_query_is_a_hit_with_its_age(call: Caller) -> None:
    first = await _ask(call.client, LIST)
    second = await _ask(call.client, LIST)
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["age"] == "0"
    assert second.headers["x-cache"] == "HIT"
    assert int(second.headers["age"]) >= 0
    assert second.json()["data"] == first.json()["data"]
    # Development says so in the body as well, and a hit costs no round trip.
    assert second.json()["extensions"]["cache"]["hit"] is True
    assert "roundTrips" not in second.json()["extensions"]
    assert first.json()["extensions"]["cache"] == {"hit": False}


async def test_two_spellings_of_one_query_share_an_entry(call: Caller) -> None:
    first = await _ask(call.client, LIST)
    respelled = await _ask(call.client, LIST_RESPELLED)
    assert respelled.headers["x-cache"] == "HIT"
    assert respelled.json()["data"] == first.json()["data"]


async def _titles(client: httpx.AsyncClient) -> list[str]:
    data = (await _ask(client, LIST)).json()["data"]
    return [edge["node"]["title"] for edge in data["reports"]["edges"]]


async def test_an_updated_report_is_never_answered_from_before(call: Caller) -> None:
    before = (await _ask(call.client, REPORT, {"id": REPORT_ID})).json()["data"]
    await _titles(call.client)
    await _mutate(
        call,
        'mutation($id: ID!) { updateReport(id: $id, input: {title: "Renamed", wordCount: 9})'
        " { __typename } }",
        {"id": REPORT_ID},
    )
    after = await _ask(call.client, REPORT, {"id": REPORT_ID})
    assert after.headers["x-cache"] == "MISS"
    assert after.json()["data"]["report"]["title"] == "Renamed"
    assert after.json()["data"]["report"]["wordCount"] == 9
    assert before["report"]["title"] != "Renamed"
    assert "Renamed" in await _titles(call.client)


async def test_lists_gain_created_reports_and_lose_deleted_ones(call: Caller) -> None:
    listed = (await _ask(call.client, LIST)).json()["data"]["reports"]
    created = (await _mutate(call, CREATE, {"input": report_input(title="Brand new")}))[
        "createReport"
    ]["report"]
    grown = (await _ask(call.client, LIST)).json()["data"]["reports"]
    assert grown["totalCount"] == listed["totalCount"] + 1
    assert "Brand new" in [edge["node"]["title"] for edge in grown["edges"]]
    new_id = to_global_id("Report", created["databaseId"])
    await _mutate(
        call, "mutation($id: ID!) { deleteReport(id: $id) { __typename } }", {"id": new_id}
    )
    shrunk = (await _ask(call.client, LIST)).json()["data"]["reports"]
    assert shrunk == listed


AUTHOR_REPORTS = """query($id: ID!) { node(id: $id) { ... on Author {
  reports(first: 100) { totalCount edges { node { databaseId status } } } } } }"""
BY_AUTHORS = """query($ids: [ID!]) { reports(first: 100, filter: {authorIds: $ids}) {
  totalCount edges { node { databaseId status } } } }"""
BY_INSTITUTIONS = """query($ids: [ID!]) { reports(first: 100, filter: {institutionIds: $ids}) {
  totalCount edges { node { databaseId } } } }"""


async def _lists_of(client: httpx.AsyncClient, author: int) -> list[httpx.Response]:
    """An author's reports, under the author and filtered at the root."""
    author_id = to_global_id("Author", author)
    return [
        await _ask(client, AUTHOR_REPORTS, {"id": author_id}),
        await _ask(client, BY_AUTHORS, {"ids": [author_id]}),
    ]


def _listed(response: httpx.Response) -> dict[int, str]:
    data = response.json()["data"]
    connection = (data.get("node") or data)["reports"]
    assert connection["totalCount"] == len(connection["edges"])
    return {edge["node"]["databaseId"]: edge["node"]["status"] for edge in connection["edges"]}


async def test_an_authors_lists_follow_their_reports_and_only_theirs(call: Caller) -> None:
    client = call.client
    third_before = [_listed(response) for response in await _lists_of(client, 3)]
    first_before = [_listed(response) for response in await _lists_of(client, 1)]
    created = await _mutate(call, CREATE, {"input": report_input()})  # by authors 1 and 2
    new_id = created["createReport"]["report"]["databaseId"]
    report_id = to_global_id("Report", new_id)
    untouched = await _lists_of(client, 3)
    assert [response.headers["x-cache"] for response in untouched] == ["HIT", "HIT"]
    assert [_listed(response) for response in untouched] == third_before
    gained = await _lists_of(client, 1)
    assert [response.headers["x-cache"] for response in gained] == ["MISS", "MISS"]
    assert all(new_id in _listed(response) for response in gained)

    # Moved to author 3: it leaves author 1's lists and enters author 3's.
    moved = {"authors": [{"authorId": to_global_id("Author", 3), "isPrimary": True}]}
    await _mutate(
        call,
        "mutation($id: ID!, $input: UpdateReportInput!)"
        " { updateReport(id: $id, input: $input) { __typename } }",
        {"id": report_id, "input": moved},
    )
    assert [_listed(response) for response in await _lists_of(client, 1)] == first_before
    entered = [_listed(response) for response in await _lists_of(client, 3)]
    assert all(listed[new_id] == "DRAFT" for listed in entered)

    # Published: its status changes in its author's lists.
    await _mutate(
        call,
        "mutation($id: ID!) { publishReport(id: $id, to: REVIEW) { __typename } }",
        {"id": report_id},
    )
    reviewed = [_listed(response) for response in await _lists_of(client, 3)]
    assert all(listed[new_id] == "REVIEW" for listed in reviewed)

    await _mutate(
        call, "mutation($id: ID!) { deleteReport(id: $id) { __typename } }", {"id": report_id}
    )
    assert [_listed(response) for response in await _lists_of(client, 3)] == third_before


async def test_a_filter_by_institution_follows_an_author_who_moves(call: Caller) -> None:
    author = (
        await call(
            "query($id: ID!) { node(id: $id) { ... on Author { institution { id } } } }",
            {"id": to_global_id("Author", 1)},
        )
    )["node"]
    institutions = (await call("{ institutions(first: 100) { edges { node { id } } } }"))[
        "institutions"
    ]["edges"]
    elsewhere = next(
        edge["node"]["id"]
        for edge in institutions
        if edge["node"]["id"] != (author["institution"] or {}).get("id")
    )
    before = await _ask(call.client, BY_INSTITUTIONS, {"ids": [elsewhere]})
    await _mutate(
        call,
        "mutation($id: ID!, $to: ID!)"
        " { updateAuthor(id: $id, input: {institutionId: $to}) { __typename } }",
        {"id": to_global_id("Author", 1), "to": elsewhere},
    )
    after = await _ask(call.client, BY_INSTITUTIONS, {"ids": [elsewhere]})
    assert after.headers["x-cache"] == "MISS"
    reports_of_author = set(_listed((await _lists_of(call.client, 1))[0]))
    assert reports_of_author
    assert set(_listed_ids(after)) == set(_listed_ids(before)) | reports_of_author


def _listed_ids(response: httpx.Response) -> list[int]:
    edges = response.json()["data"]["reports"]["edges"]
    return [edge["node"]["databaseId"] for edge in edges]


async def test_a_renamed_author_is_renamed_in_every_cached_report(call: Caller) -> None:
    report = (await _ask(call.client, REPORT, {"id": REPORT_ID})).json()["data"]["report"]
    named = report["authors"][0]["author"]["name"]
    authors = await _ask(call.client, "{ authors(first: 100) { edges { node { id name } } } }")
    author_id = next(
        edge["node"]["id"]
        for edge in authors.json()["data"]["authors"]["edges"]
        if edge["node"]["name"] == named
    )
    await _mutate(
        call,
        'mutation($id: ID!) { updateAuthor(id: $id, input: {name: "Ada Renamed"}) { __typename } }',
        {"id": author_id},
    )
    again = (await _ask(call.client, REPORT, {"id": REPORT_ID})).json()["data"]["report"]
    assert again["authors"][0]["author"]["name"] == "Ada Renamed"
    renamed = await _ask(call.client, "{ authors(first: 100) { edges { node { id name } } } }")
    assert "Ada Renamed" in str(renamed.json()["data"])


async def test_a_changed_document_and_a_counted_view_are_read_at_once(call: Caller) -> None:
    document = "query($id: ID!) { report(id: $id) { document { tags } } }"
    await _ask(call.client, document, {"id": REPORT_ID})
    await _mutate(
        call,
        'mutation($id: ID!) { upsertReportDocument(reportId: $id, document: {tags: ["fresh"]})'
        " { __typename } }",
        {"id": REPORT_ID},
    )
    tags = (await _ask(call.client, document, {"id": REPORT_ID})).json()["data"]
    assert tags["report"]["document"]["tags"] == ["fresh"]
    views = (await _ask(call.client, STATS, {"id": REPORT_ID})).json()["data"]
    await _mutate(call, "mutation($id: ID!) { recordView(reportId: $id) { __typename } }",
                  {"id": REPORT_ID})  # fmt: skip
    counted = (await _ask(call.client, STATS, {"id": REPORT_ID})).json()["data"]
    assert counted["report"]["stats"]["views"] == views["report"]["stats"]["views"] + 1


async def test_counters_changed_without_a_mutation_are_at_most_their_ttl_old(
    settings: Settings, connections: Connections, call: Caller
) -> None:
    volatile = settings.model_copy(update={"cache_volatile_ttl": 1.0})
    async with lifespan_client(create_app(volatile)) as client:
        await _ask(client, STATS, {"id": REPORT_ID})
        await set_report_counters(
            redis=connections.redis,
            counters=[ReportCounters(report_id=3, views=123_456, downloads=0)],
        )
        cached = await _ask(client, STATS, {"id": REPORT_ID})
        assert cached.headers["x-cache"] == "HIT"
        assert int(cached.headers["age"]) <= 1
        await asyncio.sleep(1.1)
        fresh = (await _ask(client, STATS, {"id": REPORT_ID})).json()["data"]
    assert fresh["report"]["stats"]["views"] == 123_456


async def test_roles_never_share_an_entry(call: Caller) -> None:
    emails = "{ authors(first: 3) { edges { node { email } } } }"
    reader = await _ask(call.client, emails, key=call.keys["reader"])
    assert "errors" not in reader.json()
    anonymous = await _ask(call.client, emails)
    assert anonymous.headers.get("x-cache") != "HIT"
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    editor = await _ask(call.client, emails, key=call.keys["editor"])
    assert editor.headers["x-cache"] == "MISS"
    assert editor.json()["data"] == reader.json()["data"]


async def test_answers_with_errors_are_not_kept(call: Caller) -> None:
    emails = "{ authors(first: 3) { edges { node { email } } } }"
    for _ in range(2):
        response = await _ask(call.client, emails)
        assert "errors" in response.json()
        assert "x-cache" not in response.headers


async def test_concurrent_identical_misses_execute_once(
    call: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    held_leaderboard = HeldStoreCall([1, 2])
    started, release = held_leaderboard.started, held_leaderboard.release
    monkeypatch.setattr("core.sources.top_report_ids", held_leaderboard)
    document = "{ topReports(limit: 2) { title } }"
    asked = [asyncio.create_task(_ask(call.client, document)) for _ in range(32)]
    await started.wait()
    await asyncio.sleep(0.2)
    release.set()
    answers = await asyncio.gather(*asked)
    assert held_leaderboard.events.count("started") == 1
    assert all(response.json()["data"] == answers[0].json()["data"] for response in answers)


async def test_callers_waiting_for_anothers_answer_take_no_turn_from_other_queries(
    settings: Settings, call: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaderboard = HeldStoreCall([1])
    monkeypatch.setattr("core.sources.top_report_ids", leaderboard)
    document = "{ topReports(limit: 1) { title } }"
    application = create_app(settings.model_copy(update={"max_concurrent_operations": 2}))
    async with lifespan_client(application) as client:
        cache: ResponseCache = application.state.response_cache
        computing = asyncio.create_task(_ask(client, document))
        await leaderboard.started.wait()
        waiting = [asyncio.create_task(_ask(client, document)) for _ in range(3)]

        async def all_waiting() -> bool:
            return cache.counters.single_flight_waits == 3

        await eventually(all_waiting)
        # One turn is the first caller's; the other is free for another query.
        other = await _ask(client, "{ service { name } }")
        assert other.json()["data"] == {"service": {"name": "polyglot-gateway"}}
        assert leaderboard.events == ["started"]
        leaderboard.release.set()
        answers = await asyncio.gather(computing, *waiting)
    assert all(answer.json()["data"] == answers[0].json()["data"] for answer in answers)


async def test_a_query_asked_after_a_mutation_never_gets_an_answer_computed_before_it(
    call: Caller, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The title is read, then the counters, held: the first answer is computed from
    # before the mutation.
    counters = HeldStoreCall([None])
    monkeypatch.setattr("core.sources.counters_by_report", counters)
    document = "query($id: ID!) { report(id: $id) { title stats { views } } }"
    rename = (
        'mutation($id: ID!) { updateReport(id: $id, input: {title: "Renamed"}) { __typename } }'
    )
    application = create_app(settings)
    async with lifespan_client(application) as client:
        cache: ResponseCache = application.state.response_cache
        before = asyncio.create_task(_ask(client, document, {"id": REPORT_ID}))
        await counters.started.wait()
        # Through the same process, whose cache has then seen the invalidation.
        renamed = await client.post(
            "/graphql",
            json={"query": rename, "variables": {"id": REPORT_ID}},
            headers={"authorization": f"Bearer {call.keys['admin']}"},
        )
        assert renamed.json()["data"]["updateReport"]["__typename"] == "ReportSaved"
        after = asyncio.create_task(_ask(client, document, {"id": REPORT_ID}))

        async def computing_or_waiting() -> bool:
            return counters.events.count("started") == 2 or cache.counters.single_flight_waits > 0

        await eventually(computing_or_waiting)
        counters.release.set()
        answers = await asyncio.gather(before, after)
    titles = [answer.json()["data"]["report"]["title"] for answer in answers]
    assert titles[0] != "Renamed"
    assert titles[1] == "Renamed"


async def test_get_answers_carry_http_caching_headers(call: Caller) -> None:
    query = {"query": LIST}
    first = await call.client.get("/graphql", params=query)
    assert first.headers["cache-control"].startswith("public, max-age=")
    etag = first.headers["etag"]
    unchanged = await call.client.get("/graphql", params=query, headers={"if-none-match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    authenticated = await call.client.get(
        "/graphql", params=query, headers={"authorization": f"Bearer {call.keys['reader']}"}
    )
    assert authenticated.headers["cache-control"].startswith("private, max-age=")


async def test_two_processes_see_each_others_invalidations(
    call: Caller, settings: Settings
) -> None:
    async with lifespan_client(create_app(settings)) as other:
        for client in (call.client, other, call.client, other):
            await _ask(client, REPORT, {"id": REPORT_ID})  # in both tiers of both
        assert (await _ask(other, REPORT, {"id": REPORT_ID})).headers["x-cache"] == "HIT"
        await _mutate(
            call,
            'mutation($id: ID!) { updateReport(id: $id, input: {title: "Seen everywhere"})'
            " { __typename } }",
            {"id": REPORT_ID},
        )

        async def fresh_in_other() -> bool:
            data = (await _ask(other, REPORT, {"id": REPORT_ID})).json()["data"]
            return bool(data["report"]["title"] == "Seen everywhere")

        await eventually(fresh_in_other)


async def test_with_redis_stopped_every_answer_stays_correct(
    settings: Settings, connections: Connections, tmp_path: Path, call: Caller
) -> None:
    with own_redis(settings, tmp_path / "own") as (own_settings, own):
        async with lifespan_client(create_app(own_settings)) as client:
            await _ask(client, REPORT, {"id": REPORT_ID})
            assert (await _ask(client, REPORT, {"id": REPORT_ID})).headers["x-cache"] == "HIT"
            own.stop()
            await call(
                'mutation($id: ID!) { updateReport(id: $id, input: {title: "While down"})'
                " { __typename } }",
                {"id": REPORT_ID},
                role="admin",
            )
            # Another process wrote it; this one's memory went with its Redis.
            answered = await _ask(client, REPORT, {"id": REPORT_ID})
            assert answered.json()["data"]["report"]["title"] == "While down"
            assert "x-cache" not in answered.headers or answered.headers["x-cache"] == "MISS"


async def test_after_a_failure_one_look_up_at_a_time_tries_redis_again(
    connections: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = asyncio.Event()
    reads: list[str] = []

    async def failing(reader: EntryReader, digest: str) -> tuple[bytes | None, bytes]:
        raise RedisConnectionError("connection refused")

    async def hung_until_answered(reader: EntryReader, digest: str) -> tuple[bytes | None, bytes]:
        reads.append(digest)
        await answer.wait()
        return None, b"0"

    monkeypatch.setattr("core.outages.RETRY_AFTER", 0.0)  # tried again at once
    cache = ResponseCache(
        connections.redis,
        Hub(connections.redis),
        ttl=60,
        ttls={},
        volatile_ttl=1,
        memory_bytes=1 << 20,
        timeout=60,
    )
    try:
        monkeypatch.setattr(EntryReader, "read", failing)
        assert (await cache.find("a")).entry is None  # Redis is found down
        monkeypatch.setattr(EntryReader, "read", hung_until_answered)
        looks = [asyncio.create_task(cache.find("a")) for _ in range(10)]

        async def all_but_the_probe_answered() -> bool:
            return sum(look.done() for look in looks) == 9

        await eventually(all_but_the_probe_answered)
        assert reads == ["a"]
        answer.set()
        await asyncio.gather(*looks)
        await cache.find("a")  # answered: Redis is in use again
        assert reads == ["a", "a"]
    finally:
        cache.stop()


async def test_hits_carry_the_request_id_and_cors_headers_for_an_origin(call: Caller) -> None:
    await _ask(call.client, LIST)
    given = await call.client.post(
        "/graphql", json={"query": LIST, "variables": {}}, headers={"x-request-id": "trace-42"}
    )
    assert given.headers["x-cache"] == "HIT"
    assert given.headers["x-request-id"] == "trace-42"
    origin = "http://localhost:3000"
    cross = await call.client.post(
        "/graphql", json={"query": LIST, "variables": {}}, headers={"origin": origin}
    )
    assert cross.headers["x-cache"] == "HIT"
    assert cross.headers["access-control-allow-origin"] == origin
    refused = await call.client.post(
        "/graphql",
        json={"query": LIST, "variables": {}},
        headers={"accept": "text/html"},
    )
    assert refused.status_code == 406


async def test_the_hit_path_reads_what_redis_py_wrote_in_any_database(
    settings: Settings, tmp_path: Path
) -> None:
    with own_redis(settings, tmp_path / "own") as (own_settings, own):
        readers = []
        for database in (0, 3):
            url = str(make_url(str(own_settings.redis_url)).set(database=str(database)))
            redis = Redis.from_url(url)
            reader = EntryReader.of(redis, timeout=1.0, kept=2)
            assert reader is not None
            readers.append(reader)
            try:
                await redis.set(entry_key("abc"), b"\x00entry\r\n" * 10_000)
                await redis.set(EPOCH, 7)
                assert await reader.read("abc") == (b"\x00entry\r\n" * 10_000, b"7")
                assert await reader.read("none") == (None, b"7")
                await redis.delete(EPOCH)
                assert await reader.read("none") == (None, b"0")
            finally:
                await redis.aclose()
        own.stop()
        for reader in readers:
            with pytest.raises(RedisConnectionError):
                await reader.read("abc")
            reader.close()


async def test_the_hit_path_reaches_the_given_redis_as_the_driver_does(
    connections: Connections,
) -> None:
    """Over TCP in the default run, over TLS in continuous integration's run on the
    distribution's Redis (see .ci/run): hits are read past the driver either way."""
    reader = EntryReader.of(connections.redis, timeout=5.0, kept=1)
    assert reader is not None
    try:
        await connections.redis.set(entry_key("given"), b"entry")
        await connections.redis.set(EPOCH, 3)
        assert await reader.read("given") == (b"entry", b"3")
    finally:
        reader.close()


async def test_an_entry_kept_under_a_second_spelling_lives_no_longer(
    settings: Settings, call: Caller
) -> None:
    kept = settings.model_copy(update={"cache_ttl": 30.0})
    respelled = json.dumps({"query": LIST_RESPELLED}).encode()
    async with lifespan_client(create_app(kept)) as client:
        await _ask(client, LIST)
        await asyncio.sleep(1.0)
        # Another process: found in Redis under the canonical key, kept under its own.
        async with lifespan_client(create_app(kept)) as other:
            answer = await other.post(
                "/graphql", content=respelled, headers={"content-type": "application/json"}
            )
            assert answer.headers["x-cache"] == "HIT"
        redis = Redis.from_url(str(settings.redis_url))
        try:
            left = await redis.pttl(entry_key(cache_key(ANONYMOUS_SCOPE, "POST", respelled)))
        finally:
            await redis.aclose()
    assert 0 < left <= 29_100  # what the first entry had left, not a fresh 30 s
