"""Collections (anime.md §3, CL1-CL12): user-curated lists of anime.

`{ref}` is a collection's id or its slug; the owner routes take the id only (a slug there is
a 404 like any unknown id). Bots need `collections:read` to read and `collections:write` to
change (auth.md R23); staff powers never come with a bot key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from models.anime import collections
from models.anime.collections.tables import (
    CREATE_RATE,
    ITEMS_PER_COLLECTION,
    SEARCH_RATE,
    WRITE_RATE,
)
from models.anime.common import CURSOR_MAX, Origin
from server.errors import ApiError, Code, validation_error
from server.http import Call, endpoint
from server.schemas import Schema

READ = "collections:read"
WRITE = "collections:write"
ANIME_ID_MAX = 2**31 - 1

Visibility = Literal["public", "unlisted", "private"]
Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=CURSOR_MAX)]
SnowflakeText = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,20}$")]
# Generous bounds here; the exact rules (trimmed lengths, characters) are the model's checks.
Title = Annotated[str, msgspec.Meta(max_length=400)]
LongText = Annotated[str, msgspec.Meta(max_length=8000)]
ShortText = Annotated[str, msgspec.Meta(max_length=1000)]
AnimeId = Annotated[int, msgspec.Meta(ge=1, le=ANIME_ID_MAX)]
Position = Annotated[int, msgspec.Meta(ge=0, le=ITEMS_PER_COLLECTION)]

COMMON_ERRORS = [Code.unauthorized, Code.banned, Code.bot_not_allowed, Code.insufficient_scope]


def _origin(call: Call) -> Origin:
    return Origin(ip=call.client_ip, user_agent=call.user_agent)


def _ref(call: Call) -> str:
    ref = call.request.path_params.get("ref", "")
    if not isinstance(ref, str) or not 1 <= len(ref) <= 80:
        raise ApiError(Code.not_found, "There is no such collection")
    return ref


def _changes(body: msgspec.Struct) -> dict[str, Any]:
    return {
        name: getattr(body, name)
        for name in body.__struct_fields__
        if getattr(body, name) is not UNSET
    }


async def _write_budget(call: Call) -> None:
    await call.services.limiter.check(WRITE_RATE, "collection-write", str(call.user.user_id))


# --- CL1, CL2 ---------------------------------------------------------------------------------


class BrowseQuery(Schema):
    q: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    owner_id: SnowflakeText | None = None
    sort: Literal["updated", "new", "items"] = "updated"
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20
    cursor: Cursor | None = None


@endpoint(
    "GET",
    "/collections",
    query=BrowseQuery,
    response=collections.CollectionPage,
    auth="optional",
    bot_scope=READ,
    errors=[*COMMON_ERRORS, Code.validation_failed, Code.rate_limited],
)
async def browse_collections(call: Call[None, BrowseQuery]) -> collections.CollectionPage:
    """Browse and search public collections."""
    query = call.query
    if query.q is not None and not query.q.strip():
        raise validation_error("q", "search for at least one non-space character")
    if query.q is not None:
        who = str(call.identity.user_id) if call.identity else f"ip:{call.client_ip}"
        await call.services.limiter.check(SEARCH_RATE, "collection-search", who)
    return await collections.browse(
        call.services,
        call.identity,
        q=query.q,
        owner_id=int(query.owner_id) if query.owner_id is not None else None,
        sort=query.sort,
        limit=query.limit,
        cursor=query.cursor,
    )


class CollectionCreate(Schema):
    title: Title
    description: LongText | None = None
    visibility: Visibility = "private"


@endpoint(
    "POST",
    "/collections",
    body=CollectionCreate,
    response=collections.Collection,
    status=201,
    auth="user",
    bot_scope=WRITE,
    errors=[*COMMON_ERRORS, Code.validation_failed, Code.collection_limit, Code.rate_limited],
)
async def create_collection(call: Call[CollectionCreate, None]) -> collections.Collection:
    """Create a collection (private unless told otherwise)."""
    await call.services.limiter.check(CREATE_RATE, "collection-create", str(call.user.user_id))
    body = call.body
    return await collections.do_create(
        call.services, call.user, body.title, body.description, body.visibility
    )


# --- CL3-CL5 --------------------------------------------------------------------------------


@endpoint(
    "GET",
    "/collections/{ref}",
    response=collections.Collection,
    auth="optional",
    bot_scope=READ,
    errors=[*COMMON_ERRORS, Code.not_found],
)
async def get_collection(call: Call) -> collections.Collection:
    """One collection, by id or slug, with its first 100 items."""
    return await collections.get_collection(call.services, call.identity, _ref(call), _origin(call))


class CollectionEdit(Schema):
    title: Title | UnsetType = UNSET
    description: LongText | UnsetType | None = UNSET
    visibility: Visibility | UnsetType = UNSET


@endpoint(
    "PATCH",
    "/collections/{ref}",
    body=CollectionEdit,
    response=collections.Collection,
    auth="user",
    bot_scope=WRITE,
    errors=[
        *COMMON_ERRORS,
        Code.forbidden,
        Code.not_found,
        Code.validation_failed,
        Code.rate_limited,
    ],
)
async def edit_collection(call: Call[CollectionEdit, None]) -> collections.Collection:
    """Edit the title, description or visibility (going private rotates the link)."""
    await _write_budget(call)
    return await collections.do_update(
        call.services, call.user, call.path_id("ref"), _changes(call.body)
    )


@endpoint(
    "DELETE",
    "/collections/{ref}",
    status=204,
    auth="user",
    bot_scope=WRITE,
    errors=[*COMMON_ERRORS, Code.forbidden, Code.not_found, Code.rate_limited],
)
async def delete_collection(call: Call) -> None:
    """Delete a collection with its items (the owner, or a moderator)."""
    await _write_budget(call)
    await collections.do_delete(call.services, call.user, call.path_id("ref"), _origin(call))


# --- CL6-CL10 -------------------------------------------------------------------------------


class ItemsQuery(Schema):
    cursor: Cursor | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50


@endpoint(
    "GET",
    "/collections/{ref}/items",
    query=ItemsQuery,
    response=collections.ItemPage,
    auth="optional",
    bot_scope=READ,
    errors=[*COMMON_ERRORS, Code.not_found, Code.validation_failed],
)
async def list_collection_items(call: Call[None, ItemsQuery]) -> collections.ItemPage:
    """A collection's items by position."""
    return await collections.list_items(
        call.services,
        call.identity,
        _ref(call),
        _origin(call),
        cursor=call.query.cursor,
        limit=call.query.limit,
    )


