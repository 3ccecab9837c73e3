"""The relational schema of the report catalogue, as Alembic's migrations build it."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    Computed,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    column,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from datasources.names import full_name_of
from datasources.portable_sql import UtcDateTime, publication_sort_key
from datasources.postgres_dialect import search_index

# The range of the integer columns (keys, word counts, counters): 32 bits on every
# backend. A value past it that a client sends (an id, a cursor) names no row, and a
# statement given it fails in the driver.
SMALLEST_INTEGER, LARGEST_INTEGER = -(2**31), 2**31 - 1

# Stable constraint names, so migrations can name what they alter or drop.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class ReportStatus(StrEnum):
    DRAFT = "Draft"
    REVIEW = "Review"
    PUBLISHED = "Published"
    ARCHIVED = "Archived"


STATUS_VALUES = ", ".join(f"'{status.value}'" for status in ReportStatus)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), server_default=func.now(), onupdate=func.now()
    )


class Institution(Timestamped, Base):
    __tablename__ = "institutions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300), unique=True)
    website: Mapped[str | None] = mapped_column(String(500))
    location: Mapped[str | None] = mapped_column(String(200))


class Author(Timestamped, Base):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    institution_id: Mapped[int | None] = mapped_column(
        ForeignKey("institutions.id", ondelete="SET NULL"), index=True
    )
    orcid: Mapped[str | None] = mapped_column(String(19))
    first_name: Mapped[str] = mapped_column(String(200))
    last_name: Mapped[str] = mapped_column(String(200))
    # Computed by the database from the two names: it orders the authors, and no writer can
    # make it disagree with them.
    name: Mapped[str] = mapped_column(
        String(401),
        Computed(
            full_name_of(column("first_name", String), column("last_name", String)),
            persisted=True,
        ),
    )


class ReportType(Base):
    __tablename__ = "report_types"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)


class Report(Timestamped, Base):
    __tablename__ = "reports"
    __table_args__ = (
        CheckConstraint("word_count >= 0", name="word_count_not_negative"),
        CheckConstraint(f"status IN ({STATUS_VALUES})", name="status_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    abstract: Mapped[str | None] = mapped_column(Text)
    publication_date: Mapped[date | None] = mapped_column(Date, index=True)
    report_type_id: Mapped[int] = mapped_column(
        ForeignKey("report_types.id", ondelete="RESTRICT"), index=True
    )
    word_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    status: Mapped[str] = mapped_column(
        String(20), server_default=text(f"'{ReportStatus.DRAFT.value}'")
    )


search_index("ix_reports_search", Report.__table__.c.title, Report.__table__.c.abstract)
# Pages are keysets over (sort value, id): with an index in that order, a page of reports is
# an index scan of its own rows instead of a sort of the whole table, in either direction.
Index(
    "ix_reports_publication_order",
    publication_sort_key(Report.__table__.c.publication_date),
    Report.__table__.c.id,
)
Index("ix_reports_title_order", Report.__table__.c.title, Report.__table__.c.id)
Index("ix_reports_word_count_order", Report.__table__.c.word_count, Report.__table__.c.id)


class ReportAuthor(Base):
    __tablename__ = "report_authors"
    __table_args__ = (
        # At most one primary author per report, enforced by the database.
        Index(
            "uq_report_authors_one_primary",
            "report_id",
            unique=True,
            postgresql_where=text("is_primary_author"),
            sqlite_where=text("is_primary_author"),
        ),
    )

    report_id: Mapped[int] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    author_id: Mapped[int] = mapped_column(
        ForeignKey("authors.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    is_primary_author: Mapped[bool] = mapped_column(server_default=text("false"))
    position: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class Technology(Base):
    __tablename__ = "technologies"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(Text)
    technology_type: Mapped[str] = mapped_column(String(50))


class ReportTechnology(Base):
    __tablename__ = "report_technologies"

    report_id: Mapped[int] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    technology_id: Mapped[int] = mapped_column(
        ForeignKey("technologies.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ReportCounterSnapshot(Base):
    """Redis's live counters as of ``captured_at``: what SQL can join and order by."""

    __tablename__ = "report_counter_snapshots"
    __table_args__ = (Index("ix_report_counter_snapshots_views", "views", "report_id"),)

    report_id: Mapped[int] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    views: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    downloads: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    captured_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())


class Role(StrEnum):
    READER = "reader"
    EDITOR = "editor"
    ADMIN = "admin"


ROLE_VALUES = ", ".join(f"'{role.value}'" for role in Role)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(f"role IN ({ROLE_VALUES})", name="role_known"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class IdempotencyKey(Base):
    """A client's key for a write, recorded in the write's own transaction: a retry finds it
    and gets the first result instead of writing again."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    operation: Mapped[str] = mapped_column(String(50))
    report_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())


class PersistedQuery(Base):
    """An operation of the allow-list (``gateway persisted add``), under the SHA-256 of its
    document: what a gateway that accepts only persisted queries serves."""

    __tablename__ = "persisted_queries"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    operation_name: Mapped[str | None] = mapped_column(String(200))
    added_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
