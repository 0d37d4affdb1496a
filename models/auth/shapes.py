"""The shapes auth answers with (auth.md "Endpoints"), shared by password and OAuth logins."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import sqlalchemy as sa

from models.users import users
from server.events import rfc3339
from server.services import Services
from server.tokens import ACCESS_TTL_S

REFRESH_TTL_S = 30 * 24 * 3600


class AccountUser(msgspec.Struct):
    id: str
    username: str
    display_name: str | None
    avatar_url: str | None
    email: str | None
    email_verified: bool
    role: str
    has_password: bool
    created_at: str


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    session_id: str
    user: AccountUser
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = ACCESS_TTL_S
    refresh_expires_in: int = REFRESH_TTL_S


class OAuthTokenPair(TokenPair, kw_only=True):
    created: bool


def account_user(row: dict[str, Any]) -> AccountUser:
    return AccountUser(
        id=str(row["id"]),
        username=row["username"],
        display_name=row["display_name"],
        avatar_url=row["custom_avatar_url"],
        email=row["email"],
        email_verified=row["email_verified_at"] is not None,
        role=row["role"],
        has_password=row["password_hash"] is not None,
        created_at=rfc3339(row["created_at"]),
    )


async def token_pair(
    services: Services, user_id: int, session_id: int, refresh_token: str
) -> TokenPair:
    """A fresh access token for the session, with the account as the database has it now."""
    row = await services.db.fetch_one(sa.select(users).where(users.c.id == user_id))
    assert row is not None
    return TokenPair(
        access_token=services.keys.issue(user_id, session_id, row["role"]),
        refresh_token=refresh_token,
        session_id=str(session_id),
        user=account_user(row),
    )
