"""The catalog importer (anime.md §1 Importer, R6, R7).

It reads Shikimori's API format — anime objects shaped like `GET /api/animes/:id`,
optionally carrying `related`, `similar`, `screenshots` and `videos` shaped like the
matching sub-resources — from a JSON file, a directory of them, or a Shikimori-compatible
base URL, and upserts them by id:

- the same input twice leaves identical rows and bumps `catalog_meta.version` only the
  first time (a row, a child set or a genre/studio is written only when it differs);
- a record older (`updated_at`) than the stored `source_updated_at` is skipped;
- keys absent from a record keep their stored values;
- fields named in the row's `locked_fields` (admin.md A15) are never overwritten;
- ids in `anime_tombstones` are skipped unless named in `force_ids` (admin.md A17 `force`);
- `related`, `similar`, `screenshots`, `videos`, `genres` and `studios`, when present,
  replace the stored set;
- a malformed record is reported and skipped; records are written 500 per transaction,
  and a batch whose transaction fails is retried record by record, so one bad row costs
  only itself.

A remote pull (`pull_remote`) never runs inside an HTTP request: the CLI and admin.md's
import job call it. It sends `User-Agent: Anilay/<version>`, paces itself to 5 requests/s
and 90 requests/min, and on 429 waits for `Retry-After` (at least) with exponential
backoff. Unknown ids are never fetched through on a read (R7): they are 404 locally.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import sqlalchemy as sa

from models.anime.catalog.caching import bump_version
from models.anime.catalog.text import build_search_text, search_titles
from models.anime.catalog_tables import (
    KINDS,
    RATINGS,
    RELATIONS,
    STATUSES,
    anime,
    anime_genre,
    anime_relation,
    anime_screenshot,
    anime_similar,
    anime_studio,
    anime_tombstones,
    anime_video,
    genre,
    studio,
)
from server.cache import Cache
from server.db import Database

log = logging.getLogger("anilay.catalog.import")

BATCH_SIZE = 500
MAX_PROBLEMS = 1000
LOCAL_ID_START = 1_000_000_000  # admin.md A14: local entries; Shikimori ids stay below
DEFAULT_IMAGE_BASE = "https://shikimori.one"
DEMO_CATALOG = Path(__file__).resolve().parent / "data" / "demo_catalog.json"

MAX_TITLE = 255
MAX_DESCRIPTION = 20_000
MAX_FRANCHISE = 128
MAX_URL = 512
MAX_SYNONYMS = 50
MAX_SCREENSHOTS = 100
MAX_VIDEOS = 100
MAX_SIMILAR = 50
MAX_COUNT = 2**31 - 1
VIDEO_KINDS = ("pv", "op", "ed", "cm", "character_trailer", "episode_preview", "other")
GENRE_KINDS = ("genre", "theme", "demographic")
CHILDREN = ("genres", "studios", "related", "similar", "screenshots", "videos")
SEASONS_BY_QUARTER = ("winter", "spring", "summer", "fall")
# Shikimori's filter-only kinds that a serializer may still emit.
KIND_ALIASES = {"tv_13": "tv", "tv_24": "tv", "tv_48": "tv"}

# The columns an import writes (never `origin`, `locked_fields`: admin.md's).
IMPORTED_COLUMNS = (
    "name",
    "russian",
    "english",
    "japanese",
    "synonyms",
    "kind",
    "status",
    "rating",
    "episodes",
    "episodes_aired",
    "duration",
    "aired_on",
    "released_on",
    "year",
    "season",
    "score_x100",
    "members",
    "image_original",
    "image_preview",
    "image_x96",
    "image_x48",
    "description",
    "franchise",
    "next_episode_at",
    "myanimelist_id",
    "source_updated_at",
)
IMAGE_COLUMNS = ("image_original", "image_preview", "image_x96", "image_x48")
# A name in `locked_fields` (admin.md A14/A15 field names, or column names) → what it locks.
LOCK_TARGETS: dict[str, tuple[str, ...]] = {
    "image_url": IMAGE_COLUMNS,
    "image": IMAGE_COLUMNS,
    "aired_on": ("aired_on", "year", "season"),
    "score": ("score_x100",),
    "genre_ids": ("genres",),
    "studio_ids": ("studios",),
}


# --- reports -----------------------------------------------------------------------------


@dataclasses.dataclass
class Problem:
    ref: str
    reason: str


@dataclasses.dataclass
class ImportReport:
    """What an import did. `skipped` counts older, tombstoned and malformed records."""

    total: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_older: int = 0
    skipped_tombstoned: int = 0
    malformed: int = 0
    problems: list[Problem] = dataclasses.field(default_factory=list)
    version: int | None = None  # the catalog version after the last bump, if any
    requests: int = 0  # remote pulls: HTTP requests sent, retries included

    @property
    def skipped(self) -> int:
        return self.skipped_older + self.skipped_tombstoned + self.malformed

    @property
    def changed(self) -> bool:
        return self.created + self.updated > 0

    def problem(self, ref: str, reason: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(ref, reason))

    def summary(self) -> str:
        text = (
            f"{self.total} records: {self.created} created, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.skipped} skipped ({self.skipped_older} older, "
            f"{self.skipped_tombstoned} tombstoned, {self.malformed} malformed)"
        )
        if self.requests:
            text += f"; {self.requests} requests"
        if self.version is not None:
            text += f"; catalog version {self.version}"
        return text


class Malformed(ValueError):
    """A record the importer cannot use; the message says why."""


# --- parsing one record --------------------------------------------------------------------


@dataclasses.dataclass
class Record:
    """One source record: the columns it carries and the child sets it carries."""

    id: int
    ref: str
    fields: dict[str, Any]
    children: dict[str, Any]

    @property
    def updated_at(self) -> datetime | None:
        return self.fields.get("source_updated_at")


def season_of(aired_on: date | None) -> tuple[int | None, str | None]:
    """`year` and `season` from `aired_on`, by calendar quarter (winter = Jan–Mar)."""
    if aired_on is None:
        return None, None
    return aired_on.year, f"{SEASONS_BY_QUARTER[(aired_on.month - 1) // 3]}_{aired_on.year}"


_BB_WIKI = re.compile(r"\[\[([^\]\[]*)\]\]")
_BB_TAG = re.compile(r"\[/?[a-z_]+(?:=[^\]\n]*)?\]", re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n{3,}")


def strip_bbcode(text: str) -> str:
    """Shikimori descriptions are BBCode (`[character=1]Eren[/character]`, `[[Titan]]`,
    `[i]…[/i]`, `[url=…]…[/url]`); the catalog stores plain text."""
    text = text.replace("\r\n", "\n").replace("[br]", "\n")
    text = _BB_WIKI.sub(r"\1", text)
    text = _BB_TAG.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{field} is not a string")
    value = value.replace("\x00", "").strip()  # PostgreSQL text cannot hold NUL
    return value[:limit] or None


def _first_text(value: Any, field: str) -> tuple[str | None, list[str]]:
    """Shikimori gives `english` and `japanese` as lists: the first is the title, the rest
    are alternates (they join the synonyms)."""
    if isinstance(value, list):
        names = [_text(v, field, MAX_TITLE) for v in value]
        names = [n for n in names if n]
        return (names[0] if names else None), names[1:]
    return _text(value, field, MAX_TITLE), []


def _count(value: Any, field: str) -> int:
    if value is None:
        return 0
    if not _is_int(value) or not 0 <= value <= MAX_COUNT:
        raise Malformed(f"{field} is not a count")
    return value


def _enum(value: Any, field: str, allowed: Sequence[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise Malformed(f"{field} {value!r} is not one of {', '.join(allowed)}")
    return value


def _date(value: Any, field: str) -> date | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Malformed(f"{field} is not a date")
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise Malformed(f"{field} {value!r} is not a date") from None


def _datetime(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Malformed(f"{field} is not a timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed(f"{field} {value!r} is not a timestamp") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _score(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise Malformed(f"score {value!r} is not a number") from None
    if isinstance(number, bool) or not isinstance(number, int | float) or math.isnan(number):
        raise Malformed(f"score {value!r} is not a number")
    if not 0 <= number <= 10:
        raise Malformed(f"score {value!r} is outside 0..10")
    return round(number * 100)


def _url(value: Any, field: str, base: str) -> str | None:
    text = _text(value, field, 2048)
    if text is None:
        return None
    if text.startswith("//"):
        text = "https:" + text
    elif not text.startswith(("http://", "https://")):
        text = urljoin(base.rstrip("/") + "/", text.lstrip("/"))
    return text[:MAX_URL]


def _members(stats: Any) -> int:
    """Popularity: the sum of Shikimori's `rates_statuses_stats`."""
    if not isinstance(stats, list):
        raise Malformed("rates_statuses_stats is not a list")
    total = 0
    for entry in stats:
        if not isinstance(entry, dict) or not _is_int(entry.get("value")):
            raise Malformed("rates_statuses_stats has an entry without a count")
        total += max(0, entry["value"])
    return min(total, MAX_COUNT)


