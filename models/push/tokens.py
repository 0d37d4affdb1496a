"""Device tokens (P1-P3, R28): registration, the session binding, account deletion and
export."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from models.auth.sessions import SESSION_REVOKE_HOOKS
from models.exports import exporter
from models.push.tables import REGISTER_RATE, TOKEN_PATTERN, TOKENS_PER_USER, push_tokens
from models.users.deletion import on_account_deleted
from server.auth import Identity
from server.db import Transaction
from server.errors import ApiError, Code, FieldError
from server.events import rfc3339
from server.ids import new_id
from server.services import Services

# --- device tokens (P1–P3, R28) -------------------------------------------------------------


class PushTokenView(msgspec.Struct):
    """The PushToken shape: the token itself never leaves the server whole."""

    id: str
    platform: str
    device_name: str | None
    app_version: str | None
    token_preview: str
    created_at: str
    last_registered_at: str
    last_sent_at: str | None
    this_session: bool


def token_preview(token: str) -> str:
    head, _, inner = token.partition("[")
    return f"{head}[{inner[:4]}…]"


def token_view(row: dict[str, Any], session_id: int | None) -> PushTokenView:
    return PushTokenView(
        id=str(row["id"]),
        platform=row["platform"],
        device_name=row["device_name"],
        app_version=row["app_version"],
        token_preview=token_preview(row["token"]),
        created_at=rfc3339(row["created_at"]),
        last_registered_at=rfc3339(row["last_registered_at"]),
        last_sent_at=rfc3339(row["last_sent_at"]) if row["last_sent_at"] else None,
        this_session=session_id is not None and row["session_id"] == session_id,
    )


def check_push_token(token: str) -> str:
    if not TOKEN_PATTERN.match(token):
        raise ApiError(
            Code.invalid_push_token,
            "Expected an Expo push token: ExponentPushToken[...]",
            errors=[FieldError("token", "not an Expo push token")],
        )
    return token


async def list_tokens(services: Services, user_id: int) -> list[dict[str, Any]]:
    return await services.db.fetch_all(
        sa.select(push_tokens)
        .where(push_tokens.c.user_id == user_id)
        .order_by(push_tokens.c.last_registered_at.desc(), push_tokens.c.id.desc())
        .limit(TOKENS_PER_USER)
    )


async def do_register_token(
    services: Services,
    identity: Identity,
    *,
    token: str,
    platform: str,
    device_name: str | None,
    app_version: str | None,
) -> tuple[dict[str, Any], bool]:
    """P2: upsert the device's token, bound to the caller and the current session (R28).

    A token another user held moves to the caller (the device changed hands). Past 20
    tokens the least recently registered go. Returns (row, created)."""
    check_push_token(token)
    await services.limiter.check(REGISTER_RATE, "push-register", str(identity.user_id))
    db = services.db
    now = datetime.now(UTC)
    fresh_id = new_id()
    binding = {
        "user_id": identity.user_id,
        "session_id": identity.session_id,
        "platform": platform,
        "device_name": device_name,
        "app_version": app_version,
        "last_registered_at": now,
        "last_error": None,
    }
    async with db.transaction():
        row = await db.fetch_one(
            db.upsert(
                push_tokens,
                {
                    **binding,
                    "id": fresh_id,
                    "token": token,
                    "created_at": now,
                    "last_sent_at": None,
                },
                conflict=["token"],
                update=binding,
            ).returning(*push_tokens.c)
        )
        assert row is not None
        overflow = await db.fetch_all(
            sa.select(push_tokens.c.id)
            .where(push_tokens.c.user_id == identity.user_id)
            .order_by(push_tokens.c.last_registered_at.desc(), push_tokens.c.id.desc())
            .offset(TOKENS_PER_USER)
        )
        if overflow:
            await db.execute(
                push_tokens.delete().where(push_tokens.c.id.in_([r["id"] for r in overflow]))
            )
    return row, row["id"] == fresh_id


async def do_unregister_token(services: Services, user_id: int, token_id: int) -> None:
    """P3; 404 for a token that is not the caller's."""
    row = await services.db.fetch_one(
        push_tokens.delete()
        .where(push_tokens.c.id == token_id, push_tokens.c.user_id == user_id)
        .returning(push_tokens.c.id)
    )
    if row is None:
        raise ApiError(Code.not_found, "No such push token")


async def _forget_session_tokens(services: Services, user_id: int, session_ids: list[int]) -> None:
    """A revoked session's devices receive nothing more (R28)."""
    await services.db.execute(push_tokens.delete().where(push_tokens.c.session_id.in_(session_ids)))


SESSION_REVOKE_HOOKS.append(_forget_session_tokens)


@on_account_deleted
async def delete_user_tokens(services: Services, tx: Transaction, user_id: int) -> None:
    """Anonymization deletes every device token of the account (users.md R9)."""
    await services.db.execute(push_tokens.delete().where(push_tokens.c.user_id == user_id))


@exporter("push_tokens")
async def export_push_tokens(services: Services, user_id: int) -> list[dict[str, Any]]:
    """Devices, with the token masked (users.md R10)."""
    rows = await list_tokens(services, user_id)
    return [
        {
            key: value
            for key, value in msgspec.structs.asdict(token_view(row, None)).items()
            if key != "this_session"
        }
        | {"last_error": row["last_error"]}
        for row in rows
    ]
