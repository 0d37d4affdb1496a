"""What the catalog answers (anime.md §1 Shapes): Shikimori's serializer field names.

Every shape is the same for every caller (Decided: no per-user fields), so a response can
be cached and shared. `score` is the stored `score_x100` as a number with two decimals.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

import msgspec

Kind = Literal["tv", "movie", "ova", "ona", "special", "tv_special", "music", "pv", "cm"]
Status = Literal["anons", "ongoing", "released"]
Rating = Literal["none", "g", "pg", "pg_13", "r", "r_plus", "rx"]
GenreKind = Literal["genre", "theme", "demographic"]
Relation = Literal[
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
]
VideoKind = Literal["pv", "op", "ed", "cm", "character_trailer", "episode_preview", "other"]


class AnimeImage(msgspec.Struct):
    original: str | None
    preview: str | None
    x96: str | None
    x48: str | None


class AnimeCompact(msgspec.Struct):
    id: int
    name: str
    russian: str | None
    english: str | None
    image: AnimeImage
    kind: Kind | None
    score: float
    status: Status | None
    episodes: int
    episodes_aired: int
    aired_on: date | None
    released_on: date | None
    season: str | None
    rating: Rating | None


class Genre(msgspec.Struct):
    id: int
    name: str
    russian: str | None
    kind: GenreKind


class Studio(msgspec.Struct):
    id: int
    name: str
    image: str | None


class AnimeDetail(AnimeCompact):
    """A title's page: the compact fields first, then the rest."""

    japanese: str | None
    synonyms: list[str]
    duration: int
    description: str | None
    franchise: str | None
    next_episode_at: datetime | None
    myanimelist_id: int | None
    members: int
    genres: list[Genre]
    studios: list[Studio]
    updated_at: datetime


class Page(msgspec.Struct):
    """CT1: Shikimori-style page of titles."""

    items: list[AnimeCompact]
    page: int
    has_more: bool


class SearchImage(msgspec.Struct):
    x96: str | None


class SearchItem(msgspec.Struct):
    id: int
    name: str
    russian: str | None
    english: str | None
    japanese: str | None
    image: SearchImage
    kind: Kind | None
    year: int | None
    score: float


class SearchResults(msgspec.Struct):
    items: list[SearchItem]


class RelatedItem(msgspec.Struct):
    relation: Relation
    anime: AnimeCompact


class RelatedList(msgspec.Struct):
    items: list[RelatedItem]


class AnimeList(msgspec.Struct):
    items: list[AnimeCompact]


class Screenshot(msgspec.Struct):
    original: str
    preview: str | None


class ScreenshotList(msgspec.Struct):
    items: list[Screenshot]


class Video(msgspec.Struct):
    id: int
    name: str | None
    kind: VideoKind
    url: str
    player_url: str | None
    image_url: str | None
    hosting: str | None


class VideoList(msgspec.Struct):
    items: list[Video]


class StatusCounts(msgspec.Struct):
    planned: int
    watching: int
    rewatching: int
    completed: int
    on_hold: int
    dropped: int


class Stats(msgspec.Struct):
    """CT9: this platform's lists, not Shikimori's."""

    anime_id: int
    members: int
    statuses: StatusCounts
    scores: dict[str, int]
    mean_score: float | None
    updated_at: datetime


class GenreList(msgspec.Struct):
    items: list[Genre]


class StudioPage(msgspec.Struct):
    items: list[Studio]
    page: int
    has_more: bool


class CalendarItem(msgspec.Struct):
    anime: AnimeCompact
    next_episode: int
    next_episode_at: datetime


class Calendar(msgspec.Struct):
    items: list[CalendarItem]


def score_of(score_x100: int) -> float:
    return round((score_x100 or 0) / 100, 2)


def image_of(row: dict[str, Any]) -> AnimeImage:
    return AnimeImage(
        original=row["image_original"],
        preview=row["image_preview"],
        x96=row["image_x96"],
        x48=row["image_x48"],
    )


def _compact_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "russian": row["russian"],
        "english": row["english"],
        "image": image_of(row),
        "kind": row["kind"],
        "score": score_of(row["score_x100"]),
        "status": row["status"],
        "episodes": row["episodes"],
        "episodes_aired": row["episodes_aired"],
        "aired_on": row["aired_on"],
        "released_on": row["released_on"],
        "season": row["season"],
        "rating": row["rating"],
    }


def compact_of(row: dict[str, Any]) -> AnimeCompact:
    return AnimeCompact(**_compact_fields(row))


def detail_of(row: dict[str, Any], genres: list[Genre], studios: list[Studio]) -> AnimeDetail:
    return AnimeDetail(
        **_compact_fields(row),
        japanese=row["japanese"],
        synonyms=list(row["synonyms"] or []),
        duration=row["duration"],
        description=row["description"],
        franchise=row["franchise"],
        next_episode_at=row["next_episode_at"],
        myanimelist_id=row["myanimelist_id"],
        members=row["members"],
        genres=genres,
        studios=studios,
        updated_at=row["source_updated_at"] or row["imported_at"],
    )


def search_item_of(row: dict[str, Any]) -> SearchItem:
    return SearchItem(
        id=row["id"],
        name=row["name"],
        russian=row["russian"],
        english=row["english"],
        japanese=row["japanese"],
        image=SearchImage(x96=row["image_x96"]),
        kind=row["kind"],
        year=row["year"],
        score=score_of(row["score_x100"]),
    )