def _relation(entry: dict[str, Any]) -> str:
    """Shikimori's REST `relation` is an English label ("Side story"); newer payloads carry
    `relation_kind` ("side_story"). Unknown labels become `other`."""
    raw = entry.get("relation_kind") or entry.get("relation") or ""
    if not isinstance(raw, str):
        raise Malformed("related has a relation that is not a string")
    kind = re.sub(r"[^a-z]+", "_", raw.strip().lower()).strip("_")
    return kind if kind in RELATIONS else "other"


def _entity_id(value: Any, field: str) -> int:
    if not _is_int(value) or not 0 < value < 2**31:
        raise Malformed(f"{field} has an entry without a valid id")
    return value


def _parse_children(raw: dict[str, Any], image_base: str) -> dict[str, Any]:
    children: dict[str, Any] = {}
    if raw.get("genres") is not None:
        if not isinstance(raw["genres"], list):
            raise Malformed("genres is not a list")
        genres: dict[int, dict[str, Any]] = {}
        for item in raw["genres"]:
            if not isinstance(item, dict):
                raise Malformed("genres has an entry that is not an object")
            genre_id = _entity_id(item.get("id"), "genres")
            name = _text(item.get("name"), "genres.name", 64)
            if name is None:
                raise Malformed("genres has an entry without a name")
            kind = item.get("kind")
            genres.setdefault(
                genre_id,
                {
                    "id": genre_id,
                    "name": name,
                    "russian": _text(item.get("russian"), "genres.russian", 64),
                    # Shikimori's REST `kind` is the entry type ("anime"); keep ours then.
                    "kind": kind if kind in GENRE_KINDS else None,
                },
            )
        children["genres"] = list(genres.values())
    if raw.get("studios") is not None:
        if not isinstance(raw["studios"], list):
            raise Malformed("studios is not a list")
        studios: dict[int, dict[str, Any]] = {}
        for item in raw["studios"]:
            if not isinstance(item, dict):
                raise Malformed("studios has an entry that is not an object")
            studio_id = _entity_id(item.get("id"), "studios")
            name = _text(item.get("filtered_name") or item.get("name"), "studios.name", 128)
            if name is None:
                raise Malformed("studios has an entry without a name")
            studios.setdefault(
                studio_id,
                {
                    "id": studio_id,
                    "name": name,
                    "image": _url(item.get("image"), "studios.image", image_base),
                },
            )
        children["studios"] = list(studios.values())
    if raw.get("related") is not None:
        if not isinstance(raw["related"], list):
            raise Malformed("related is not a list")
        related: dict[int, str] = {}
        for item in raw["related"]:
            if not isinstance(item, dict):
                raise Malformed("related has an entry that is not an object")
            target = item.get("anime")
            if target is None:  # a manga or ranobe relation
                continue
            if not isinstance(target, dict):
                raise Malformed("related has an anime that is not an object")
            related.setdefault(_entity_id(target.get("id"), "related"), _relation(item))
        children["related"] = related
    if raw.get("similar") is not None:
        if not isinstance(raw["similar"], list):
            raise Malformed("similar is not a list")
        similar: list[int] = []
        for item in raw["similar"]:
            target = item.get("id") if isinstance(item, dict) else item
            similar_id = _entity_id(target, "similar")
            if similar_id not in similar:
                similar.append(similar_id)
        children["similar"] = similar[:MAX_SIMILAR]
    if raw.get("screenshots") is not None:
        if not isinstance(raw["screenshots"], list):
            raise Malformed("screenshots is not a list")
        shots: list[tuple[str, str | None]] = []
        for item in raw["screenshots"][:MAX_SCREENSHOTS]:
            if not isinstance(item, dict):
                raise Malformed("screenshots has an entry that is not an object")
            original = _url(item.get("original"), "screenshots.original", image_base)
            if original is None:
                raise Malformed("screenshots has an entry without an original")
            shots.append((original, _url(item.get("preview"), "screenshots.preview", image_base)))
        children["screenshots"] = shots
    if raw.get("videos") is not None:
        if not isinstance(raw["videos"], list):
            raise Malformed("videos is not a list")
        videos: dict[int, dict[str, Any]] = {}
        for item in raw["videos"][:MAX_VIDEOS]:
            if not isinstance(item, dict):
                raise Malformed("videos has an entry that is not an object")
            video_id = item.get("id")
            if not _is_int(video_id) or not 0 < video_id < 2**63:
                raise Malformed("videos has an entry without a valid id")
            url = _url(item.get("url"), "videos.url", image_base)
            if url is None:
                raise Malformed("videos has an entry without a url")
            kind = item.get("kind")
            videos.setdefault(
                video_id,
                {
                    "id": video_id,
                    "name": _text(item.get("name"), "videos.name", MAX_TITLE),
                    "kind": kind if kind in VIDEO_KINDS else "other",
                    "url": url,
                    "player_url": _url(item.get("player_url"), "videos.player_url", image_base),
                    "image_url": _url(item.get("image_url"), "videos.image_url", image_base),
                    "hosting": _text(item.get("hosting"), "videos.hosting", 64),
                },
            )
        children["videos"] = videos
    return children


