"""users: settings, privacy, data exports; search and reservation indexes

Revision ID: 0003_users
Revises: 0002
Create Date: 2026-11-28 19:00:00.000000

The prefix indexes use the pattern operator class on PostgreSQL, so the byte-wise range
comparisons of user search (`~>=~`, `~<~`) are served whatever the database collation; on
SQLite they are plain indexes (BINARY collation), which serve `>=`/`<` ranges directly.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db

revision: str = "0003_users"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IN_PROGRESS = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table(
        "user_settings",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("locale", sa.String(length=2), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("title_language", sa.String(length=8), nullable=False),
        sa.Column("autoplay_next", sa.Boolean(), nullable=False),
        sa.Column("email_prefs", sa.JSON(), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_settings")),
    )
    op.create_table(
        "user_privacy",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("profile_visibility", sa.String(length=8), nullable=False),
        sa.Column("list_visibility", sa.String(length=8), nullable=False),
        sa.Column("watch_invites_from", sa.String(length=8), nullable=False),
        sa.Column("friend_requests_from", sa.String(length=20), nullable=False),
        sa.Column("share_watching", sa.Boolean(), nullable=False),
        sa.Column("searchable", sa.Boolean(), nullable=False),
        sa.Column("dms_from", sa.String(length=8), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_privacy")),
    )
    op.create_table(
        "data_exports",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("storage_key", sa.String(length=256), nullable=True),
        sa.Column("error", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_exports")),
    )
    with op.batch_alter_table("data_exports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_data_exports_status_expires_at", ["status", "expires_at"], unique=False
        )
        batch_op.create_index(
            "ix_data_exports_user_id_created_at", ["user_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "uq_data_exports_user_id_in_progress",
            ["user_id"],
            unique=True,
            postgresql_where=IN_PROGRESS,
            sqlite_where=IN_PROGRESS,
        )
    with op.batch_alter_table("username_reservations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_username_reservations_reserved_until", ["reserved_until"], unique=False
        )
        batch_op.create_index("ix_username_reservations_user_id", ["user_id"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_display_name_lower")
        batch_op.create_index(
            "ix_users_display_name_lower",
            ["display_name_lower"],
            unique=False,
            postgresql_ops={"display_name_lower": "text_pattern_ops"},
        )
        batch_op.create_index(
            "ix_users_username_lower_prefix",
            ["username_lower"],
            unique=False,
            postgresql_ops={"username_lower": "text_pattern_ops"},
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_username_lower_prefix")
        batch_op.drop_index("ix_users_display_name_lower")
        batch_op.create_index("ix_users_display_name_lower", ["display_name_lower"], unique=False)
    with op.batch_alter_table("username_reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_username_reservations_user_id")
        batch_op.drop_index("ix_username_reservations_reserved_until")
    with op.batch_alter_table("data_exports", schema=None) as batch_op:
        batch_op.drop_index("uq_data_exports_user_id_in_progress")
        batch_op.drop_index("ix_data_exports_user_id_created_at")
        batch_op.drop_index("ix_data_exports_status_expires_at")
    op.drop_table("data_exports")
    op.drop_table("user_privacy")
    op.drop_table("user_settings")
