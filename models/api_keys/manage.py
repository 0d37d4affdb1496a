"""Managing keys (K1-K6), sweeping them (R25), and their part in account deletion and
export (users.md R9, R10)."""

from __future__ import annotations

import random
import sqlite3
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import sqlalchemy as sa

from models.api_keys.shapes import (
    API_KEY_UPDATE,
    ApiKey,
    ApiKeyUpdate,
    ApiKeyWithSecret,
    grace_until,
    key_view,
    opt_time,
    revoked_event,
    with_secret,
)
from models.api_keys.state import write_through
from models.api_keys.tables import (
    CREATE_ATTEMPTS,
    CREATE_RATE,
    KEY_LIMIT,
    KEY_PREFIX,
    MAX_SCOPES,
    NAME_MAX,
    PREFIX_ALPHABET,
    ROTATE_RATE,
    SCOPES,
    api_keys,
)
from models.exports import exporter
from models.users import users
from models.users.deletion import on_account_deleted, on_deletion_requested
from server.db import Transaction
from server.errors import ApiError, Code, FieldError
from server.events import make_event
from server.ids import new_id
from server.secrets import random_token, sha256
from server.services import Services

# --- checks ---------------------------------------------------------------------------------


def check_key_name(name: str) -> str:
    text = unicodedata.normalize("NFC", name).strip()
    if not 1 <= len(text) <= NAME_MAX:
        raise ApiError(
            Code.validation_failed,
            f"Key names are 1-{NAME_MAX} characters",
            errors=[FieldError("name", f"1-{NAME_MAX} characters after trimming")],
        )
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise ApiError(
            Code.validation_failed,
            "Key names cannot hold control characters",
            errors=[FieldError("name", "control or format characters")],
        )
    return text


def check_scopes(scopes: list[str]) -> list[str]:
    """1..20 distinct scopes from the catalog, returned in catalog order."""
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, scope in enumerate(scopes):
        if scope not in SCOPES:
            errors.append(FieldError(f"scopes[{index}]", f"Unknown scope {scope[:64]!r}"))
        elif scope in seen:
            errors.append(FieldError(f"scopes[{index}]", f"Duplicate scope {scope!r}"))
        seen.add(scope)
    if not 1 <= len(scopes) <= MAX_SCOPES:
        errors.append(FieldError("scopes", f"1-{MAX_SCOPES} scopes"))
    if errors:
        fields = ", ".join(e.field for e in errors[:5])
        raise ApiError(Code.validation_failed, f"Invalid scopes: {fields}", errors=errors)
    return [scope for scope in SCOPES if scope in seen]


# --- reads ----------------------------------------------------------------------------------


def _live(now: datetime) -> sa.ColumnElement[bool]:
    """Not revoked and not expired: a key that still works (R25: expired = revoked)."""
    return sa.and_(
        api_keys.c.revoked_at.is_(None),
        sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
    )


async def list_keys(services: Services, user_id: int) -> list[dict[str, Any]]:
    """K1: the owner's working keys, newest first (at most KEY_LIMIT exist)."""
    now = datetime.now(UTC)
    return await services.db.fetch_all(
        sa.select(api_keys)
        .where(api_keys.c.user_id == user_id, _live(now))
        .order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc())
        .limit(KEY_LIMIT)
    )


async def access_key(services: Services, user_id: int, key_id: int) -> dict[str, Any]:
    """The caller's working key, or 404: another user's key looks exactly like none."""
    row = await services.db.fetch_one(
        sa.select(api_keys).where(
            api_keys.c.id == key_id, api_keys.c.user_id == user_id, _live(datetime.now(UTC))
        )
    )
    if row is None:
        raise ApiError(Code.not_found, "No such API key")
    return row


# --- writes ---------------------------------------------------------------------------------


def is_unique_violation(error: Exception) -> bool:
    return isinstance(error, (asyncpg.UniqueViolationError, sqlite3.IntegrityError))


def new_key() -> tuple[str, str, str]:
    """(prefix, secret, full key)."""
    prefix = "".join(random.SystemRandom().choice(PREFIX_ALPHABET) for _ in range(8))
    secret = random_token(32)
    return prefix, secret, f"{KEY_PREFIX}{prefix}_{secret}"


