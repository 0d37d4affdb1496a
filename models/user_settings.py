"""Settings and privacy writes (users.md U6, U7) and the event that syncs them to other devices.

A user without a `user_settings` or `user_privacy` row has every default; a row appears on the
first change. `locale` also lives on the users row (chosen at registration, read by mail):
until the user changes it here that value is the default, and U6 writes both in one
transaction so the two never disagree.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import sqlalchemy as sa

from models import privacy as privacy_store
from models.privacy import Privacy
from models.users import users
from server.db import UTCDateTime, metadata
from server.errors import ApiError, Code, FieldError, validation_error
from server.events import event_type, make_event, rfc3339
from server.services import Services

Locale = Literal["ru", "en"]
TitleLanguage = Literal["romaji", "english", "russian"]

user_settings = sa.Table(
    "user_settings",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("locale", sa.String(2), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("title_language", sa.String(8), nullable=False),
    sa.Column("autoplay_next", sa.Boolean, nullable=False),
    sa.Column("email_prefs", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


class EmailPrefs(msgspec.Struct, forbid_unknown_fields=True):
    """Optional mail; security mail is always sent."""

    friend_activity: bool = False
    product_updates: bool = False


class Settings(msgspec.Struct, kw_only=True):
    locale: Locale = "ru"
    timezone: str = "UTC"
    title_language: TitleLanguage = "russian"
    autoplay_next: bool = True
    email_prefs: EmailPrefs = msgspec.field(default_factory=EmailPrefs)
    updated_at: str | None = None


SETTINGS_FIELDS = ("locale", "timezone", "title_language", "autoplay_next", "email_prefs")


class UserSettingsUpdate(msgspec.Struct, omit_defaults=True):
    """Whichever of the three changed; `notifications` is social.md N6's body (N7 emits it)."""

    settings: Settings | None = None
    privacy: Privacy | None = None
    notifications: dict[str, Any] | None = None


USER_SETTINGS_UPDATE = event_type("USER_SETTINGS_UPDATE", UserSettingsUpdate)


@functools.cache
def known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def check_timezone(name: str) -> str:
    if name not in known_timezones():
        raise validation_error("timezone", "Not a time zone of the IANA database")
    return name


def settings_of(row: dict[str, Any] | None, default_locale: str) -> Settings:
    if row is None:
        return Settings(locale=default_locale if default_locale in ("ru", "en") else "ru")
    return Settings(
        locale=row["locale"],
        timezone=row["timezone"],
        title_language=row["title_language"],
        autoplay_next=row["autoplay_next"],
        email_prefs=msgspec.convert(row["email_prefs"], EmailPrefs),
        updated_at=rfc3339(row["updated_at"]),
    )


async def get_settings(services: Services, user_id: int) -> Settings:
    row = await services.db.fetch_one(
        sa.select(user_settings, users.c.locale.label("account_locale"))
        .select_from(users.outerjoin(user_settings, user_settings.c.user_id == users.c.id))
        .where(users.c.id == user_id)
    )
    if row is None:
        return Settings()
    return settings_of(row if row["user_id"] is not None else None, row["account_locale"])


async def do_update_settings(services: Services, user_id: int, changes: dict[str, Any]) -> Settings:
    """U6: apply `changes` (already validated); a change that alters nothing writes nothing
    and emits nothing."""
    if not changes:
        raise _nothing_to_change()
    if "timezone" in changes:
        check_timezone(changes["timezone"])
    current = await get_settings(services, user_id)
    changed = {
        field: value
        for field, value in changes.items()
        if msgspec.to_builtins(getattr(current, field)) != msgspec.to_builtins(value)
    }
    if not changed:
        return current
    now = datetime.now(UTC)
    values = {field: getattr(current, field) for field in SETTINGS_FIELDS}
    values.update(changed)
    stored = {k: msgspec.to_builtins(v) for k, v in values.items()}
    async with services.db.transaction() as tx:
        await services.db.execute(
            services.db.upsert(
                user_settings,
                {"user_id": user_id, **stored, "updated_at": now},
                conflict=["user_id"],
                update={**{k: stored[k] for k in changed}, "updated_at": now},
            )
        )
        if "locale" in changed:
            await services.db.execute(
                users.update().where(users.c.id == user_id).values(locale=stored["locale"])
            )
        fresh = await get_settings(services, user_id)
        tx.emit(
            make_event(
                USER_SETTINGS_UPDATE, UserSettingsUpdate(settings=fresh), [f"user:{user_id}"]
            )
        )
    return fresh


async def do_update_privacy(services: Services, user_id: int, changes: dict[str, Any]) -> Privacy:
    """U7: store the change and write it through the shared cache before returning (R4)."""
    if not changes:
        raise _nothing_to_change()
    current = await privacy_store.load_privacy(services, user_id)
    changed = {f: v for f, v in changes.items() if getattr(current, f) != v}
    if not changed:
        return current
    async with services.db.transaction() as tx:
        await privacy_store.write_privacy(services, tx, user_id, changed, datetime.now(UTC))
        fresh = await privacy_store.load_privacy(services, user_id)
        for hook in privacy_store.PRIVACY_CHANGE_HOOKS:
            await hook(services, tx, user_id, current, fresh)
        tx.emit(
            make_event(USER_SETTINGS_UPDATE, UserSettingsUpdate(privacy=fresh), [f"user:{user_id}"])
        )
    return fresh


def _nothing_to_change() -> ApiError:
    return ApiError(
        Code.validation_failed,
        "Send at least one field to change",
        errors=[FieldError("body", "at least one field")],
    )
