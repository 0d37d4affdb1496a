# ruff: noqa: RUF001  (Cyrillic letters, transliterated on purpose)
"""Creating, editing, deleting collections and rotating their link (CL2, CL4, CL5, CL12;
R19, R20), and their part in account deletion and export (users.md R9, R10)."""

from __future__ import annotations

import re
import secrets
import unicodedata
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from models.anime.collections.access import access_owned, is_staff
from models.anime.collections.reads import first_items
from models.anime.collections.shapes import (
    Collection,
    SlugRotated,
    emit_publish,
    emit_update,
    full_collection,
)
from models.anime.collections.tables import (
    COLLECTIONS_PER_USER,
    DESCRIPTION_MAX,
    SLUG_BASE_MAX,
    SLUG_SUFFIX_LENGTH,
    TITLE_MAX,
    collection,
    collection_item,
    collection_quota,
)
from models.anime.common import Origin, StaffAction, clean_text, record_staff_action, search_form
from models.exports import exporter
from models.users.deletion import on_account_deleted
from server.auth import Identity
from server.db import Transaction
from server.errors import ApiError, Code
from server.events import rfc3339
from server.ids import new_id
from server.services import Services

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z",
    "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh",
    "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu", "я": "ya", "і": "i",
    "ї": "yi", "є": "ye", "ґ": "g", "ў": "u",
}  # fmt: skip


# --- checks and slugs -------------------------------------------------------------------------


def check_title(value: str) -> str:
    return clean_text(value, "title", minimum=1, maximum=TITLE_MAX)


def check_description(value: str | None) -> str | None:
    if value is None:
        return None
    text = clean_text(value, "description", maximum=DESCRIPTION_MAX, multiline=True)
    return text or None


def slug_base(title: str) -> str:
    """The title transliterated to `[a-z0-9-]`, ≤ 50 chars; `collection` if nothing is left."""
    out: list[str] = []
    for char in unicodedata.normalize("NFKC", title).lower():
        if char in _CYRILLIC:
            out.append(_CYRILLIC[char])
            continue
        folded = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode().lower()
        out.append(folded if folded.isalnum() else "-")
    base = _NOT_SLUG.sub("-", "".join(out)).strip("-")
    return base[:SLUG_BASE_MAX].strip("-") or "collection"


def new_slug(title: str) -> str:
    """`<base>-<10 random Crockford base32 chars>`: the 50 random bits are the capability of
    an unlisted link."""
    bits = secrets.randbits(5 * SLUG_SUFFIX_LENGTH)
    suffix = "".join(CROCKFORD[(bits >> (5 * i)) & 31] for i in range(SLUG_SUFFIX_LENGTH))
    return f"{slug_base(title)}-{suffix}"


# --- CL2 -------------------------------------------------------------------------------------


async def do_create(
    services: Services,
    identity: Identity,
    title: str,
    description: str | None,
    visibility: str,
) -> Collection:
    """CL2, R20: one quota unit claimed with a conditional increment, or 409."""
    db = services.db
    title = check_title(title)
    description = check_description(description)
    owner_id = identity.user_id
    now = datetime.now(UTC)
    row: dict[str, Any] = dict(
        id=new_id(),
        owner_id=owner_id,
        title=title,
        search_title=search_form(title),
        description=description,
        visibility=visibility,
        slug=new_slug(title),
        items_count=0,
        version=1,
        published_at=now if visibility == "public" else None,
        created_at=now,
        updated_at=now,
    )
    async with db.transaction() as tx:
        await db.execute(
            db.upsert(collection_quota, {"user_id": owner_id, "collections_count": 0}, ["user_id"])
        )
        claimed = await db.fetch_one(
            collection_quota.update()
            .where(
                collection_quota.c.user_id == owner_id,
                collection_quota.c.collections_count < COLLECTIONS_PER_USER,
            )
            .values(collections_count=collection_quota.c.collections_count + 1)
            .returning(collection_quota.c.collections_count)
        )
        if claimed is None:
            raise ApiError(
                Code.collection_limit,
                f"You have {COLLECTIONS_PER_USER} collections; delete one to create another",
            )
        await db.execute(collection.insert().values(**row))
        emit_update(tx, row, "create")
        if visibility == "public":
            await emit_publish(db, tx, row)
    return await full_collection(db, row, [], None, can_edit=True)


# --- CL4 -------------------------------------------------------------------------------------


async def do_update(
    services: Services, identity: Identity, collection_id: int, changes: dict[str, Any]
) -> Collection:
    """CL4, R19: applies in this request; going private rotates the slug; the first time a
    collection is public it is published. Nothing changed: no write, no event."""
    db = services.db
    row = await access_owned(services, identity, collection_id)
    values: dict[str, Any] = {}
    if "title" in changes:
        title = check_title(changes["title"])
        if title != row["title"]:
            values.update(title=title, search_title=search_form(title))
    if "description" in changes:
        description = check_description(changes["description"])
        if description != row["description"]:
            values["description"] = description
    visibility = changes.get("visibility", row["visibility"])
    if visibility != row["visibility"]:
        values["visibility"] = visibility
        if visibility == "private":
            values["slug"] = new_slug(values.get("title", row["title"]))
    if values:
        now = datetime.now(UTC)
        async with db.transaction() as tx:
            updated = await db.fetch_one(
                collection.update()
                .where(collection.c.id == collection_id, collection.c.owner_id == row["owner_id"])
                .values(**values, version=collection.c.version + 1, updated_at=now)
                .returning(*collection.c)
            )
            if updated is None:
                raise ApiError(Code.not_found, "There is no such collection")
            emit_update(tx, updated, "update")
            first_public = await db.fetch_one(
                collection.update()
                .where(
                    collection.c.id == collection_id,
                    collection.c.visibility == "public",
                    collection.c.published_at.is_(None),
                )
                .values(published_at=now)
                .returning(collection.c.id)
            )
            if first_public is not None:
                await emit_publish(db, tx, updated)
        row = updated
    return await owner_view(services, row)


