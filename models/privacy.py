"""Privacy settings and the one question every group asks of them (users.md R4).

`allows(services, actor_id, owner_id, action)` is the only way any domain decides whether a
privacy setting admits someone: profiles and list summaries here and in anime.md, friend
requests and watch invites in social.md, DMs and key fetches in chat.md. The owner's settings
are read through the shared cache; a change is written through it before U7 returns, so the
very next check, on any process, sees it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import msgspec
import sqlalchemy as sa

from models import social_graph
from server.db import Transaction, UTCDateTime, metadata
from server.events import rfc3339
from server.services import Services

Visibility = Literal["public", "friends", "private"]
WatchInvitesFrom = Literal["friends", "nobody"]
FriendRequestsFrom = Literal["everyone", "friends_of_friends", "nobody"]
DmsFrom = Literal["everyone", "friends", "nobody"]

# The actions `allows` decides, one per setting that admits or refuses another person.
VIEW_PROFILE = "view_profile"  # profile_visibility (R3)
VIEW_LIST = "view_list"  # list_visibility (anime.md L11, list_summary)
INVITE_TO_WATCH = "invite_to_watch"  # watch_invites_from (social.md R14)
SEND_FRIEND_REQUEST = "send_friend_request"  # friend_requests_from (social.md R7)
SEND_DM = "send_dm"  # dms_from (chat.md R25, R26; also fetching E2EE keys)
SEE_WATCHING = "see_watching"  # share_watching (social.md R12)
ACTIONS = frozenset(
    {VIEW_PROFILE, VIEW_LIST, INVITE_TO_WATCH, SEND_FRIEND_REQUEST, SEND_DM, SEE_WATCHING}
)

CACHE_TTL_S = 300

user_privacy = sa.Table(
    "user_privacy",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("profile_visibility", sa.String(8), nullable=False),
    sa.Column("list_visibility", sa.String(8), nullable=False),
    sa.Column("watch_invites_from", sa.String(8), nullable=False),
    sa.Column("friend_requests_from", sa.String(20), nullable=False),
    sa.Column("share_watching", sa.Boolean, nullable=False),
    sa.Column("searchable", sa.Boolean, nullable=False),
    sa.Column("dms_from", sa.String(8), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


class Privacy(msgspec.Struct, kw_only=True):
    """The R4 settings as U4 shows them and U7 changes them; defaults are R4's."""

    profile_visibility: Visibility = "public"
    list_visibility: Visibility = "public"
    watch_invites_from: WatchInvitesFrom = "friends"
    friend_requests_from: FriendRequestsFrom = "everyone"
    share_watching: bool = True
    searchable: bool = True
    dms_from: DmsFrom = "friends"
    updated_at: str | None = None


PRIVACY_FIELDS = tuple(f for f in Privacy.__struct_fields__ if f != "updated_at")
DEFAULTS = Privacy()

_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(Privacy).decode

# Reactions to a change, run in U7's transaction: social.md/gateway.md send friends a
# PRESENCE_UPDATE with `activity: null` when `share_watching` is turned off (R4).
PrivacyChangeHook = Callable[[Services, Transaction, int, Privacy, Privacy], Awaitable[None]]
PRIVACY_CHANGE_HOOKS: list[PrivacyChangeHook] = []


def cache_key(user_id: int) -> str:
    return f"users:privacy:{user_id}"


def privacy_of(row: dict[str, Any] | None) -> Privacy:
    """The Privacy of a user_privacy row; a missing row means every default."""
    if row is None:
        return Privacy()
    values = {field: row[field] for field in PRIVACY_FIELDS}
    return Privacy(**values, updated_at=rfc3339(row["updated_at"]))


async def load_privacy(services: Services, user_id: int) -> Privacy:
    """Straight from the database (the transaction that is about to change it uses this)."""
    row = await services.db.fetch_one(
        sa.select(user_privacy).where(user_privacy.c.user_id == user_id)
    )
    return privacy_of(row)


async def get_privacy(services: Services, user_id: int) -> Privacy:
    """Through the shared cache. A reader only ever *adds* to the cache, so a value it read
    before a concurrent U7 committed can never overwrite the one U7 wrote through."""
    cached = await services.cache.get(cache_key(user_id))
    if cached is not None:
        return _decode(cached)
    privacy = await load_privacy(services, user_id)
    await services.cache.add(cache_key(user_id), _encode(privacy), CACHE_TTL_S)
    return privacy


async def write_privacy(
    services: Services, tx: Transaction, user_id: int, changes: dict[str, Any], now: datetime
) -> None:
    """Store `changes` (a subset of PRIVACY_FIELDS) and write the result through the cache as
    soon as the transaction commits — before the caller answers."""
    current = await load_privacy(services, user_id)
    values = {field: getattr(current, field) for field in PRIVACY_FIELDS}
    values.update(changes)
    await services.db.execute(
        services.db.upsert(
            user_privacy,
            {"user_id": user_id, **values, "updated_at": now},
            conflict=["user_id"],
            update={**changes, "updated_at": now},
        )
    )

    async def write_through() -> None:
        fresh = await load_privacy(services, user_id)
        await services.cache.set(cache_key(user_id), _encode(fresh), CACHE_TTL_S)

    tx.on_commit(write_through)


async def forget_privacy(services: Services, user_id: int) -> None:
    await services.cache.delete(cache_key(user_id))


async def allows(services: Services, actor_id: int | None, owner_id: int, action: str) -> bool:
    """May `actor_id` (None: an anonymous viewer) do `action` to `owner_id`? (R4)

    The owner always may. A block in either direction always denies. "friends" means an
    accepted friendship; "everyone" means any signed-in user — anonymous viewers are admitted
    only by a `public` profile or list visibility.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown privacy action {action!r}")
    if actor_id is not None and actor_id == owner_id:
        return True
    if actor_id is not None and await social_graph.is_blocked(services, actor_id, owner_id):
        return False
    privacy = await get_privacy(services, owner_id)
    if action in (VIEW_PROFILE, VIEW_LIST):
        setting = privacy.profile_visibility if action == VIEW_PROFILE else privacy.list_visibility
        if setting == "public":
            return True
        if setting == "private" or actor_id is None:
            return False
        return await _are_friends(services, actor_id, owner_id)
    if actor_id is None:
        return False
    if action == INVITE_TO_WATCH:
        return privacy.watch_invites_from == "friends" and await _are_friends(
            services, actor_id, owner_id
        )
    if action == SEE_WATCHING:
        return privacy.share_watching and await _are_friends(services, actor_id, owner_id)
    if action == SEND_DM:
        if privacy.dms_from == "everyone":
            return True
        return privacy.dms_from == "friends" and await _are_friends(services, actor_id, owner_id)
    # SEND_FRIEND_REQUEST
    if privacy.friend_requests_from == "everyone":
        return True
    if privacy.friend_requests_from == "nobody":
        return False
    owners_friends = await social_graph.friend_ids(services, owner_id)
    return bool(owners_friends & await social_graph.friend_ids(services, actor_id))


async def _are_friends(services: Services, actor_id: int, owner_id: int) -> bool:
    return actor_id in await social_graph.friend_ids(services, owner_id)