async def do_create_key(
    services: Services,
    user_id: int,
    *,
    name: str,
    scopes: list[str],
    expires_in_days: int | None,
) -> ApiKeyWithSecret:
    """K2. The unique indexes decide races: of two creations at the limit, or with one
    name, exactly one wins and the other gets 409."""
    name = check_key_name(name)
    scopes = check_scopes(scopes)
    db = services.db
    owner = await db.fetch_one(sa.select(users.c.email_verified_at).where(users.c.id == user_id))
    if owner is None or owner["email_verified_at"] is None:
        raise ApiError(Code.email_unverified, "Verify your email address to create API keys")
    await expire_due_keys(services, user_id=user_id)  # an expired key frees its slot and name
    await _free_slots(services, user_id, name)  # a creation that cannot succeed costs nothing
    await services.limiter.check(CREATE_RATE, "api-key-create", str(user_id))
    now = datetime.now(UTC)
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
    for _ in range(CREATE_ATTEMPTS):
        free = await _free_slots(services, user_id, name)
        prefix, secret, key = new_key()
        row = {
            "id": new_id(),
            "user_id": user_id,
            "name": name,
            "prefix": prefix,
            "slot": random.choice(free),  # concurrent creators rarely pick the same one
            "secret_hash": sha256(secret),
            "prev_secret_hash": None,
            "prev_valid_until": None,
            "scopes": scopes,
            "created_at": now,
            "expires_at": expires_at,
            "rotated_at": None,
            "revoked_at": None,
            "last_used_at": None,
            "last_used_ip": None,
        }
        try:
            async with db.transaction() as tx:
                await db.execute(api_keys.insert().values(**row))
                write_through(services, tx, [prefix])
        except Exception as error:
            if not is_unique_violation(error):
                raise
            continue  # a concurrent creation took the slot or the name (or the prefix): look again
        return with_secret(row, key)
    raise ApiError(Code.conflict, "Too many concurrent changes to your keys; try again")


async def _free_slots(services: Services, user_id: int, name: str) -> list[int]:
    """The owner's free places for a key named `name`; 409 when the name or the places are
    taken (the unique indexes have the last word)."""
    holders = await services.db.fetch_all(
        sa.select(api_keys.c.slot, api_keys.c.name).where(
            api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None)
        )
    )
    if any(row["name"].lower() == name.lower() for row in holders):
        raise ApiError(Code.name_taken, "You already have a key with that name")
    free = sorted(set(range(KEY_LIMIT)) - {row["slot"] for row in holders})
    if not free:
        raise ApiError(
            Code.api_key_limit, f"You can have at most {KEY_LIMIT} keys; revoke one first"
        )
    return free


async def do_update_key(
    services: Services,
    user_id: int,
    key_id: int,
    *,
    name: str | None,
    scopes: list[str] | None,
) -> ApiKey:
    """K4: rename and/or change scopes; emits API_KEY_UPDATE (the gateway re-checks the
    key's sockets against the new scopes, R26)."""
    if name is None and scopes is None:
        raise ApiError(
            Code.validation_failed,
            "Send a name, scopes, or both",
            errors=[FieldError("body", "at least one of name, scopes")],
        )
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = check_key_name(name)
    if scopes is not None:
        values["scopes"] = check_scopes(scopes)
    await access_key(services, user_id, key_id)
    db = services.db
    if "name" in values:
        clash = await db.fetch_one(
            sa.select(api_keys.c.id).where(
                api_keys.c.user_id == user_id,
                api_keys.c.revoked_at.is_(None),
                api_keys.c.id != key_id,
                sa.func.lower(api_keys.c.name) == values["name"].lower(),
            )
        )
        if clash is not None:
            raise ApiError(Code.name_taken, "You already have a key with that name")
    try:
        async with db.transaction() as tx:
            row = await db.fetch_one(
                api_keys.update()
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.user_id == user_id,
                    _live(datetime.now(UTC)),
                )
                .values(**values)
                .returning(*api_keys.c)
            )
            if row is None:  # revoked meanwhile
                raise ApiError(Code.not_found, "No such API key")
            view = key_view(row)
            tx.emit(make_event(API_KEY_UPDATE, ApiKeyUpdate(key=view), [f"user:{user_id}"]))
            write_through(services, tx, [row["prefix"]])
    except ApiError:
        raise
    except Exception as error:
        if is_unique_violation(error):
            raise ApiError(Code.name_taken, "You already have a key with that name") from None
        raise
    return view


async def do_rotate_key(
    services: Services, user_id: int, key_id: int, grace_seconds: int
) -> ApiKeyWithSecret:
    """K5: a new secret under the same prefix. With grace, the old secret keeps working
    until `grace_until`; any secret older than that stops now (R25)."""
    current = await access_key(services, user_id, key_id)
    await services.limiter.check(ROTATE_RATE, "api-key-rotate", str(key_id))
    now = datetime.now(UTC)
    secret = random_token(32)
    key = f"{KEY_PREFIX}{current['prefix']}_{secret}"
    values: dict[str, Any] = {"secret_hash": sha256(secret), "rotated_at": now}
    if grace_seconds > 0:
        # Evaluated by the database against the row as it is: the old current secret.
        values["prev_secret_hash"] = api_keys.c.secret_hash
        values["prev_valid_until"] = now + timedelta(seconds=grace_seconds)
    else:
        values["prev_secret_hash"] = None
        values["prev_valid_until"] = None
    db = services.db
    async with db.transaction() as tx:
        row = await db.fetch_one(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.user_id == user_id, _live(now))
            .values(**values)
            .returning(*api_keys.c)
        )
        if row is None:
            raise ApiError(Code.not_found, "No such API key")
        # A secret stops working now: the old one without grace, or an earlier one whose
        # grace this rotation cuts short. The gateway closes the sockets that used it.
        if grace_seconds == 0 or grace_until(current, now) is not None:
            tx.emit(revoked_event(row, "rotated"))
        write_through(services, tx, [row["prefix"]])
    return with_secret(row, key)


