"""Turning a credential into an Identity, on every request (auth.md R1, R2, R9).

The signature is checked locally; then the session's state and the user's current role and
restrictions are read from the shared cache (≤ 60 s, dropped on every change) or the
database. Authorization therefore uses the role in the database, never the token's claim.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from starlette.requests import Request

from models.auth.sessions import session_cache_key
from models.auth.tables import auth_sessions
from models.users import users
from server.auth import Credentials, Identity, Resolver
from server.errors import ApiError, Code
from server.services import Services

STATE_TTL_S = 60
ACTIVE_WRITE_EVERY = timedelta(minutes=5)


class SessionState(msgspec.Struct, frozen=True):
    user_id: int
    revoked: bool
    expires_at: float
    authenticated_at: float


class UserState(msgspec.Struct, frozen=True):
    role: str
    status: str
    banned_until: float | None
    ban_reason: str | None
    muted_until: float | None


_encode = msgspec.msgpack.encode
_session_decoder = msgspec.msgpack.Decoder(SessionState)
_user_decoder = msgspec.msgpack.Decoder(UserState)


def user_cache_key(user_id: int) -> str:
    return f"auth:user:{user_id}"


def active_cache_key(user_id: int) -> str:
    """Present while a last_active_at write of the user's is less than 5 minutes old."""
    return f"auth:active:{user_id}"


async def forget_user_state(services: Services, user_id: int) -> None:
    """Call after changing a user's role, status, ban or mute: applies on the next request."""
    await services.cache.delete(user_cache_key(user_id))


async def session_state(services: Services, session_id: int) -> SessionState | None:
    cached = await services.cache.get(session_cache_key(session_id))
    return await _session_state(services, session_id, cached)


async def user_state(services: Services, user_id: int) -> UserState | None:
    cached = await services.cache.get(user_cache_key(user_id))
    return await _user_state(services, user_id, cached)


async def _session_state(
    services: Services, session_id: int, cached: bytes | None
) -> SessionState | None:
    """The cached state when there is one, else read from the database and cached."""
    if cached is not None:
        return _session_decoder.decode(cached)
    row = await services.db.fetch_one(
        sa.select(
            auth_sessions.c.user_id,
            auth_sessions.c.revoked_at,
            auth_sessions.c.expires_at,
            auth_sessions.c.authenticated_at,
        ).where(auth_sessions.c.id == session_id)
    )
    if row is None:
        return None
    state = SessionState(
        user_id=row["user_id"],
        revoked=row["revoked_at"] is not None,
        expires_at=row["expires_at"].timestamp(),
        authenticated_at=row["authenticated_at"].timestamp(),
    )
    await services.cache.set(session_cache_key(session_id), _encode(state), STATE_TTL_S)
    return state


async def _user_state(services: Services, user_id: int, cached: bytes | None) -> UserState | None:
    """The cached state when there is one, else read from the database and cached."""
    if cached is not None:
        return _user_decoder.decode(cached)
    row = await services.db.fetch_one(
        sa.select(
            users.c.role,
            users.c.status,
            users.c.banned_until,
            users.c.ban_reason,
            users.c.muted_until,
        ).where(users.c.id == user_id)
    )
    if row is None:
        return None
    state = UserState(
        role=row["role"],
        status=row["status"],
        banned_until=_ts(row["banned_until"]),
        ban_reason=row["ban_reason"],
        muted_until=_ts(row["muted_until"]),
    )
    await services.cache.set(user_cache_key(user_id), _encode(state), STATE_TTL_S)
    return state


async def identify_bearer(services: Services, token: str) -> Identity:
    claims = services.keys.verify(token)
    # Both states in one cache round trip: this runs on every request and socket connect.
    cached_session, cached_user = await services.cache.get_many(
        session_cache_key(claims.session_id), user_cache_key(claims.user_id)
    )
    session = await _session_state(services, claims.session_id, cached_session)
    now = datetime.now(UTC).timestamp()
    if (
        session is None
        or session.revoked
        or session.expires_at <= now
        or session.user_id != claims.user_id
    ):
        raise _session_revoked()
    user = await _user_state(services, claims.user_id, cached_user)
    if user is None or user.status == "deleted":
        raise _session_revoked()
    await touch_last_active(services, claims.user_id)
    return Identity(
        kind="user",
        user_id=claims.user_id,
        role=user.role,
        status=user.status,
        session_id=claims.session_id,
        banned_until=_dt(user.banned_until),
        ban_reason=user.ban_reason,
        muted_until=_dt(user.muted_until),
        authenticated_at=_dt(session.authenticated_at),
    )


def make_resolver(services: Services) -> Resolver:
    async def resolve(credentials: Credentials, request: Request) -> Identity:
        scheme, value = credentials
        if scheme == "bearer":
            return await identify_bearer(services, value)
        from models.api_keys import identify_bot

        return await identify_bot(services, value, request)

    return resolve


async def touch_last_active(services: Services, user_id: int) -> None:
    """users.last_active_at (an authenticated request or a gateway heartbeat), written at
    most once per 5 minutes per user across every process."""
    window_s = ACTIVE_WRITE_EVERY.total_seconds()
    if await services.cache.add(active_cache_key(user_id), b"1", window_s):
        await services.db.execute(
            users.update().where(users.c.id == user_id).values(last_active_at=datetime.now(UTC))
        )


def _session_revoked() -> ApiError:
    return ApiError(
        Code.session_revoked,
        "This session has ended; sign in again",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def restrictions(row: dict[str, Any]) -> dict[str, Any]:
    from server.events import rfc3339

    now = datetime.now(UTC)
    banned = row["banned_until"] is not None and row["banned_until"] > now
    return {
        "banned": banned,
        "banned_until": rfc3339(row["banned_until"]) if banned else None,
        "ban_reason": row["ban_reason"] if banned else None,
        "muted_until": rfc3339(row["muted_until"])
        if row["muted_until"] and row["muted_until"] > now
        else None,
        "deletion_scheduled_at": rfc3339(row["deletion_scheduled_at"])
        if row["deletion_scheduled_at"]
        else None,
    }
