"""Linked provider accounts: signing in with one (R16), linking, re-authenticating with
one (R13) and unlinking (E20, E21). Accounts are never joined by email."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from models.auth.accounts import ClientInfo, account_update_event
from models.auth.sessions import create_session, mark_authenticated
from models.auth.shapes import OAuthTokenPair, token_pair
from models.oauth.tables import oauth_identities
from models.oauth.usernames import display_name_from, pick_username
from models.users import users
from server.errors import ApiError, Code
from server.events import rfc3339
from server.ids import new_id
from server.oauth_providers import Profile, Provider
from server.services import Services

USERNAME_ATTEMPTS = 5


class IdentityItem(msgspec.Struct):
    provider: str
    username: str
    email: str | None
    avatar_url: str | None
    created_at: str
    last_login_at: str | None


class LinkedIdentity(msgspec.Struct):
    provider: str
    username: str
    created_at: str


class LinkResult(msgspec.Struct):
    identity: LinkedIdentity


# --- reads --------------------------------------------------------------------------------


async def linked_providers(services: Services, user_id: int) -> list[str]:
    rows = await services.db.fetch_all(
        sa.select(oauth_identities.c.provider)
        .where(oauth_identities.c.user_id == user_id)
        .order_by(oauth_identities.c.provider)
    )
    return [row["provider"] for row in rows]


async def identity_summaries(services: Services, user_id: int) -> list[dict[str, str]]:
    """[{"provider", "username"}] for E6."""
    rows = await _identities_of(services, user_id)
    return [{"provider": row["provider"], "username": row["username"]} for row in rows]


async def list_identities(services: Services, user_id: int) -> list[IdentityItem]:
    """E20: the caller's linked provider accounts, oldest link first."""
    return [
        IdentityItem(
            provider=row["provider"],
            username=row["username"],
            email=row["email"],
            avatar_url=row["avatar_url"],
            created_at=rfc3339(row["created_at"]),
            last_login_at=rfc3339(row["last_login_at"]) if row["last_login_at"] else None,
        )
        for row in await _identities_of(services, user_id)
    ]


async def _identities_of(services: Services, user_id: int) -> list[dict[str, Any]]:
    return await services.db.fetch_all(
        sa.select(oauth_identities)
        .where(oauth_identities.c.user_id == user_id)
        .order_by(oauth_identities.c.created_at, oauth_identities.c.id)
    )


# --- sign-in, link, re-authentication ------------------------------------------------------------


def _snapshot(profile: Profile) -> dict[str, Any]:
    """The identity's copy of the provider profile; an email only when the provider vouches
    for it."""
    return {
        "username": (profile.username or profile.subject)[:64],
        "email": profile.email[:254] if profile.email and profile.email_verified else None,
        "avatar_url": profile.avatar_url,
    }


async def _identity_by_subject(
    services: Services, provider_id: str, subject: str
) -> dict[str, Any] | None:
    return await services.db.fetch_one(
        sa.select(oauth_identities).where(
            oauth_identities.c.provider == provider_id, oauth_identities.c.subject == subject
        )
    )


async def login_with(
    services: Services, provider: Provider, profile: Profile, client: ClientInfo, retry: int = 0
) -> OAuthTokenPair:
    """R16: a known identity signs its user in (banned users too, R9); an unknown one makes
    a new account when registration is open."""
    known = await _identity_by_subject(services, provider.id, profile.subject)
    if known is not None:
        owner = await services.db.fetch_one(sa.select(users).where(users.c.id == known["user_id"]))
        if owner is None or owner["status"] == "deleted":  # left behind by a deletion
            await services.db.execute(
                oauth_identities.delete().where(oauth_identities.c.id == known["id"])
            )
            known = None
    if known is not None:
        async with services.db.transaction() as tx:
            await services.db.execute(
                oauth_identities.update()
                .where(oauth_identities.c.id == known["id"])
                .values(**_snapshot(profile), last_login_at=datetime.now(UTC))
            )
            session, refresh = await _open_session(services, tx, known["user_id"], provider, client)
        pair = await token_pair(services, known["user_id"], session["id"], refresh)
        return OAuthTokenPair(**msgspec.structs.asdict(pair), created=False)
    if not services.settings.registration_open:
        raise ApiError(Code.registration_closed, "Registration is closed right now")
    email = profile.email if profile.email_verified else None
    if email is not None and await _email_taken(services, email):
        raise _email_conflict()
    try:
        user_id, session, refresh = await _create_account(
            services, provider, profile, email, client
        )
    except _IdentityTaken:
        if retry:
            raise
        return await login_with(
            services, provider, profile, client, retry=1
        )  # a concurrent twin won
    pair = await token_pair(services, user_id, session["id"], refresh)
    return OAuthTokenPair(**msgspec.structs.asdict(pair), created=True)


class _IdentityTaken(Exception):
    pass


async def _open_session(
    services: Services, tx: Any, user_id: int, provider: Provider, client: ClientInfo
) -> tuple[dict[str, Any], str]:
    return await create_session(
        services,
        tx,
        user_id=user_id,
        client=client.client,
        device_name=client.device_name,
        user_agent=client.user_agent,
        ip=client.ip,
        auth_method=f"oauth:{provider.id}",
    )


