"""Sessions and refresh tokens: one session per login, one refresh-token family each.

A refresh rotates its token with a conditional update, so of two concurrent refreshes with
one token exactly one wins; presenting a rotated token is theft or a client bug, and ends
the session (auth.md R7). Every revocation drops the session's cached state before the
request returns and emits SESSION_REVOKED, which makes the gateway close its sockets (R2).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa

from models.auth.events import (
    SESSION_CREATE,
    SESSION_REVOKED,
    SessionCreate,
    SessionInfo,
    SessionRevoked,
)
from models.auth.tables import auth_sessions, refresh_tokens
from server.db import Transaction
from server.errors import ApiError, Code
from server.events import make_event, rfc3339
from server.ids import new_id
from server.secrets import random_token, sha256
from server.services import Services

REFRESH_TTL = timedelta(days=30)
SESSION_LIMIT = 50
REFRESH_PREFIX = "rt_"
CLIENTS = ("web", "ios", "android", "other")

# Other groups react to revocations inside the same transaction (push tokens bound to the
# session are deleted, auth.md R28). Each hook gets (services, user_id, session_ids).
RevokeHook = Callable[[Services, int, list[int]], Awaitable[None]]
SESSION_REVOKE_HOOKS: list[RevokeHook] = []


def session_cache_key(session_id: int) -> str:
    return f"auth:session:{session_id}"


def new_refresh_token() -> str:
    return REFRESH_PREFIX + random_token(32)


async def create_session(
    services: Services,
    tx: Transaction,
    *,
    user_id: int,
    client: str,
    device_name: str | None,
    user_agent: str,
    ip: str,
    auth_method: str,
) -> tuple[dict[str, Any], str]:
    """Open a session with its first refresh token; returns (session row, refresh token).

    Past SESSION_LIMIT active sessions, the least recently used ones are revoked (R10).
    """
    db = services.db
    now = datetime.now(UTC)
    session = {
        "id": new_id(),
        "user_id": user_id,
        "client": client if client in CLIENTS else "other",
        "device_name": device_name,
        "user_agent": user_agent[:256],
        "auth_method": auth_method,
        "created_at": now,
        "last_used_at": now,
        "authenticated_at": now,
        "last_ip": ip[:45],
        "expires_at": now + REFRESH_TTL,
        "revoked_at": None,
        "revoke_reason": None,
    }
    await db.execute(auth_sessions.insert().values(**session))
    token = new_refresh_token()
    await db.execute(
        refresh_tokens.insert().values(
            id=new_id(),
            session_id=session["id"],
            token_hash=sha256(token),
            issued_at=now,
            expires_at=now + REFRESH_TTL,
            rotated_at=None,
            replaced_by=None,
        )
    )
    overflow = await db.fetch_all(
        sa.select(auth_sessions.c.id)
        .where(
            auth_sessions.c.user_id == user_id,
            auth_sessions.c.revoked_at.is_(None),
            auth_sessions.c.expires_at > now,
        )
        .order_by(auth_sessions.c.last_used_at.desc(), auth_sessions.c.id.desc())
        .offset(SESSION_LIMIT)
    )
    if overflow:
        await revoke_sessions(services, tx, user_id, [r["id"] for r in overflow], "session_limit")
    tx.emit(
        make_event(
            SESSION_CREATE, SessionCreate(session=session_info(session)), [f"user:{user_id}"]
        )
    )
    return session, token


class Rotation(msgspec.Struct):
    user_id: int
    session_id: int
    refresh_token: str


async def rotate_refresh_token(services: Services, presented: str, ip: str) -> Rotation:
    """Spend a refresh token and issue its successor (R7)."""
    db = services.db
    now = datetime.now(UTC)
    if not presented.startswith(REFRESH_PREFIX) or len(presented) > 128:
        raise _invalid_refresh()
    row = await db.fetch_one(
        sa.select(
            refresh_tokens,
            auth_sessions.c.user_id,
            auth_sessions.c.revoked_at.label("session_revoked_at"),
            auth_sessions.c.expires_at.label("session_expires_at"),
        )
        .select_from(
            refresh_tokens.join(auth_sessions, auth_sessions.c.id == refresh_tokens.c.session_id)
        )
        .where(refresh_tokens.c.token_hash == sha256(presented))
    )
    if row is None:
        raise _invalid_refresh()
    if row["rotated_at"] is not None:
        await _reuse_detected(services, row["user_id"], row["session_id"])
    if (
        row["session_revoked_at"] is not None
        or row["session_expires_at"] <= now
        or row["expires_at"] <= now
    ):
        raise _invalid_refresh()
    successor = new_refresh_token()
    successor_id = new_id()
    async with db.transaction():
        won = await db.fetch_one(
            refresh_tokens.update()
            .where(refresh_tokens.c.id == row["id"], refresh_tokens.c.rotated_at.is_(None))
            .values(rotated_at=now, replaced_by=successor_id)
            .returning(refresh_tokens.c.id)
        )
        if won is not None:
            await db.execute(
                refresh_tokens.insert().values(
                    id=successor_id,
                    session_id=row["session_id"],
                    token_hash=sha256(successor),
                    issued_at=now,
                    expires_at=now + REFRESH_TTL,
                    rotated_at=None,
                    replaced_by=None,
                )
            )
            await db.execute(
                auth_sessions.update()
                .where(auth_sessions.c.id == row["session_id"])
                .values(last_used_at=now, last_ip=ip[:45], expires_at=now + REFRESH_TTL)
            )
    if won is None:  # a concurrent refresh spent it first: that is a reuse
        await _reuse_detected(services, row["user_id"], row["session_id"])
    return Rotation(user_id=row["user_id"], session_id=row["session_id"], refresh_token=successor)


async def _reuse_detected(services: Services, user_id: int, session_id: int) -> None:
    from models.auth.notices import queue_security_notice

    async with services.db.transaction() as tx:
        revoked = await revoke_sessions(services, tx, user_id, [session_id], "refresh_reuse")
        if revoked:
            await queue_security_notice(services, user_id, "refresh_reuse")
    raise ApiError(
        Code.refresh_token_reused, "This refresh token was already used; the session has been ended"
    )


def _invalid_refresh() -> ApiError:
    return ApiError(Code.invalid_refresh_token, "The refresh token is not valid")


async def revoke_sessions(
    services: Services, tx: Transaction, user_id: int, session_ids: list[int], reason: str
) -> list[int]:
    """Revoke those of `session_ids` that belong to `user_id` and are still active.

    Returns the ids actually revoked; emits one SESSION_REVOKED per session; drops their
    cached state once committed.
    """
    if not session_ids:
        return []
    now = datetime.now(UTC)
    rows = await services.db.fetch_all(
        auth_sessions.update()
        .where(
            auth_sessions.c.id.in_(session_ids),
            auth_sessions.c.user_id == user_id,
            auth_sessions.c.revoked_at.is_(None),
        )
        .values(revoked_at=now, revoke_reason=reason)
        .returning(auth_sessions.c.id)
    )
    revoked = sorted(row["id"] for row in rows)
    if not revoked:
        return []
    for hook in SESSION_REVOKE_HOOKS:
        await hook(services, user_id, revoked)

    async def forget() -> None:
        await services.cache.delete(*(session_cache_key(s) for s in revoked))

    tx.on_commit(forget)
    for session_id in revoked:
        tx.emit(
            make_event(
                SESSION_REVOKED,
                SessionRevoked(session_id=str(session_id), reason=reason),
                [f"user:{user_id}"],
            )
        )
    return revoked


async def active_session_ids(
    services: Services, user_id: int, except_session: int | None = None
) -> list[int]:
    now = datetime.now(UTC)
    query = sa.select(auth_sessions.c.id).where(
        auth_sessions.c.user_id == user_id,
        auth_sessions.c.revoked_at.is_(None),
        auth_sessions.c.expires_at > now,
    )
    if except_session is not None:
        query = query.where(auth_sessions.c.id != except_session)
    return [row["id"] for row in await services.db.fetch_all(query)]


async def list_active_sessions(services: Services, user_id: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return await services.db.fetch_all(
        sa.select(auth_sessions)
        .where(
            auth_sessions.c.user_id == user_id,
            auth_sessions.c.revoked_at.is_(None),
            auth_sessions.c.expires_at > now,
        )
        .order_by(auth_sessions.c.last_used_at.desc(), auth_sessions.c.id.desc())
        .limit(SESSION_LIMIT)
    )


async def get_session(services: Services, session_id: int) -> dict[str, Any] | None:
    return await services.db.fetch_one(
        sa.select(auth_sessions).where(auth_sessions.c.id == session_id)
    )


async def mark_authenticated(services: Services, session_id: int) -> None:
    """A fresh primary authentication (OAuth reauth): R13's clock restarts."""
    await services.db.execute(
        auth_sessions.update()
        .where(auth_sessions.c.id == session_id)
        .values(authenticated_at=datetime.now(UTC))
    )
    await services.cache.delete(session_cache_key(session_id))


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("okhttp", "Android app"),
    ("Expo", "Anilay app"),
)
_SYSTEMS = (
    ("Windows", "Windows"),
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


def describe_user_agent(user_agent: str) -> tuple[str | None, str | None]:
    """A rough (browser, os) for the sessions list; not for security decisions."""
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), None)
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), None)
    if browser is None and re.match(r"^[\w.-]+/[\d.]+", user_agent):
        browser = user_agent.split("/", 1)[0][:32]
    return browser, system


def session_info(row: dict[str, Any]) -> SessionInfo:
    browser, system = describe_user_agent(row["user_agent"])
    return SessionInfo(
        id=str(row["id"]),
        client=row["client"],
        device_name=row["device_name"],
        browser=browser,
        os=system,
        last_ip=row["last_ip"],
        auth_method=row["auth_method"],
        created_at=rfc3339(row["created_at"]),
        last_used_at=rfc3339(row["last_used_at"]),
        authenticated_at=rfc3339(row["authenticated_at"]),
    )
