"""The api_keys table and the group's limits (auth.md Data, R21-R25)."""

from __future__ import annotations

import re
from typing import Literal

import sqlalchemy as sa

from server.db import UTCDateTime, metadata

# --- constants from the spec ---------------------------------------------------------------

SCOPES = (
    "profile:read",
    "list:read",
    "list:write",
    "collections:read",
    "collections:write",
    "comments:write",
    "game:read",
    "servers:read",
    "servers:write",
    "messages:content",
    "presence:read",
    "parties:read",
)
"""The R23 catalog, in the order keys list them."""

KEY_LIMIT = 10  # non-revoked keys per user (R24)
MAX_SCOPES = 20
NAME_MAX = 64
CREATE_RATE = "10/day"  # per user (K2)
ROTATE_RATE = "10/hour"  # per key (K5)
REQUEST_RATE = "120/minute"  # per key, a bucket separate from the owner's (R24)
STATE_TTL_S = 60  # shared cache of key state, as for sessions (R2, R25)
TOUCH_EVERY_S = 60  # last_used_at / last_used_ip at most once a minute (R24)
MAX_GRACE_S = 86_400
SWEEP_EVERY_S = 30.0  # expiry and end of rotation grace (R25)
KEY_PREFIX = "anl_"
PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
KEY_PATTERN = re.compile(r"^anl_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
CREATE_ATTEMPTS = 12

RevokeReason = Literal["revoked", "rotated", "expired", "owner_deleted"]

# --- table ---------------------------------------------------------------------------------

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("name", sa.String(NAME_MAX), nullable=False),
    sa.Column("prefix", sa.CHAR(8), nullable=False, unique=True),
    # Which of the owner's KEY_LIMIT places the key holds while not revoked (0..9).
    sa.Column("slot", sa.SmallInteger, nullable=False),
    sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("prev_secret_hash", sa.LargeBinary(32), nullable=True),
    sa.Column("prev_valid_until", UTCDateTime, nullable=True, index=True),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True, index=True),
    sa.Column("rotated_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("last_used_ip", sa.String(45), nullable=True),
)
LIVE_ROWS = sa.text("revoked_at IS NULL")
sa.Index(
    "uq_api_keys_user_id_lower_name",
    api_keys.c.user_id,
    sa.func.lower(api_keys.c.name),
    unique=True,
    postgresql_where=LIVE_ROWS,
    sqlite_where=LIVE_ROWS,
)
sa.Index(
    "uq_api_keys_user_id_slot",
    api_keys.c.user_id,
    api_keys.c.slot,
    unique=True,
    postgresql_where=LIVE_ROWS,
    sqlite_where=LIVE_ROWS,
)
