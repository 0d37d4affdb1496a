"""The OAuth tables (auth.md "Data": oauth_identities, oauth_flows)."""

from __future__ import annotations

import sqlalchemy as sa

from server.db import UTCDateTime, metadata

oauth_identities = sa.Table(
    "oauth_identities",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(128), nullable=False),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("email", sa.String(254), nullable=True),
    sa.Column("avatar_url", sa.String(512), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_login_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("provider", "subject"),
    sa.UniqueConstraint("user_id", "provider"),
)

oauth_flows = sa.Table(
    "oauth_flows",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("state_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("intent", sa.String(8), nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=True),
    sa.Column("session_id", sa.BigInteger, nullable=True),
    sa.Column("redirect_uri", sa.String(512), nullable=False),
    sa.Column("client_state", sa.String(256), nullable=True),
    sa.Column("client_code_challenge", sa.String(128), nullable=False),
    sa.Column("provider_code_verifier", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
    sa.Column("callback_at", UTCDateTime, nullable=True),
    sa.Column("result_code_hash", sa.LargeBinary(32), nullable=True, unique=True),
    sa.Column("result_expires_at", UTCDateTime, nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("consumed_at", UTCDateTime, nullable=True),
)