async def owner_view(services: Services, row: dict[str, Any]) -> Collection:
    items, next_cursor = await first_items(services, row)
    return await full_collection(services.db, row, items, next_cursor, can_edit=True)


# --- CL5 -------------------------------------------------------------------------------------


async def do_delete(
    services: Services, identity: Identity, collection_id: int, origin: Origin
) -> None:
    """CL5: the owner, or staff (audited); items go with it and the quota unit comes back."""
    db = services.db
    row = await access_owned(services, identity, collection_id, staff_may=True)
    by_staff = row["owner_id"] != identity.user_id
    async with db.transaction() as tx:
        deleted = await db.fetch_one(
            collection.delete()
            .where(collection.c.id == collection_id)
            .returning(
                collection.c.id, collection.c.owner_id, collection.c.version, collection.c.title
            )
        )
        if deleted is None:  # a concurrent delete won
            raise ApiError(Code.not_found, "There is no such collection")
        await _forget(services, tx, deleted)
        if by_staff:
            assert is_staff(identity)
            await record_staff_action(
                services,
                tx,
                StaffAction(
                    actor_id=identity.user_id,
                    actor_role=identity.role,
                    action="collection.delete",
                    target_type="collection",
                    target_id=str(collection_id),
                    ip=origin.ip,
                    user_agent=origin.user_agent,
                    before={"title": deleted["title"], "owner_id": str(deleted["owner_id"])},
                ),
            )


async def _forget(services: Services, tx: Transaction, deleted: dict[str, Any]) -> None:
    """What goes with a deleted collection: its items, its quota unit; the owner is told."""
    db = services.db
    await db.execute(
        collection_item.delete().where(collection_item.c.collection_id == deleted["id"])
    )
    await db.execute(
        collection_quota.update()
        .where(
            collection_quota.c.user_id == deleted["owner_id"],
            collection_quota.c.collections_count > 0,
        )
        .values(collections_count=collection_quota.c.collections_count - 1)
    )
    emit_update(tx, {**deleted, "version": deleted["version"] + 1}, "delete")


# --- CL12 ------------------------------------------------------------------------------------


async def do_rotate_slug(services: Services, identity: Identity, collection_id: int) -> SlugRotated:
    """CL12, R19: a new link; the old slug is 404 from the moment this commits."""
    db = services.db
    row = await access_owned(services, identity, collection_id)
    async with db.transaction() as tx:
        updated = await db.fetch_one(
            collection.update()
            .where(collection.c.id == collection_id)
            .values(
                slug=new_slug(row["title"]),
                version=collection.c.version + 1,
                updated_at=datetime.now(UTC),
            )
            .returning(*collection.c)
        )
        if updated is None:
            raise ApiError(Code.not_found, "There is no such collection")
        emit_update(tx, updated, "slug")
    return SlugRotated(slug=updated["slug"])


# --- account deletion and export ---------------------------------------------------------------


@on_account_deleted
async def delete_user_collections(services: Services, tx: Transaction, user_id: int) -> None:
    """A deleted account's collections go with it (they are its curation, not shared content)."""
    db = services.db
    owned = await db.fetch_all(sa.select(collection.c.id).where(collection.c.owner_id == user_id))
    ids = [row["id"] for row in owned]
    if ids:
        await db.execute(collection_item.delete().where(collection_item.c.collection_id.in_(ids)))
        await db.execute(collection.delete().where(collection.c.id.in_(ids)))
    await db.execute(collection_quota.delete().where(collection_quota.c.user_id == user_id))


@exporter("collections")
async def export_collections(services: Services, user_id: int) -> list[dict[str, Any]]:
    db = services.db
    rows = await db.fetch_all(
        sa.select(collection)
        .where(collection.c.owner_id == user_id)
        .order_by(collection.c.created_at, collection.c.id)
    )
    exported = []
    for row in rows:
        items = await db.fetch_all(
            sa.select(collection_item)
            .where(collection_item.c.collection_id == row["id"])
            .order_by(collection_item.c.position)
        )
        exported.append(
            {
                "id": str(row["id"]),
                "title": row["title"],
                "description": row["description"],
                "visibility": row["visibility"],
                "slug": row["slug"],
                "created_at": rfc3339(row["created_at"]),
                "updated_at": rfc3339(row["updated_at"]),
                "items": [
                    {
                        "anime_id": item["anime_id"],
                        "name": item["name"],
                        "russian": item["russian"],
                        "note": item["note"],
                        "position": item["position"],
                        "added_at": rfc3339(item["added_at"]),
                    }
                    for item in items
                ],
            }
        )
    return exported
