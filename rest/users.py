"""Users: public profiles and search, the caller's own account, deletion and export
(users.md U1-U12)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import StreamingResponse

from models import exports
from models.privacy import DmsFrom, FriendRequestsFrom, Privacy, Visibility, WatchInvitesFrom
from models.user_settings import (
    Locale,
    Settings,
    TitleLanguage,
    do_update_privacy,
    do_update_settings,
)
from models.users import get_user, get_user_by_username
from models.users.deletion import DeletionScheduled, do_cancel_deletion, do_request_deletion
from models.users.me import Me, describe_me, do_update_me
from models.users.profiles import Profile, SearchItem, user_not_found, view_user
from models.users.search import log_search, normalize_query, search_users
from server.errors import ApiError, Code, FieldError
from server.http import Call, endpoint
from server.ids import parse_snowflake
from server.schemas import Schema

PROFILE_READ = "profile:read"
NO_STORE = {"Cache-Control": "no-store"}

ProfileOrCard = Annotated[
    Profile,
    msgspec.Meta(
        description="The Profile, or only the UserCard fields with `is_private: true` when "
        "the viewer may not see more (users.md R3)."
    ),
]


def _viewer(call: Call) -> int | None:
    return call.identity.user_id if call.identity is not None else None


def _changes(body: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body sent (UNSET: not sent; None: clear)."""
    return {
        name: getattr(body, name)
        for name in body.__struct_fields__
        if getattr(body, name) is not UNSET
    }


# --- U3 search (declared before /users/{user_id} so the literal paths win) ------------------


class SearchQuery(Schema):
    q: Annotated[str, msgspec.Meta(max_length=256)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=25)] = 10


class SearchResults(msgspec.Struct):
    items: list[SearchItem]


@endpoint(
    "GET",
    "/users/search",
    query=SearchQuery,
    response=SearchResults,
    auth="optional",
    bot_scope=PROFILE_READ,
    errors=[Code.rate_limited],
)
async def search(call: Call[None, SearchQuery]) -> SearchResults:
    """Find users by username or display-name prefix."""
    needle = normalize_query(call.query.q)
    if needle is None:
        raise ApiError(
            Code.validation_failed,
            "Search for 2 to 32 characters",
            errors=[FieldError("q", "2-32 characters after trimming")],
        )
    identity = call.identity
    if identity is None:
        await call.services.limiter.check("10/minute", "users-search-ip", call.client_ip)
    else:
        await call.services.limiter.check("30/minute", "users-search", str(identity.user_id))
    started = time.perf_counter()
    items = await search_users(call.services, _viewer(call), needle, call.query.limit)
    await log_search(
        call.services,
        query=needle,
        user_id=_viewer(call),
        via_bot=identity is not None and identity.is_bot,
        results=len(items),
        latency_ms=int((time.perf_counter() - started) * 1000),
    )
    return SearchResults(items=items)


# --- U4-U12: the caller's own account -------------------------------------------------------


@endpoint(
    "GET", "/users/me", response=Me, auth="user", bot_scope=PROFILE_READ, errors=[Code.banned]
)
async def get_me(call: Call) -> Me:
    """My profile, email, settings, privacy and loadout."""
    call.headers.update(NO_STORE)
    return await describe_me(call.services, call.user.user_id)


class ProfileEdit(Schema):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | UnsetType = UNSET
    display_name: Annotated[str, msgspec.Meta(max_length=256)] | UnsetType | None = UNSET
    bio: Annotated[str, msgspec.Meta(max_length=500)] | UnsetType | None = UNSET
    location: Annotated[str, msgspec.Meta(max_length=64)] | UnsetType | None = UNSET
    website: Annotated[str, msgspec.Meta(max_length=200)] | UnsetType | None = UNSET


@endpoint(
    "PATCH",
    "/users/me",
    body=ProfileEdit,
    response=Me,
    auth="user",
    errors=[
        Code.username_taken,
        Code.username_reserved,
        Code.username_cooldown,
        Code.conflict,
        Code.rate_limited,
        Code.banned,
    ],
)
async def edit_me(call: Call[ProfileEdit, None]) -> Me:
    """Edit my username, display name, bio, location or website."""
    await call.services.limiter.check("30/hour", "users-profile-edit", str(call.user.user_id))
    call.headers.update(NO_STORE)
    return await do_update_me(call.services, call.user.user_id, _changes(call.body))


class EmailPrefsBody(Schema):
    friend_activity: bool
    product_updates: bool


class SettingsEdit(Schema):
    locale: Locale | UnsetType = UNSET
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | UnsetType = UNSET
    title_language: TitleLanguage | UnsetType = UNSET
    autoplay_next: bool | UnsetType = UNSET
    email_prefs: EmailPrefsBody | UnsetType = UNSET


