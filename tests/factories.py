"""Small catalogues for the tests, written row by row through the gateway's own writes.

A test that needs data finds here what it is, instead of depending on what the demo
seeder happens to generate: the ids are the ones below, counted from 1 in a database of
the test's own, and the counters are small enough to overtake.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from core.connections import Connections
from datasources import catalogue
from datasources.counter_snapshots import snapshot_counters
from datasources.counters import ReportCounters, set_report_counters
from datasources.documents import replace_documents
from datasources.models import Author, Institution, Report, ReportStatus, ReportType, Technology

INSTITUTIONS = ("Institute of Systems", "School of Data", "Laboratory of Networks")
REPORT_TYPES = ("Technical Report", "Survey")
TECHNOLOGIES = (
    ("PostgreSQL", "18", "database"),
    ("MongoDB", "8.0", "database"),
    ("Redis", "8.0", "database"),
    ("Python", "3.13", "language"),
)
AUTHORS = (
    ("Ada", "Lovelace"),
    ("Alan", "Turing"),
    ("Grace", "Hopper"),
    ("Edsger", "Dijkstra"),
    ("Barbara", "Liskov"),
    ("Donald", "Knuth"),
)
# Report n has status STATUSES[n % 4]: every fourth one a draft, beginning with report 2.
STATUSES = (ReportStatus.PUBLISHED, ReportStatus.REVIEW, ReportStatus.DRAFT, ReportStatus.ARCHIVED)
FIRST_DATE = date(2024, 1, 1)


@dataclass(frozen=True)
class Catalogue:
    reports: int

    @property
    def report_ids(self) -> range:
        return range(1, self.reports + 1)

    def status_of(self, report_id: int) -> ReportStatus:
        return STATUSES[report_id % len(STATUSES)]

    def primary_author_of(self, report_id: int) -> int:
        return report_id % len(AUTHORS) + 1


async def make_catalogue(connections: Connections, reports: int = 20) -> Catalogue:
    """Institutions, authors, report types and technologies as listed above, and
    ``reports`` reports with two authors, a technology, a document and counters each:
    report n has been viewed n times and downloaded n // 2 times."""
    made = Catalogue(reports)
    async with connections.engine.begin() as connection:
        entities = (
            (Institution, [
                {"id": index, "name": name, "location": "Oslo, Norway",
                 "website": f"https://{index}.institution.example"}
                for index, name in enumerate(INSTITUTIONS, start=1)
            ]),
            (ReportType, [
                {"id": index, "name": name, "description": f"{name}s."}
                for index, name in enumerate(REPORT_TYPES, start=1)
            ]),
            (Technology, [
                {"id": index, "name": name, "version": version, "technology_type": kind}
                for index, (name, version, kind) in enumerate(TECHNOLOGIES, start=1)
            ]),
            (Author, [
                {"id": index, "first_name": first, "last_name": last,
                 "email": f"{first.lower()}.{last.lower()}@research.example",
                 "institution_id": index % len(INSTITUTIONS) + 1}
                for index, (first, last) in enumerate(AUTHORS, start=1)
            ]),
        )  # fmt: skip
        for model, rows in entities:
            await catalogue.upsert_entities(connection=connection, model=model, rows=rows)
        await catalogue.replace_reports(
            connection=connection,
            reports=[_report(made, report_id) for report_id in made.report_ids],
            authorships=[
                {"report_id": report_id, "author_id": author_id,
                 "is_primary_author": position == 0, "position": position}
                for report_id in made.report_ids
                for position, author_id in enumerate(
                    (made.primary_author_of(report_id), (report_id + 1) % len(AUTHORS) + 1)
                )
            ],
            technologies=[
                {"report_id": report_id, "technology_id": report_id % len(TECHNOLOGIES) + 1}
                for report_id in made.report_ids
            ],
        )  # fmt: skip
        await catalogue.advance_id_sequences(
            connection=connection, models=(Institution, Author, ReportType, Technology, Report)
        )
    await replace_documents(
        database=connections.documents,
        documents=[_document(report_id) for report_id in made.report_ids],
    )
    await set_report_counters(
        redis=connections.redis,
        counters=[
            ReportCounters(report_id=report_id, views=report_id, downloads=report_id // 2)
            for report_id in made.report_ids
        ],
    )
    await snapshot_counters(redis=connections.redis, engine=connections.engine)
    return made


def _report(made: Catalogue, report_id: int) -> dict[str, object]:
    status = made.status_of(report_id)
    published = FIRST_DATE + timedelta(days=7 * report_id)
    return {
        "id": report_id,
        "title": f"Report {report_id} on caching",
        "abstract": f"What report {report_id} found.",
        "publication_date": published if status is not ReportStatus.DRAFT else None,
        "report_type_id": report_id % len(REPORT_TYPES) + 1,
        "word_count": 1000 * report_id,
        "status": status.value,
    }


def _document(report_id: int) -> dict[str, object]:
    return {
        "_id": report_id,
        "sections": [{"heading": "Introduction", "body": f"Why report {report_id}."}],
        "tags": ["caching", f"tag-{report_id % 3}"],
        "references": [{"title": "A paper", "doi": f"10.1000/{report_id}"}],
        "metadata": {"pages": report_id},
        "revision": 1,
        "updated_at": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=report_id),
    }
