"""What collections look like outside (anime.md §3 shapes) and the events they emit."""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa

from models.anime.catalog_tables import anime
from models.anime.collections.tables import (
    PREVIEW_IMAGES,
    SUMMARY_DESCRIPTION_MAX,
    collection_item,
)
from models.anime.common import PUBLIC_ACTIVITY_TOPIC
from models.users import UserSummary, summary_of, users
from server.db import Database, Transaction
from server.events import event_type, make_event, rfc3339


class CollectionItem(msgspec.Struct):
    anime_id: int
    name: str
    russian: str | None
    image_url: str | None
    kind: str | None
    year: int | None
    note: str | None
    position: int
    added_at: str
    in_catalog: bool


class CollectionSummary(msgspec.Struct):
    id: str
    slug: str
    title: str
    description: str | None
    visibility: str
    owner: UserSummary
    items_count: int
    preview: list[str]
    created_at: str
    updated_at: str


class Collection(CollectionSummary):
    items: list[CollectionItem]
    items_next_cursor: str | None
    version: int
    can_edit: bool


class CollectionPage(msgspec.Struct):
    items: list[CollectionSummary]
    next_cursor: str | None


class ItemPage(msgspec.Struct):
    items: list[CollectionItem]
    next_cursor: str | None


class SlugRotated(msgspec.Struct):
    slug: str


# --- events ----------------------------------------------------------------------------------


class CollectionUpdate(msgspec.Struct):
    collection_id: str
    version: int
    action: str  # create update delete item_add item_update item_remove reorder slug


class CollectionPublish(msgspec.Struct):
    collection: CollectionSummary


COLLECTION_UPDATE = event_type("COLLECTION_UPDATE", CollectionUpdate)
COLLECTION_PUBLISH = event_type("COLLECTION_PUBLISH", CollectionPublish)


def emit_update(tx: Transaction, row: dict[str, Any], action: str) -> None:
    """COLLECTION_UPDATE to the owner's sessions (they skip versions already applied)."""
    payload = CollectionUpdate(collection_id=str(row["id"]), version=row["version"], action=action)
    tx.emit(make_event(COLLECTION_UPDATE, payload, [f"user:{row['owner_id']}"]))


async def emit_publish(db: Database, tx: Transaction, row: dict[str, Any]) -> None:
    """COLLECTION_PUBLISH to bots with PUBLIC_ACTIVITY: only ever for a public collection."""
    assert row["visibility"] == "public"
    (summary,) = await summaries(db, [row])
    tx.emit(
        make_event(
            COLLECTION_PUBLISH, CollectionPublish(collection=summary), [PUBLIC_ACTIVITY_TOPIC]
        )
    )


# --- building shapes ---------------------------------------------------------------------------


def item_of(row: dict[str, Any], in_catalog: bool) -> CollectionItem:
    return CollectionItem(
        anime_id=row["anime_id"],
        name=row["name"],
        russian=row["russian"],
        image_url=row["image_url"],
        kind=row["kind"],
        year=row["year"],
        note=row["note"],
        position=row["position"],
        added_at=rfc3339(row["added_at"]),
        in_catalog=in_catalog,
    )


async def items_of(db: Database, rows: list[dict[str, Any]]) -> list[CollectionItem]:
    """Items with `in_catalog` computed now (R22: the snapshot itself never changes)."""
    ids = {row["anime_id"] for row in rows}
    present: set[int] = set()
    if ids:
        found = await db.fetch_all(sa.select(anime.c.id).where(anime.c.id.in_(ids)))
        present = {r["id"] for r in found}
    return [item_of(row, row["anime_id"] in present) for row in rows]


async def owners_of(db: Database, owner_ids: set[int]) -> dict[int, UserSummary]:
    if not owner_ids:
        return {}
    rows = await db.fetch_all(
        sa.select(
            users.c.id, users.c.username, users.c.display_name, users.c.custom_avatar_url
        ).where(users.c.id.in_(owner_ids))
    )
    return {row["id"]: summary_of(row) for row in rows}


async def previews_of(db: Database, collection_ids: list[int]) -> dict[int, list[str]]:
    """The first four items' images of each collection (the (collection_id, position) index)."""
    if not collection_ids:
        return {}
    rows = await db.fetch_all(
        sa.select(collection_item.c.collection_id, collection_item.c.image_url)
        .where(
            collection_item.c.collection_id.in_(collection_ids),
            collection_item.c.position < PREVIEW_IMAGES,
        )
        .order_by(collection_item.c.collection_id, collection_item.c.position)
    )
    previews: dict[int, list[str]] = {cid: [] for cid in collection_ids}
    for row in rows:
        if row["image_url"]:
            previews[row["collection_id"]].append(row["image_url"])
    return previews


def _summary_fields(
    row: dict[str, Any], owner: UserSummary, preview: list[str], full: bool
) -> dict:
    description = row["description"]
    if description is not None and not full:
        description = description[:SUMMARY_DESCRIPTION_MAX]
    return dict(
        id=str(row["id"]),
        slug=row["slug"],
        title=row["title"],
        description=description,
        visibility=row["visibility"],
        owner=owner,
        items_count=row["items_count"],
        preview=preview,
        created_at=rfc3339(row["created_at"]),
        updated_at=rfc3339(row["updated_at"]),
    )


def _deleted_owner(owner_id: int) -> UserSummary:
    return UserSummary(
        id=str(owner_id), username=f"deleted_{owner_id}", display_name=None, avatar_url=None
    )


async def summaries(db: Database, rows: list[dict[str, Any]]) -> list[CollectionSummary]:
    owners = await owners_of(db, {row["owner_id"] for row in rows})
    previews = await previews_of(db, [row["id"] for row in rows])
    return [
        CollectionSummary(
            **_summary_fields(
                row,
                owners.get(row["owner_id"]) or _deleted_owner(row["owner_id"]),
                previews.get(row["id"], []),
                full=False,
            )
        )
        for row in rows
    ]


async def full_collection(
    db: Database,
    row: dict[str, Any],
    items: list[CollectionItem],
    items_next_cursor: str | None,
    can_edit: bool,
) -> Collection:
    owners = await owners_of(db, {row["owner_id"]})
    preview = [item.image_url for item in items[:PREVIEW_IMAGES] if item.image_url]
    return Collection(
        **_summary_fields(
            row, owners.get(row["owner_id"]) or _deleted_owner(row["owner_id"]), preview, full=True
        ),
        items=items,
        items_next_cursor=items_next_cursor,
        version=row["version"],
        can_edit=can_edit,
    )
