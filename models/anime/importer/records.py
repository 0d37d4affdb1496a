"""One Shikimori anime object → a validated `Record`; and the import report.

A malformed record raises `Malformed` with a reason the report carries (R6).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urljoin

from models.anime.catalog_tables import (
    KINDS,
    RATINGS,
    RELATIONS,
    STATUSES,
)

log = logging.getLogger("anilay.catalog.import")

BATCH_SIZE = 500
MAX_PROBLEMS = 1000
LOCAL_ID_START = 1_000_000_000  # admin.md A14: local entries; Shikimori ids stay below
DEFAULT_IMAGE_BASE = "https://shikimori.one"

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


def is_int(value: Any) -> bool:
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
    if not is_int(value) or not 0 <= value <= MAX_COUNT:
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
        if not isinstance(entry, dict) or not is_int(entry.get("value")):
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
    if not is_int(value) or not 0 < value < 2**31:
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
            if not is_int(video_id) or not 0 < video_id < 2**63:
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
    if not is_int(anime_id) or not 0 < anime_id < LOCAL_ID_START:
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
        if mal is not None and (not is_int(mal) or not 0 < mal < 2**31):
            raise Malformed("myanimelist_id is not an id")
        fields["myanimelist_id"] = mal
    if "updated_at" in raw:
        fields["source_updated_at"] = _datetime(raw["updated_at"], "updated_at")
    return Record(anime_id, ref, fields, _parse_children(raw, image_base))
