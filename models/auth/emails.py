"""Email tokens (auth.md R11): single-use links for verifying, changing and resetting.

32 random bytes, stored as SHA-256, spent by a conditional update so two concurrent uses
cannot both succeed. A new token of a purpose voids the older unused ones of that purpose.
Links carry the token in the URL fragment, so it reaches neither logs nor `Referer`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from models.auth.tables import email_tokens
from models.mail import queue_mail
from server.errors import ApiError, Code
from server.ids import new_id
from server.secrets import random_token, sha256
from server.services import Services

LIFETIME = {
    "verify_email": timedelta(hours=24),
    "change_email": timedelta(hours=24),
    "reset_password": timedelta(minutes=30),
}
LINK_PATH = {
    "verify_email": "/auth/verify",
    "change_email": "/auth/verify",
    "reset_password": "/auth/reset",
}
SUBJECT = {
    "verify_email": "Confirm your email for Anilay",
    "change_email": "Confirm your new email for Anilay",
    "reset_password": "Reset your Anilay password",
}


async def issue_email_token(services: Services, user_id: int, purpose: str, email: str) -> str:
    """Void older unused tokens of this purpose, mint a new one, queue the mail with it."""
    db = services.db
    now = datetime.now(UTC)
    await db.execute(
        email_tokens.update()
        .where(
            email_tokens.c.user_id == user_id,
            email_tokens.c.purpose == purpose,
            email_tokens.c.used_at.is_(None),
        )
        .values(used_at=now)
    )
    token = random_token(32)
    await db.execute(
        email_tokens.insert().values(
            id=new_id(),
            user_id=user_id,
            purpose=purpose,
            token_hash=sha256(token),
            email=email,
            created_at=now,
            expires_at=now + LIFETIME[purpose],
            used_at=None,
        )
    )
    link = f"{services.settings.web_url}{LINK_PATH[purpose]}#token={token}"
    await queue_mail(
        db,
        to=email,
        template=purpose,
        subject=SUBJECT[purpose],
        body=f"Open this link to continue (valid for "
        f"{int(LIFETIME[purpose].total_seconds() // 60)} minutes):\n{link}\n",
        user_id=user_id,
    )
    return token


async def spend_email_token(
    services: Services, token: str, purposes: tuple[str, ...]
) -> dict[str, Any]:
    """Use a token once; unknown, expired, used or wrong-purpose → 400 invalid_token."""
    now = datetime.now(UTC)
    if not (40 <= len(token) <= 64):
        raise _invalid()
    row = await services.db.fetch_one(
        email_tokens.update()
        .where(
            email_tokens.c.token_hash == sha256(token),
            email_tokens.c.used_at.is_(None),
            email_tokens.c.expires_at > now,
            email_tokens.c.purpose.in_(purposes),
        )
        .values(used_at=now)
        .returning(email_tokens)
    )
    if row is None:
        raise _invalid()
    return row


async def void_tokens(services: Services, user_id: int, purpose: str) -> None:
    await services.db.execute(
        email_tokens.update()
        .where(
            email_tokens.c.user_id == user_id,
            email_tokens.c.purpose == purpose,
            email_tokens.c.used_at.is_(None),
        )
        .values(used_at=datetime.now(UTC))
    )


def _invalid() -> ApiError:
    return ApiError(Code.invalid_token, "This link is not valid any more", status=400)
