"""API keys for bots (auth.md K1–K6, R21–R26).

A key is `anl_<prefix>_<secret>`: the prefix (8 × [a-z0-9], unique) finds the row, the secret
is kept only as SHA-256 and compared in constant time. A key acts as its owner, limited to
its scopes; the endpoint authorizer (server.auth) applies the scopes, this module turns a key
into that Identity.

Key state is read through the shared cache (≤ 60 s) and written through on every change
before the request returns, so a revocation (K6), a rotation (K5) or new scopes (K4) apply on
the next request on every worker (R25). Readers fill the cache with set-if-absent and writers
overwrite it, so a reader that loaded the row just before a change cannot put it back.

Two invariants are kept by partial unique indexes over the non-revoked keys, not by reads:
names are unique per user (case-insensitively), and each key holds one of the user's ten
`slot`s, which is how two concurrent creations at the limit end with exactly one winner.
"""

from __future__ import annotations

import random
import re
import sqlite3
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import msgspec
import sqlalchemy as sa
from starlette.requests import Request

from models.auth.identity import user_state
from models.exports import exporter
from models.users import users
from models.users.deletion import on_account_deleted, on_deletion_requested
from server.auth import Identity
from server.db import Transaction, UTCDateTime, metadata
from server.errors import ApiError, Code, FieldError
from server.events import event_type, make_event, rfc3339
from server.http import client_ip
from server.ids import new_id
from server.secrets import random_token, same_digest, sha256
from server.services import Services

# --- constants from the spec ---------------------------------------------------------------

SCOPES = (
    "profile:read",
    "list:read",
    "list:write",
    "collections:read",
    "collections:write",
    "comments:write",
    "game:read",
    "servers:read",
    "servers:write",
    "messages:content",
    "presence:read",
    "parties:read",
)
"""The R23 catalog, in the order keys list them."""

KEY_LIMIT = 10  # non-revoked keys per user (R24)
MAX_SCOPES = 20
NAME_MAX = 64
CREATE_RATE = "10/day"  # per user (K2)
ROTATE_RATE = "10/hour"  # per key (K5)
REQUEST_RATE = "120/minute"  # per key, a bucket separate from the owner's (R24)
STATE_TTL_S = 60  # shared cache of key state, as for sessions (R2, R25)
TOUCH_EVERY_S = 60  # last_used_at / last_used_ip at most once a minute (R24)
MAX_GRACE_S = 86_400
SWEEP_EVERY_S = 30.0  # expiry and end of rotation grace (R25)
KEY_PREFIX = "anl_"
PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_KEY_PATTERN = re.compile(r"^anl_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
_CREATE_ATTEMPTS = 12

RevokeReason = Literal["revoked", "rotated", "expired", "owner_deleted"]

# --- table ---------------------------------------------------------------------------------

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("name", sa.String(NAME_MAX), nullable=False),
    sa.Column("prefix", sa.CHAR(8), nullable=False, unique=True),
    # Which of the owner's KEY_LIMIT places the key holds while not revoked (0..9).
    sa.Column("slot", sa.SmallInteger, nullable=False),
    sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("prev_secret_hash", sa.LargeBinary(32), nullable=True),
    sa.Column("prev_valid_until", UTCDateTime, nullable=True, index=True),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True, index=True),
    sa.Column("rotated_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("last_used_ip", sa.String(45), nullable=True),
)
_LIVE_ROWS = sa.text("revoked_at IS NULL")
sa.Index(
    "uq_api_keys_user_id_lower_name",
    api_keys.c.user_id,
    sa.func.lower(api_keys.c.name),
    unique=True,
    postgresql_where=_LIVE_ROWS,
    sqlite_where=_LIVE_ROWS,
)
sa.Index(
    "uq_api_keys_user_id_slot",
    api_keys.c.user_id,
    api_keys.c.slot,
    unique=True,
    postgresql_where=_LIVE_ROWS,
    sqlite_where=_LIVE_ROWS,
)

# --- shapes and events ---------------------------------------------------------------------


