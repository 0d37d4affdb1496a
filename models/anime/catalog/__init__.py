"""The anime catalog (anime.md §1): reads, search, filters, caching and the version.

For other domains (stable; anime ids are Shikimori ids, plain integers):

- `anime_exists(services, anime_id) -> bool`
- `get_anime_brief(services, anime_id) -> dict | None`: `{id, name, russian, english,
  image_preview, episodes, kind, status}`, e.g. for a collection item's snapshot.
- `get_many(services, ids) -> dict[int, dict]`: AnimeCompact as JSON-ready builtins for
  each id that exists (one query whatever the number of ids); `get_compacts` gives the
  `AnimeCompact` structs to embed in a response struct (ListEntry.anime, CM3's anime).
- `bump_version(db, tx, cache)`: every write that changes catalog data calls it inside
  its transaction (admin.md A14–A16, A19), so every cached catalog response misses at once.
- `build_search_text(titles)` / `search_titles(row)`: what an admin edit must store in
  `search_text` when it changes a title or synonym.

The `*_response` functions are what the HTTP layer serves: a `Cached` body with its ETag,
read from the server-side cache keyed by route + canonical query + catalog version (R2).
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import sqlalchemy as sa

from models.anime.catalog import reads
from models.anime.catalog.caching import (
    TTL_BROWSE_S,
    TTL_CANDIDATES_S,
    TTL_DETAIL_S,
    TTL_REFERENCE_S,
    TTL_STATS_S,
    Cached,
    bump_version,
    cache_key,
    cached,
    current_version,
    etag_of,
)
from models.anime.catalog.filters import Filters, check_page, parse_filters
from models.anime.catalog.shapes import (
    AnimeCompact,
    AnimeDetail,
    AnimeList,
    GenreList,
    Page,
    RelatedList,
    ScreenshotList,
    SearchResults,
    StudioPage,
    VideoList,
)
from models.anime.catalog.text import (
    build_search_text,
    normalize_title,
    query_tokens,
    search_titles,
)
from models.anime.catalog_tables import anime
from server.services import Services

__all__ = [
    "AnimeCompact",
    "AnimeDetail",
    "Cached",
    "Filters",
    "anime_exists",
    "build_search_text",
    "bump_version",
    "check_page",
    "current_version",
    "get_anime_brief",
    "get_compacts",
    "get_many",
    "normalize_title",
    "parse_filters",
    "search_titles",
]

MAX_ANIME_ID = 2**31 - 1
_encoder = msgspec.json.Encoder()
_candidates_decoder = msgspec.msgpack.Decoder(list[int])


def _valid_id(anime_id: int) -> bool:
    return isinstance(anime_id, int) and 0 < anime_id <= MAX_ANIME_ID


# --- for other domains ---------------------------------------------------------------------


async def anime_exists(services: Services, anime_id: int) -> bool:
    """Whether the local catalog has this id (there is no fetch-through, R7)."""
    return _valid_id(anime_id) and await reads.exists(services.db, anime_id)


async def get_anime_brief(services: Services, anime_id: int) -> dict[str, Any] | None:
    """`{id, name, russian, english, image_preview, episodes, kind, status}` or None."""
    if not _valid_id(anime_id):
        return None
    return await services.db.fetch_one(
        sa.select(
            anime.c.id,
            anime.c.name,
            anime.c.russian,
            anime.c.english,
            anime.c.image_preview,
            anime.c.episodes,
            anime.c.kind,
            anime.c.status,
        ).where(anime.c.id == anime_id)
    )


async def get_compacts(services: Services, ids: list[int] | set[int]) -> dict[int, AnimeCompact]:
    """AnimeCompact structs for the ids that exist, in one query."""
    return await reads.compacts_by_id(services.db, [i for i in ids if _valid_id(i)])


async def get_many(services: Services, ids: list[int] | set[int]) -> dict[int, dict[str, Any]]:
    """AnimeCompact as builtins (dates as ISO strings) for the ids that exist, one query."""
    found = await get_compacts(services, ids)
    return {anime_id: msgspec.to_builtins(compact) for anime_id, compact in found.items()}


# --- what the HTTP layer serves (R2) -----------------------------------------------------


async def _versioned(services: Services, route: str, canonical: str, ttl_s: float, build):
    version = await current_version(services.db, services.cache)
    return await cached(services.cache, cache_key(route, canonical, version), ttl_s, build)


async def browse_response(
    services: Services, filters: Filters, order: str | None, page: int, limit: int
) -> Cached:
    """CT1 (every order but random)."""
    check_page(page, limit)
    order = order or ("relevance" if filters.q is not None else "ranked")
    canonical = f"{filters.canonical()}&limit={limit}&order={order}&page={page}"

    async def build() -> bytes:
        items, has_more = await reads.browse(services.db, filters, order, page, limit)
        return _encoder.encode(Page(items=items, page=page, has_more=has_more))

    return await _versioned(services, "browse", canonical, TTL_BROWSE_S, build)


async def _candidates(services: Services, filters: Filters) -> list[int]:
    """The ids matching the filters, cached per catalog version (R2: CT13)."""
    version = await current_version(services.db, services.cache)
    key = cache_key("candidates", filters.canonical(), version)
    raw = await services.cache.get(key)
    if raw is not None:
        return _candidates_decoder.decode(raw)
    ids = await reads.candidate_ids(services.db, filters)
    await services.cache.set(key, msgspec.msgpack.encode(ids), TTL_CANDIDATES_S)
    return ids


async def random_browse_body(services: Services, filters: Filters, limit: int) -> bytes:
    """CT1 with order=random: a fresh draw per request; `page` is ignored (R5)."""
    candidates = await _candidates(services, filters)
    items = await reads.random_page(services.db, candidates, limit)
    return _encoder.encode(Page(items=items, page=1, has_more=False))


async def random_detail(services: Services, filters: Filters) -> Cached:
    """CT13: one title drawn uniformly from the matches; `missing` when none match."""
    candidates = await _candidates(services, filters)
    if not candidates:
        return Cached("", b"", missing=True)
    return await detail_response(services, random.choice(candidates))


async def search_response(services: Services, q: str, limit: int) -> Cached:
    """CT2."""
    normalized, tokens = query_tokens(q)

    async def build() -> bytes:
        items = await reads.search(services.db, normalized, tokens, limit)
        return _encoder.encode(SearchResults(items=items))

    return await _versioned(
        services, "search", f"limit={limit}&q={normalized}", TTL_BROWSE_S, build
    )


async def detail_response(services: Services, anime_id: int) -> Cached:
    """CT3 (`missing`: 404)."""

    async def build() -> bytes | None:
        found = await reads.detail(services.db, anime_id)
        return None if found is None else _encoder.encode(found)

    return await _versioned(services, "detail", str(anime_id), TTL_DETAIL_S, build)


async def _per_anime(services: Services, route: str, anime_id: int, fetch, wrap) -> Cached:
    async def build() -> bytes | None:
        if not await reads.exists(services.db, anime_id):
            return None
        return _encoder.encode(wrap(await fetch(services.db, anime_id)))

    return await _versioned(services, route, str(anime_id), TTL_DETAIL_S, build)


async def related_response(services: Services, anime_id: int) -> Cached:
    return await _per_anime(
        services, "related", anime_id, reads.related, lambda items: RelatedList(items=items)
    )


async def similar_response(services: Services, anime_id: int) -> Cached:
    return await _per_anime(
        services, "similar", anime_id, reads.similar, lambda items: AnimeList(items=items)
    )


async def franchise_response(services: Services, anime_id: int) -> Cached:
    async def build() -> bytes | None:
        items = await reads.franchise(services.db, anime_id)
        return None if items is None else _encoder.encode(AnimeList(items=items))

    return await _versioned(services, "franchise", str(anime_id), TTL_DETAIL_S, build)


async def screenshots_response(services: Services, anime_id: int) -> Cached:
    return await _per_anime(
        services,
        "screenshots",
        anime_id,
        reads.screenshots,
        lambda items: ScreenshotList(items=items),
    )


async def videos_response(services: Services, anime_id: int) -> Cached:
    return await _per_anime(
        services, "videos", anime_id, reads.videos, lambda items: VideoList(items=items)
    )


async def stats_response(services: Services, anime_id: int) -> Cached:
    """CT9: not versioned (it reflects lists, not the catalog); 10 minutes."""

    async def build() -> bytes | None:
        if not await reads.exists(services.db, anime_id):
            return None
        return _encoder.encode(await reads.stats(services.db, anime_id))

    return await cached(services.cache, cache_key("stats", str(anime_id), None), TTL_STATS_S, build)


async def genres_response(services: Services) -> Cached:
    async def build() -> bytes:
        return _encoder.encode(GenreList(items=await reads.genres(services.db)))

    return await _versioned(services, "genres", "", TTL_REFERENCE_S, build)


async def studios_response(services: Services, q: str, page: int, limit: int) -> Cached:
    check_page(page, limit)
    prefix = q.strip()

    async def build() -> bytes:
        items, has_more = await reads.studios(services.db, prefix, page, limit)
        return _encoder.encode(StudioPage(items=items, page=page, has_more=has_more))

    canonical = f"limit={limit}&page={page}&q={prefix.lower()}"
    return await _versioned(services, "studios", canonical, TTL_REFERENCE_S, build)


async def calendar_response(services: Services, days: int) -> Cached:
    async def build() -> bytes:
        return _encoder.encode(await reads.calendar(services.db, days))

    return await _versioned(services, "calendar", f"days={days}", TTL_BROWSE_S, build)


def fresh(body: bytes) -> Cached:
    """An uncached body with its ETag (order=random)."""
    return Cached(etag_of(body), body)
