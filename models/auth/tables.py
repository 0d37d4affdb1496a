"""The auth group's tables (auth.md "Data")."""

from __future__ import annotations

import sqlalchemy as sa

from server.db import UTCDateTime, metadata

auth_sessions = sa.Table(
    "auth_sessions",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("client", sa.String(8), nullable=False),
    sa.Column("device_name", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(256), nullable=False),
    sa.Column("auth_method", sa.String(40), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=False),
    sa.Column("authenticated_at", UTCDateTime, nullable=False),
    sa.Column("last_ip", sa.String(45), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("revoke_reason", sa.String(24), nullable=True),
    sa.Index("ix_auth_sessions_user_id_revoked_at", "user_id", "revoked_at"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("session_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("issued_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("rotated_at", UTCDateTime, nullable=True),
    sa.Column("replaced_by", sa.BigInteger, nullable=True),
)

email_tokens = sa.Table(
    "email_tokens",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime, nullable=True),
    sa.Index("ix_email_tokens_user_id_purpose_used_at", "user_id", "purpose", "used_at"),
)
