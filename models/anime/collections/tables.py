"""The collection tables and the limits of anime.md §3 (Data, R20).

Items deliberately have no foreign key to `anime`: an item is a snapshot (R22), valid even
when the anime is not in the local catalog. The quota row decides the 100-collection limit
with a conditional increment, so two concurrent creates at 99 give one winner.
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa

from server.db import UTCDateTime, metadata

COLLECTIONS_PER_USER = 100
ITEMS_PER_COLLECTION = 500
TITLE_MAX = 100
DESCRIPTION_MAX = 2000
SUMMARY_DESCRIPTION_MAX = 200
NOTE_MAX = 500
NAME_MAX = 255
IMAGE_URL_MAX = 500
PREVIEW_IMAGES = 4
FIRST_ITEMS = 100  # CL3 embeds the first 100 items
SLUG_BASE_MAX = 50
SLUG_SUFFIX_LENGTH = 10  # 50 random bits in Crockford base32
VERSION_RETRIES = 3  # R21: a loser of the version compare-and-swap retries up to 3 times
# Not named by the spec; limits every write API has (DESIGN: per user on writes and search).
CREATE_RATE = "30/hour"
WRITE_RATE = "120/minute"
SEARCH_RATE = "60/minute"
# The hosts a snapshot image may come from when the anime is not in the catalog (CL7):
# Shikimori's and our CDN. A deployment overrides them with `collection_image_hosts`.
DEFAULT_IMAGE_HOSTS = ("shikimori.one", "shikimori.me", "shiki.one", "cdn.anilay.dev")

Visibility = Literal["public", "unlisted", "private"]
VISIBILITIES = ("public", "unlisted", "private")
PUBLIC_ONLY = sa.text("visibility = 'public'")

collection = sa.Table(
    "collection",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("owner_id", sa.BigInteger, nullable=False),
    sa.Column("title", sa.String(TITLE_MAX), nullable=False),
    sa.Column("search_title", sa.String(4 * TITLE_MAX), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("visibility", sa.String(10), nullable=False),
    sa.Column("slug", sa.String(64), nullable=False, unique=True),
    sa.Column("items_count", sa.Integer, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column(
        "published_at", UTCDateTime, nullable=True
    ),  # first became public (COLLECTION_PUBLISH)
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
# CL1's three orders over public collections, and CL11 (a user's, newest edit first).
sa.Index(
    "ix_collection_public_updated",
    collection.c.updated_at.desc(),
    collection.c.id.desc(),
    postgresql_where=PUBLIC_ONLY,
    sqlite_where=PUBLIC_ONLY,
)
sa.Index(
    "ix_collection_public_created",
    collection.c.created_at.desc(),
    collection.c.id.desc(),
    postgresql_where=PUBLIC_ONLY,
    sqlite_where=PUBLIC_ONLY,
)
sa.Index(
    "ix_collection_public_items",
    collection.c.items_count.desc(),
    collection.c.id.desc(),
    postgresql_where=PUBLIC_ONLY,
    sqlite_where=PUBLIC_ONLY,
)
sa.Index(
    "ix_collection_owner_updated",
    collection.c.owner_id,
    collection.c.updated_at.desc(),
    collection.c.id.desc(),
)

collection_item = sa.Table(
    "collection_item",
    metadata,
    sa.Column("collection_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("anime_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(NAME_MAX), nullable=False),
    sa.Column("russian", sa.String(NAME_MAX), nullable=True),
    sa.Column("image_url", sa.String(IMAGE_URL_MAX), nullable=True),
    sa.Column("kind", sa.String(12), nullable=True),
    sa.Column("year", sa.Integer, nullable=True),
    sa.Column("note", sa.String(NOTE_MAX), nullable=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("added_at", UTCDateTime, nullable=False),
    sa.Index("ix_collection_item_collection_id_position", "collection_id", "position"),
    sa.Index("ix_collection_item_anime_id", "anime_id"),
)

collection_quota = sa.Table(
    "collection_quota",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("collections_count", sa.Integer, nullable=False),
)
