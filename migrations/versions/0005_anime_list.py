"""anime list: entries, history, imports, L5 idempotency keys (anime.md §2)

Revision ID: 0005_anime_list
Revises: 0004_catalog
Create Date: 2026-11-28 19:03:09.044331
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db


revision: str = "0005_anime_list"
down_revision: str | None = "0004_catalog"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "anime_list_entry",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("anime_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("episodes", sa.SmallInteger(), nullable=False),
        sa.Column("rewatches", sa.SmallInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("started_on", sa.Date(), nullable=True),
        sa.Column("completed_on", sa.Date(), nullable=True),
        sa.Column("rev", sa.BigInteger(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["anime_id"], ["anime.id"], name=op.f("fk_anime_list_entry_anime_id_anime")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anime_list_entry")),
        sa.UniqueConstraint(
            "user_id", "anime_id", name=op.f("uq_anime_list_entry_user_id_anime_id")
        ),
    )
    with op.batch_alter_table("anime_list_entry", schema=None) as batch_op:
        batch_op.create_index(
            "ix_anime_list_entry_anime_id_status", ["anime_id", "status"], unique=False
        )
        batch_op.create_index(
            "ix_anime_list_entry_user_id_episodes_id",
            ["user_id", sa.literal_column("episodes DESC"), sa.literal_column("id DESC")],
            unique=False,
        )
        batch_op.create_index(
            "ix_anime_list_entry_user_id_id",
            ["user_id", sa.literal_column("id DESC")],
            unique=False,
        )
        batch_op.create_index(
            "ix_anime_list_entry_user_id_rev",
            ["user_id", sa.literal_column("rev DESC")],
            unique=False,
        )
        batch_op.create_index(
            "ix_anime_list_entry_user_id_score_id",
            ["user_id", sa.literal_column("score DESC"), sa.literal_column("id DESC")],
            unique=False,
        )
        batch_op.create_index(
            "ix_anime_list_entry_user_id_status_rev",
            ["user_id", "status", sa.literal_column("rev DESC")],
            unique=False,
        )

    op.create_table(
        "anime_list_history",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("anime_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anime_list_history")),
    )
    with op.batch_alter_table("anime_list_history", schema=None) as batch_op:
        batch_op.create_index(
            "ix_anime_list_history_user_id_anime_id_id",
            ["user_id", "anime_id", sa.literal_column("id DESC")],
            unique=False,
        )
        batch_op.create_index(
            "ix_anime_list_history_user_id_id",
            ["user_id", sa.literal_column("id DESC")],
            unique=False,
        )

    op.create_table(
        "anime_list_import",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("entries", sa.JSON(), nullable=True),
        sa.Column("applied", sa.Integer(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anime_list_import")),
    )
    with op.batch_alter_table("anime_list_import", schema=None) as batch_op:
        batch_op.create_index(
            "ix_anime_list_import_user_id_id",
            ["user_id", sa.literal_column("id DESC")],
            unique=False,
        )
        batch_op.create_index(
            "uq_anime_list_import_user_id_in_progress",
            ["user_id"],
            unique=True,
            postgresql_where=sa.text("state IN ('queued', 'running')"),
            sqlite_where=sa.text("state IN ('queued', 'running')"),
        )

    op.create_table(
        "anime_list_idempotency",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request", sa.String(length=64), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_anime_list_idempotency")),
    )
    with op.batch_alter_table("anime_list_idempotency", schema=None) as batch_op:
        batch_op.create_index(
            "ix_anime_list_idempotency_created_at", ["created_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("anime_list_idempotency")
    op.drop_table("anime_list_import")
    op.drop_table("anime_list_history")
    op.drop_table("anime_list_entry")