def parse_record(raw: Any, ref: str, image_base: str = DEFAULT_IMAGE_BASE) -> Record:
    """Validate one Shikimori anime object; Malformed says what is wrong with it."""
    if not isinstance(raw, dict):
        raise Malformed("not an object")
    anime_id = raw.get("id")
    if not _is_int(anime_id) or not 0 < anime_id < LOCAL_ID_START:
        raise Malformed("id is not a Shikimori anime id")
    fields: dict[str, Any] = {}
    extra_synonyms: list[str] = []
    if "name" in raw:
        name = _text(raw["name"], "name", MAX_TITLE)
        if name is None:
            raise Malformed("name is empty")
        fields["name"] = name
    if "russian" in raw:
        fields["russian"] = _text(raw["russian"], "russian", MAX_TITLE)
    for key in ("english", "japanese"):
        if key in raw:
            fields[key], alternates = _first_text(raw[key], key)
            extra_synonyms.extend(alternates)
    if "synonyms" in raw:
        synonyms = raw["synonyms"] or []
        if not isinstance(synonyms, list):
            raise Malformed("synonyms is not a list")
        names = [_text(s, "synonyms", MAX_TITLE) for s in synonyms] + extra_synonyms
        unique: list[str] = []
        for name in names:
            if name and name not in unique:
                unique.append(name)
        fields["synonyms"] = unique[:MAX_SYNONYMS]
    if "kind" in raw:
        kind = (
            KIND_ALIASES.get(raw["kind"], raw["kind"])
            if isinstance(raw["kind"], str)
            else raw["kind"]
        )
        fields["kind"] = _enum(kind, "kind", KINDS)
    if "status" in raw:
        fields["status"] = _enum(raw["status"], "status", STATUSES)
    if "rating" in raw:
        fields["rating"] = _enum(raw["rating"], "rating", RATINGS)
    for key in ("episodes", "episodes_aired", "duration"):
        if key in raw:
            fields[key] = _count(raw[key], key)
    for key in ("aired_on", "released_on"):
        if key in raw:
            fields[key] = _date(raw[key], key)
    if "aired_on" in fields:
        fields["year"], fields["season"] = season_of(fields["aired_on"])
    if "score" in raw:
        fields["score_x100"] = _score(raw["score"])
    if raw.get("rates_statuses_stats") is not None:
        fields["members"] = _members(raw["rates_statuses_stats"])
    elif "members" in raw:
        fields["members"] = _count(raw["members"], "members")
    if "image" in raw:
        image = raw["image"] or {}
        if not isinstance(image, dict):
            raise Malformed("image is not an object")
        for size in ("original", "preview", "x96", "x48"):
            fields[f"image_{size}"] = _url(image.get(size), f"image.{size}", image_base)
    if "description" in raw:
        description = _text(raw["description"], "description", MAX_DESCRIPTION * 2)
        fields["description"] = (
            strip_bbcode(description)[:MAX_DESCRIPTION] or None if description else None
        )
    if "franchise" in raw:
        fields["franchise"] = _text(raw["franchise"], "franchise", MAX_FRANCHISE)
    if "next_episode_at" in raw:
        fields["next_episode_at"] = _datetime(raw["next_episode_at"], "next_episode_at")
    if "myanimelist_id" in raw:
        mal = raw["myanimelist_id"]
        if mal is not None and (not _is_int(mal) or not 0 < mal < 2**31):
            raise Malformed("myanimelist_id is not an id")
        fields["myanimelist_id"] = mal
    if "updated_at" in raw:
        fields["source_updated_at"] = _datetime(raw["updated_at"], "updated_at")
    return Record(anime_id, ref, fields, _parse_children(raw, image_base))


