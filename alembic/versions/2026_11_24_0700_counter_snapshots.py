"""counter snapshots: live counters copied from Redis, to order reports by views in SQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "report_counter_snapshots",
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("views", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("downloads", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "captured_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_report_counter_snapshots_report_id_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_report_counter_snapshots")),
    )
    op.create_index(
        "ix_report_counter_snapshots_views", "report_counter_snapshots", ["views", "report_id"]
    )


def downgrade() -> None:
    op.drop_table("report_counter_snapshots")
