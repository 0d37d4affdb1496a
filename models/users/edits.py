"""Editing identity and profile fields (users.md U5, R1, R2, R6).

Username claims: validity and the cooldown are judged first, then availability among current
usernames and live reservations; the unique index on `username_lower` decides between two
concurrent claims, and reservations are checked again inside the claiming transaction.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from models.users import (
    USERNAME_COOLDOWN,
    USERNAME_HOLD,
    check_display_name,
    check_username,
    get_user,
    username_claimable,
    username_problem,
    username_reservations,
    users,
)
from models.users.profiles import emit_user_update
from server.db import Database
from server.errors import ApiError, Code, FieldError
from server.events import rfc3339
from server.services import Services

BIO_MAX = 500
LOCATION_MAX = 64
WEBSITE_MAX = 200


def check_website(value: str, field: str = "website") -> str:
    """R6: an https URL of at most 200 characters, without userinfo."""
    text = value.strip()
    problem = None
    parts = urlsplit(text) if len(text) <= WEBSITE_MAX else None
    if parts is None:
        problem = f"at most {WEBSITE_MAX} characters"
    elif parts.scheme != "https" or not text.lower().startswith("https://"):
        problem = "must be an https:// URL"
    elif "@" in parts.netloc:
        problem = "must not contain a user name or password"
    elif any(c.isspace() or c == "\\" or unicodedata.category(c) in ("Cc", "Cf") for c in text):
        problem = "must not contain spaces, backslashes or control characters"
    else:
        try:
            host, _ = parts.hostname, parts.port
        except ValueError:
            host = None
        if not host or host.startswith(".") or ".." in host:
            problem = "must name a host"
    if problem is not None:
        raise ApiError(
            Code.validation_failed, f"{field}: {problem}", errors=[FieldError(field, problem)]
        )
    return text


def _check_text(value: str, field: str, maximum: int) -> str:
    if len(value) > maximum:
        raise ApiError(
            Code.validation_failed,
            f"{field}: at most {maximum} characters",
            errors=[FieldError(field, f"at most {maximum} characters")],
        )
    return value  # (NUL characters never get this far: server/schemas.py refuses them)


def username_change_available_at(row: dict[str, Any]) -> datetime | None:
    """When the next username change is allowed (None: now). A generated username's first
    change is free, so it never waits (R1)."""
    changed = row["username_changed_at"]
    if changed is None:
        return None
    available = changed + USERNAME_COOLDOWN
    return available if available > datetime.now(UTC) else None


def _cooldown_error(available_at: datetime) -> ApiError:
    return ApiError(
        Code.username_cooldown,
        "The username can be changed once every 30 days",
        extra={"available_at": rfc3339(available_at)},
    )


def _is_unique_violation(error: Exception) -> bool:
    name = type(error).__name__
    return name in ("UniqueViolationError", "IntegrityError") and (
        "unique" in str(error).lower() or name == "UniqueViolationError"
    )


async def do_update_profile(services: Services, user_id: int, changes: dict[str, Any]) -> list[str]:
    """U5: apply the fields sent (None clears). Validates everything before writing; a username
    claim is decided by the unique index, and live reservations are checked inside the same
    transaction. Emits USER_UPDATE when the username or display name changed; a change that
    alters nothing writes and emits nothing. Returns the USER_UPDATE `changed` list."""
    if not changes:
        raise ApiError(
            Code.validation_failed,
            "Send at least one field to change",
            errors=[FieldError("body", "at least one field")],
        )
    row = await get_user(services.db, user_id)
    if row is None or row["status"] == "deleted":
        raise ApiError(Code.session_revoked, "This session has ended; sign in again")
    values: dict[str, Any] = {}
    problems: list[FieldError] = []

    def checked(field: str, check, value):
        """`check(value)`, collecting its field errors so one answer names every field."""
        try:
            return check(value)
        except ApiError as error:
            if error.code is not Code.validation_failed:
                raise
            problems.extend(error.errors or [FieldError(field, str(error))])
            return None

    if "display_name" in changes and changes["display_name"] is not None:
        name = checked("display_name", check_display_name, changes["display_name"])
    else:
        name = None
    for field, maximum in (("bio", BIO_MAX), ("location", LOCATION_MAX)):
        if changes.get(field):
            checked(field, lambda text, f=field, m=maximum: _check_text(text, f, m), changes[field])
    if changes.get("website"):
        site = checked("website", check_website, changes["website"])
    new_name = changes.get("username")
    if (
        new_name is not None
        and new_name != row["username"]
        and username_problem(new_name) == "invalid"
    ):
        checked("username", check_username, new_name)
    if problems:
        raise ApiError(
            Code.validation_failed,
            "Invalid fields: " + ", ".join(p.field for p in problems),
            errors=problems,
        )
    if "display_name" in changes and name != row["display_name"]:
        values.update(display_name=name, display_name_lower=name.lower() if name else None)
    for field in ("bio", "location"):
        if field in changes:
            text = changes[field] or None  # "" clears, like null
            if text != row[field]:
                values[field] = text
    if "website" in changes:
        site = site if changes["website"] else None
        if site != row["website"]:
            values["website"] = site
    now = datetime.now(UTC)
    renaming = new_name is not None and new_name != row["username"]
    free_change = row["username_generated"] and row["username_changed_at"] is None
    if renaming:
        check_username(new_name)
        available_at = None if free_change else username_change_available_at(row)
        if available_at is not None:
            raise _cooldown_error(available_at)
        new_lower = new_name.lower()
        if new_lower != row["username_lower"] and not await username_claimable(
            services.db, new_name, user_id
        ):
            raise await _unavailable(services.db, new_lower)
        values.update(
            username=new_name,
            username_lower=new_lower,
            username_generated=False,
            username_changed_at=row["username_changed_at"] if free_change else now,
        )
    if not values:
        return []
    changed = [f for f in ("username", "display_name") if f in values]
    try:
        async with services.db.transaction() as tx:
            statement = users.update().where(users.c.id == user_id, users.c.status != "deleted")
            if renaming:  # the name and cooldown state the change was judged on must still hold
                statement = statement.where(
                    users.c.username_lower == row["username_lower"],
                    users.c.username_changed_at.is_(None)
                    if row["username_changed_at"] is None
                    else users.c.username_changed_at == row["username_changed_at"],
                )
            updated = await services.db.fetch_one(
                statement.values(**values, updated_at=now).returning(*users.c)
            )
            if updated is None:  # a concurrent change of this user's username won
                raise await _lost_race(services.db, user_id)
            if renaming and values["username_lower"] != row["username_lower"]:
                await _move_reservations(services.db, user_id, row["username_lower"], values, now)
            if changed:
                await emit_user_update(services, tx, updated, changed)
    except ApiError:
        raise
    except Exception as error:
        if _is_unique_violation(error):
            raise ApiError(Code.username_taken, "That username is taken") from None
        raise
    return changed


async def _move_reservations(
    db: Database, user_id: int, old_lower: str, values: dict[str, Any], now: datetime
) -> None:
    """Inside U5's transaction: refuse a name someone else's reservation holds (it may have
    been created after our pre-check), release the caller's own hold on the name they take
    back, and hold the old name for the caller for 30 days."""
    new_lower = values["username_lower"]
    hold = await db.fetch_one(
        sa.select(username_reservations).where(
            username_reservations.c.username_lower == new_lower,
            username_reservations.c.reserved_until > now,
        )
    )
    if hold is not None and hold["user_id"] != user_id:
        raise ApiError(Code.username_reserved, "That username is reserved")
    await db.execute(
        username_reservations.delete().where(username_reservations.c.username_lower == new_lower)
    )
    await db.execute(
        db.upsert(
            username_reservations,
            {
                "username_lower": old_lower,
                "user_id": user_id,
                "reserved_until": now + USERNAME_HOLD,
            },
            conflict=["username_lower"],
            update={"user_id": user_id, "reserved_until": now + USERNAME_HOLD},
        )
    )


async def _unavailable(db: Database, lower: str) -> ApiError:
    taken = await db.fetch_val(sa.select(users.c.id).where(users.c.username_lower == lower))
    if taken is not None:
        return ApiError(Code.username_taken, "That username is taken")
    return ApiError(Code.username_reserved, "That username is reserved")


async def _lost_race(db: Database, user_id: int) -> ApiError:
    row = await get_user(db, user_id)
    available_at = username_change_available_at(row) if row else None
    if available_at is not None:
        return _cooldown_error(available_at)
    return ApiError(Code.conflict, "The username changed meanwhile; try again")
