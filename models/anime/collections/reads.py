"""Reading collections: browse (CL1), one collection (CL3), its items (CL6), a user's
collections (CL11). Every list is keyset-paged with a signed opaque cursor over an index."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from models import social_graph
from models.anime.collections.access import access_collection, blocked_between
from models.anime.collections.shapes import (
    Collection,
    CollectionItem,
    CollectionPage,
    ItemPage,
    full_collection,
    items_of,
    summaries,
)
from models.anime.collections.tables import FIRST_ITEMS, collection, collection_item
from models.anime.common import (
    Origin,
    decode_cursor,
    encode_cursor,
    keyset_after,
    like_contains,
    search_form,
)
from models.users import get_user
from models.users.profiles import user_not_found
from server.auth import Identity
from server.services import Services

SORT_COLUMNS = {
    "updated": collection.c.updated_at,
    "new": collection.c.created_at,
    "items": collection.c.items_count,
}


def _micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _from_micros(value: int) -> datetime:
    seconds, micros = divmod(value, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def _key_value(sort: str, row: dict[str, Any]) -> int:
    value = row[SORT_COLUMNS[sort].name]
    return _micros(value) if isinstance(value, datetime) else int(value)


def _key_param(sort: str, value: int) -> Any:
    return value if sort == "items" else _from_micros(value)


async def _page(
    services: Services,
    query: sa.Select,
    sort: str,
    scope: str,
    cursor: str | None,
    limit: int,
) -> CollectionPage:
    key = SORT_COLUMNS[sort]
    if cursor is not None:
        last_key, last_id = decode_cursor(services, cursor, scope, 2)
        query = query.where(keyset_after(key, collection.c.id, _key_param(sort, last_key), last_id))
    rows = await services.db.fetch_all(
        query.order_by(key.desc(), collection.c.id.desc()).limit(limit + 1)
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(services, scope, _key_value(sort, last), last["id"])
    return CollectionPage(items=await summaries(services.db, rows), next_cursor=next_cursor)


async def browse(
    services: Services,
    identity: Identity | None,
    *,
    q: str | None,
    owner_id: int | None,
    sort: str,
    limit: int,
    cursor: str | None,
) -> CollectionPage:
    """CL1: public collections only, never one whose owner is in a block with the caller."""
    query = sa.select(collection).where(collection.c.visibility == "public")
    if owner_id is not None:
        query = query.where(collection.c.owner_id == owner_id)
    if q is not None:
        query = query.where(
            collection.c.search_title.like(like_contains(search_form(q.strip())), escape="\\")
        )
    if identity is not None:
        blocked = await social_graph.blocked_ids(services, identity.user_id)
        if blocked:
            query = query.where(collection.c.owner_id.not_in(blocked))
    return await _page(services, query, sort, f"cl1:{sort}", cursor, limit)


async def list_user_collections(
    services: Services,
    identity: Identity | None,
    user_id: int,
    *,
    limit: int,
    cursor: str | None,
) -> CollectionPage:
    """CL11: the owner sees all three visibilities; others only public ones; a missing,
    deleted or blocked user is one 404."""
    row = await get_user(services.db, user_id)
    if row is None or row["status"] == "deleted":
        raise user_not_found()
    if await blocked_between(services, identity, user_id):
        raise user_not_found()
    query = sa.select(collection).where(collection.c.owner_id == user_id)
    if identity is None or identity.user_id != user_id:
        query = query.where(collection.c.visibility == "public")
    return await _page(services, query, "updated", f"cl11:{user_id}", cursor, limit)


# --- one collection and its items --------------------------------------------------------------


async def _items_page(
    services: Services, row: dict[str, Any], cursor: str | None, limit: int
) -> tuple[list[CollectionItem], str | None]:
    scope = f"cl6:{row['id']}"
    query = sa.select(collection_item).where(collection_item.c.collection_id == row["id"])
    if cursor is not None:
        (last_position,) = decode_cursor(services, cursor, scope, 1)
        query = query.where(collection_item.c.position > last_position)
    rows = await services.db.fetch_all(query.order_by(collection_item.c.position).limit(limit + 1))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(services, scope, rows[-1]["position"])
    return await items_of(services.db, rows), next_cursor


async def first_items(
    services: Services, row: dict[str, Any]
) -> tuple[list[CollectionItem], str | None]:
    return await _items_page(services, row, None, FIRST_ITEMS)


async def get_collection(
    services: Services, identity: Identity | None, ref: str, origin: Origin
) -> Collection:
    """CL3: the collection with its first 100 items; 404 for whatever R18 hides."""
    row = await access_collection(services, identity, ref, origin)
    items, next_cursor = await first_items(services, row)
    can_edit = identity is not None and identity.user_id == row["owner_id"]
    return await full_collection(services.db, row, items, next_cursor, can_edit)


async def list_items(
    services: Services,
    identity: Identity | None,
    ref: str,
    origin: Origin,
    *,
    cursor: str | None,
    limit: int,
) -> ItemPage:
    """CL6: items by position."""
    row = await access_collection(services, identity, ref, origin)
    items, next_cursor = await _items_page(services, row, cursor, limit)
    return ItemPage(items=items, next_cursor=next_cursor)
