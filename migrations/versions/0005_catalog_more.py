"""catalog search and name-order indexes

Revision ID: 0005_catalog_more
Revises: 0004_catalog
Create Date: 2026-11-28 19:10:00

PostgreSQL gets a trigram GIN index on `anime.search_text` (anime.md §1 Data, R3), which
needs the `pg_trgm` extension. It ships with PostgreSQL's contrib package and is a trusted
extension (PostgreSQL 13+), so a database owner may create it. Where it is not installed
at all, the index falls back to a plain B-tree: search still works (a LIKE scan), it is
only slower on a large catalog.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_catalog_more"
down_revision: str | None = "0004_catalog"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_pg_trgm(bind) -> bool:
    row = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    ).first()
    return row is not None


def upgrade() -> None:
    bind = op.get_bind()
    op.create_index(
        "ix_anime_name_lower_id", "anime", [sa.text("lower(name)"), "id"], unique=False
    )
    if bind.dialect.name == "postgresql":
        if _has_pg_trgm(bind):
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            op.create_index(
                "ix_anime_search_text",
                "anime",
                ["search_text"],
                unique=False,
                postgresql_using="gin",
                postgresql_ops={"search_text": "gin_trgm_ops"},
            )
        else:
            op.create_index("ix_anime_search_text", "anime", ["search_text"], unique=False)
    else:
        op.create_index("ix_anime_search_text", "anime", ["search_text"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_anime_search_text", table_name="anime")
    op.drop_index("ix_anime_name_lower_id", table_name="anime")
