"""report order indexes: a page of reports in any stored ordering is an index scan

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The earliest date, as each backend writes it (SQLite keeps dates as ISO text).
EARLIEST_DATE = {"sqlite": "'0001-01-01'"}


def upgrade() -> None:
    backend = op.get_bind().dialect.name
    # MariaDB indexes no expression: there, ordering by publication date sorts.
    if backend != "mysql":
        earliest = EARLIEST_DATE.get(backend, "DATE '0001-01-01'")
        op.create_index(
            "ix_reports_publication_order",
            "reports",
            [sa.text(f"coalesce(publication_date, {earliest})"), sa.text("id")],
        )
    op.create_index("ix_reports_title_order", "reports", ["title", "id"])
    op.create_index("ix_reports_word_count_order", "reports", ["word_count", "id"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "mysql":
        op.drop_index("ix_reports_publication_order", table_name="reports")
    op.drop_index("ix_reports_word_count_order", table_name="reports")
    op.drop_index("ix_reports_title_order", table_name="reports")
