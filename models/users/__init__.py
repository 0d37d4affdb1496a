"""Users: the account row every domain points at, usernames, display names, and the
compact shapes other groups embed (users.md).

Auth columns (email, password) are written only by models.auth; admin columns (role, bans,
mutes) only by the admin domain. Username claims are decided by the unique index on
`username_lower`: two concurrent claims, one winner (R1).

The package's modules: `profiles` (what others see: cards, profiles, R3, USER_UPDATE),
`search` (U3, R7), `edits` (U5), `me` (U4), `deletion` (U8, U9, the R9 worker). Privacy,
settings and exports live in models.privacy, models.user_settings and models.exports.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta

import msgspec
import sqlalchemy as sa

from server.db import Database, UTCDateTime, metadata
from server.errors import ApiError, Code, FieldError

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_]{3,32}$")
RESERVED_USERNAMES = frozenset(
    {
        "admin",
        "administrator",
        "anilay",
        "support",
        "system",
        "moderator",
        "staff",
        "root",
        "me",
        "api",
        "null",
        "deleted",
        "bot",
    }
)
USERNAME_COOLDOWN = timedelta(days=30)
USERNAME_HOLD = timedelta(days=30)
DISPLAY_NAME_MAX = 64
# Bidi overrides and isolates, and zero-width characters (R2).
_FORBIDDEN_IN_DISPLAY = re.compile("[\u202a-\u202e\u2066-\u2069\u200b-\u200f\u2060\ufeff]")

ROLES = ("user", "moderator", "admin")
STAFF_ROLES = ("moderator", "admin")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("username", sa.String(32), nullable=False),
    sa.Column("username_lower", sa.String(32), nullable=False, unique=True),
    sa.Column("username_changed_at", UTCDateTime, nullable=True),
    sa.Column("username_generated", sa.Boolean, nullable=False, default=False),
    sa.Column("display_name", sa.String(64), nullable=True),
    sa.Column("display_name_lower", sa.String(64), nullable=True),
    sa.Column("bio", sa.Text, nullable=True),
    sa.Column("location", sa.String(64), nullable=True),
    sa.Column("website", sa.String(200), nullable=True),
    sa.Column("custom_avatar_url", sa.String(512), nullable=True),
    sa.Column("email", sa.String(254), nullable=True),
    sa.Column("email_lower", sa.String(254), nullable=True, unique=True),
    sa.Column("email_verified_at", UTCDateTime, nullable=True),
    sa.Column("password_hash", sa.String(256), nullable=True),
    sa.Column("password_changed_at", UTCDateTime, nullable=True),
    sa.Column("role", sa.String(12), nullable=False, default="user"),
    sa.Column("status", sa.String(20), nullable=False, default="active", index=True),
    sa.Column("banned_until", UTCDateTime, nullable=True),
    sa.Column("ban_reason", sa.String(500), nullable=True),
    sa.Column("muted_until", UTCDateTime, nullable=True),
    sa.Column("mute_reason", sa.String(500), nullable=True),
    sa.Column("locale", sa.String(2), nullable=False, default="ru"),
    sa.Column("deletion_requested_at", UTCDateTime, nullable=True),
    sa.Column("deletion_scheduled_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_active_at", UTCDateTime, nullable=True),
    # Prefix search (R7) compares byte-wise ranges: on PostgreSQL the pattern operator class
    # serves them under any database collation; on SQLite these are plain (BINARY) indexes.
    sa.Index(
        "ix_users_username_lower_prefix",
        "username_lower",
        postgresql_ops={"username_lower": "text_pattern_ops"},
    ),
    sa.Index(
        "ix_users_display_name_lower",
        "display_name_lower",
        postgresql_ops={"display_name_lower": "text_pattern_ops"},
    ),
)

username_reservations = sa.Table(
    "username_reservations",
    metadata,
    sa.Column("username_lower", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.BigInteger, nullable=True),  # null: nobody may take it
    sa.Column("reserved_until", UTCDateTime, nullable=False),
    sa.Index("ix_username_reservations_reserved_until", "reserved_until"),  # the purge
    sa.Index("ix_username_reservations_user_id", "user_id"),  # holds of a deleted user
)


class UserSummary(msgspec.Struct):
    """The compact user every group embeds (users.md "Shapes")."""

    id: str
    username: str
    display_name: str | None
    avatar_url: str | None


def summary_of(row: dict) -> UserSummary:
    return UserSummary(
        id=str(row["id"]),
        username=row["username"],
        display_name=row["display_name"],
        avatar_url=row.get("custom_avatar_url"),
    )


def username_problem(username: str) -> str | None:
    """Why a username cannot be used ("invalid", "reserved"), or None (R1)."""
    if not USERNAME_PATTERN.match(username) or not any(c.isalpha() for c in username):
        return "invalid"
    lower = username.lower()
    if lower in RESERVED_USERNAMES or lower.startswith("deleted_"):
        return "reserved"
    return None


def check_username(username: str, field: str = "username") -> str:
    problem = username_problem(username)
    if problem == "invalid":
        raise ApiError(
            Code.validation_failed,
            "Usernames are 3-32 letters, digits or underscores, with at least one letter",
            errors=[FieldError(field, "3-32 of A-Z a-z 0-9 _, at least one letter")],
        )
    if problem == "reserved":
        raise ApiError(Code.username_reserved, "That username is reserved")
    return username


def check_display_name(value: str, field: str = "display_name") -> str:
    """NFC, trimmed, 1..64 code points, no control, bidi or zero-width characters (R2)."""
    text = unicodedata.normalize("NFC", value).strip()
    if not 1 <= len(text) <= DISPLAY_NAME_MAX:
        raise ApiError(
            Code.validation_failed,
            "Display names are 1-64 characters",
            errors=[FieldError(field, "1-64 characters")],
        )
    if _FORBIDDEN_IN_DISPLAY.search(text) or any(
        unicodedata.category(c) in ("Cc", "Cf") for c in text
    ):
        raise ApiError(
            Code.validation_failed,
            "Display names cannot hold control characters",
            errors=[FieldError(field, "control, bidi or zero-width characters")],
        )
    return text


async def username_claimable(db: Database, username: str, user_id: int | None = None) -> bool:
    """Free among current usernames and live reservations (a user may take back their own)."""
    lower = username.lower()
    now = datetime.now(UTC)
    taken = await db.fetch_one(sa.select(users.c.id).where(users.c.username_lower == lower))
    if taken is not None and taken["id"] != user_id:
        return False
    hold = await db.fetch_one(
        sa.select(username_reservations).where(
            username_reservations.c.username_lower == lower,
            username_reservations.c.reserved_until > now,
        )
    )
    return hold is None or (user_id is not None and hold["user_id"] == user_id)


async def get_user(db: Database, user_id: int) -> dict | None:
    return await db.fetch_one(sa.select(users).where(users.c.id == user_id))


async def get_user_by_login(db: Database, login: str) -> dict | None:
    """By email when the login contains "@", else by username; case-insensitive."""
    column = users.c.email_lower if "@" in login else users.c.username_lower
    return await db.fetch_one(sa.select(users).where(column == login.lower()))


def is_banned(row: dict, now: datetime | None = None) -> bool:
    until = row.get("banned_until")
    return until is not None and until > (now or datetime.now(UTC))


async def get_user_by_username(db: Database, username: str) -> dict | None:
    """By current username, case-insensitively (U2); names that cannot exist find nothing."""
    if not 1 <= len(username) <= 32:
        return None
    return await db.fetch_one(sa.select(users).where(users.c.username_lower == username.lower()))
