"""Accounts: registering, signing in and out, passwords and email (auth.md E1-E15).

Login and reset never reveal whether an account exists (R4): every login path runs exactly
one argon2id verification and fails with one body; "forgot password" only enqueues a job.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa

from models.auth import throttle
from models.auth.emails import issue_email_token, spend_email_token, void_tokens
from models.auth.events import ACCOUNT_UPDATE, AccountUpdate
from models.auth.notices import queue_security_notice
from models.auth.policy import check_password
from models.auth.sessions import active_session_ids, create_session, revoke_sessions
from models.auth.shapes import TokenPair, token_pair
from models.users import check_username, get_user_by_login, username_claimable, users
from server.auth import Identity
from server.db import Transaction
from server.errors import ApiError, Code, FieldError
from server.events import make_event, rfc3339
from server.ids import new_id
from server.jobs import enqueue, job_handler
from server.services import Services

RECENT_AUTH = timedelta(minutes=10)
FORGOT_MAILS_PER_HOUR = 3


class ClientInfo:
    """Where a sign-in comes from (stored on the session)."""

    def __init__(self, client: str, device_name: str | None, user_agent: str, ip: str) -> None:
        self.client = client
        self.device_name = device_name
        self.user_agent = user_agent
        self.ip = ip


async def account_update_event(services: Services, tx: Transaction, user_id: int) -> None:
    from models.oauth import linked_providers

    row = await services.db.fetch_one(sa.select(users).where(users.c.id == user_id))
    assert row is not None
    tx.emit(
        make_event(
            ACCOUNT_UPDATE,
            AccountUpdate(
                email=row["email"],
                email_verified=row["email_verified_at"] is not None,
                has_password=row["password_hash"] is not None,
                identities=await linked_providers(services, user_id),
            ),
            [f"user:{user_id}"],
        )
    )


# --- register and login -------------------------------------------------------------------


async def do_register(
    services: Services,
    *,
    username: str,
    email: str,
    password: str,
    locale: str | None,
    client: ClientInfo,
) -> TokenPair:
    if not services.settings.registration_open:
        raise ApiError(Code.registration_closed, "Registration is closed right now")
    check_username(username)
    check_password(password, username=username, email=email)
    if not await username_claimable(services.db, username):
        raise ApiError(Code.username_taken, "That username is taken")
    if (
        await services.db.fetch_val(
            sa.select(users.c.id).where(users.c.email_lower == email.lower())
        )
        is not None
    ):
        raise ApiError(Code.email_taken, "An account with that email exists")
    password_hash = await services.passwords.hash(password)
    now = datetime.now(UTC)
    user_id = new_id()
    try:
        async with services.db.transaction() as tx:
            await services.db.execute(
                users.insert().values(
                    id=user_id,
                    username=username,
                    username_lower=username.lower(),
                    username_generated=False,
                    email=email,
                    email_lower=email.lower(),
                    password_hash=password_hash,
                    password_changed_at=now,
                    role="user",
                    status="active",
                    locale=locale or "ru",
                    created_at=now,
                    updated_at=now,
                )
            )
            session, refresh = await create_session(
                services,
                tx,
                user_id=user_id,
                client=client.client,
                device_name=client.device_name,
                user_agent=client.user_agent,
                ip=client.ip,
                auth_method="password",
            )
            await issue_email_token(services, user_id, "verify_email", email)
    except ApiError:
        raise
    except Exception as error:  # the unique indexes decided a race for the name or address
        raise _taken_error(error, username) from None
    return await token_pair(services, user_id, session["id"], refresh)


def _taken_error(error: Exception, username: str) -> ApiError:
    text = str(error).lower()
    if "email" in text:
        return ApiError(Code.email_taken, "An account with that email exists")
    return ApiError(Code.username_taken, f"The username {username} is taken")


async def do_login(
    services: Services, *, login: str, password: str, client: ClientInfo
) -> TokenPair:
    identifier = login.strip().lower()
    await throttle.check_login_allowed(services, client.ip, identifier)
    row = await get_user_by_login(services.db, identifier)
    usable = row is not None and row["status"] != "deleted"
    stored = row["password_hash"] if usable else None
    if not await services.passwords.verify(stored, password):
        if await throttle.record_failure(services, client.ip, identifier) and usable:
            async with services.db.transaction():
                await queue_security_notice(services, row["id"], "login_locked")
        raise ApiError(Code.invalid_credentials, "Wrong login or password")
    await throttle.record_success(services, client.ip, identifier)
    assert row is not None
    async with services.db.transaction() as tx:
        if services.passwords.needs_rehash(stored):
            await services.db.execute(
                users.update()
                .where(users.c.id == row["id"])
                .values(password_hash=await services.passwords.hash(password))
            )
        session, refresh = await create_session(
            services,
            tx,
            user_id=row["id"],
            client=client.client,
            device_name=client.device_name,
            user_agent=client.user_agent,
            ip=client.ip,
            auth_method="password",
        )
    return await token_pair(services, row["id"], session["id"], refresh)


# --- logout -------------------------------------------------------------------------------


async def do_logout(
    services: Services, identity: Identity | None, refresh_token: str | None
) -> None:
    """Revoke the caller's session, or the one owning `refresh_token`. Silent when neither
    names a live session: logging out twice is not an error."""
    from models.auth.tables import auth_sessions, refresh_tokens
    from server.secrets import sha256

    target: tuple[int, int] | None = None
    if identity is not None and identity.session_id is not None:
        target = (identity.user_id, identity.session_id)
    elif refresh_token:
        row = await services.db.fetch_one(
            sa.select(auth_sessions.c.id, auth_sessions.c.user_id)
            .select_from(
                refresh_tokens.join(
                    auth_sessions, auth_sessions.c.id == refresh_tokens.c.session_id
                )
            )
            .where(refresh_tokens.c.token_hash == sha256(refresh_token))
        )
        if row is not None:
            target = (row["user_id"], row["id"])
    if target is None:
        return
    async with services.db.transaction() as tx:
        await revoke_sessions(services, tx, target[0], [target[1]], "logout")


async def do_logout_all(services: Services, identity: Identity, keep_current: bool) -> int:
    keep = identity.session_id if keep_current else None
    ids = await active_session_ids(services, identity.user_id, except_session=keep)
    async with services.db.transaction() as tx:
        return len(await revoke_sessions(services, tx, identity.user_id, ids, "logout_all"))


# --- passwords ----------------------------------------------------------------------------


def require_recent_auth(identity: Identity) -> None:
    """R13: sensitive changes without a password need a sign-in in the last 10 minutes."""
    at = identity.authenticated_at
    if at is None or datetime.now(UTC) - at > RECENT_AUTH:
        raise ApiError(Code.reauth_required, "Sign in again to do this")


async def _load(services: Services, user_id: int) -> dict[str, Any]:
    row = await services.db.fetch_one(sa.select(users).where(users.c.id == user_id))
    if row is None:
        raise ApiError(Code.session_revoked, "This session has ended; sign in again")
    return row


async def check_current_password(
    services: Services, identity: Identity, password: str | None
) -> dict[str, Any]:
    """Prove the caller knows the password (5 wrong tries per 15 min), or R13 if they have
    none."""
    row = await _load(services, identity.user_id)
    if row["password_hash"] is None:
        require_recent_auth(identity)
        return row
    await services.limiter.ensure_room("5/15 minutes", "password-wrong", str(identity.user_id))
    if password is None or not await services.passwords.verify(row["password_hash"], password):
        await services.limiter.hit("5/15 minutes", "password-wrong", str(identity.user_id))
        raise ApiError(Code.wrong_password, "The current password is wrong")
    return row


async def do_change_password(
    services: Services, identity: Identity, current_password: str | None, new_password: str
) -> None:
    row = await check_current_password(services, identity, current_password)
    check_password(new_password, username=row["username"], email=row["email"], field="new_password")
    if row["password_hash"] is not None and await services.passwords.verify(
        row["password_hash"], new_password
    ):
        raise ApiError(
            Code.validation_failed,
            "Choose a password you do not use now",
            errors=[FieldError("new_password", "same as current")],
        )
    new_hash = await services.passwords.hash(new_password)
    others = await active_session_ids(
        services, identity.user_id, except_session=identity.session_id
    )
    async with services.db.transaction() as tx:
        await services.db.execute(
            users.update()
            .where(users.c.id == identity.user_id)
            .values(
                password_hash=new_hash,
                password_changed_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )
        await void_tokens(services, identity.user_id, "reset_password")
        await revoke_sessions(services, tx, identity.user_id, others, "password_changed")
        await queue_security_notice(services, identity.user_id, "password_changed")
        await account_update_event(services, tx, identity.user_id)


async def do_forgot_password(services: Services, email: str) -> None:
    """Only enqueue: the worker looks the address up, so timing says nothing (R4b)."""
    async with services.db.transaction():
        await enqueue(services.db, "auth.password_reset_mail", {"email": email.strip()})


@job_handler("auth.password_reset_mail")
async def send_password_reset(services: Services, payload: dict[str, Any]) -> None:
    from models.mail import count_recent

    email = payload["email"]
    row = await services.db.fetch_one(
        sa.select(users).where(users.c.email_lower == email.lower(), users.c.status != "deleted")
    )
    if row is None:
        return
    since = datetime.now(UTC) - timedelta(hours=1)
    if (
        await count_recent(services.db, row["email"], "reset_password", since)
        >= FORGOT_MAILS_PER_HOUR
    ):
        return
    async with services.db.transaction():
        await issue_email_token(services, row["id"], "reset_password", row["email"])


async def do_reset_password(services: Services, token: str, new_password: str) -> None:
    from models.auth.emails import LIFETIME  # noqa: F401  (documented lifetime: 30 min)

    # Check the policy against the token's account before spending the token.
    preview = await _token_owner(services, token)
    if preview is not None:
        check_password(
            new_password, username=preview["username"], email=preview["email"], field="new_password"
        )
    spent = await spend_email_token(services, token, ("reset_password",))
    row = await _load(services, spent["user_id"])
    check_password(new_password, username=row["username"], email=row["email"], field="new_password")
    new_hash = await services.passwords.hash(new_password)
    now = datetime.now(UTC)
    sessions = await active_session_ids(services, row["id"])
    async with services.db.transaction() as tx:
        values: dict[str, Any] = {
            "password_hash": new_hash,
            "password_changed_at": now,
            "updated_at": now,
        }
        if row["email_verified_at"] is None and row["email_lower"] == spent["email"].lower():
            values["email_verified_at"] = now
        await services.db.execute(users.update().where(users.c.id == row["id"]).values(**values))
        await revoke_sessions(services, tx, row["id"], sessions, "password_reset")
        await queue_security_notice(services, row["id"], "password_reset")
        await account_update_event(services, tx, row["id"])
    await throttle.clear_identifier(services, row["username"])
    if row["email"]:
        await throttle.clear_identifier(services, row["email"])


async def _token_owner(services: Services, token: str) -> dict[str, Any] | None:
    from models.auth.tables import email_tokens
    from server.secrets import sha256

    user_id = await services.db.fetch_val(
        sa.select(email_tokens.c.user_id).where(email_tokens.c.token_hash == sha256(token))
    )
    if user_id is None:
        return None
    return await services.db.fetch_one(sa.select(users).where(users.c.id == user_id))


# --- email --------------------------------------------------------------------------------


async def do_verify_email(services: Services, token: str) -> dict[str, Any]:
    spent = await spend_email_token(services, token, ("verify_email", "change_email"))
    now = datetime.now(UTC)
    try:
        async with services.db.transaction() as tx:
            values: dict[str, Any] = {"email_verified_at": now, "updated_at": now}
            if spent["purpose"] == "change_email":
                values.update(email=spent["email"], email_lower=spent["email"].lower())
            changed = await services.db.fetch_one(
                users.update()
                .where(users.c.id == spent["user_id"])
                .values(**values)
                .returning(users.c.email)
            )
            if changed is None:
                raise ApiError(Code.invalid_token, "This link is not valid any more", status=400)
            await account_update_event(services, tx, spent["user_id"])
    except ApiError:
        raise
    except Exception:  # the unique index on email_lower: taken in the meantime
        raise ApiError(Code.email_taken, "That address now belongs to another account") from None
    return {"email": changed["email"], "email_verified": True}


async def do_resend_verification(services: Services, identity: Identity) -> None:
    row = await _load(services, identity.user_id)
    if not row["email"]:
        raise ApiError(Code.no_email, "There is no email address on this account")
    if row["email_verified_at"] is not None:
        raise ApiError(Code.already_verified, "The email address is already verified")
    await services.limiter.check("1/minute", "verify-resend-min", str(identity.user_id))
    await services.limiter.check("5/day", "verify-resend-day", str(identity.user_id))
    async with services.db.transaction():
        await issue_email_token(services, row["id"], "verify_email", row["email"])


async def do_change_email(
    services: Services, identity: Identity, new_email: str, current_password: str | None
) -> None:
    """Answer the same whether or not the address is free (R4c); it changes only at E13."""
    row = await check_current_password(services, identity, current_password)
    if row["email_lower"] == new_email.lower():
        raise ApiError(
            Code.validation_failed,
            "That is the current address",
            errors=[FieldError("new_email", "same as current")],
        )
    taken = await services.db.fetch_val(
        sa.select(users.c.id).where(users.c.email_lower == new_email.lower())
    )
    async with services.db.transaction():
        if taken is None:
            await issue_email_token(services, row["id"], "change_email", new_email)
        if row["email"]:
            await queue_security_notice(
                services, row["id"], "email_change_requested", to=row["email"]
            )


async def username_availability(services: Services, username: str) -> str | None:
    """None when free; else "invalid", "reserved" or "taken" (E7)."""
    from models.users import username_problem

    problem = username_problem(username)
    if problem is not None:
        return problem
    return None if await username_claimable(services.db, username) else "taken"


async def describe_me(services: Services, identity: Identity) -> dict[str, Any]:
    """E6: the account, the session or API key in use, identities and restrictions."""
    from models.api_keys import describe_key
    from models.auth.identity import restrictions
    from models.auth.sessions import get_session
    from models.auth.shapes import account_user
    from models.oauth import identity_summaries

    row = await _load(services, identity.user_id)
    session = None
    if identity.session_id is not None:
        found = await get_session(services, identity.session_id)
        if found is not None:
            session = {
                "id": str(found["id"]),
                "client": found["client"],
                "auth_method": found["auth_method"],
                "authenticated_at": rfc3339(found["authenticated_at"]),
                "created_at": rfc3339(found["created_at"]),
            }
    api_key = await describe_key(services, identity.api_key_id) if identity.api_key_id else None
    return {
        "user": msgspec.structs.asdict(account_user(row)),
        "session": session,
        "api_key": api_key,
        "identities": await identity_summaries(services, identity.user_id),
        "restrictions": restrictions(row),
    }
