"""full-text search on SQLite: an FTS5 table of the reports' titles and abstracts

PostgreSQL searches through its GIN index (revision 0001) and needs nothing here. On
SQLite, an FTS5 table indexes the reports' text, by report id, with Porter stemming
(English, as PostgreSQL's configuration); it holds no copy of the text (an external
content table), and triggers keep it in step with every insert, update and delete.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 19:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An external content table's rows are removed by giving it back the values it indexed.
FORGET = (
    "INSERT INTO reports_search(reports_search, rowid, title, abstract) "
    "VALUES ('delete', old.id, old.title, old.abstract);"
)
LEARN = (
    "INSERT INTO reports_search(rowid, title, abstract) VALUES (new.id, new.title, new.abstract);"
)
TRIGGERS = {
    "reports_search_insert": f"AFTER INSERT ON reports BEGIN {LEARN} END",
    "reports_search_delete": f"AFTER DELETE ON reports BEGIN {FORGET} END",
    "reports_search_update": (
        f"AFTER UPDATE OF title, abstract ON reports BEGIN {FORGET} {LEARN} END"
    ),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE VIRTUAL TABLE reports_search USING fts5(title, abstract, content='reports', "
        "content_rowid='id', tokenize='porter unicode61')"
    )
    for name, body in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute("INSERT INTO reports_search(reports_search) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
    op.execute("DROP TABLE reports_search")
