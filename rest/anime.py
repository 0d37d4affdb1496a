"""The anime catalog (anime.md CT1–CT13): public, cached, the same for every caller.

Every route is `auth="none"`: an Authorization header, even an invalid one, is never read
(R1). Responses come from the catalog's server-side cache as pre-encoded bytes with their
ETag; a matching If-None-Match gets an empty 304 (R2).

No `from __future__ import annotations` here, on purpose: the request path reads the query
structs' fields on every request (`server.schemas.decode_query`), and string annotations
would be re-evaluated each time — several times the cost of the cached read itself.
"""

from typing import Annotated, Literal

import msgspec
from starlette.responses import Response

from models.anime import catalog
from models.anime.catalog.shapes import (
    AnimeDetail,
    AnimeList,
    Calendar,
    GenreList,
    Page,
    RelatedList,
    ScreenshotList,
    SearchResults,
    Stats,
    StudioPage,
    VideoList,
)
from server.errors import ApiError, Code
from server.http import Call, JsonBody, conditional, endpoint
from server.schemas import Schema

# R2: Cache-Control per route group.
BROWSE_CACHE = "public, max-age=300, stale-while-revalidate=600"  # CT1, CT2, CT12
DETAIL_CACHE = "public, max-age=3600, stale-while-revalidate=86400"  # CT3–CT8
STATS_CACHE = "public, max-age=600"  # CT9
REFERENCE_CACHE = "public, max-age=86400"  # CT10, CT11
NO_STORE = "no-store"  # CT13, CT1 with order=random
CACHED_HEADERS = ("ETag", "Cache-Control", "Vary")
SEARCH_RATE = "60/minute"
MAX_ANIME_ID = 2**31 - 1

CommaList = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=1000)]],
    msgspec.Meta(max_length=20, description="Comma-separated values; `!value` excludes."),
]
Order = Literal["ranked", "popularity", "name", "aired_on", "episodes", "random"]
Year = Annotated[int, msgspec.Meta(ge=1917, le=2100)]


class FilterQuery(Schema):
    """CT13: the CT1 filters without q, order, page and limit."""

    kind: CommaList | None = None
    status: CommaList | None = None
    rating: CommaList | None = None
    season: CommaList | None = None
    year_from: Year | None = None
    year_to: Year | None = None
    score: Annotated[str, msgspec.Meta(max_length=8, description="Minimum, 0..10")] | None = None
    genre: CommaList | None = None
    studio: CommaList | None = None
    ids: CommaList | None = None
    censored: bool = True


class BrowseQuery(Schema):
    """CT1: all optional, ANDed with each other."""

    q: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    kind: CommaList | None = None
    status: CommaList | None = None
    rating: CommaList | None = None
    season: CommaList | None = None
    year_from: Year | None = None
    year_to: Year | None = None
    score: Annotated[str, msgspec.Meta(max_length=8, description="Minimum, 0..10")] | None = None
    genre: CommaList | None = None
    studio: CommaList | None = None
    ids: CommaList | None = None
    censored: bool = True
    order: Order | None = None
    page: Annotated[int, msgspec.Meta(ge=1, le=500)] = 1
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20


class SearchQuery(Schema):
    q: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=20)] = 10


class StudiosQuery(Schema):
    q: Annotated[str, msgspec.Meta(max_length=50)] = ""
    page: Annotated[int, msgspec.Meta(ge=1, le=500)] = 1
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50


class CalendarQuery(Schema):
    days: Annotated[int, msgspec.Meta(ge=1, le=14)] = 7


def _filters(query: FilterQuery | BrowseQuery, q: str | None = None) -> catalog.Filters:
    return catalog.parse_filters(
        q=q,
        kind=query.kind,
        status=query.status,
        rating=query.rating,
        season=query.season,
        year_from=query.year_from,
        year_to=query.year_to,
        score=query.score,
        genre=query.genre,
        studio=query.studio,
        ids=query.ids,
        censored=query.censored,
    )


def _anime_id(call: Call) -> int:
    """The path's anime id; a malformed one is answered like an unknown one."""
    raw = call.request.path_params.get("anime_id", "")
    if not (raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_ANIME_ID):
        raise ApiError(Code.anime_not_found)
    return int(raw)