class ApiKey(msgspec.Struct):
    """The ApiKey shape (auth.md "Endpoints"): never the secret or its hash."""

    id: str
    name: str
    prefix: str
    display: str
    scopes: list[str]
    created_at: str
    expires_at: str | None
    rotated_at: str | None
    grace_until: str | None
    last_used_at: str | None
    last_used_ip: str | None


class ApiKeyWithSecret(ApiKey, kw_only=True):
    """K2 and K5: the one time the full key is shown."""

    secret: str


class ApiKeyUpdate(msgspec.Struct):
    key: ApiKey


class ApiKeyRevoked(msgspec.Struct):
    key_id: str
    reason: RevokeReason


API_KEY_UPDATE = event_type("API_KEY_UPDATE", ApiKeyUpdate)
API_KEY_REVOKED = event_type("API_KEY_REVOKED", ApiKeyRevoked)


def _opt(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _grace_until(row: dict[str, Any], now: datetime | None = None) -> datetime | None:
    until = row["prev_valid_until"]
    if row["prev_secret_hash"] is None or until is None or until <= (now or datetime.now(UTC)):
        return None
    return until


def key_view(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=str(row["id"]),
        name=row["name"],
        prefix=row["prefix"],
        display=f"{KEY_PREFIX}{row['prefix']}_…",
        scopes=list(row["scopes"]),
        created_at=rfc3339(row["created_at"]),
        expires_at=_opt(row["expires_at"]),
        rotated_at=_opt(row["rotated_at"]),
        grace_until=_opt(_grace_until(row)),
        last_used_at=_opt(row["last_used_at"]),
        last_used_ip=row["last_used_ip"],
    )


def with_secret(row: dict[str, Any], key: str) -> ApiKeyWithSecret:
    return ApiKeyWithSecret(**msgspec.structs.asdict(key_view(row)), secret=key)


def _revoked_event(row: dict[str, Any], reason: RevokeReason):
    return make_event(
        API_KEY_REVOKED,
        ApiKeyRevoked(key_id=str(row["id"]), reason=reason),
        [f"user:{row['user_id']}"],
    )


# --- the shared cache of key state (R25) ---------------------------------------------------


class KeyState(msgspec.Struct, frozen=True):
    id: int
    user_id: int
    secret_hash: bytes
    prev_secret_hash: bytes | None
    prev_valid_until: float | None
    expires_at: float | None
    revoked: bool
    scopes: list[str]


_encode_state = msgspec.msgpack.encode
_decode_state = msgspec.msgpack.Decoder(KeyState).decode


def state_cache_key(prefix: str) -> str:
    return f"auth:apikey:{prefix}"


def _ts(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


async def _load_state(services: Services, prefix: str) -> KeyState | None:
    row = await services.db.fetch_one(sa.select(api_keys).where(api_keys.c.prefix == prefix))
    if row is None:
        return None
    return KeyState(
        id=row["id"],
        user_id=row["user_id"],
        secret_hash=row["secret_hash"],
        prev_secret_hash=row["prev_secret_hash"],
        prev_valid_until=_ts(row["prev_valid_until"]),
        expires_at=_ts(row["expires_at"]),
        revoked=row["revoked_at"] is not None,
        scopes=list(row["scopes"]),
    )


async def key_state(services: Services, prefix: str) -> KeyState | None:
    cached = await services.cache.get(state_cache_key(prefix))
    if cached is not None:
        return _decode_state(cached)
    state = await _load_state(services, prefix)
    if state is not None:  # set-if-absent: never overwrite what a writer just put there
        await services.cache.add(state_cache_key(prefix), _encode_state(state), STATE_TTL_S)
    return state


def _write_through(services: Services, tx: Transaction, prefixes: list[str]) -> None:
    """Once committed (and before the request returns), put the new state in the cache."""

    async def refresh() -> None:
        for prefix in prefixes:
            state = await _load_state(services, prefix)
            if state is None:
                await services.cache.delete(state_cache_key(prefix))
            else:
                await services.cache.set(state_cache_key(prefix), _encode_state(state), STATE_TTL_S)

    tx.on_commit(refresh)


# --- using a key (R22) ---------------------------------------------------------------------


def parse_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    match = _KEY_PATTERN.match(key)
    return (match.group(1), match.group(2)) if match else None


def _invalid_key() -> ApiError:
    # One body for unknown, revoked, expired, wrong secret and deleted owner (R22).
    return ApiError(Code.invalid_api_key, "The API key is not valid")


def secret_matches(state: KeyState, secret: str, now: float) -> bool:
    """Constant-time comparison with the current secret, and with the previous one while
    its rotation grace lasts (R25)."""
    presented = sha256(secret)
    current = same_digest(presented, state.secret_hash)
    previous = (
        state.prev_secret_hash is not None
        and state.prev_valid_until is not None
        and state.prev_valid_until > now
        and same_digest(presented, state.prev_secret_hash)
    )
    return current or previous


async def identify_bot(services: Services, key: str, request: Request) -> Identity:
    """The Identity behind `Authorization: Bot <key>`: the owner, limited to the key's
    scopes. A banned owner gets an Identity with the ban (the authorizer answers 403)."""
    parsed = parse_key(key)
    if parsed is None:
        raise _invalid_key()
    prefix, secret = parsed
    state = await key_state(services, prefix)
    now = datetime.now(UTC).timestamp()
    if (
        state is None
        or state.revoked
        or (state.expires_at is not None and state.expires_at <= now)
        or not secret_matches(state, secret, now)
    ):
        raise _invalid_key()
    owner = await user_state(services, state.user_id)
    if owner is None or owner.status == "deleted":
        raise _invalid_key()
    await services.limiter.check(REQUEST_RATE, "api-key", str(state.id))
    if await services.cache.add(f"auth:apikey-used:{state.id}", b"1", TOUCH_EVERY_S):
        await services.db.execute(
            api_keys.update()
            .where(api_keys.c.id == state.id)
            .values(
                last_used_at=datetime.now(UTC),
                last_used_ip=client_ip(request, services.settings.trusted_proxies)[:45],
            )
        )
    return Identity(
        kind="bot",
        user_id=state.user_id,
        role=owner.role,
        status=owner.status,
        api_key_id=state.id,
        scopes=frozenset(state.scopes),
        banned_until=_dt(owner.banned_until),
        ban_reason=owner.ban_reason,
        muted_until=_dt(owner.muted_until),
    )


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


async def describe_key(services: Services, key_id: int) -> dict | None:
    """{"id", "name", "scopes"} for E6."""
    row = await services.db.fetch_one(
        sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.scopes).where(api_keys.c.id == key_id)
    )
    if row is None:
        return None
    return {"id": str(row["id"]), "name": row["name"], "scopes": list(row["scopes"])}


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


async def _get(services: Services, key_id: int) -> dict[str, Any]:
    row = await services.db.fetch_one(sa.select(api_keys).where(api_keys.c.id == key_id))
    assert row is not None
    return row


# --- writes ---------------------------------------------------------------------------------


def _is_unique_violation(error: Exception) -> bool:
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
    for _ in range(_CREATE_ATTEMPTS):
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
                _write_through(services, tx, [prefix])
        except Exception as error:
            if not _is_unique_violation(error):
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
            _write_through(services, tx, [row["prefix"]])
    except ApiError:
        raise
    except Exception as error:
        if _is_unique_violation(error):
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
        if grace_seconds == 0 or _grace_until(current, now) is not None:
            tx.emit(_revoked_event(row, "rotated"))
        _write_through(services, tx, [row["prefix"]])
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
        tx.emit(_revoked_event(row, "revoked"))
        _write_through(services, tx, [row["prefix"]])


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
        tx.emit(_revoked_event(row, "owner_deleted"))
    _write_through(services, tx, [row["prefix"] for row in rows])
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
            tx.emit(_revoked_event(row, "expired"))
        _write_through(services, tx, [row["prefix"] for row in rows])
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
                tx.emit(_revoked_event(row, "rotated"))
        _write_through(services, tx, [row["prefix"] for row in rows])
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
            "revoked_at": _opt(row["revoked_at"]),
        }
        for row in rows
    ]
