"""initial schema: the report catalogue

Revision ID: 0001
Revises:
Create Date: 2026-11-24 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)
        for name in ("created_at", "updated_at")
    ]


def upgrade() -> None:
    op.create_table(
        "institutions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("country", sa.String(length=100), nullable=True),
        sa.Column("website", sa.String(length=500), nullable=True),
        *timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_institutions")),
        sa.UniqueConstraint("name", name=op.f("uq_institutions_name")),
    )
    op.create_table(
        "report_types",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_types")),
        sa.UniqueConstraint("name", name=op.f("uq_report_types_name")),
    )
    op.create_table(
        "technologies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("technology_type", sa.String(length=50), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_technologies")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_technologies_name_version")),
    )
    op.create_index(op.f("ix_technologies_name"), "technologies", ["name"])
    op.create_table(
        "authors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=True),
        sa.Column("orcid", sa.String(length=19), nullable=True),
        *timestamps(),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_authors_institution_id_institutions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authors")),
        # The unique constraint's index is the index on authors.email.
        sa.UniqueConstraint("email", name=op.f("uq_authors_email")),
    )
    op.create_index(op.f("ix_authors_institution_id"), "authors", ["institution_id"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("abstract", sa.Text(), nullable=True),
        sa.Column("publication_date", sa.Date(), nullable=True),
        sa.Column("report_type_id", sa.Integer(), nullable=False),
        sa.Column("word_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "status", sa.String(length=20), server_default=sa.text("'Draft'"), nullable=False
        ),
        *timestamps(),
        sa.CheckConstraint(
            "status IN ('Draft', 'Review', 'Published', 'Archived')",
            name=op.f("ck_reports_status_known"),
        ),
        sa.CheckConstraint("word_count >= 0", name=op.f("ck_reports_word_count_not_negative")),
        sa.ForeignKeyConstraint(
            ["report_type_id"],
            ["report_types.id"],
            name=op.f("fk_reports_report_type_id_report_types"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
    )
    op.create_index(op.f("ix_reports_publication_date"), "reports", ["publication_date"])
    op.create_index(op.f("ix_reports_report_type_id"), "reports", ["report_type_id"])
    # SQLite searches through an FTS5 table of its own instead (revision 0009).
    if op.get_bind().dialect.name == "postgresql":
        _create_search_index()
    op.create_table(
        "report_authors",
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column(
            "is_primary_author", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("position", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["authors.id"],
            name=op.f("fk_report_authors_author_id_authors"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_report_authors_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", "author_id", name=op.f("pk_report_authors")),
    )
    op.create_index(op.f("ix_report_authors_author_id"), "report_authors", ["author_id"])
    if op.get_bind().dialect.name == "mysql":
        # No partial index: a unique index on a column that holds the report's id only
        # on its primary author's row (NULLs never collide).
        op.add_column(
            "report_authors",
            sa.Column(
                "primary_report_id",
                sa.Integer(),
                sa.Computed("IF(is_primary_author, report_id, NULL)", persisted=True),
            ),
        )
        op.create_index(
            "uq_report_authors_one_primary", "report_authors", ["primary_report_id"], unique=True
        )
    else:
        op.create_index(
            "uq_report_authors_one_primary",
            "report_authors",
            ["report_id"],
            unique=True,
            postgresql_where=sa.text("is_primary_author"),
            sqlite_where=sa.text("is_primary_author"),
        )
    op.create_table(
        "report_technologies",
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("technology_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_report_technologies_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["technology_id"],
            ["technologies.id"],
            name=op.f("fk_report_technologies_technology_id_technologies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", "technology_id", name=op.f("pk_report_technologies")),
    )
    op.create_index(
        op.f("ix_report_technologies_technology_id"), "report_technologies", ["technology_id"]
    )


def _create_search_index() -> None:
    op.create_index(
        "ix_reports_search",
        "reports",
        [
            sa.text(
                "to_tsvector('english'::regconfig, "
                "coalesce(title, '') || ' ' || coalesce(abstract, ''))"
            )
        ],
        postgresql_using="gin",
    )


def downgrade() -> None:
    op.drop_table("report_technologies")
    op.drop_table("report_authors")
    op.drop_table("reports")
    op.drop_table("authors")
    op.drop_table("technologies")
    op.drop_table("report_types")
    op.drop_table("institutions")
