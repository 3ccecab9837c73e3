"""Deterministic demo data for all three stores.

The same ``random_seed`` and report count give the same rows, documents and counters on
every machine, and running the seed again rewrites the same rows instead of adding any.
Nothing depends on the clock: timestamps derive from the generated publication dates.
"""

from __future__ import annotations

import asyncio
import random
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from tqdm import tqdm

from core.connections import Connections
from datasources import catalogue
from datasources.counter_snapshots import snapshot_counters
from datasources.counters import ReportCounters, set_report_counters
from datasources.documents import replace_documents
from datasources.models import Author, Institution, Report, ReportStatus, ReportType, Technology

BATCH_SIZE = 1000
FIRST_DATE = date(2012, 1, 1)
DATE_SPAN_DAYS = (date(2026, 10, 31) - FIRST_DATE).days

REPORT_TYPES = (
    ("Technical Report", "A detailed account of a system, its design and its evaluation."),
    ("White Paper", "A position on a technical question, with its reasoning."),
    ("Case Study", "One organisation's experience, in depth."),
    ("Survey", "An overview of the state of a field."),
    ("Benchmark", "Measurements of systems under a stated workload."),
    ("Tutorial", "A guided introduction to a technique."),
    ("Dataset Description", "What a dataset holds, how it was made, how to use it."),
    ("Post-Mortem", "What failed, why, and what changed afterwards."),
)
TECHNOLOGIES = (
    ("PostgreSQL", ("14", "15", "16", "17", "18"), "database"),
    ("MongoDB", ("6.0", "7.0", "8.0"), "database"),
    ("Redis", ("7.2", "7.4", "8.0"), "database"),
    ("Valkey", ("8.0", "9.0"), "database"),
    ("SQLite", ("3.45",), "database"),
    ("ClickHouse", ("24.8",), "database"),
    ("Apache Kafka", ("3.7", "3.8", "4.0"), "messaging"),
    ("RabbitMQ", ("3.13", "4.0"), "messaging"),
    ("Kubernetes", ("1.29", "1.30", "1.31"), "platform"),
    ("Docker", ("26", "27"), "platform"),
    ("Terraform", ("1.8", "1.9"), "platform"),
    ("Python", ("3.11", "3.12", "3.13"), "language"),
    ("Rust", ("1.79", "1.82"), "language"),
    ("Go", ("1.22", "1.23"), "language"),
    ("TypeScript", ("5.5", "5.6"), "language"),
    ("Java", ("21",), "language"),
    ("PyTorch", ("2.3", "2.4", "2.5"), "library"),
    ("TensorFlow", ("2.16", "2.17"), "library"),
    ("Apache Spark", ("3.5",), "framework"),
    ("GraphQL", ("2021", "2025"), "protocol"),
    ("gRPC", ("1.66",), "protocol"),
    ("WebAssembly", ("2.0",), "runtime"),
    ("Envoy", ("1.31",), "platform"),
    ("OpenTelemetry", ("1.37",), "library"),
)
PLACES = (
    "Aberdeen",
    "Aarhus",
    "Bologna",
    "Bergen",
    "Cambridge",
    "Coimbra",
    "Delft",
    "Dresden",
    "Edinburgh",
    "Espoo",
    "Freiburg",
    "Geneva",
    "Ghent",
    "Graz",
    "Heidelberg",
    "Helsinki",
    "Kraków",
    "Kyoto",
    "Leiden",
    "Leuven",
    "Lisbon",
    "Lund",
    "Lyon",
    "Madrid",
    "Manchester",
    "Milan",
    "Montréal",
    "Munich",
    "Nantes",
    "Osaka",
    "Oslo",
    "Oxford",
    "Padua",
    "Porto",
    "Prague",
    "Québec",
    "Reykjavík",
    "Rotterdam",
    "Salamanca",
    "São Paulo",
    "Seoul",
    "Sevilla",
    "Stockholm",
    "Tallinn",
    "Tartu",
    "Tokyo",
    "Toronto",
    "Trondheim",
    "Tübingen",
    "Turin",
    "Uppsala",
    "Utrecht",
    "Valencia",
    "Vienna",
    "Vilnius",
    "Warsaw",
    "Wellington",
    "Zürich",
)
INSTITUTION_PATTERNS = (
    "University of {}",
    "{} Institute of Technology",
    "{} Research Laboratory",
    "{} Polytechnic",
    "{} Centre for Computing",
    "{} Data Science Institute",
)
COUNTRIES = ("NO", "DE", "FR", "ES", "IT", "NL", "BE", "PT", "CH", "SE", "FI", "JP", "CA", "PL")
FIRST_NAMES = (
    "Ada",
    "Alan",
    "Amélie",
    "Anders",
    "Aoife",
    "Barbara",
    "Björn",
    "Chiara",
    "Dagny",
    "Diego",
    "Edsger",
    "Elif",
    "Emma",
    "Frances",
    "Grace",
    "Hana",
    "Ingrid",
    "Jean",
    "João",
    "Kenji",
    "Lars",
    "Leslie",
    "Łukasz",
    "Margaret",
    "Marta",
    "Mei",
    "Niklaus",
    "Noor",
    "Olga",
    "Pavel",
    "Radia",
    "Ravi",
    "Renée",
    "Sofia",
    "Søren",
    "Tim",
    "Yuki",
    "Zoë",
    "Ziad",
    "Ines",
)
LAST_NAMES = (
    "Lovelace",
    "Turing",
    "Hopper",
    "Liskov",
    "Dijkstra",
    "Knuth",
    "Lamport",
    "Perlman",
    "Allen",
    "Wirth",
    "Hamilton",
    "Backus",
    "Codd",
    "Gray",
    "Stonebraker",
    "Ritchie",
    "Kernighan",
    "Müller",
    "García",
    "Rossi",
    "Nakamura",
    "Kowalski",
    "Ødegaard",
    "Öztürk",
    "Silva",
    "Dubois",
    "Novák",
    "Virtanen",
    "Jansen",
    "Petrov",
    "Tanaka",
    "Fernández",
    "O'Brien",
    "Nguyen",
    "Kim",
)
ADJECTIVES = (
    "Scalable",
    "Adaptive",
    "Incremental",
    "Distributed",
    "Verifiable",
    "Energy-Efficient",
    "Fault-Tolerant",
    "Low-Latency",
    "Privacy-Preserving",
    "Reproducible",
    "Self-Tuning",
)
TOPICS = (
    "Query Planning",
    "Schema Evolution",
    "Stream Processing",
    "Consensus",
    "Caching",
    "Index Maintenance",
    "Graph Traversal",
    "Vector Search",
    "Change Data Capture",
    "Workload Isolation",
    "Rate Limiting",
    "Replication",
    "Observability",
    "Model Serving",
)
DOMAINS = (
    "Research Catalogues",
    "Clinical Records",
    "Climate Models",
    "Financial Ledgers",
    "Public Transport",
    "Genomics Pipelines",
    "Edge Devices",
    "Digital Libraries",
)
FINDINGS = (
    "reduces tail latency by an order of magnitude",
    "keeps throughput stable under skewed load",
    "removes a class of consistency anomalies",
    "halves the operational cost of the deployment",
    "makes failure recovery predictable",
    "scales linearly to the largest workloads we tried",
)
SECTION_HEADINGS = (
    "Introduction",
    "Background",
    "Design",
    "Implementation",
    "Evaluation",
    "Related Work",
    "Limitations",
    "Discussion",
    "Conclusion",
)
TAGS = (
    "databases",
    "distributed-systems",
    "performance",
    "security",
    "machine-learning",
    "graphql",
    "caching",
    "streaming",
    "observability",
    "reliability",
    "energy",
    "privacy",
    "benchmarks",
    "open-data",
    "cloud",
    "edge",
    "compilers",
    "networking",
    "storage",
    "apis",
)
VENUES = ("VLDB", "SIGMOD", "OSDI", "NSDI", "EuroSys", "ICDE", "SoCC", "USENIX ATC")


