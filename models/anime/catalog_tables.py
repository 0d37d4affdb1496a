"""The catalog's tables (anime.md §1 Data). Anime are keyed by their Shikimori id.

Defined in one place first so the list, collection and comment work can reference them
while the catalog's operations are built; `search_text` is maintained by the importer (R3).
"""

from __future__ import annotations

import sqlalchemy as sa

from server.db import UTCDateTime, metadata

KINDS = ("tv", "movie", "ova", "ona", "special", "tv_special", "music", "pv", "cm")
STATUSES = ("anons", "ongoing", "released")
RATINGS = ("none", "g", "pg", "pg_13", "r", "r_plus", "rx")
RELATIONS = (
    "adaptation",
    "alternative_setting",
    "alternative_version",
    "character",
    "full_story",
    "other",
    "parent_story",
    "prequel",
    "sequel",
    "side_story",
    "spin_off",
    "summary",
)
GENRE_KINDS = ("genre", "theme", "demographic")

anime = sa.Table(
    "anime",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("russian", sa.String(255), nullable=True),
    sa.Column("english", sa.String(255), nullable=True),
    sa.Column("japanese", sa.String(255), nullable=True),
    sa.Column("synonyms", sa.JSON, nullable=False),
    sa.Column("kind", sa.String(12), nullable=True),
    sa.Column("status", sa.String(10), nullable=True),
    sa.Column("rating", sa.String(8), nullable=True),
    sa.Column("episodes", sa.Integer, nullable=False),
    sa.Column("episodes_aired", sa.Integer, nullable=False),
    sa.Column("duration", sa.Integer, nullable=False),
    sa.Column("aired_on", sa.Date, nullable=True),
    sa.Column("released_on", sa.Date, nullable=True),
    sa.Column("year", sa.Integer, nullable=True),
    sa.Column("season", sa.String(12), nullable=True),
    sa.Column("score_x100", sa.Integer, nullable=False),
    sa.Column("members", sa.Integer, nullable=False),
    sa.Column("image_original", sa.String(512), nullable=True),
    sa.Column("image_preview", sa.String(512), nullable=True),
    sa.Column("image_x96", sa.String(512), nullable=True),
    sa.Column("image_x48", sa.String(512), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("franchise", sa.String(128), nullable=True),
    sa.Column("next_episode_at", UTCDateTime, nullable=True),
    sa.Column("myanimelist_id", sa.Integer, nullable=True, unique=True),
    sa.Column("search_text", sa.Text, nullable=False),
    sa.Column("origin", sa.String(10), nullable=False),
    sa.Column("locked_fields", sa.JSON, nullable=False),
    sa.Column("source_updated_at", UTCDateTime, nullable=True),
    sa.Column("imported_at", UTCDateTime, nullable=False),
    sa.Index("ix_anime_kind", "kind"),
    sa.Index("ix_anime_status", "status"),
    sa.Index("ix_anime_rating", "rating"),
    sa.Index("ix_anime_year", "year"),
    sa.Index("ix_anime_season", "season"),
    sa.Index("ix_anime_franchise", "franchise"),
    sa.Index(
        "ix_anime_next_episode_at",
        "next_episode_at",
        postgresql_where=sa.text("status IN ('anons', 'ongoing')"),
        sqlite_where=sa.text("status IN ('anons', 'ongoing')"),
    ),
)

# Orders are `<column> DESC, id ASC` (ties break by id, R5): indexes in that exact order.
for _column in ("score_x100", "members", "aired_on", "episodes"):
    sa.Index(f"ix_anime_{_column}_desc_id", anime.c[_column].desc(), anime.c.id)

# `order=name` sorts case-insensitively, ties by id (R5).
sa.Index("ix_anime_name_lower_id", sa.func.lower(anime.c.name), anime.c.id)
# R3 substring search: a trigram GIN index serves `LIKE '%token%'` on PostgreSQL (pg_trgm,
# created by migration 0005). SQLite builds a plain B-tree under the same name; its LIKE scan
# can read that narrower index instead of the table.
sa.Index(
    "ix_anime_search_text",
    anime.c.search_text,
    postgresql_using="gin",
    postgresql_ops={"search_text": "gin_trgm_ops"},
)

anime_tombstones = sa.Table(
    "anime_tombstones",
    metadata,
    sa.Column("anime_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("created_by", sa.BigInteger, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

genre = sa.Table(
    "genre",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("russian", sa.String(64), nullable=True),
    sa.Column("kind", sa.String(12), nullable=False),
)

anime_genre = sa.Table(
    "anime_genre",
    metadata,
    sa.Column("anime_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("genre_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Index("ix_anime_genre_genre_id_anime_id", "genre_id", "anime_id"),
)

studio = sa.Table(
    "studio",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("image", sa.String(512), nullable=True),
)

anime_studio = sa.Table(
    "anime_studio",
    metadata,
    sa.Column("anime_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("studio_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Index("ix_anime_studio_studio_id_anime_id", "studio_id", "anime_id"),
)

anime_relation = sa.Table(
    "anime_relation",
    metadata,
    sa.Column("anime_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("related_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("relation", sa.String(24), nullable=False),
)

anime_similar = sa.Table(
    "anime_similar",
    metadata,
    sa.Column("anime_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("similar_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("rank", sa.Integer, nullable=False),
)

anime_screenshot = sa.Table(
    "anime_screenshot",
    metadata,
    sa.Column("anime_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("original", sa.String(512), nullable=False),
    sa.Column("preview", sa.String(512), nullable=True),
)

anime_video = sa.Table(
    "anime_video",
    metadata,
    sa.Column("anime_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("player_url", sa.String(512), nullable=True),
    sa.Column("image_url", sa.String(512), nullable=True),
    sa.Column("hosting", sa.String(64), nullable=True),
)

catalog_meta = sa.Table(
    "catalog_meta",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1
    sa.Column("version", sa.BigInteger, nullable=False),
)