async def do_revoke_key(services: Services, user_id: int, key_id: int) -> None:
    """K6: the key gets 401 everywhere once this returns (R25)."""
    db = services.db
    async with db.transaction() as tx:
        row = await db.fetch_one(
            api_keys.update()
            .where(
                api_keys.c.id == key_id,
                api_keys.c.user_id == user_id,
                _live(datetime.now(UTC)),
            )
            .values(revoked_at=datetime.now(UTC))
            .returning(api_keys.c.id, api_keys.c.user_id, api_keys.c.prefix)
        )
        if row is None:
            raise ApiError(Code.not_found, "No such API key")
        tx.emit(revoked_event(row, "revoked"))
        write_through(services, tx, [row["prefix"]])


@on_deletion_requested
async def do_revoke_user_keys(services: Services, tx: Transaction, user_id: int) -> int:
    """Revoke every key of an account being deleted (users.md R9: inside U8's transaction);
    emits API_KEY_REVOKED `owner_deleted` for each. Returns how many."""
    rows = await services.db.fetch_all(
        api_keys.update()
        .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .returning(api_keys.c.id, api_keys.c.user_id, api_keys.c.prefix)
    )
    for row in rows:
        tx.emit(revoked_event(row, "owner_deleted"))
    write_through(services, tx, [row["prefix"] for row in rows])
    return len(rows)


# --- sweeping (R25) -------------------------------------------------------------------------


async def expire_due_keys(services: Services, user_id: int | None = None) -> int:
    """Mark keys past `expires_at` revoked and emit API_KEY_REVOKED `expired` for each."""
    now = datetime.now(UTC)
    condition = [api_keys.c.revoked_at.is_(None), api_keys.c.expires_at <= now]
    if user_id is not None:
        condition.append(api_keys.c.user_id == user_id)
    async with services.db.transaction() as tx:
        rows = await services.db.fetch_all(
            api_keys.update()
            .where(*condition)
            .values(revoked_at=now)
            .returning(api_keys.c.id, api_keys.c.user_id, api_keys.c.prefix)
        )
        for row in rows:
            tx.emit(revoked_event(row, "expired"))
        write_through(services, tx, [row["prefix"] for row in rows])
    return len(rows)


async def end_rotation_graces(services: Services) -> int:
    """Forget previous secrets whose grace is over and emit API_KEY_REVOKED `rotated`.
    (A secret past its grace is refused whether or not this has run yet.)"""
    now = datetime.now(UTC)
    async with services.db.transaction() as tx:
        rows = await services.db.fetch_all(
            api_keys.update()
            .where(api_keys.c.prev_valid_until <= now)
            .values(prev_secret_hash=None, prev_valid_until=None)
            .returning(api_keys.c.id, api_keys.c.user_id, api_keys.c.prefix, api_keys.c.revoked_at)
        )
        for row in rows:
            if row["revoked_at"] is None:
                tx.emit(revoked_event(row, "rotated"))
        write_through(services, tx, [row["prefix"] for row in rows])
    return len(rows)


async def sweep_api_keys(services: Services) -> None:
    """The worker's periodic pass over keys."""
    await expire_due_keys(services)
    await end_rotation_graces(services)


# --- account deletion and export (users.md R9, R10) ----------------------------------------


@on_account_deleted
async def delete_user_keys(services: Services, tx: Transaction, user_id: int) -> None:
    """Anonymization deletes the keys (revoking, with its event, any still live: an admin's
    immediate deletion skips U8)."""
    await do_revoke_user_keys(services, tx, user_id)
    await services.db.execute(api_keys.delete().where(api_keys.c.user_id == user_id))


@exporter("api_keys")
async def export_api_keys(services: Services, user_id: int) -> list[dict[str, Any]]:
    """Metadata only: never a secret or its hash."""
    rows = await services.db.fetch_all(
        sa.select(api_keys).where(api_keys.c.user_id == user_id).order_by(api_keys.c.created_at)
    )
    return [
        {
            **msgspec.structs.asdict(key_view(row)),
            "revoked_at": opt_time(row["revoked_at"]),
        }
        for row in rows
    ]
