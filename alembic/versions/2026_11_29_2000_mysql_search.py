"""full-text search on MySQL and MariaDB: a FULLTEXT index on the reports' text

PostgreSQL searches through its GIN index (revision 0001), SQLite through its FTS5 table
(revision 0009). MySQL's searches are ``MATCH (title, abstract) AGAINST (…)``, which needs
a FULLTEXT index on exactly those columns; InnoDB keeps it in step by itself.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 20:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.create_index(
            "ix_reports_search", "reports", ["title", "abstract"], mysql_prefix="FULLTEXT"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.drop_index("ix_reports_search", table_name="reports")
