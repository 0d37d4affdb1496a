"""Security mail: what the account owner is told when something happens to their account."""

from __future__ import annotations

import sqlalchemy as sa

from models.mail import queue_mail
from models.users import users
from server.services import Services

NOTICES = {
    "refresh_reuse": (
        "A sign-in of yours was ended",
        "Someone used an old sign-in token of your Anilay account, so we ended that "
        "sign-in. If it was not you, change your password.",
    ),
    "password_changed": (
        "Your password was changed",
        "The password of your Anilay account was changed and your other sessions were "
        "signed out. If this was not you, reset your password now.",
    ),
    "password_reset": (
        "Your password was reset",
        "The password of your Anilay account was reset and every session was signed out.",
    ),
    "login_locked": (
        "Sign-ins to your account are paused",
        "There were many failed attempts to sign in to your Anilay account, so sign-ins are "
        "paused for a while. If it was not you, consider changing your password.",
    ),
    "email_change_requested": (
        "Your email address is being changed",
        "Someone asked to move your Anilay account to another email address. If it was not "
        "you, change your password.",
    ),
}


async def queue_security_notice(
    services: Services, user_id: int, notice: str, to: str | None = None
) -> None:
    if to is None:
        to = await services.db.fetch_val(sa.select(users.c.email).where(users.c.id == user_id))
    if not to:
        return
    subject, body = NOTICES[notice]
    await queue_mail(
        services.db, to=to, template=notice, subject=subject, body=body, user_id=user_id
    )