class ItemAdd(Schema):
    anime_id: AnimeId
    name: ShortText | None = None
    russian: ShortText | None = None
    image_url: ShortText | None = None
    note: ShortText | None = None
    position: Position | None = None


@endpoint(
    "POST",
    "/collections/{ref}/items",
    body=ItemAdd,
    response=collections.CollectionItem,
    status=201,
    auth="user",
    bot_scope=WRITE,
    errors=[
        *COMMON_ERRORS,
        Code.forbidden,
        Code.not_found,
        Code.validation_failed,
        Code.already_in_collection,
        Code.collection_full,
        Code.conflict,
        Code.rate_limited,
    ],
)
async def add_collection_item(call: Call[ItemAdd, None]) -> collections.CollectionItem:
    """Add an anime (a snapshot of its title and poster)."""
    await _write_budget(call)
    body = call.body
    return await collections.do_add_item(
        call.services,
        call.user,
        call.path_id("ref"),
        body.anime_id,
        name=body.name,
        russian=body.russian,
        image_url=body.image_url,
        note=body.note,
        position=body.position,
    )


class Reorder(Schema):
    anime_ids: Annotated[list[AnimeId], msgspec.Meta(max_length=ITEMS_PER_COLLECTION)]
    version: Annotated[int, msgspec.Meta(ge=0)] | None = None


