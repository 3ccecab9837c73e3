"""authors' first and last names, institutions' location: added beside what they replace

The first of the two steps that move the catalogue to its reference schema without
stopping it. This one only adds: ``authors.first_name`` and ``last_name`` and
``institutions.location``, nullable, filled from ``authors.name`` and
``institutions.country`` in batches (no long lock on either table). Gateways of the
previous release go on reading and writing ``name`` and ``country``; this release writes
both the old columns and the new. Revision 0008 then makes the new ones required and
drops ``country``, once no gateway of the previous release runs.

A full name is split at its first space: the given name before, the family name after
("Jean de la Fontaine": "Jean", "de la Fontaine"). A single word is a family name with
an empty given name.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows updated by one statement of the backfill.
BATCH = 1000

authors = sa.table(
    "authors",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("first_name", sa.String),
    sa.column("last_name", sa.String),
)
institutions = sa.table(
    "institutions",
    sa.column("id", sa.Integer),
    sa.column("country", sa.String),
    sa.column("location", sa.String),
)


def split_name(name: str) -> tuple[str, str]:
    given, _, family = name.strip().partition(" ")
    return (given, family.strip()) if family.strip() else ("", given)


def upgrade() -> None:
    op.add_column("authors", sa.Column("first_name", sa.String(length=200), nullable=True))
    op.add_column("authors", sa.Column("last_name", sa.String(length=200), nullable=True))
    op.add_column("institutions", sa.Column("location", sa.String(length=200), nullable=True))
    connection = op.get_bind()
    after = 0
    while rows := connection.execute(
        sa.select(authors.c.id, authors.c.name)
        .where(authors.c.id > after)
        .order_by(authors.c.id)
        .limit(BATCH)
    ).all():
        names = [(id_, *split_name(name)) for id_, name in rows]
        connection.execute(
            authors.update()
            .where(authors.c.id == sa.bindparam("author_id"))
            .values(first_name=sa.bindparam("given"), last_name=sa.bindparam("family")),
            [{"author_id": id_, "given": given, "family": family} for id_, given, family in names],
        )
        after = rows[-1][0]
    op.execute(institutions.update().values(location=institutions.c.country))


def downgrade() -> None:
    op.drop_column("institutions", "location")
    op.drop_column("authors", "last_name")
    op.drop_column("authors", "first_name")