# --- writing -----------------------------------------------------------------------------


def _locked(row: dict[str, Any] | None) -> set[str]:
    if row is None:
        return set()
    locked: set[str] = set()
    for name in row.get("locked_fields") or []:
        locked.update(LOCK_TARGETS.get(name, (name,)))
    return locked


def _new_row(fields: dict[str, Any], anime_id: int, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": anime_id,
        "name": None,
        "russian": None,
        "english": None,
        "japanese": None,
        "synonyms": [],
        "kind": None,
        "status": None,
        "rating": None,
        "episodes": 0,
        "episodes_aired": 0,
        "duration": 0,
        "aired_on": None,
        "released_on": None,
        "year": None,
        "season": None,
        "score_x100": 0,
        "members": 0,
        "image_original": None,
        "image_preview": None,
        "image_x96": None,
        "image_x48": None,
        "description": None,
        "franchise": None,
        "next_episode_at": None,
        "myanimelist_id": None,
        "source_updated_at": None,
        "origin": "shikimori",
        "locked_fields": [],
        "imported_at": now,
    }
    row.update(fields)
    row["search_text"] = build_search_text(search_titles(row))
    return row


class _Batch:
    """The state of one batch: what is stored now, read in a few queries up front."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.tombstoned: set[int] = set()
        self.children: dict[str, dict[int, Any]] = {name: {} for name in CHILDREN}
        self.genres: dict[int, dict[str, Any]] = {}
        self.studios: dict[int, dict[str, Any]] = {}
        self.mal_owners: dict[int, int] = {}

    async def load(self, db: Database, records: Sequence[Record]) -> None:
        ids = [r.id for r in records]
        for row in await db.fetch_all(sa.select(anime).where(anime.c.id.in_(ids))):
            self.rows[row["id"]] = row
        self.tombstoned = {
            row["anime_id"]
            for row in await db.fetch_all(
                sa.select(anime_tombstones.c.anime_id).where(anime_tombstones.c.anime_id.in_(ids))
            )
        }
        present = {name for r in records for name in r.children}
        if "genres" in present:
            for row in await db.fetch_all(
                sa.select(anime_genre).where(anime_genre.c.anime_id.in_(ids))
            ):
                self.children["genres"].setdefault(row["anime_id"], set()).add(row["genre_id"])
        if "studios" in present:
            for row in await db.fetch_all(
                sa.select(anime_studio).where(anime_studio.c.anime_id.in_(ids))
            ):
                self.children["studios"].setdefault(row["anime_id"], set()).add(row["studio_id"])
        if "related" in present:
            for row in await db.fetch_all(
                sa.select(anime_relation).where(anime_relation.c.anime_id.in_(ids))
            ):
                self.children["related"].setdefault(row["anime_id"], {})[row["related_id"]] = row[
                    "relation"
                ]
        if "similar" in present:
            for row in await db.fetch_all(
                sa.select(anime_similar)
                .where(anime_similar.c.anime_id.in_(ids))
                .order_by(anime_similar.c.anime_id, anime_similar.c.rank)
            ):
                self.children["similar"].setdefault(row["anime_id"], []).append(row["similar_id"])
        if "screenshots" in present:
            for row in await db.fetch_all(
                sa.select(anime_screenshot)
                .where(anime_screenshot.c.anime_id.in_(ids))
                .order_by(anime_screenshot.c.anime_id, anime_screenshot.c.position)
            ):
                self.children["screenshots"].setdefault(row["anime_id"], []).append(
                    (row["original"], row["preview"])
                )
        if "videos" in present:
            for row in await db.fetch_all(
                sa.select(anime_video).where(anime_video.c.anime_id.in_(ids))
            ):
                video = {k: row[k] for k in row if k != "anime_id"}
                self.children["videos"].setdefault(row["anime_id"], {})[row["id"]] = video
        genre_ids = {g["id"] for r in records for g in r.children.get("genres", ())}
        if genre_ids:
            for row in await db.fetch_all(sa.select(genre).where(genre.c.id.in_(genre_ids))):
                self.genres[row["id"]] = row
        studio_ids = {s["id"] for r in records for s in r.children.get("studios", ())}
        if studio_ids:
            for row in await db.fetch_all(sa.select(studio).where(studio.c.id.in_(studio_ids))):
                self.studios[row["id"]] = row
        mal_ids = {r.fields["myanimelist_id"] for r in records if r.fields.get("myanimelist_id")}
        if mal_ids:
            for row in await db.fetch_all(
                sa.select(anime.c.id, anime.c.myanimelist_id).where(
                    anime.c.myanimelist_id.in_(mal_ids)
                )
            ):
                self.mal_owners[row["myanimelist_id"]] = row["id"]


def _child_value(name: str, value: Any) -> Any:
    """A child set in the form `_Batch` stores it, for comparison."""
    if name == "genres" or name == "studios":
        return {item["id"] for item in value}
    return value


class _Plan:
    """The writes one batch needs."""

    def __init__(self) -> None:
        self.inserts: list[dict[str, Any]] = []
        self.updates: list[tuple[int, dict[str, Any]]] = []
        self.replace: dict[str, dict[int, Any]] = {name: {} for name in CHILDREN}
        self.genres: dict[int, dict[str, Any]] = {}
        self.studios: dict[int, dict[str, Any]] = {}

    @property
    def empty(self) -> bool:
        return not (
            self.inserts
            or self.updates
            or self.genres
            or self.studios
            or any(self.replace.values())
        )


def _plan_entities(batch: _Batch, plan: _Plan, record: Record) -> None:
    for item in record.children.get("genres", ()):
        stored = batch.genres.get(item["id"]) or plan.genres.get(item["id"])
        wanted = dict(item)
        if wanted["kind"] is None:
            wanted["kind"] = stored["kind"] if stored else "genre"
        if stored is None or any(stored[k] != wanted[k] for k in ("name", "russian", "kind")):
            plan.genres[item["id"]] = wanted
            batch.genres[item["id"]] = wanted
    for item in record.children.get("studios", ()):
        stored = batch.studios.get(item["id"])
        if stored is None or any(stored[k] != item[k] for k in ("name", "image")):
            plan.studios[item["id"]] = dict(item)
            batch.studios[item["id"]] = dict(item)


def _plan_record(
    batch: _Batch,
    plan: _Plan,
    record: Record,
    report: ImportReport,
    force_ids: frozenset[int],
    now: datetime,
) -> None:
    if record.id in batch.tombstoned and record.id not in force_ids:
        report.skipped_tombstoned += 1
        return
    stored = batch.rows.get(record.id)
    if (
        stored is not None
        and stored["source_updated_at"] is not None
        and record.updated_at is not None
        and record.updated_at < stored["source_updated_at"]
    ):
        report.skipped_older += 1
        return
    if stored is None and "name" not in record.fields:
        report.malformed += 1
        report.problem(record.ref, "name is required for a title not yet in the catalog")
        return
    locked = _locked(stored)
    fields = {k: v for k, v in record.fields.items() if k not in locked}
    mal = fields.get("myanimelist_id")
    if mal is not None:
        owner = batch.mal_owners.get(mal)
        if owner is not None and owner != record.id:
            report.problem(
                record.ref, f"myanimelist_id {mal} already belongs to anime {owner}; not stored"
            )
            fields.pop("myanimelist_id")
        else:
            batch.mal_owners[mal] = record.id
    _plan_entities(batch, plan, record)
    children_changed = False
    for name, value in record.children.items():
        if name in locked:
            continue
        wanted = _child_value(name, value)
        current = batch.children[name].get(record.id)
        empty = (
            set()
            if name in ("genres", "studios")
            else ({} if name in ("related", "videos") else [])
        )
        if (current if current is not None else empty) != wanted:
            plan.replace[name][record.id] = value
            batch.children[name][record.id] = wanted
            children_changed = True
    if stored is None:
        row = _new_row(fields, record.id, now)
        plan.inserts.append(row)
        batch.rows[record.id] = row
        report.created += 1
        return
    merged = {column: stored[column] for column in IMPORTED_COLUMNS}
    merged.update(fields)
    merged["synonyms"] = list(merged["synonyms"] or [])
    merged["search_text"] = build_search_text(search_titles(merged))
    changes = {k: v for k, v in merged.items() if stored[k] != v}
    if changes or children_changed:
        changes["imported_at"] = now
        plan.updates.append((record.id, changes))
        batch.rows[record.id] = {**stored, **changes}
        report.updated += 1
    else:
        report.unchanged += 1


MAX_BIND_PARAMETERS = 10_000  # well under SQLite's 32 766 and asyncpg's 32 767


async def _insert_rows(db: Database, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Multi-row INSERTs: one statement per chunk instead of one per row."""
    if not rows:
        return
    per_statement = max(1, MAX_BIND_PARAMETERS // len(rows[0]))
    for start in range(0, len(rows), per_statement):
        await db.execute(table.insert().values(list(rows[start : start + per_statement])))


async def _apply(db: Database, plan: _Plan) -> None:
    for table, items, columns in (
        (genre, plan.genres, ("name", "russian", "kind")),
        (studio, plan.studios, ("name", "image")),
    ):
        if items:
            statement = db.insert(table).values(list(items.values()))
            await db.execute(
                statement.on_conflict_do_update(
                    index_elements=["id"],
                    set_={column: statement.excluded[column] for column in columns},
                )
            )
    await _insert_rows(db, anime, plan.inserts)
    for anime_id, changes in plan.updates:
        await db.execute(anime.update().where(anime.c.id == anime_id).values(**changes))
    tables = {
        "genres": (anime_genre, lambda i, v: [{"anime_id": i, "genre_id": g["id"]} for g in v]),
        "studios": (anime_studio, lambda i, v: [{"anime_id": i, "studio_id": s["id"]} for s in v]),
        "related": (
            anime_relation,
            lambda i, v: [{"anime_id": i, "related_id": r, "relation": k} for r, k in v.items()],
        ),
        "similar": (
            anime_similar,
            lambda i, v: [
                {"anime_id": i, "similar_id": s, "rank": n} for n, s in enumerate(v, start=1)
            ],
        ),
        "screenshots": (
            anime_screenshot,
            lambda i, v: [
                {"anime_id": i, "position": n, "original": o, "preview": p}
                for n, (o, p) in enumerate(v)
            ],
        ),
        "videos": (anime_video, lambda i, v: [{"anime_id": i, **video} for video in v.values()]),
    }
    for name, (table, rows_of) in tables.items():
        replaced = plan.replace[name]
        if not replaced:
            continue
        await db.execute(sa.delete(table).where(table.c.anime_id.in_(list(replaced))))
        rows = [row for anime_id, value in replaced.items() for row in rows_of(anime_id, value)]
        await _insert_rows(db, table, rows)


async def _write_batch(
    db: Database,
    cache: Cache | None,
    records: Sequence[Record],
    report: ImportReport,
    force_ids: frozenset[int],
    now: datetime,
) -> None:
    async with db.transaction() as tx:
        batch = _Batch()
        await batch.load(db, records)
        plan = _Plan()
        for record in records:
            _plan_record(batch, plan, record, report, force_ids, now)
        if not plan.empty:
            await _apply(db, plan)
            report.version = await bump_version(db, tx, cache)


def _snapshot(report: ImportReport) -> ImportReport:
    return dataclasses.replace(report, problems=list(report.problems))


def _restore(report: ImportReport, snapshot: ImportReport) -> None:
    """Undo the counts of a batch whose transaction rolled back."""
    for field in dataclasses.fields(ImportReport):
        setattr(report, field.name, getattr(snapshot, field.name))


async def import_records(
    db: Database,
    records: Iterable[tuple[str, Any]],
    *,
    cache: Cache | None = None,
    force_ids: Iterable[int] = (),
    image_base: str = DEFAULT_IMAGE_BASE,
    now: datetime | None = None,
    report: ImportReport | None = None,
) -> ImportReport:
    """Upsert `(ref, raw anime object)` pairs, 500 per transaction (R6).

    `cache` (the services' cache) lets this process's catalog caches see the new version at
    once; `force_ids` are tombstoned ids to import anyway (admin.md A17 with `force`).
    """
    report = report or ImportReport()
    forced = frozenset(force_ids)
    pending: list[Record] = []
    seen: dict[int, int] = {}

    async def flush() -> None:
        if not pending:
            return
        stamp = now or datetime.now(UTC)
        before = _snapshot(report)
        try:
            await _write_batch(db, cache, pending, report, forced, stamp)
        except Exception as error:  # one bad row must not cost the batch: go one by one
            log.warning("catalog import batch failed, retrying record by record: %s", error)
            _restore(report, before)
            for record in pending:
                before_record = _snapshot(report)
                try:
                    await _write_batch(db, cache, [record], report, forced, stamp)
                except Exception as record_error:
                    _restore(report, before_record)
                    report.malformed += 1
                    report.problem(record.ref, f"could not be stored: {record_error}")
        pending.clear()
        seen.clear()

    for ref, raw in records:
        report.total += 1
        try:
            record = parse_record(raw, ref, image_base)
        except Malformed as error:
            report.malformed += 1
            report.problem(ref, str(error))
            continue
        if record.id in seen:  # the same id twice in one batch: the later one wins
            await flush()
        seen[record.id] = len(pending)
        pending.append(record)
        if len(pending) >= BATCH_SIZE:
            await flush()
    await flush()
    return report


# --- files -------------------------------------------------------------------------------


def _records_in(document: Any, name: str) -> Iterator[tuple[str, Any]]:
    if isinstance(document, dict):
        for key in ("animes", "anime", "items", "records"):
            if isinstance(document.get(key), list):
                document = document[key]
                break
        else:
            document = [document]
    if not isinstance(document, list):
        yield name, document  # reported as malformed by the importer
        return
    for index, raw in enumerate(document):
        anime_id = raw.get("id") if isinstance(raw, dict) else None
        yield (f"{name}: id {anime_id}" if _is_int(anime_id) else f"{name}: #{index}"), raw


def read_path(path: str | Path, report: ImportReport) -> Iterator[tuple[str, Any]]:
    """Records of a JSON file, or of every `*.json` under a directory (sorted by path)."""
    root = Path(path)
    files = sorted(root.rglob("*.json")) if root.is_dir() else [root]
    for file in files:
        name = str(file.relative_to(root)) if root.is_dir() else file.name
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            report.problem(name, f"unreadable: {error}")
            continue
        yield from _records_in(document, name)


async def import_path(
    db: Database,
    path: str | Path,
    *,
    cache: Cache | None = None,
    force_ids: Iterable[int] = (),
    image_base: str = DEFAULT_IMAGE_BASE,
    now: datetime | None = None,
) -> ImportReport:
    report = ImportReport()
    records = list(read_path(path, report))
    return await import_records(
        db,
        records,
        cache=cache,
        force_ids=force_ids,
        image_base=image_base,
        now=now,
        report=report,
    )


# --- the demo catalog ----------------------------------------------------------------------


def demo_records(now: datetime | None = None) -> list[dict[str, Any]]:
    """The shipped demo catalog, with every `next_episode_at` moved to the next time its
    weekday and time of day come round after `now`: ongoing titles always have an episode
    in the coming week, on the day they really air."""
    now = now or datetime.now(UTC)
    records = json.loads(DEMO_CATALOG.read_text(encoding="utf-8"))
    for record in records:
        when = record.get("next_episode_at")
        if not when:
            continue
        slot = datetime.fromisoformat(when).astimezone(UTC)
        upcoming = now.replace(
            hour=slot.hour, minute=slot.minute, second=0, microsecond=0
        ) + timedelta(days=(slot.weekday() - now.weekday()) % 7)
        if upcoming <= now:
            upcoming += timedelta(days=7)
        record["next_episode_at"] = upcoming.isoformat().replace("+00:00", "Z")
    return records


async def load_demo_catalog(
    db: Database, *, cache: Cache | None = None, now: datetime | None = None
) -> ImportReport:
    records = demo_records(now)
    return await import_records(
        db, [(f"demo: id {r.get('id')}", r) for r in records], cache=cache, now=now
    )


async def seed_demo_catalog(db: Database, *, cache: Cache | None = None) -> int:
    """Load the demo catalog when the catalog is empty (the embedded default); the number
    of titles loaded."""
    if await db.fetch_val(sa.select(anime.c.id).limit(1)) is not None:
        return 0
    return (await load_demo_catalog(db, cache=cache)).created


# --- remote pulls (R7) ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RemoteLimits:
    """Shikimori's published limits for API clients, and how to back off."""

    per_second: int = 5
    per_minute: int = 90
    second_s: float = 1.0
    minute_s: float = 60.0
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    timeout_s: float = 30.0


class RemoteError(RuntimeError):
    """The source refused or kept failing; the pull stops (politely) with what it has."""


PACING_MARGIN_S = 0.002


class Pacer:
    """Spaces request starts so that no window of `second_s` holds more than `per_second`
    and no window of `minute_s` more than `per_minute` (sliding windows)."""

    def __init__(
        self,
        limits: RemoteLimits,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self._starts: collections.deque[float] = collections.deque()

    def _delay(self, now: float) -> float:
        limits = self.limits
        while self._starts and self._starts[0] <= now - limits.minute_s:
            self._starts.popleft()
        delay = 0.0
        if len(self._starts) >= limits.per_minute:
            delay = self._starts[-limits.per_minute] + limits.minute_s - now
        if len(self._starts) >= limits.per_second:
            delay = max(delay, self._starts[-limits.per_second] + limits.second_s - now)
        return delay

    async def wait(self) -> None:
        while (delay := self._delay(self._clock())) > 0:
            # A little past the window edge: never exactly on it, whatever the float rounding.
            await self._sleep(delay + PACING_MARGIN_S)
        self._starts.append(self._clock())


def retry_after_s(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def user_agent(version: str) -> str:
    return f"Anilay/{version}"


class ShikimoriClient:
    """A polite client for a Shikimori-compatible API (anime.md R7)."""

    def __init__(
        self,
        base_url: str,
        *,
        version: str,
        limits: RemoteLimits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limits = limits or RemoteLimits()
        self.pacer = Pacer(self.limits, sleep=sleep)
        self._sleep = sleep
        self.requests = 0
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"User-Agent": user_agent(version), "Accept": "application/json"},
            timeout=self.limits.timeout_s,
            transport=transport,
            follow_redirects=True,
        )

    async def __aenter__(self) -> ShikimoriClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    def _backoff(self, attempt: int) -> float:
        return min(self.limits.backoff_max_s, self.limits.backoff_base_s * 2**attempt)

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The decoded body, or None for a 404. Retries 429 (waiting at least Retry-After),
        5xx and network errors with exponential backoff; RemoteError when it gives up."""
        last = "no attempt"
        for attempt in range(self.limits.max_retries + 1):
            await self.pacer.wait()
            self.requests += 1
            try:
                response = await self._http.get(path, params=params)
            except httpx.HTTPError as error:
                last = f"{error.__class__.__name__}: {error}"
                await self._sleep(self._backoff(attempt))
                continue
            if response.status_code == 404:
                return None
            if response.status_code == 429:
                wait = max(
                    retry_after_s(response.headers.get("retry-after")) or 0.0,
                    self._backoff(attempt),
                )
                last = "429 Too Many Requests"
                log.info("shikimori asked us to slow down; waiting %.1f s", wait)
                await self._sleep(wait)
                continue
            if response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                await self._sleep(self._backoff(attempt))
                continue
            if response.status_code >= 400:
                raise RemoteError(f"GET {path}: HTTP {response.status_code}")
            try:
                return response.json()
            except ValueError:
                raise RemoteError(f"GET {path}: the body is not JSON") from None
        raise RemoteError(f"GET {path}: gave up after {self.limits.max_retries + 1} tries ({last})")

    async def anime(
        self, anime_id: int, *, related: bool = True, similar: bool = True
    ) -> dict[str, Any] | None:
        """One title with its sub-resources (screenshots and videos are fetched only when
        the detail does not already carry them)."""
        record = await self.get_json(f"/api/animes/{anime_id}")
        if record is None:
            return None
        if not isinstance(record, dict):
            raise RemoteError(f"GET /api/animes/{anime_id}: not an object")
        if related:
            record["related"] = await self.get_json(f"/api/animes/{anime_id}/related") or []
        if similar:
            record["similar"] = await self.get_json(f"/api/animes/{anime_id}/similar") or []
        for name in ("screenshots", "videos"):
            if name not in record:
                record[name] = await self.get_json(f"/api/animes/{anime_id}/{name}") or []
        return record

    async def page_ids(self, page: int, limit: int = 50) -> list[int]:
        """The ids on one browse page, in id order (so pages are stable while walking)."""
        items = await self.get_json("/api/animes", {"page": page, "limit": limit, "order": "id"})
        if not isinstance(items, list):
            return []
        return [item["id"] for item in items if isinstance(item, dict) and _is_int(item.get("id"))]


async def local_ids(
    db: Database,
    *,
    statuses: Sequence[str] = (),
    imported_before: datetime | None = None,
) -> list[int]:
    """Ids to refresh: titles in these statuses (`ongoing` mode: anons and ongoing), or
    not written by an import since `imported_before` (`stale` mode)."""
    query = sa.select(anime.c.id).where(anime.c.origin == "shikimori").order_by(anime.c.id)
    if statuses:
        query = query.where(anime.c.status.in_(list(statuses)))
    if imported_before is not None:
        query = query.where(anime.c.imported_at < imported_before)
    return [row["id"] for row in await db.fetch_all(query)]


async def pull_remote(
    db: Database,
    base_url: str,
    *,
    version: str,
    ids: Sequence[int] = (),
    pages: int = 0,
    cache: Cache | None = None,
    force_ids: Iterable[int] = (),
    limits: RemoteLimits | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    progress: Callable[[ImportReport], Awaitable[Any]] | None = None,
) -> ImportReport:
    """Pull `ids`, and/or every id on browse pages 1..`pages`, then upsert them 500 at a time.

    Network and database work never overlap in one transaction: records are fetched first,
    then each batch is written in its own transaction. When the source keeps refusing, the
    pull stops and reports what it stored.
    """
    report = ImportReport()
    wanted = list(dict.fromkeys(ids))
    pending: list[tuple[str, Any]] = []
    async with ShikimoriClient(
        base_url, version=version, limits=limits, transport=transport, sleep=sleep
    ) as client:
        try:
            for page in range(1, pages + 1):
                page_ids = await client.page_ids(page)
                wanted.extend(i for i in page_ids if i not in wanted)
                if not page_ids:
                    break
            for anime_id in wanted:
                record = await client.anime(anime_id)
                if record is None:
                    report.total += 1
                    report.malformed += 1
                    report.problem(f"id {anime_id}", "not found at the source")
                    continue
                pending.append((f"id {anime_id}", record))
                if len(pending) >= BATCH_SIZE:
                    await import_records(
                        db,
                        pending,
                        cache=cache,
                        force_ids=force_ids,
                        image_base=base_url,
                        report=report,
                    )
                    pending.clear()
                    if progress is not None:
                        await progress(report)
        except RemoteError as error:
            report.problem(base_url, str(error))
        finally:
            report.requests = client.requests
    if pending:
        await import_records(
            db, pending, cache=cache, force_ids=force_ids, image_base=base_url, report=report
        )
    return report


# --- the command line (`anilay catalog import`) -------------------------------------------------


async def run_import_command(
    settings: Any,
    source: str,
    *,
    ids: Sequence[int] = (),
    pages: int = 0,
    ongoing: bool = False,
    force: bool = False,
) -> ImportReport:
    """`anilay catalog import <path-or-url>`: a file or directory, or a base URL with
    `--ids`, `--pages` and/or `--ongoing`. With Redis configured the new version reaches
    every process's cache at once; otherwise the embedded server sees it within a second."""
    from server.cache import RedisCache
    from server.redis_client import connect_redis

    db = Database(settings.database_url)
    redis = (
        connect_redis(settings.redis_url, settings.redis_timeout_s) if settings.redis_url else None
    )
    cache = RedisCache(redis) if redis is not None else None
    await db.connect()
    try:
        if source.startswith(("http://", "https://")):
            wanted = list(ids)
            if ongoing:
                wanted += await local_ids(db, statuses=("anons", "ongoing"))
            if not wanted and not pages:
                raise SystemExit("anilay: a URL needs --ids, --pages or --ongoing")
            return await pull_remote(
                db,
                source,
                version=settings.version,
                ids=wanted,
                pages=pages,
                cache=cache,
                force_ids=wanted if force else (),
            )
        return await import_path(db, source, cache=cache, force_ids=ids if force else ())
    finally:
        await db.disconnect()
        if redis is not None:
            await redis.aclose()