@endpoint(
    "PUT",
    "/collections/{ref}/items/order",
    body=Reorder,
    status=204,
    auth="user",
    bot_scope=WRITE,
    errors=[
        *COMMON_ERRORS,
        Code.forbidden,
        Code.not_found,
        Code.validation_failed,
        Code.order_mismatch,
        Code.conflict,
        Code.rate_limited,
    ],
)
async def reorder_collection_items(call: Call[Reorder, None]) -> None:
    """Put every item in a new order at once."""
    await _write_budget(call)
    await collections.do_reorder(
        call.services, call.user, call.path_id("ref"), call.body.anime_ids, call.body.version
    )


class ItemEdit(Schema):
    note: ShortText | UnsetType | None = UNSET
    position: Position | UnsetType = UNSET


@endpoint(
    "PATCH",
    "/collections/{ref}/items/{anime_id}",
    body=ItemEdit,
    response=collections.CollectionItem,
    auth="user",
    bot_scope=WRITE,
    errors=[
        *COMMON_ERRORS,
        Code.forbidden,
        Code.not_found,
        Code.validation_failed,
        Code.conflict,
        Code.rate_limited,
    ],
)
async def edit_collection_item(call: Call[ItemEdit, None]) -> collections.CollectionItem:
    """Edit an item's note, or move it."""
    await _write_budget(call)
    return await collections.do_update_item(
        call.services,
        call.user,
        call.path_id("ref"),
        call.path_int("anime_id"),
        _changes(call.body),
    )


@endpoint(
    "DELETE",
    "/collections/{ref}/items/{anime_id}",
    status=204,
    auth="user",
    bot_scope=WRITE,
    errors=[*COMMON_ERRORS, Code.forbidden, Code.not_found, Code.conflict, Code.rate_limited],
)
async def remove_collection_item(call: Call) -> None:
    """Remove an anime; the positions after it close the gap."""
    await _write_budget(call)
    await collections.do_remove_item(
        call.services, call.user, call.path_id("ref"), call.path_int("anime_id")
    )


# --- CL11, CL12 -------------------------------------------------------------------------------


class UserCollectionsQuery(Schema):
    cursor: Cursor | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20


@endpoint(
    "GET",
    "/users/{user_id}/collections",
    query=UserCollectionsQuery,
    response=collections.CollectionPage,
    auth="optional",
    bot_scope=READ,
    errors=[*COMMON_ERRORS, Code.user_not_found, Code.validation_failed],
)
async def list_user_collections(
    call: Call[None, UserCollectionsQuery],
) -> collections.CollectionPage:
    """A user's collections: all of them for the owner, public ones for others."""
    try:
        user_id = call.path_id("user_id")
    except ApiError:
        raise ApiError(Code.user_not_found, "There is no such user") from None
    return await collections.list_user_collections(
        call.services, call.identity, user_id, limit=call.query.limit, cursor=call.query.cursor
    )


@endpoint(
    "POST",
    "/collections/{ref}/slug",
    response=collections.SlugRotated,
    auth="user",
    bot_scope=WRITE,
    errors=[*COMMON_ERRORS, Code.forbidden, Code.not_found, Code.rate_limited],
)
async def rotate_collection_slug(call: Call) -> collections.SlugRotated:
    """Rotate the link: the old slug stops working at once."""
    await _write_budget(call)
    return await collections.do_rotate_slug(call.services, call.user, call.path_id("ref"))


routes = [
    browse_collections,
    create_collection,
    get_collection,
    edit_collection,
    delete_collection,
    list_collection_items,
    add_collection_item,
    reorder_collection_items,
    edit_collection_item,
    remove_collection_item,
    list_user_collections,
    rotate_collection_slug,
]