@dataclass(frozen=True)
class SeedPlan:
    institutions: int
    authors: int

    @classmethod
    def for_reports(cls, reports: int) -> SeedPlan:
        return cls(institutions=max(8, reports // 100), authors=max(20, reports // 5))


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.replace("ø", "o").replace("Ø", "O"))
    return "".join(c for c in decomposed.replace("ł", "l").replace("Ł", "L") if c.isalnum()).lower()


def _timestamp(day: date, rng: random.Random) -> datetime:
    return datetime.combine(day, time(rng.randrange(24), rng.randrange(60)), tzinfo=UTC)


def _orcid(rng: random.Random) -> str:
    return f"0000-000{rng.randrange(1, 4)}-{rng.randrange(10000):04d}-{rng.randrange(10000):04d}"


def _institutions(rng: random.Random, count: int) -> list[dict[str, Any]]:
    names = [pattern.format(place) for place in PLACES for pattern in INSTITUTION_PATTERNS]
    rng.shuffle(names)
    rows = []
    for index in range(count):
        name = names[index % len(names)]
        if index >= len(names):
            name = f"{name}, Campus {index // len(names) + 1}"
        created = _timestamp(FIRST_DATE - timedelta(days=rng.randrange(3650)), rng)
        rows.append({
            "id": index + 1,
            "name": name,
            "location": rng.choice(COUNTRIES),
            "website": f"https://www.{_ascii(name)[:40]}.example",
            "created_at": created,
            "updated_at": created,
        })  # fmt: skip
    return rows


def _authors(rng: random.Random, count: int, institutions: int) -> list[dict[str, Any]]:
    rows = []
    for index in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        created = _timestamp(FIRST_DATE - timedelta(days=rng.randrange(1000)), rng)
        rows.append({
            "id": index + 1,
            "first_name": first,
            "last_name": last,
            "email": f"{_ascii(first)}.{_ascii(last)}.{index + 1}@research.example",
            # One author in twenty is independent: no institution.
            "institution_id": None if rng.random() < 0.05 else rng.randrange(institutions) + 1,
            "orcid": _orcid(rng),
            "created_at": created,
            "updated_at": created,
        })  # fmt: skip
    return rows


def _technologies() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, versions, kind in TECHNOLOGIES:
        for release in versions:
            rows.append({
                "id": len(rows) + 1,
                "name": name,
                "version": release,
                "description": f"{name} {release}, as used in the reports that cite it.",
                "technology_type": kind,
            })  # fmt: skip
    return rows


@dataclass
class ReportBatch:
    reports: list[dict[str, Any]]
    authorships: list[dict[str, Any]]
    technologies: list[dict[str, Any]]
    documents: list[dict[str, Any]]
    counters: list[ReportCounters]


def _status(rng: random.Random) -> ReportStatus:
    roll = rng.random()
    if roll < 0.6:
        return ReportStatus.PUBLISHED
    if roll < 0.75:
        return ReportStatus.REVIEW
    if roll < 0.9:
        return ReportStatus.DRAFT
    return ReportStatus.ARCHIVED


def _report_batches(
    rng: random.Random, count: int, plan: SeedPlan, technologies: int
) -> Iterator[ReportBatch]:
    for start in range(0, count, BATCH_SIZE):
        batch = ReportBatch([], [], [], [], [])
        for report_id in range(start + 1, min(start + BATCH_SIZE, count) + 1):
            _add_report(rng, batch, report_id, plan, technologies)
        yield batch


def _add_report(
    rng: random.Random, batch: ReportBatch, report_id: int, plan: SeedPlan, technologies: int
) -> None:
    topic, domain = rng.choice(TOPICS), rng.choice(DOMAINS)
    title = f"{rng.choice(ADJECTIVES)} {topic} for {domain}"
    published = FIRST_DATE + timedelta(days=rng.randrange(DATE_SPAN_DAYS))
    created = _timestamp(published - timedelta(days=rng.randrange(30, 400)), rng)
    abstract = (
        f"We study {topic.lower()} in {domain.lower()}. "
        f"Our approach {rng.choice(FINDINGS)}, and {rng.choice(FINDINGS)} "
        f"on {rng.randrange(3, 40)} production workloads."
    )
    status = _status(rng)
    batch.reports.append({
        "id": report_id,
        "title": title,
        "abstract": abstract,
        "publication_date": published,
        "report_type_id": rng.randrange(len(REPORT_TYPES)) + 1,
        "word_count": rng.randrange(1500, 25000),
        "status": status.value,
        "created_at": created,
        "updated_at": created,
    })  # fmt: skip
    author_count = rng.choices((1, 2, 3, 4, 5), weights=(15, 30, 30, 15, 10))[0]
    for position, author_id in enumerate(rng.sample(range(1, plan.authors + 1), author_count)):
        batch.authorships.append({
            "report_id": report_id,
            "author_id": author_id,
            "is_primary_author": position == 0,
            "position": position,
        })  # fmt: skip
    for technology_id in rng.sample(range(1, technologies + 1), rng.randrange(1, 5)):
        batch.technologies.append({"report_id": report_id, "technology_id": technology_id})
    headings = rng.sample(SECTION_HEADINGS, rng.randrange(2, 7))
    batch.documents.append({
        "_id": report_id,
        "sections": [
            {"heading": heading, "body": f"{heading}: how {topic.lower()} {rng.choice(FINDINGS)}."}
            for heading in headings
        ],
        "tags": sorted(rng.sample(TAGS, rng.randrange(2, 6))),
        "references": [
            {
                "title": f"{rng.choice(ADJECTIVES)} {rng.choice(TOPICS)}",
                "url": f"https://doi.example/10.{rng.randrange(1000, 9999)}/{report_id}.{index}",
                "doi": f"10.{rng.randrange(1000, 9999)}/{report_id}.{index}",
            }
            for index in range(rng.randrange(0, 7))
        ],
        "metadata": _metadata(rng, status),
        "revision": 1,
        "updated_at": created,
    })  # fmt: skip
    views = int(rng.paretovariate(1.2) * 40) if status is ReportStatus.PUBLISHED else 0
    batch.counters.append(
        ReportCounters(report_id=report_id, views=views, downloads=views // rng.randrange(4, 20))
    )


def _metadata(rng: random.Random, status: ReportStatus) -> dict[str, Any]:
    metadata: dict[str, Any] = {"language": rng.choice(("en", "en", "en", "de", "fr", "ja"))}
    if rng.random() < 0.5:
        metadata["funding"] = {
            "agency": rng.choice(("ERC", "NSF", "JSPS", "NWO", "DFG")),
            "grant": f"G-{rng.randrange(100000, 999999)}",
        }
    if status is ReportStatus.PUBLISHED and rng.random() < 0.4:
        metadata["venue"] = {"name": rng.choice(VENUES), "year": rng.randrange(2012, 2027)}
    if rng.random() < 0.3:
        metadata["artifacts"] = {"code": rng.random() < 0.7, "data": rng.random() < 0.5}
    metadata["pages"] = rng.randrange(4, 120)
    return metadata


async def seed(
    connections: Connections, *, reports: int, random_seed: int = 1, progress: bool = True
) -> dict[str, int]:
    """Write the demo catalogue; returns how many of each thing it wrote."""
    rng = random.Random(random_seed)
    plan = SeedPlan.for_reports(reports)
    institutions = _institutions(rng, plan.institutions)
    authors = _authors(rng, plan.authors, plan.institutions)
    types = [
        {"id": index + 1, "name": name, "description": description}
        for index, (name, description) in enumerate(REPORT_TYPES)
    ]
    technologies = _technologies()
    async with connections.engine.begin() as connection:
        for model, rows in (
            (Institution, institutions),
            (ReportType, types),
            (Technology, technologies),
        ):
            await catalogue.upsert_entities(connection=connection, model=model, rows=rows)
        for chunk in _chunks(authors, BATCH_SIZE):
            await catalogue.upsert_entities(connection=connection, model=Author, rows=chunk)

    counts = {"reports": 0, "authorships": 0, "documents": 0}
    with tqdm(total=reports, unit="report", disable=not progress, desc="seeding") as bar:
        for batch in _report_batches(rng, reports, plan, len(technologies)):
            # Each store's write ends before a failure of another's is raised: left running,
            # a relational write would hold its connection past the pool's disposal, and
            # leave it open for the garbage collector.
            outcomes = await asyncio.gather(
                _write_relational(connections, batch),
                replace_documents(database=connections.documents, documents=batch.documents),
                set_report_counters(redis=connections.redis, counters=batch.counters),
                return_exceptions=True,
            )
            failure = next((each for each in outcomes if isinstance(each, BaseException)), None)
            if failure is not None:
                raise failure
            counts["reports"] += len(batch.reports)
            counts["authorships"] += len(batch.authorships)
            counts["documents"] += len(batch.documents)
            bar.update(len(batch.reports))

    async with connections.engine.begin() as connection:
        await catalogue.advance_id_sequences(
            connection=connection, models=(Institution, Author, ReportType, Technology, Report)
        )
    await snapshot_counters(redis=connections.redis, engine=connections.engine)
    return {
        "institutions": len(institutions),
        "authors": len(authors),
        "report types": len(types),
        "technologies": len(technologies),
        **counts,
    }


async def _write_relational(connections: Connections, batch: ReportBatch) -> None:
    async with connections.engine.begin() as connection:
        await catalogue.replace_reports(
            connection=connection,
            reports=batch.reports,
            authorships=batch.authorships,
            technologies=batch.technologies,
        )


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
