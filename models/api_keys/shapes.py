"""What keys look like outside: the ApiKey shape and the events (auth.md "Events")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from models.api_keys.tables import KEY_PREFIX, RevokeReason
from server.events import event_type, make_event, rfc3339

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


def opt_time(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def grace_until(row: dict[str, Any], now: datetime | None = None) -> datetime | None:
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
        expires_at=opt_time(row["expires_at"]),
        rotated_at=opt_time(row["rotated_at"]),
        grace_until=opt_time(grace_until(row)),
        last_used_at=opt_time(row["last_used_at"]),
        last_used_ip=row["last_used_ip"],
    )


def with_secret(row: dict[str, Any], key: str) -> ApiKeyWithSecret:
    return ApiKeyWithSecret(**msgspec.structs.asdict(key_view(row)), secret=key)


def revoked_event(row: dict[str, Any], reason: RevokeReason):
    return make_event(
        API_KEY_REVOKED,
        ApiKeyRevoked(key_id=str(row["id"]), reason=reason),
        [f"user:{row['user_id']}"],
    )
