"""Using a key (R22, R25): the shared cache of key state and the Bot Identity."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import sqlalchemy as sa
from starlette.requests import Request

from models.api_keys.tables import KEY_PATTERN, REQUEST_RATE, STATE_TTL_S, TOUCH_EVERY_S, api_keys
from models.auth.identity import user_state
from server.auth import Identity
from server.db import Transaction
from server.errors import ApiError, Code
from server.http import client_ip
from server.secrets import same_digest, sha256
from server.services import Services

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
WRITE_THROUGH_ROUNDS = 5


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


def write_through(services: Services, tx: Transaction, prefixes: list[str]) -> None:
    """Once committed (and before the request returns), put the new state in the cache.

    Two changes to one key at once could set their states in the opposite order of their
    commits; each writer therefore reads the row again after setting, and sets again until
    the cache holds what the database holds."""

    async def refresh() -> None:
        for prefix in prefixes:
            state = await _load_state(services, prefix)
            for _ in range(WRITE_THROUGH_ROUNDS):
                if state is None:
                    await services.cache.delete(state_cache_key(prefix))
                    break
                await services.cache.set(state_cache_key(prefix), _encode_state(state), STATE_TTL_S)
                now = await _load_state(services, prefix)
                if now == state:
                    break
                state = now

    tx.on_commit(refresh)


# --- using a key (R22) ---------------------------------------------------------------------


def parse_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    match = KEY_PATTERN.match(key)
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
