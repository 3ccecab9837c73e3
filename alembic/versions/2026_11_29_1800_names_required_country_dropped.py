"""authors' names required and their full name computed; institutions' country dropped

The second of the two steps of revision 0007: apply it once no gateway older than 0007
serves, since those read and write the columns this one replaces.

- Rows that such gateways wrote after 0007 (the full name or country alone) are split
  and copied as 0007 did, then ``first_name`` and ``last_name`` become required.
- ``authors.name`` becomes a column the database computes from the two names (the first
  name, a space, the last; the last alone when the first is empty): it still orders the
  authors, and no writer can make it disagree with them. PostgreSQL rewrites the table to
  add it, under a lock held for as long as that takes (milliseconds for thousands of
  authors).
- ``institutions.country`` is dropped; ``location`` holds it.

The downgrade puts back a full name that gateways write and the country, from the names
and the location.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

first_name = sa.column("first_name", sa.String)
last_name = sa.column("last_name", sa.String)
# String concatenation, which each dialect spells its own way (``||``, ``concat``).
FULL_NAME = sa.case((first_name == "", last_name), else_=first_name + " " + last_name)

authors = sa.table(
    "authors",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("first_name", sa.String),
    sa.column("last_name", sa.String),
)
institutions = sa.table(
    "institutions", sa.column("country", sa.String), sa.column("location", sa.String)
)


def split_name(name: str) -> tuple[str, str]:
    given, _, family = name.strip().partition(" ")
    return (given, family.strip()) if family.strip() else ("", given)


def upgrade() -> None:
    connection = op.get_bind()
    unsplit = connection.execute(
        sa.select(authors.c.id, authors.c.name).where(
            authors.c.first_name.is_(None) | authors.c.last_name.is_(None)
        )
    ).all()
    if unsplit:
        connection.execute(
            authors.update()
            .where(authors.c.id == sa.bindparam("author_id"))
            .values(first_name=sa.bindparam("given"), last_name=sa.bindparam("family")),
            [
                {"author_id": id_, "given": given, "family": family}
                for id_, (given, family) in ((id_, split_name(name)) for id_, name in unsplit)
            ],
        )
    # In a batch: the same ALTERs on a server that has them, the table copied anew on
    # SQLite, which cannot make a column required or add a stored generated column.
    with op.batch_alter_table("authors") as authors_table:
        authors_table.alter_column("first_name", existing_type=sa.String(200), nullable=False)
        authors_table.alter_column("last_name", existing_type=sa.String(200), nullable=False)
        authors_table.drop_column("name")
        authors_table.add_column(
            sa.Column("name", sa.String(401), sa.Computed(FULL_NAME, persisted=True))
        )
    op.execute(
        institutions.update()
        .where(institutions.c.location.is_(None))
        .values(location=institutions.c.country)
    )
    op.drop_column("institutions", "country")


def downgrade() -> None:
    op.add_column("institutions", sa.Column("country", sa.String(length=100), nullable=True))
    op.execute(
        institutions.update().values(country=sa.func.substr(institutions.c.location, 1, 100))
    )
    op.alter_column(
        "authors", "name", new_column_name="computed_name", existing_type=sa.String(401)
    )
    op.add_column("authors", sa.Column("name", sa.String(length=200), nullable=True))
    renamed = sa.table("authors", sa.column("name", sa.String), sa.column("computed_name"))
    op.execute(renamed.update().values(name=sa.func.substr(renamed.c.computed_name, 1, 200)))
    with op.batch_alter_table("authors") as authors_table:
        authors_table.drop_column("computed_name")
        authors_table.alter_column("name", existing_type=sa.String(200), nullable=False)
        authors_table.alter_column("last_name", existing_type=sa.String(200), nullable=True)
        authors_table.alter_column("first_name", existing_type=sa.String(200), nullable=True)
