"""Sign-up, sign-in, sessions, passwords and email (auth.md E1-E15, E22)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from models.auth import accounts
from models.auth.sessions import (
    list_active_sessions,
    revoke_sessions,
    rotate_refresh_token,
    session_info,
)
from models.auth.shapes import AccountUser, TokenPair, token_pair
from server.errors import ApiError, Code, FieldError
from server.http import Call, conditional, endpoint, strong_etag
from server.schemas import Schema
from server.services import Services

Client = Literal["web", "ios", "android", "other"]
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
DeviceName = Annotated[str, msgspec.Meta(max_length=64)]
Captcha = Annotated[str, msgspec.Meta(max_length=2048)]
EmailToken = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]

NO_STORE = {"Cache-Control": "no-store"}


def _client(call: Call, client: str, device_name: str | None) -> accounts.ClientInfo:
    return accounts.ClientInfo(
        client=client, device_name=device_name, user_agent=call.user_agent, ip=call.client_ip
    )


# --- E1 register --------------------------------------------------------------------------


class RegisterBody(Schema):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    email: Email
    password: Password
    accept_terms: bool
    locale: Literal["ru", "en"] | None = None
    client: Client = "other"
    device_name: DeviceName | None = None
    captcha_token: Captcha | None = None


@endpoint(
    "POST",
    "/auth/register",
    body=RegisterBody,
    response=TokenPair,
    status=201,
    errors=[
        Code.username_taken,
        Code.username_reserved,
        Code.email_taken,
        Code.weak_password,
        Code.registration_closed,
        Code.rate_limited,
    ],
)
async def register(call: Call[RegisterBody, None]) -> TokenPair:
    """Create a password account and sign in."""
    body = call.body
    if not body.accept_terms:
        raise ApiError(
            Code.validation_failed,
            "Accept the terms to register",
            errors=[FieldError("accept_terms", "must be true")],
        )
    await call.services.limiter.check("5/hour", "register-hour", call.client_ip)
    await call.services.limiter.check("20/day", "register-day", call.client_ip)
    call.headers.update(NO_STORE)
    return await accounts.do_register(
        call.services,
        username=body.username,
        email=body.email,
        password=body.password,
        locale=body.locale,
        client=_client(call, body.client, body.device_name),
    )


# --- E2 login, E3 refresh, E4 logout, E5 logout-all ---------------------------------------


class LoginBody(Schema):
    login: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    client: Client = "other"
    device_name: DeviceName | None = None
    captcha_token: Captcha | None = None


@endpoint(
    "POST",
    "/auth/login",
    body=LoginBody,
    response=TokenPair,
    errors=[Code.invalid_credentials, Code.rate_limited, Code.login_locked],
)
async def login(call: Call[LoginBody, None]) -> TokenPair:
    """Sign in with a username or email and a password."""
    call.headers.update(NO_STORE)
    return await accounts.do_login(
        call.services,
        login=call.body.login,
        password=call.body.password,
        client=_client(call, call.body.client, call.body.device_name),
    )


class RefreshBody(Schema):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


@endpoint(
    "POST",
    "/auth/refresh",
    body=RefreshBody,
    response=TokenPair,
    errors=[Code.invalid_refresh_token, Code.refresh_token_reused, Code.rate_limited],
)
async def refresh(call: Call[RefreshBody, None]) -> TokenPair:
    """Spend the refresh token for a new one and a new access token."""
    await call.services.limiter.check("60/minute", "refresh", call.client_ip)
    rotation = await rotate_refresh_token(call.services, call.body.refresh_token, call.client_ip)
    call.headers.update(NO_STORE)
    return await token_pair(
        call.services, rotation.user_id, rotation.session_id, rotation.refresh_token
    )


class LogoutBody(Schema):
    refresh_token: Annotated[str, msgspec.Meta(max_length=128)] | None = None


@endpoint(
    "POST",
    "/auth/logout",
    body=LogoutBody,
    body_optional=True,
    status=204,
    auth="optional",
    allow_banned=True,
)
async def logout(call: Call[LogoutBody | None, None]) -> None:
    """End the current session (or the one owning the refresh token)."""
    token = call.body.refresh_token if call.body is not None else None
    await accounts.do_logout(call.services, call.identity, token)


class LogoutAllBody(Schema):
    keep_current: bool = False


@endpoint(
    "POST",
    "/auth/logout-all",
    body=LogoutAllBody,
    body_optional=True,
    status=204,
    auth="user",
    allow_banned=True,
)
async def logout_all(call: Call[LogoutAllBody | None, None]) -> None:
    """End every session, or every other one."""
    keep = call.body.keep_current if call.body is not None else False
    await accounts.do_logout_all(call.services, call.user, keep)


# --- E6 me, E7 username-available -------------------------------------------------------------


class MeSession(msgspec.Struct):
    id: str
    client: str
    auth_method: str
    authenticated_at: str
    created_at: str


class MeApiKey(msgspec.Struct):
    id: str
    name: str
    scopes: list[str]


class MeIdentity(msgspec.Struct):
    provider: str
    username: str


class Restrictions(msgspec.Struct):
    banned: bool
    banned_until: str | None
    ban_reason: str | None
    muted_until: str | None
    deletion_scheduled_at: str | None


class Me(msgspec.Struct):
    user: AccountUser
    session: MeSession | None
    api_key: MeApiKey | None
    identities: list[MeIdentity]
    restrictions: Restrictions


@endpoint("GET", "/auth/me", response=Me, auth="user", bot_scope="*", allow_banned=True)
async def me(call: Call) -> Me:
    """The account, this session or key, linked identities and restrictions."""
    view = await accounts.describe_me(call.services, call.user)
    call.headers.update(NO_STORE)
    return msgspec.convert(view, Me)


class UsernameQuery(Schema):
    username: Annotated[str, msgspec.Meta(max_length=64)]


class UsernameAvailability(msgspec.Struct):
    username: str
    available: bool
    reason: Literal["taken", "reserved", "invalid"] | None


@endpoint(
    "GET",
    "/auth/username-available",
    query=UsernameQuery,
    response=UsernameAvailability,
    errors=[Code.rate_limited],
)
async def username_available(call: Call[None, UsernameQuery]) -> UsernameAvailability:
    """Whether a username can be registered now."""
    await call.services.limiter.check("30/minute", "username-check", call.client_ip)
    reason = await accounts.username_availability(call.services, call.query.username)
    return UsernameAvailability(
        username=call.query.username, available=reason is None, reason=reason
    )  # type: ignore[arg-type]


# --- E8 sessions, E9 revoke one -----------------------------------------------------------


class SessionItem(msgspec.Struct):
    id: str
    current: bool
    client: str
    device_name: str | None
    browser: str | None
    os: str | None
    last_ip: str
    auth_method: str
    created_at: str
    last_used_at: str
    authenticated_at: str


class SessionList(msgspec.Struct):
    items: list[SessionItem]


@endpoint("GET", "/auth/sessions", response=SessionList, auth="user")
async def sessions(call: Call) -> SessionList:
    """Active sessions, most recently used first (at most 50)."""
    rows = await list_active_sessions(call.services, call.user.user_id)
    items = []
    for row in rows:
        info = msgspec.structs.asdict(session_info(row))
        items.append(SessionItem(current=row["id"] == call.user.session_id, **info))
    return SessionList(items=items)


@endpoint("DELETE", "/auth/sessions/{session_id}", status=204, auth="user", errors=[Code.not_found])
async def revoke_session(call: Call) -> None:
    """End one of my sessions (ending the current one is a logout)."""
    session_id = call.path_id("session_id")
    reason = "logout" if session_id == call.user.session_id else "revoked"
    async with call.services.db.transaction() as tx:
        revoked = await revoke_sessions(call.services, tx, call.user.user_id, [session_id], reason)
    if not revoked:
        raise ApiError(Code.not_found, "No such active session")


# --- E10-E12 passwords --------------------------------------------------------------------


class ChangePasswordBody(Schema):
    new_password: Password
    current_password: Annotated[str, msgspec.Meta(max_length=512)] | None = None


@endpoint(
    "POST",
    "/auth/password/change",
    body=ChangePasswordBody,
    status=204,
    auth="user",
    errors=[Code.wrong_password, Code.reauth_required, Code.weak_password, Code.rate_limited],
)
async def change_password(call: Call[ChangePasswordBody, None]) -> None:
    """Change (or set a first) password; every other session is signed out."""
    await accounts.do_change_password(
        call.services, call.user, call.body.current_password, call.body.new_password
    )


class ForgotBody(Schema):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    captcha_token: Captcha | None = None


class Accepted(msgspec.Struct):
    status: Literal["accepted"] = "accepted"


@endpoint(
    "POST",
    "/auth/password/forgot",
    body=ForgotBody,
    response=Accepted,
    status=202,
    errors=[Code.rate_limited],
)
async def forgot_password(call: Call[ForgotBody, None]) -> Accepted:
    """Send a reset link if the address has an account; the answer is the same either way."""
    await call.services.limiter.check("10/hour", "forgot", call.client_ip)
    await accounts.do_forgot_password(call.services, call.body.email)
    return Accepted()


class ResetBody(Schema):
    token: EmailToken
    new_password: Password


@endpoint(
    "POST",
    "/auth/password/reset",
    body=ResetBody,
    status=204,
    errors=[Code.invalid_token, Code.weak_password, Code.rate_limited],
)
async def reset_password(call: Call[ResetBody, None]) -> None:
    """Set a new password with a reset link; every session is signed out."""
    await call.services.limiter.check("20/hour", "reset", call.client_ip)
    await accounts.do_reset_password(call.services, call.body.token, call.body.new_password)


# --- E13-E15 email ------------------------------------------------------------------------


class VerifyBody(Schema):
    token: EmailToken


class Verified(msgspec.Struct):
    email: str
    email_verified: bool


@endpoint(
    "POST",
    "/auth/email/verify",
    body=VerifyBody,
    response=Verified,
    errors=[Code.invalid_token, Code.email_taken, Code.rate_limited],
)
async def verify_email(call: Call[VerifyBody, None]) -> Verified:
    """Confirm an address with the link's token."""
    await call.services.limiter.check("20/hour", "verify", call.client_ip)
    result = await accounts.do_verify_email(call.services, call.body.token)
    return Verified(**result)


