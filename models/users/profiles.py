"""What a user shows to others (users.md "Shapes", R3, R5) and the USER_UPDATE event.

A Profile draws on domains that are not all built yet (customization, game, anime, social):
each such part is a small function here that answers "nothing yet" until its domain plugs in
the real answer with `provide_profile_part` (or, for friends, blocks and presence, through
models.social_graph).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from models import privacy, social_graph
from models.users import STAFF_ROLES, UserSummary, is_banned, summary_of
from server.db import Transaction
from server.errors import ApiError, Code
from server.events import event_type, make_event, rfc3339
from server.services import Services


class EquippedItem(msgspec.Struct):
    item_id: str
    kind: str
    slug: str
    name: str
    rarity: str
    asset_url: str
    preview_url: str
    theme_tokens: dict[str, str] | None


class UserCard(UserSummary):
    """The public card: shown whenever the user is visible at all (R5)."""

    frame: EquippedItem | None
    staff_role: str | None
    is_private: bool


class ListSummary(msgspec.Struct):
    watching: int = 0
    completed: int = 0
    on_hold: int = 0
    dropped: int = 0
    planned: int = 0
    episodes_watched: int = 0


class Profile(UserCard):
    bio: str | None
    location: str | None
    website: str | None
    created_at: str
    online: bool | None
    badges: list[EquippedItem]
    theme: EquippedItem | None
    level: int
    race: str | None
    list_summary: ListSummary | None
    friends_count: int
    relationship: str | None


class SearchItem(UserCard):
    friend: bool


class AvatarSlot(msgspec.Struct):
    source: str  # "item" | "custom" | "default"
    url: str | None
    item: EquippedItem | None
    custom_url: str | None


class Loadout(msgspec.Struct):
    avatar: AvatarSlot
    frame: EquippedItem | None
    theme: EquippedItem | None
    badges: list[EquippedItem | None]


class UserWithFrame(UserSummary):
    frame: EquippedItem | None


class UserUpdate(msgspec.Struct):
    user: UserWithFrame
    changed: list[str]


class UserDelete(msgspec.Struct):
    user_id: str


USER_UPDATE = event_type("USER_UPDATE", UserUpdate)
USER_DELETE = event_type("USER_DELETE", UserDelete)


# --- parts of a profile that other domains own ----------------------------------------------
# Each answers "nothing yet" until its domain provides the real answer with
# `provide_profile_part(name, function)`: customization (users.md C) the frame, badges, theme
# and loadout; game.md the level and race; anime.md the list summary.

PROFILE_PARTS = ("frames", "badges", "theme", "loadout", "level", "race", "list_summary")
_parts: dict[str, Callable[..., Awaitable[Any]]] = {}


def provide_profile_part(name: str, function: Callable[..., Awaitable[Any]]) -> None:
    if name not in PROFILE_PARTS:
        raise ValueError(f"unknown profile part {name!r}")
    _parts[name] = function


async def equipped_frames(
    services: Services, user_ids: list[int]
) -> dict[int, EquippedItem | None]:
    """The equipped frame of each user (absent key: none)."""
    provider = _parts.get("frames")
    return await provider(services, user_ids) if provider else {}


async def equipped_badges(services: Services, user_id: int) -> list[EquippedItem]:
    """Equipped badges in slot order (≤ 3)."""
    provider = _parts.get("badges")
    return await provider(services, user_id) if provider else []


async def equipped_theme(services: Services, user_id: int) -> EquippedItem | None:
    provider = _parts.get("theme")
    return await provider(services, user_id) if provider else None


async def current_loadout(services: Services, row: dict[str, Any]) -> Loadout:
    provider = _parts.get("loadout")
    if provider:
        return await provider(services, row)
    custom = row["custom_avatar_url"]
    return Loadout(
        avatar=AvatarSlot(
            source="custom" if custom else "default", url=custom, item=None, custom_url=custom
        ),
        frame=None,
        theme=None,
        badges=[None, None, None],
    )


async def player_level(services: Services, user_id: int) -> int:
    """game.md §4; level 1 is where every player starts (0 XP)."""
    provider = _parts.get("level")
    return await provider(services, user_id) if provider else 1


async def player_race(services: Services, user_id: int) -> str | None:
    provider = _parts.get("race")
    return await provider(services, user_id) if provider else None


async def list_summary(services: Services, user_id: int) -> ListSummary:
    """anime.md's counts of the user's list; empty until the list exists."""
    provider = _parts.get("list_summary")
    return await provider(services, user_id) if provider else ListSummary()


# --- reading users as others see them (R3, R5) ----------------------------------------------


def user_not_found() -> ApiError:
    """One body for missing, deleted and blocked users, so none can be told apart (R3)."""
    return ApiError(Code.user_not_found, "There is no such user")


def staff_role(row: dict[str, Any]) -> str | None:
    return row["role"] if row["role"] in STAFF_ROLES else None


def card_of(row: dict[str, Any], frame: EquippedItem | None, is_private: bool) -> UserCard:
    summary = summary_of(row)
    return UserCard(
        id=summary.id,
        username=summary.username,
        display_name=summary.display_name,
        avatar_url=summary.avatar_url,
        frame=frame,
        staff_role=staff_role(row),
        is_private=is_private,
    )


async def view_user(services: Services, viewer_id: int | None, row: dict | None) -> UserCard:
    """U1/U2: a Profile, or only the card with `is_private: true`, in R3's order."""
    if row is None or row["status"] == "deleted":
        raise user_not_found()
    if (
        viewer_id is not None
        and viewer_id != row["id"]
        and await social_graph.is_blocked(services, viewer_id, row["id"])
    ):
        raise user_not_found()
    if viewer_id != row["id"] and (
        row["status"] == "deletion_pending"
        or is_banned(row)
        or not await privacy.allows(services, viewer_id, row["id"], privacy.VIEW_PROFILE)
    ):
        frames = await equipped_frames(services, [row["id"]])
        return card_of(row, frames.get(row["id"]), is_private=True)
    return await full_profile(services, viewer_id, row)


