"""Who is calling: the `Identity` every authenticated request carries, and the one place
that decides whether an endpoint lets it in.

Resolving credentials needs domain data (sessions, users, API keys), so the resolver lives
in models.auth and is handed to the services by the composition root; this module only
parses the header and applies each endpoint's declared rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

import msgspec
from starlette.requests import Request

from server.errors import ApiError, Code
from server.events import rfc3339

STAFF_ROLES = frozenset({"moderator", "admin"})
ANY_SCOPE = "*"  # an endpoint open to every bot key, whatever its scopes (auth.md E6)


class Identity(msgspec.Struct, frozen=True):
    kind: Literal["user", "bot"]
    user_id: int
    role: str
    status: str
    session_id: int | None = None
    api_key_id: int | None = None
    scopes: frozenset[str] | None = None  # a bot key's scopes; None for a user session
    banned_until: datetime | None = None
    ban_reason: str | None = None
    muted_until: datetime | None = None
    authenticated_at: datetime | None = None

    @property
    def is_bot(self) -> bool:
        return self.kind == "bot"

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    def banned(self, now: datetime | None = None) -> bool:
        return self.banned_until is not None and self.banned_until > (now or datetime.now(UTC))

    def muted(self, now: datetime | None = None) -> bool:
        return self.muted_until is not None and self.muted_until > (now or datetime.now(UTC))


Credentials = tuple[Literal["bearer", "bot"], str]
Resolver = Callable[[Credentials, Request], Awaitable[Identity]]


def read_credentials(request: Request) -> Credentials | None:
    """The credential in `Authorization`, or None. Both schemes at once is a 400 (auth R22)."""
    headers = request.headers.getlist("authorization")
    if not headers:
        return None
    if len(headers) > 1:
        raise ApiError(Code.bad_request, "Send one Authorization header, Bearer or Bot")
    scheme, _, value = headers[0].strip().partition(" ")
    value = value.strip()
    scheme = scheme.lower()
    if scheme not in ("bearer", "bot") or not value or len(value) > 4096:
        raise ApiError(
            Code.invalid_token,
            "Authorization must be `Bearer <token>` or `Bot <key>`",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if " " in value:
        raise ApiError(Code.bad_request, "Send one Authorization header, Bearer or Bot")
    return scheme, value  # type: ignore[return-value]


def banned_error(identity: Identity) -> ApiError:
    return ApiError(
        Code.banned,
        "This account is banned",
        extra={
            "banned_until": rfc3339(identity.banned_until) if identity.banned_until else None,
            "ban_reason": identity.ban_reason,
        },
    )


def authorize(
    identity: Identity | None,
    *,
    auth: str,
    bot_scope: str | None,
    allow_banned: bool,
) -> None:
    """Apply an endpoint's declared rule to the caller; raise the right problem if refused."""
    if identity is None:
        if auth in ("user", "staff", "admin"):
            raise ApiError(
                Code.unauthorized, "Sign in to do this", headers={"WWW-Authenticate": "Bearer"}
            )
        return
    if identity.is_bot:
        if bot_scope is None:
            if auth != "none":
                raise ApiError(Code.bot_not_allowed, "Bot keys cannot use this route")
        elif bot_scope != ANY_SCOPE and bot_scope not in (identity.scopes or frozenset()):
            raise ApiError(
                Code.insufficient_scope,
                f"This route needs the {bot_scope} scope",
                extra={"required_scope": bot_scope},
            )
    if identity.banned() and not allow_banned and auth != "none":
        raise banned_error(identity)
    if auth == "staff" and not identity.is_staff:
        raise ApiError(Code.forbidden, "Staff only")
    if auth == "admin" and identity.role != "admin":
        raise ApiError(Code.forbidden, "Admins only")