@endpoint(
    "POST",
    "/auth/email/verify/resend",
    response=Accepted,
    status=202,
    auth="user",
    errors=[Code.already_verified, Code.no_email, Code.rate_limited],
)
async def resend_verification(call: Call) -> Accepted:
    """Send the verification link again."""
    await accounts.do_resend_verification(call.services, call.user)
    return Accepted()


class ChangeEmailBody(Schema):
    new_email: Email
    current_password: Annotated[str, msgspec.Meta(max_length=512)] | None = None


@endpoint(
    "POST",
    "/auth/email/change",
    body=ChangeEmailBody,
    response=Accepted,
    status=202,
    auth="user",
    errors=[Code.wrong_password, Code.reauth_required, Code.rate_limited],
)
async def change_email(call: Call[ChangeEmailBody, None]) -> Accepted:
    """Start moving the account to another address (it changes when the link is opened)."""
    await accounts.do_change_email(
        call.services, call.user, call.body.new_email, call.body.current_password
    )
    return Accepted()


# --- E22 JWKS -----------------------------------------------------------------------------


@endpoint(
    "GET",
    "/.well-known/jwks.json",
    tag="auth",
    media_type="application/json",
    response_headers=["ETag"],
)
async def jwks(call: Call) -> Response:
    """The public keys that verify access tokens (also at the site root)."""
    return jwks_response(call.services, call.request)


def jwks_response(services: Services, request: Request) -> Response:
    body = msgspec.json.encode(services.keys.jwks())
    return conditional(request, body, strong_etag(body), {"Cache-Control": "public, max-age=300"})


routes = [
    register,
    login,
    refresh,
    logout,
    logout_all,
    me,
    username_available,
    sessions,
    revoke_session,
    change_password,
    forgot_password,
    reset_password,
    verify_email,
    resend_verification,
    change_email,
    jwks,
]
