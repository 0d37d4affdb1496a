"""Catalog queries (anime.md CT1–CT13): every order ends with `id` (R5), every page reads
`limit + 1` rows to know whether another page exists, and every set read for many titles
is one query (no N+1)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from models.anime.catalog.filters import Filters
from models.anime.catalog.shapes import (
    AnimeCompact,
    AnimeDetail,
    Calendar,
    CalendarItem,
    Genre,
    RelatedItem,
    Screenshot,
    SearchItem,
    Stats,
    StatusCounts,
    Studio,
    Video,
    compact_of,
    detail_of,
    search_item_of,
)
from models.anime.catalog.text import like_escape
from models.anime.catalog_tables import (
    anime,
    anime_genre,
    anime_relation,
    anime_screenshot,
    anime_similar,
    anime_studio,
    anime_video,
    genre,
    studio,
)
from server.db import Database, metadata

MAX_SIMILAR = 20
MAX_FRANCHISE = 200
MAX_SCREENSHOTS = 100
MAX_VIDEOS = 100
MIN_SCORED_FOR_MEAN = 5
LIST_STATUSES = ("planned", "watching", "rewatching", "completed", "on_hold", "dropped")
CALENDAR_LOOKBACK = timedelta(hours=1)

# Only the columns a compact shape needs: a browse page never reads descriptions.
COMPACT_COLUMNS = (
    anime.c.id,
    anime.c.name,
    anime.c.russian,
    anime.c.english,
    anime.c.image_original,
    anime.c.image_preview,
    anime.c.image_x96,
    anime.c.image_x48,
    anime.c.kind,
    anime.c.score_x100,
    anime.c.status,
    anime.c.episodes,
    anime.c.episodes_aired,
    anime.c.aired_on,
    anime.c.released_on,
    anime.c.season,
    anime.c.rating,
)
SEARCH_COLUMNS = (
    anime.c.id,
    anime.c.name,
    anime.c.russian,
    anime.c.english,
    anime.c.japanese,
    anime.c.image_x96,
    anime.c.kind,
    anime.c.year,
    anime.c.score_x100,
)


def relevance(q: str | None) -> list[sa.ColumnElement[Any]]:
    """R3: tier (0 a title equals q, 1 a title starts with q, 2 the rest), then members
    desc, then id. A query without letters or digits puts every title in tier 2. (Never a
    bare integer in ORDER BY: SQL reads that as a column position.)"""
    tail = [anime.c.members.desc(), anime.c.id]
    if not q:
        return tail
    escaped = like_escape(q)
    tier = sa.case(
        (anime.c.search_text.like(f"%|{escaped}|%", escape="\\"), sa.literal_column("0")),
        (anime.c.search_text.like(f"%|{escaped}%", escape="\\"), sa.literal_column("1")),
        else_=sa.literal_column("2"),
    )
    return [tier, *tail]


def order_by(order: str, q: str | None) -> list[sa.ColumnElement[Any]]:
    """The ORDER BY of CT1 (`relevance` is the default when q is given)."""
    if order == "popularity":
        return [anime.c.members.desc(), anime.c.id]
    if order == "name":
        return [sa.func.lower(anime.c.name), anime.c.id]
    if order == "aired_on":
        return [anime.c.aired_on.desc().nulls_last(), anime.c.id]
    if order == "episodes":
        return [anime.c.episodes.desc(), anime.c.id]
    if order == "relevance":
        return relevance(q)
    return [anime.c.score_x100.desc(), anime.c.id]  # ranked: unrated (0) sort last


async def browse(
    db: Database, filters: Filters, order: str, page: int, limit: int
) -> tuple[list[AnimeCompact], bool]:
    query = (
        sa.select(*COMPACT_COLUMNS)
        .where(*filters.conditions(db.dialect))
        .order_by(*order_by(order, filters.q))
        .limit(limit + 1)
        .offset((page - 1) * limit)
    )
    rows = await db.fetch_all(query)
    return [compact_of(row) for row in rows[:limit]], len(rows) > limit


async def candidate_ids(db: Database, filters: Filters) -> list[int]:
    """Every id matching the filters, ascending (CT13 and order=random pick from these)."""
    query = sa.select(anime.c.id).where(*filters.conditions(db.dialect)).order_by(anime.c.id)
    return [row["id"] for row in await db.fetch_all(query)]


async def random_page(db: Database, candidates: Sequence[int], limit: int) -> list[AnimeCompact]:
    """`limit` distinct titles drawn uniformly from the candidates, in the order drawn."""
    picked = random.sample(list(candidates), min(limit, len(candidates)))
    by_id = await compacts_by_id(db, picked)
    return [by_id[i] for i in picked if i in by_id]


async def search(db: Database, q: str, tokens: Sequence[str], limit: int) -> list[SearchItem]:
    """CT2: titles matching every token, by tier, then members desc, then id. rx is hidden,
    as on a default CT1 page: autocomplete has no `censored` switch."""
    query = sa.select(*SEARCH_COLUMNS).where(
        sa.or_(anime.c.rating.is_(None), anime.c.rating != "rx")
    )
    for token in tokens:
        query = query.where(anime.c.search_text.like(f"%{like_escape(token)}%", escape="\\"))
    query = query.order_by(*relevance(q)).limit(limit)
    return [search_item_of(row) for row in await db.fetch_all(query)]


async def exists(db: Database, anime_id: int) -> bool:
    return await db.fetch_val(sa.select(anime.c.id).where(anime.c.id == anime_id)) is not None


async def compacts_by_id(db: Database, ids: Iterable[int]) -> dict[int, AnimeCompact]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await db.fetch_all(sa.select(*COMPACT_COLUMNS).where(anime.c.id.in_(wanted)))
    return {row["id"]: compact_of(row) for row in rows}


async def detail(db: Database, anime_id: int) -> AnimeDetail | None:
    row = await db.fetch_one(sa.select(anime).where(anime.c.id == anime_id))
    if row is None:
        return None
    genres = await db.fetch_all(
        sa.select(genre)
        .select_from(genre.join(anime_genre, anime_genre.c.genre_id == genre.c.id))
        .where(anime_genre.c.anime_id == anime_id)
        .order_by(genre.c.name, genre.c.id)
    )
    studios = await db.fetch_all(
        sa.select(studio)
        .select_from(studio.join(anime_studio, anime_studio.c.studio_id == studio.c.id))
        .where(anime_studio.c.anime_id == anime_id)
        .order_by(studio.c.name, studio.c.id)
    )
    return detail_of(
        row,
        [Genre(id=g["id"], name=g["name"], russian=g["russian"], kind=g["kind"]) for g in genres],
        [Studio(id=s["id"], name=s["name"], image=s["image"]) for s in studios],
    )


async def related(db: Database, anime_id: int) -> list[RelatedItem]:
    """CT4: only targets present locally, by relation, then aired_on (unknown last), then id."""
    query = (
        sa.select(anime_relation.c.relation, *COMPACT_COLUMNS)
        .select_from(anime_relation.join(anime, anime.c.id == anime_relation.c.related_id))
        .where(anime_relation.c.anime_id == anime_id)
        .order_by(anime_relation.c.relation, anime.c.aired_on.asc().nulls_last(), anime.c.id)
    )
    return [
        RelatedItem(relation=row["relation"], anime=compact_of(row))
        for row in await db.fetch_all(query)
    ]


async def similar(db: Database, anime_id: int) -> list[AnimeCompact]:
    query = (
        sa.select(*COMPACT_COLUMNS)
        .select_from(anime_similar.join(anime, anime.c.id == anime_similar.c.similar_id))
        .where(anime_similar.c.anime_id == anime_id)
        .order_by(anime_similar.c.rank, anime.c.id)
        .limit(MAX_SIMILAR)
    )
    return [compact_of(row) for row in await db.fetch_all(query)]


async def franchise(db: Database, anime_id: int) -> list[AnimeCompact] | None:
    """CT6: the franchise in airing order (unknown dates last); no franchise: itself."""
    name = await db.fetch_one(sa.select(anime.c.franchise).where(anime.c.id == anime_id))
    if name is None:
        return None
    if not name["franchise"]:
        where = anime.c.id == anime_id
    else:
        where = anime.c.franchise == name["franchise"]
    query = (
        sa.select(*COMPACT_COLUMNS)
        .where(where)
        .order_by(anime.c.aired_on.asc().nulls_last(), anime.c.id)
        .limit(MAX_FRANCHISE)
    )
    return [compact_of(row) for row in await db.fetch_all(query)]


async def screenshots(db: Database, anime_id: int) -> list[Screenshot]:
    query = (
        sa.select(anime_screenshot.c.original, anime_screenshot.c.preview)
        .where(anime_screenshot.c.anime_id == anime_id)
        .order_by(anime_screenshot.c.position)
        .limit(MAX_SCREENSHOTS)
    )
    return [
        Screenshot(original=r["original"], preview=r["preview"]) for r in await db.fetch_all(query)
    ]


async def videos(db: Database, anime_id: int) -> list[Video]:
    query = (
        sa.select(anime_video)
        .where(anime_video.c.anime_id == anime_id)
        .order_by(anime_video.c.id)
        .limit(MAX_VIDEOS)
    )
    return [
        Video(
            id=r["id"],
            name=r["name"],
            kind=r["kind"],
            url=r["url"],
            player_url=r["player_url"],
            image_url=r["image_url"],
            hosting=r["hosting"],
        )
        for r in await db.fetch_all(query)
    ]


async def stats(db: Database, anime_id: int, now: datetime | None = None) -> Stats:
    """CT9 from this platform's watch lists (anime.md §2's `anime_list_entry`, read through
    the shared metadata so the catalog does not import the list domain)."""
    statuses = dict.fromkeys(LIST_STATUSES, 0)
    scores = {str(n): 0 for n in range(1, 11)}
    entries = metadata.tables.get("anime_list_entry")
    if entries is not None:
        for row in await db.fetch_all(
            sa.select(entries.c.status, sa.func.count().label("n"))
            .where(entries.c.anime_id == anime_id)
            .group_by(entries.c.status)
        ):
            if row["status"] in statuses:
                statuses[row["status"]] = int(row["n"])
        for row in await db.fetch_all(
            sa.select(entries.c.score, sa.func.count().label("n"))
            .where(entries.c.anime_id == anime_id, entries.c.score > 0)
            .group_by(entries.c.score)
        ):
            if str(row["score"]) in scores:
                scores[str(row["score"])] = int(row["n"])
    scored = sum(scores.values())
    mean = (
        round(sum(int(k) * v for k, v in scores.items()) / scored, 2)
        if scored >= MIN_SCORED_FOR_MEAN
        else None
    )
    return Stats(
        anime_id=anime_id,
        members=sum(statuses.values()),
        statuses=StatusCounts(**statuses),
        scores=scores,
        mean_score=mean,
        updated_at=(now or datetime.now(UTC)).replace(microsecond=0),
    )


async def genres(db: Database) -> list[Genre]:
    rows = await db.fetch_all(sa.select(genre).order_by(genre.c.name, genre.c.id))
    return [Genre(id=r["id"], name=r["name"], russian=r["russian"], kind=r["kind"]) for r in rows]


async def studios(db: Database, q: str, page: int, limit: int) -> tuple[list[Studio], bool]:
    """CT11: studios with at least one title, by name (case-insensitive), then id."""
    query = sa.select(studio).where(sa.exists().where(anime_studio.c.studio_id == studio.c.id))
    if q:
        query = query.where(
            sa.func.lower(studio.c.name).like(f"{like_escape(q.lower())}%", escape="\\")
        )
    query = (
        query.order_by(sa.func.lower(studio.c.name), studio.c.id)
        .limit(limit + 1)
        .offset((page - 1) * limit)
    )
    rows = await db.fetch_all(query)
    items = [Studio(id=r["id"], name=r["name"], image=r["image"]) for r in rows[:limit]]
    return items, len(rows) > limit


async def calendar(db: Database, days: int, now: datetime | None = None) -> Calendar:
    """CT12: anons and ongoing titles whose next episode is in [now - 1 h, now + days]."""
    now = now or datetime.now(UTC)
    query = (
        sa.select(*COMPACT_COLUMNS, anime.c.next_episode_at)
        # Spelled as the partial index's predicate, so PostgreSQL can use that index.
        .where(
            sa.text("status IN ('anons', 'ongoing')"),
            anime.c.next_episode_at >= now - CALENDAR_LOOKBACK,
            anime.c.next_episode_at <= now + timedelta(days=days),
        )
        .order_by(anime.c.next_episode_at, anime.c.id)
    )
    return Calendar(
        items=[
            CalendarItem(
                anime=compact_of(row),
                next_episode=row["episodes_aired"] + 1,
                next_episode_at=row["next_episode_at"],
            )
            for row in await db.fetch_all(query)
        ]
    )