async def full_profile(services: Services, viewer_id: int | None, row: dict[str, Any]) -> Profile:
    """The Profile; callers have decided the viewer may see it. Never email, settings or
    privacy values (R3)."""
    user_id = row["id"]
    graph = social_graph.social_graph()
    frames = await equipped_frames(services, [user_id])
    is_self = viewer_id == user_id
    is_friend = (
        viewer_id is not None
        and not is_self
        and viewer_id in await social_graph.friend_ids(services, user_id)
    )
    card = card_of(row, frames.get(user_id), is_private=False)
    summary = None
    if await privacy.allows(services, viewer_id, user_id, privacy.VIEW_LIST):
        summary = await list_summary(services, user_id)
    return Profile(
        **msgspec.structs.asdict(card),
        bio=row["bio"],
        location=row["location"],
        website=row["website"],
        created_at=rfc3339(row["created_at"]),
        online=await graph.online(services, user_id) if is_friend else None,
        badges=await equipped_badges(services, user_id),
        theme=await equipped_theme(services, user_id),
        level=await player_level(services, user_id),
        race=await player_race(services, user_id),
        list_summary=summary,
        friends_count=await graph.friends_count(services, user_id),
        relationship=None
        if viewer_id is None
        else await graph.relationship(services, viewer_id, user_id),
    )


async def emit_user_update(
    services: Services, tx: Transaction, row: dict[str, Any], changed: list[str]
) -> None:
    """USER_UPDATE to the user and their friends: UserSummary and frame only, so it never
    leaks a private profile (R5)."""
    frame = (await equipped_frames(services, [row["id"]])).get(row["id"])
    summary = summary_of(row)
    friends = await social_graph.friend_ids(services, row["id"])
    topics = [f"user:{row['id']}", *(f"user:{f}" for f in sorted(friends))]
    tx.emit(
        make_event(
            USER_UPDATE,
            UserUpdate(
                user=UserWithFrame(**msgspec.structs.asdict(summary), frame=frame),
                changed=changed,
            ),
            topics,
        )
    )
