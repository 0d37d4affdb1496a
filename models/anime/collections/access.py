"""Who may see and change a collection (anime.md R18, CL4's 403-or-404).

Every route resolves a collection through one of two functions here, so the visibility rules
live in one place: `access_collection` for the `{ref}` read routes (id or slug) and
`access_owned` for the `{id}` owner routes. Anything the caller may not know exists is the
same 404 as a missing id: a private collection, an unlisted one asked for by id, one whose
owner is in a block relation with the caller.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from models import social_graph
from models.anime.collections.tables import collection
from models.anime.common import Origin, StaffAction, record_staff_action
from server.auth import Identity
from server.errors import ApiError, Code
from server.ids import parse_snowflake
from server.services import Services

# `{base}-{10 chars}`; the base is 1..50 of [a-z0-9-]. A slug is never all digits, so a
# `{ref}` of digits only is an id.
SLUG_PATTERN = re.compile(r"^[a-z0-9-]{1,50}-[0-9a-z]{10}$")


def not_found() -> ApiError:
    return ApiError(Code.not_found, "There is no such collection")


def is_staff(identity: Identity | None) -> bool:
    """Staff powers (read any, delete any) belong to staff sessions, never to bot keys."""
    return identity is not None and identity.is_staff and not identity.is_bot


async def load(services: Services, ref: str) -> tuple[dict[str, Any] | None, bool]:
    """The collection `ref` names, and whether it was named by slug."""
    if ref.isascii() and ref.isdigit():
        collection_id = parse_snowflake(ref)
        if collection_id is None:
            return None, False
        row = await services.db.fetch_one(
            sa.select(collection).where(collection.c.id == collection_id)
        )
        return row, False
    if not SLUG_PATTERN.match(ref):
        return None, True
    row = await services.db.fetch_one(sa.select(collection).where(collection.c.slug == ref))
    return row, True


async def blocked_between(services: Services, identity: Identity | None, owner_id: int) -> bool:
    if identity is None or identity.user_id == owner_id:
        return False
    return await social_graph.is_blocked(services, identity.user_id, owner_id)


async def readable(
    services: Services, identity: Identity | None, row: dict[str, Any], by_slug: bool
) -> bool:
    """R18 for everyone but staff: the owner always; others public, or unlisted by its slug,
    unless a block lies between them and the owner."""
    if identity is not None and identity.user_id == row["owner_id"]:
        return True
    if row["visibility"] == "private" or (row["visibility"] == "unlisted" and not by_slug):
        return False
    return not await blocked_between(services, identity, row["owner_id"])


async def access_collection(
    services: Services, identity: Identity | None, ref: str, origin: Origin
) -> dict[str, Any]:
    """CL3, CL6: the collection the caller may read, or 404. Staff read any; each read that
    needed the staff power (the caller would otherwise get 404) writes an audit row."""
    row, by_slug = await load(services, ref)
    if row is None:
        raise not_found()
    if await readable(services, identity, row, by_slug):
        return row
    if not is_staff(identity):
        raise not_found()
    assert identity is not None
    async with services.db.transaction() as tx:
        await record_staff_action(
            services,
            tx,
            StaffAction(
                actor_id=identity.user_id,
                actor_role=identity.role,
                action="collection.read",
                target_type="collection",
                target_id=str(row["id"]),
                ip=origin.ip,
                user_agent=origin.user_agent,
            ),
        )
    return row


async def access_owned(
    services: Services, identity: Identity, collection_id: int, *, staff_may: bool = False
) -> dict[str, Any]:
    """An `{id}` owner route's collection. A non-owner gets 403 when the collection is
    public (they can see it exists), 404 otherwise; `staff_may` lets staff through (CL5)."""
    row = await services.db.fetch_one(sa.select(collection).where(collection.c.id == collection_id))
    if row is None:
        raise not_found()
    if row["owner_id"] == identity.user_id or (staff_may and is_staff(identity)):
        return row
    if row["visibility"] == "public" and not await blocked_between(
        services, identity, row["owner_id"]
    ):
        raise ApiError(Code.forbidden, "Only the owner can change this collection")
    raise not_found()