async def _email_taken(services: Services, email: str) -> bool:
    found = await services.db.fetch_val(
        sa.select(users.c.id).where(users.c.email_lower == email.lower())
    )
    return found is not None


def _email_conflict() -> ApiError:
    return ApiError(
        Code.oauth_email_conflict,
        "An account with this email exists; sign in to it and link the provider there",
    )


async def _create_account(
    services: Services, provider: Provider, profile: Profile, email: str | None, client: ClientInfo
) -> tuple[int, dict[str, Any], str]:
    display_name = display_name_from(profile.username)
    for _attempt in range(USERNAME_ATTEMPTS):
        username = await pick_username(services, profile.username)
        now = datetime.now(UTC)
        user_id = new_id()
        try:
            async with services.db.transaction() as tx:
                await services.db.execute(
                    users.insert().values(
                        id=user_id,
                        username=username,
                        username_lower=username.lower(),
                        username_generated=True,
                        display_name=display_name,
                        display_name_lower=display_name.lower() if display_name else None,
                        email=email,
                        email_lower=email.lower() if email else None,
                        email_verified_at=now if email else None,
                        password_hash=None,
                        role="user",
                        status="active",
                        locale="ru",
                        created_at=now,
                        updated_at=now,
                    )
                )
                await services.db.execute(
                    oauth_identities.insert().values(
                        id=new_id(),
                        user_id=user_id,
                        provider=provider.id,
                        subject=profile.subject,
                        created_at=now,
                        last_login_at=now,
                        **_snapshot(profile),
                    )
                )
                session, refresh = await _open_session(services, tx, user_id, provider, client)
            return user_id, session, refresh
        except Exception as error:  # the unique indexes decide races
            text = str(error).lower()
            if "subject" in text:
                raise _IdentityTaken() from None
            if "email" in text:
                raise _email_conflict() from None
            if "username" not in text:
                raise
    raise ApiError(Code.conflict, "Could not find a free username; try again")


async def link_identity(
    services: Services, user_id: int, provider: Provider, profile: Profile
) -> LinkResult:
    holder = await _identity_by_subject(services, provider.id, profile.subject)
    if holder is not None and holder["user_id"] != user_id:
        raise ApiError(Code.identity_in_use, "That account is linked to another Anilay account")
    if holder is not None or await _has_provider(services, user_id, provider.id):
        raise ApiError(Code.provider_already_linked, f"A {provider.name} account is linked already")
    now = datetime.now(UTC)
    snapshot = _snapshot(profile)
    try:
        async with services.db.transaction() as tx:
            await services.db.execute(
                oauth_identities.insert().values(
                    id=new_id(),
                    user_id=user_id,
                    provider=provider.id,
                    subject=profile.subject,
                    created_at=now,
                    last_login_at=None,
                    **snapshot,
                )
            )
            await account_update_event(services, tx, user_id)
    except Exception as error:  # a concurrent link decided by the unique indexes
        if "subject" in str(error).lower():
            raise ApiError(
                Code.identity_in_use, "That account is linked to another Anilay account"
            ) from None
        if "provider" in str(error).lower():
            raise ApiError(
                Code.provider_already_linked, f"A {provider.name} account is linked already"
            ) from None
        raise
    return LinkResult(
        identity=LinkedIdentity(
            provider=provider.id, username=snapshot["username"], created_at=rfc3339(now)
        )
    )


async def _has_provider(services: Services, user_id: int, provider_id: str) -> bool:
    found = await services.db.fetch_val(
        sa.select(oauth_identities.c.id).where(
            oauth_identities.c.user_id == user_id, oauth_identities.c.provider == provider_id
        )
    )
    return found is not None


async def reauth_with(
    services: Services, user_id: int, session_id: int, provider: Provider, profile: Profile
) -> None:
    linked = await _identity_by_subject(services, provider.id, profile.subject)
    if linked is None or linked["user_id"] != user_id:
        raise ApiError(Code.identity_mismatch, "That provider account is not linked to you")
    await services.db.execute(
        oauth_identities.update()
        .where(oauth_identities.c.id == linked["id"])
        .values(**_snapshot(profile), last_login_at=datetime.now(UTC))
    )
    await mark_authenticated(services, session_id)


# --- E21 unlink ---------------------------------------------------------------------------


async def do_unlink(services: Services, user_id: int, provider_id: str) -> None:
    """Remove a linked identity, unless it is the account's last way to sign in."""
    async with services.db.transaction() as tx:
        # Touching the user row first serializes concurrent unlinks of one account, so two
        # of them cannot each leave the other as "the last one" and both delete (PostgreSQL
        # row lock; SQLite writes are serial anyway).
        account = await services.db.fetch_one(
            users.update()
            .where(users.c.id == user_id)
            .values(updated_at=datetime.now(UTC))
            .returning(users.c.password_hash)
        )
        identities = await _identities_of(services, user_id)
        target = next((row for row in identities if row["provider"] == provider_id), None)
        if account is None or target is None:
            raise ApiError(Code.not_found, "No such linked provider")
        if account["password_hash"] is None and len(identities) == 1:
            raise ApiError(
                Code.last_login_method,
                "Set a password or link another provider before unlinking this one",
            )
        await services.db.execute(
            oauth_identities.delete().where(oauth_identities.c.id == target["id"])
        )
        await account_update_event(services, tx, user_id)