def _respond(
    call: Call, entry: catalog.Cached, cache_control: str, missing: Code = Code.anime_not_found
) -> Response:
    if entry.missing:
        raise ApiError(missing)
    headers = {"Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    return conditional(call.request, entry.body, entry.etag, headers)


# Literal paths first: /anime/search must not be read as /anime/{anime_id}.


@endpoint(
    "GET",
    "/anime/search",
    query=SearchQuery,
    response=SearchResults,
    response_headers=CACHED_HEADERS,
    errors=[Code.rate_limited],
)
async def search_anime(call: Call[None, SearchQuery]) -> Response:
    """Quick title search for autocomplete, by relevance (R3)."""
    await call.services.limiter.check(SEARCH_RATE, "anime-search", call.client_ip)
    entry = await catalog.search_response(call.services, call.query.q, call.query.limit)
    return _respond(call, entry, BROWSE_CACHE)


@endpoint("GET", "/anime/genres", response=GenreList, response_headers=CACHED_HEADERS)
async def list_genres(call: Call) -> Response:
    """Genres, themes and demographics, by name."""
    return _respond(call, await catalog.genres_response(call.services), REFERENCE_CACHE)


@endpoint(
    "GET",
    "/anime/studios",
    query=StudiosQuery,
    response=StudioPage,
    response_headers=CACHED_HEADERS,
)
async def list_studios(call: Call[None, StudiosQuery]) -> Response:
    """Studios with at least one title, by name; `q` is a name prefix."""
    query = call.query
    entry = await catalog.studios_response(call.services, query.q, query.page, query.limit)
    return _respond(call, entry, REFERENCE_CACHE)


@endpoint(
    "GET",
    "/anime/calendar",
    query=CalendarQuery,
    response=Calendar,
    response_headers=CACHED_HEADERS,
)
async def calendar(call: Call[None, CalendarQuery]) -> Response:
    """Upcoming episodes of ongoing and announced titles, soonest first."""
    entry = await catalog.calendar_response(call.services, call.query.days)
    return _respond(call, entry, BROWSE_CACHE)


@endpoint(
    "GET",
    "/anime/random",
    query=FilterQuery,
    response=AnimeDetail,
    response_headers=("Cache-Control", "Vary"),
    errors=[Code.no_match],
)
async def random_anime(call: Call[None, FilterQuery]) -> Response:
    """One title picked uniformly among those matching the CT1 filters."""
    entry = await catalog.random_detail(call.services, _filters(call.query))
    if entry.missing:
        raise ApiError(Code.no_match, "No title matches these filters")
    return JsonBody(entry.body, 200, {"Cache-Control": NO_STORE, "Vary": "Accept-Encoding"})


@endpoint(
    "GET",
    "/anime",
    query=BrowseQuery,
    response=Page,
    response_headers=CACHED_HEADERS,
)
async def browse_anime(call: Call[None, BrowseQuery]) -> Response:
    """Browse and filter, Shikimori-style (page and limit)."""
    query = call.query
    filters = _filters(query, query.q)
    if query.order == "random":
        body = await catalog.random_browse_body(call.services, filters, query.limit)
        return _respond(call, catalog.fresh(body), NO_STORE)
    entry = await catalog.browse_response(
        call.services, filters, query.order, query.page, query.limit
    )
    return _respond(call, entry, BROWSE_CACHE)


@endpoint(
    "GET",
    "/anime/{anime_id}",
    response=AnimeDetail,
    response_headers=CACHED_HEADERS,
    errors=[Code.anime_not_found],
)
async def get_anime(call: Call) -> Response:
    """Full details of one title."""
    entry = await catalog.detail_response(call.services, _anime_id(call))
    return _respond(call, entry, DETAIL_CACHE)


@endpoint(
    "GET",
    "/anime/{anime_id}/related",
    response=RelatedList,
    response_headers=CACHED_HEADERS,
    errors=[Code.anime_not_found],
)
async def get_related(call: Call) -> Response:
    """Related titles present in the catalog, with the relation kind."""
    entry = await catalog.related_response(call.services, _anime_id(call))
    return _respond(call, entry, DETAIL_CACHE)


@endpoint(
    "GET",
    "/anime/{anime_id}/similar",
    response=AnimeList,
    response_headers=CACHED_HEADERS,
    errors=[Code.anime_not_found],
)
async def get_similar(call: Call) -> Response:
    """Similar titles, in the source's rank order."""
    entry = await catalog.similar_response(call.services, _anime_id(call))
    return _respond(call, entry, DETAIL_CACHE)


@endpoint(
    "GET",
    "/anime/{anime_id}/franchise",
    response=AnimeList,
    response_headers=CACHED_HEADERS,
    errors=[Code.anime_not_found],
)
async def get_franchise(call: Call) -> Response:
    """Every title of the franchise, in airing order."""
    entry = await catalog.franchise_response(call.services, _anime_id(call))
    return _respond(call, entry, DETAIL_CACHE)


@endpoint(
    "GET",
    "/anime/{anime_id}/screenshots",
    response=ScreenshotList,
    response_headers=CACHED_HEADERS,
    errors=[Code.anime_not_found],
)
async def get_screenshots(call: Call) -> Response:
    """Screenshots."""
    entry = await catalog.screenshots_response(call.services, _anime_id(call))
    return _respond(call, entry, DETAIL_CACHE)


@endpoint(
    "GET",
    "/anime/{anime_id}/videos",
    response=VideoList,
    response_headers=CACHED_HEADERS,
    errors=[Code.anime_not_found],
)
async def get_videos(call: Call) -> Response:
    """Trailers, openings and endings."""
    entry = await catalog.videos_response(call.services, _anime_id(call))
    return _respond(call, entry, DETAIL_CACHE)


@endpoint(
    "GET",
    "/anime/{anime_id}/stats",
    response=Stats,
    response_headers=CACHED_HEADERS,
    errors=[Code.anime_not_found],
)
async def get_stats(call: Call) -> Response:
    """This platform's list statuses and score distribution for the title."""
    entry = await catalog.stats_response(call.services, _anime_id(call))
    return _respond(call, entry, STATS_CACHE)


routes = [
    search_anime,
    list_genres,
    list_studios,
    calendar,
    random_anime,
    browse_anime,
    get_anime,
    get_related,
    get_similar,
    get_franchise,
    get_screenshots,
    get_videos,
    get_stats,
]