@endpoint(
    "PATCH",
    "/users/me/settings",
    body=SettingsEdit,
    response=Settings,
    auth="user",
    errors=[Code.banned],
)
async def edit_settings(call: Call[SettingsEdit, None]) -> Settings:
    """Edit my settings."""
    changes = _changes(call.body)
    if "email_prefs" in changes:
        changes["email_prefs"] = msgspec.to_builtins(changes["email_prefs"])
    return await do_update_settings(call.services, call.user.user_id, changes)


class PrivacyEdit(Schema):
    profile_visibility: Visibility | UnsetType = UNSET
    list_visibility: Visibility | UnsetType = UNSET
    watch_invites_from: WatchInvitesFrom | UnsetType = UNSET
    friend_requests_from: FriendRequestsFrom | UnsetType = UNSET
    share_watching: bool | UnsetType = UNSET
    searchable: bool | UnsetType = UNSET
    dms_from: DmsFrom | UnsetType = UNSET


@endpoint(
    "PATCH",
    "/users/me/privacy",
    body=PrivacyEdit,
    response=Privacy,
    auth="user",
    errors=[Code.banned],
)
async def edit_privacy(call: Call[PrivacyEdit, None]) -> Privacy:
    """Edit my privacy settings; the next privacy check anywhere sees the change."""
    return await do_update_privacy(call.services, call.user.user_id, _changes(call.body))


class DeletionRequest(Schema):
    confirm_username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | None = None


@endpoint(
    "POST",
    "/users/me/deletion",
    body=DeletionRequest,
    response=DeletionScheduled,
    status=202,
    auth="user",
    errors=[
        Code.wrong_password,
        Code.reauth_required,
        Code.deletion_pending,
        Code.rate_limited,
        Code.banned,
    ],
)
async def request_deletion(call: Call[DeletionRequest, None]) -> DeletionScheduled:
    """Delete my account after a 14-day grace period."""
    body = call.body
    return await do_request_deletion(call.services, call.user, body.password, body.confirm_username)


@endpoint(
    "DELETE",
    "/users/me/deletion",
    status=204,
    auth="user",
    errors=[Code.not_pending, Code.banned],
)
async def cancel_deletion(call: Call) -> None:
    """Cancel my pending account deletion."""
    await do_cancel_deletion(call.services, call.user.user_id)


@endpoint(
    "POST",
    "/users/me/exports",
    response=exports.ExportQueued,
    status=202,
    auth="user",
    errors=[Code.export_in_progress, Code.export_cooldown, Code.banned],
)
async def start_export(call: Call) -> exports.ExportQueued:
    """Start an export of my data."""
    return await exports.do_start_export(call.services, call.user.user_id)


def _export_id(call: Call) -> int:
    export_id = parse_snowflake(call.request.path_params.get("export_id"))
    if export_id is None:
        raise ApiError(Code.not_found, "There is no such export")
    return export_id


@endpoint(
    "GET",
    "/users/me/exports/{export_id}",
    response=exports.ExportStatus,
    auth="user",
    errors=[Code.not_found, Code.banned],
)
async def get_export(call: Call) -> exports.ExportStatus:
    """The state of one of my exports."""
    call.headers.update(NO_STORE)
    return await exports.get_export(call.services, call.user.user_id, _export_id(call))


@endpoint(
    "GET",
    "/users/me/exports/{export_id}/download",
    auth="user",
    media_type="application/zip",
    errors=[Code.not_found, Code.export_not_ready, Code.banned],
)
async def download_export(call: Call) -> StreamingResponse:
    """Download one of my exports (a ZIP)."""
    export_id = _export_id(call)
    chunks, size = await exports.open_export(call.services, call.user.user_id, export_id)
    return StreamingResponse(
        chunks,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="anilay-export-{export_id}.zip"',
            "Content-Length": str(size),
            **NO_STORE,
        },
    )


# --- U1, U2: anyone's profile ---------------------------------------------------------------


@endpoint(
    "GET",
    "/users/by-username/{username}",
    response=ProfileOrCard,
    auth="optional",
    bot_scope=PROFILE_READ,
    errors=[Code.user_not_found],
)
async def get_user_by_name(call: Call) -> Profile:
    """A user's profile by username (or only their card, R3)."""
    username = call.request.path_params.get("username", "")
    row = await get_user_by_username(call.services.db, username)
    return await view_user(call.services, _viewer(call), row)


@endpoint(
    "GET",
    "/users/{user_id}",
    response=ProfileOrCard,
    auth="optional",
    bot_scope=PROFILE_READ,
    errors=[Code.user_not_found],
)
async def get_user_profile(call: Call) -> Profile:
    """A user's profile (or only their card, R3)."""
    user_id = parse_snowflake(call.request.path_params.get("user_id"))
    if user_id is None:  # malformed ids are answered exactly like unknown ones
        raise user_not_found()
    row = await get_user(call.services.db, user_id)
    return await view_user(call.services, _viewer(call), row)


routes = [
    search,
    get_me,
    edit_me,
    edit_settings,
    edit_privacy,
    request_deletion,
    cancel_deletion,
    start_export,
    get_export,
    download_export,
    get_user_by_name,
    get_user_profile,
]
