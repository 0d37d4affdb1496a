"""Items: add, edit or move, remove, reorder all (CL7-CL10; R20-R22).

Every item mutation starts with a compare-and-swap on `collection.version` (R21): the winner
owns the collection's items until it commits, so positions computed after the swap are
exact and stay 0..n-1 after every commit. A loser retries up to three times. The add also
claims its slot in that same statement (`items_count < 500`), so two adds at 499 give one
201 and one 409.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa

from models.anime.catalog_tables import anime
from models.anime.collections.access import access_owned
from models.anime.collections.shapes import CollectionItem, emit_update, item_of
from models.anime.collections.tables import (
    DEFAULT_IMAGE_HOSTS,
    IMAGE_URL_MAX,
    ITEMS_PER_COLLECTION,
    NAME_MAX,
    NOTE_MAX,
    VERSION_RETRIES,
    collection,
    collection_item,
)
from models.anime.common import clean_text
from server.auth import Identity
from server.db import Transaction
from server.errors import ApiError, Code, FieldError
from server.services import Services

T = TypeVar("T")


@dataclass(frozen=True)
class ItemAdded:
    """Told to game.md in CL7's transaction: metric `collection_items_added`, deduplicated by
    `source_key`."""

    user_id: int
    collection_id: int
    anime_id: int

    @property
    def source_key(self) -> str:
        return f"colitem:{self.collection_id}:{self.anime_id}"


ItemAddedHook = Callable[[Services, Transaction, ItemAdded], Awaitable[None]]
ITEM_ADDED_HOOKS: list[ItemAddedHook] = []


class _Lost(Exception):
    """The version compare-and-swap found another writer first."""


def item_not_found() -> ApiError:
    return ApiError(Code.not_found, "That anime is not in this collection")


def _bad(field: str, message: str) -> ApiError:
    return ApiError(
        Code.validation_failed, f"{field}: {message}", errors=[FieldError(field, message)]
    )


async def _with_version(
    services: Services,
    collection_id: int,
    work: Callable[[Transaction, dict[str, Any]], Awaitable[T]],
    *,
    expected_version: int | None = None,
    items_delta: int = 0,
) -> T:
    """Run `work(tx, collection)` after winning the version swap (R21). With `items_delta`
    +1 the swap also claims a slot below the 500 limit; with `expected_version` (CL10) a stale
    version is a 409 instead of a retry."""
    db = services.db
    for _ in range(1 + VERSION_RETRIES):
        try:
            async with db.transaction() as tx:
                current = await db.fetch_one(
                    sa.select(collection.c.version, collection.c.items_count).where(
                        collection.c.id == collection_id
                    )
                )
                if current is None:
                    raise ApiError(Code.not_found, "There is no such collection")
                if expected_version is not None and current["version"] != expected_version:
                    raise _stale()
                conditions = [
                    collection.c.id == collection_id,
                    collection.c.version == current["version"],
                ]
                if items_delta > 0:
                    if current["items_count"] >= ITEMS_PER_COLLECTION:
                        raise _full()
                    conditions.append(collection.c.items_count < ITEMS_PER_COLLECTION)
                claimed = await db.fetch_one(
                    collection.update()
                    .where(*conditions)
                    .values(
                        version=collection.c.version + 1,
                        items_count=collection.c.items_count + items_delta,
                        updated_at=datetime.now(UTC),
                    )
                    .returning(*collection.c)
                )
                if claimed is None:
                    raise _Lost()
                return await work(tx, claimed)
        except _Lost:
            continue
    raise ApiError(Code.conflict, "The collection is being changed by another request; retry")


def _full() -> ApiError:
    return ApiError(
        Code.collection_full, f"A collection holds at most {ITEMS_PER_COLLECTION} anime"
    )


def _stale() -> ApiError:
    return ApiError(
        Code.order_mismatch, "The collection changed since you loaded it; reload and retry"
    )


async def _item(services: Services, collection_id: int, anime_id: int) -> dict[str, Any] | None:
    return await services.db.fetch_one(
        sa.select(collection_item).where(
            collection_item.c.collection_id == collection_id,
            collection_item.c.anime_id == anime_id,
        )
    )


async def _in_catalog(services: Services, anime_id: int) -> bool:
    return (
        await services.db.fetch_val(sa.select(anime.c.id).where(anime.c.id == anime_id)) is not None
    )


# --- CL7 -------------------------------------------------------------------------------------


def check_image_url(services: Services, value: str | None) -> str | None:
    """https on an allowed image host (Shikimori's, our CDN; configurable), ≤ 500 chars."""
    if value is None:
        return None
    hosts = getattr(services.settings, "collection_image_hosts", None) or DEFAULT_IMAGE_HOSTS
    if len(value) > IMAGE_URL_MAX:
        raise _bad("image_url", f"at most {IMAGE_URL_MAX} characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _bad("image_url", "not a URL") from None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or not any(host == h or host.endswith("." + h) for h in hosts)
        or any(c.isspace() or ord(c) < 32 for c in value)
    ):
        raise _bad("image_url", "must be https on an allowed image host")
    return value


def check_note(value: str | None) -> str | None:
    if value is None:
        return None
    return clean_text(value, "note", maximum=NOTE_MAX, multiline=True) or None


async def _snapshot(
    services: Services, anime_id: int, name: str | None, russian: str | None, image_url: str | None
) -> dict[str, Any]:
    """R22: from the local catalog when the anime is there (client values ignored), else
    from the client: `name` required, `image_url` checked."""
    row = await services.db.fetch_one(
        sa.select(
            anime.c.name,
            anime.c.russian,
            anime.c.image_original,
            anime.c.image_preview,
            anime.c.kind,
            anime.c.year,
        ).where(anime.c.id == anime_id)
    )
    if row is not None:
        return {
            "name": row["name"],
            "russian": row["russian"],
            "image_url": (row["image_original"] or row["image_preview"] or None),
            "kind": row["kind"],
            "year": row["year"],
        }
    if name is None:
        raise _bad("name", "required for an anime that is not in the catalog")
    return {
        "name": clean_text(name, "name", minimum=1, maximum=NAME_MAX),
        "russian": (clean_text(russian, "russian", maximum=NAME_MAX) or None) if russian else None,
        "image_url": check_image_url(services, image_url),
        "kind": None,
        "year": None,
    }


async def do_add_item(
    services: Services,
    identity: Identity,
    collection_id: int,
    anime_id: int,
    *,
    name: str | None = None,
    russian: str | None = None,
    image_url: str | None = None,
    note: str | None = None,
    position: int | None = None,
) -> CollectionItem:
    """CL7: 201, or 409 already_in_collection / collection_full, or 422 on a bad field."""
    db = services.db
    await access_owned(services, identity, collection_id)
    snapshot = await _snapshot(services, anime_id, name, russian, image_url)
    note = check_note(note)
    in_catalog = await _in_catalog(services, anime_id)

    async def add(tx: Transaction, claimed: dict[str, Any]) -> CollectionItem:
        count = claimed["items_count"] - 1  # items before this one
        if await _item(services, collection_id, anime_id) is not None:
            raise ApiError(Code.already_in_collection, "That anime is already in this collection")
        at = count if position is None else position
        if not 0 <= at <= count:
            raise _bad("position", f"0..{count}")
        await db.execute(
            collection_item.update()
            .where(
                collection_item.c.collection_id == collection_id, collection_item.c.position >= at
            )
            .values(position=collection_item.c.position + 1)
        )
        row = {
            "collection_id": collection_id,
            "anime_id": anime_id,
            **snapshot,
            "note": note,
            "position": at,
            "added_at": claimed["updated_at"],
        }
        await db.execute(collection_item.insert().values(**row))
        emit_update(tx, claimed, "item_add")
        event = ItemAdded(
            user_id=claimed["owner_id"], collection_id=collection_id, anime_id=anime_id
        )
        for hook in ITEM_ADDED_HOOKS:
            await hook(services, tx, event)
        return item_of(row, in_catalog)

    return await _with_version(services, collection_id, add, items_delta=1)


# --- CL8 -------------------------------------------------------------------------------------


async def do_update_item(
    services: Services,
    identity: Identity,
    collection_id: int,
    anime_id: int,
    changes: dict[str, Any],
) -> CollectionItem:
    """CL8: edit the note and/or move to `position` (0..n-1); the others shift to keep
    positions 0..n-1. Nothing changed: no write, no event."""
    db = services.db
    await access_owned(services, identity, collection_id)
    note = check_note(changes["note"]) if "note" in changes else None
    current = await _item(services, collection_id, anime_id)
    if current is None:
        raise item_not_found()
    in_catalog = await _in_catalog(services, anime_id)
    if ("note" not in changes or note == current["note"]) and changes.get(
        "position", current["position"]
    ) == current["position"]:
        return item_of(current, in_catalog)

    async def update(tx: Transaction, claimed: dict[str, Any]) -> CollectionItem:
        item = await _item(services, collection_id, anime_id)
        if item is None:
            raise item_not_found()
        values: dict[str, Any] = {}
        if "note" in changes:
            values["note"] = note
        if "position" in changes:
            old, new = item["position"], changes["position"]
            if not 0 <= new < claimed["items_count"]:
                raise _bad("position", f"0..{claimed['items_count'] - 1}")
            if new < old:
                await _shift(services, collection_id, new, old - 1, +1)
            elif new > old:
                await _shift(services, collection_id, old + 1, new, -1)
            values["position"] = new
        updated = await db.fetch_one(
            collection_item.update()
            .where(
                collection_item.c.collection_id == collection_id,
                collection_item.c.anime_id == anime_id,
            )
            .values(**values)
            .returning(*collection_item.c)
        )
        assert updated is not None
        emit_update(tx, claimed, "item_update")
        return item_of(updated, in_catalog)

    return await _with_version(services, collection_id, update)


async def _shift(services: Services, collection_id: int, low: int, high: int, by: int) -> None:
    await services.db.execute(
        collection_item.update()
        .where(
            collection_item.c.collection_id == collection_id,
            collection_item.c.position >= low,
            collection_item.c.position <= high,
        )
        .values(position=collection_item.c.position + by)
    )


# --- CL9 -------------------------------------------------------------------------------------


async def do_remove_item(
    services: Services, identity: Identity, collection_id: int, anime_id: int
) -> None:
    """CL9: the positions after it close the gap."""
    db = services.db
    await access_owned(services, identity, collection_id)
    if await _item(services, collection_id, anime_id) is None:
        raise item_not_found()

    async def remove(tx: Transaction, claimed: dict[str, Any]) -> None:
        removed = await db.fetch_one(
            collection_item.delete()
            .where(
                collection_item.c.collection_id == collection_id,
                collection_item.c.anime_id == anime_id,
            )
            .returning(collection_item.c.position)
        )
        if removed is None:
            raise item_not_found()
        await _shift(services, collection_id, removed["position"] + 1, ITEMS_PER_COLLECTION, -1)
        emit_update(tx, claimed, "item_remove")

    await _with_version(services, collection_id, remove, items_delta=-1)


# --- CL10 ------------------------------------------------------------------------------------


async def do_reorder(
    services: Services,
    identity: Identity,
    collection_id: int,
    anime_ids: list[int],
    version: int | None,
) -> None:
    """CL10: `anime_ids` lists exactly the current items, each once, in the new order; with
    `version`, it must be the current one. Else 409 order_mismatch. All at once or nothing."""
    db = services.db
    row = await access_owned(services, identity, collection_id)
    if version is not None and version != row["version"]:
        raise _stale()
    current = await _order(services, collection_id)
    _check_same_items(current, anime_ids)
    if current == anime_ids:
        return

    async def reorder(tx: Transaction, claimed: dict[str, Any]) -> None:
        _check_same_items(await _order(services, collection_id), anime_ids)
        await db.execute(
            collection_item.update()
            .where(collection_item.c.collection_id == collection_id)
            .values(
                position=sa.case(
                    {anime_id: sa.cast(at, sa.Integer) for at, anime_id in enumerate(anime_ids)},
                    value=collection_item.c.anime_id,
                )
            )
        )
        emit_update(tx, claimed, "reorder")

    await _with_version(services, collection_id, reorder, expected_version=version)


async def _order(services: Services, collection_id: int) -> list[int]:
    rows = await services.db.fetch_all(
        sa.select(collection_item.c.anime_id)
        .where(collection_item.c.collection_id == collection_id)
        .order_by(collection_item.c.position)
    )
    return [row["anime_id"] for row in rows]


def _check_same_items(current: list[int], proposed: list[int]) -> None:
    if len(proposed) != len(current) or set(proposed) != set(current):
        raise ApiError(
            Code.order_mismatch,
            "List every item of the collection exactly once",
            extra={"items_count": len(current)},
        )
