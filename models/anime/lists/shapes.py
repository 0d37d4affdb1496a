"""What the list domain shows and emits: ListEntry (with the catalog's AnimeCompact), the
L3/L5 result with the game's Effects, ImportJob, and the schemas of its events."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import msgspec
import sqlalchemy as sa

from models.anime.catalog.shapes import AnimeCompact
from models.anime.catalog.shapes import compact_of as catalog_compact_of
from models.anime.catalog_tables import anime
from server.events import event_type, rfc3339

Status = Literal["planned", "watching", "rewatching", "completed", "on_hold", "dropped"]


class ListEntry(msgspec.Struct, kw_only=True):
    """One entry of a list. `text` (the private note) is absent for readers other than the
    owner (msgspec leaves UNSET fields out of the JSON)."""

    id: str
    anime_id: int
    status: Status
    score: int
    episodes: int
    rewatches: int
    text: str | msgspec.UnsetType | None = msgspec.UNSET
    started_on: str | None
    completed_on: str | None
    rev: str
    created_at: str
    updated_at: str
    anime: AnimeCompact


class Effects(msgspec.Struct):
    """game.md's Effects of an L3 or L5; all empty until the game attaches (`accrual` is
    always null for L3)."""

    accrual: dict[str, Any] | None = None
    wallet: dict[str, Any] | None = None
    level_up: dict[str, Any] | None = None
    quests: list[dict[str, Any]] = []
    achievements: list[dict[str, Any]] = []


class EntryResult(msgspec.Struct):
    entry: ListEntry
    effects: Effects


class ImportProblem(msgspec.Struct):
    ref: str
    reason: str


class ImportJob(msgspec.Struct):
    id: str
    format: str
    mode: str
    state: str
    total: int
    added: int
    updated: int
    skipped: int
    problems: list[ImportProblem]
    created_at: str
    finished_at: str | None


class ImportQueued(msgspec.Struct):
    job: ImportJob


# --- events --------------------------------------------------------------------------------


class AnimeListUpdate(msgspec.Struct):
    """To the owner's other clients; the originating client skips it by `rev`."""

    anime_id: int
    action: Literal["upsert", "episode", "delete"]
    entry: ListEntry | None
    rev: str


class AnimeListImportDone(msgspec.Struct):
    job: ImportJob


class EpisodeWatched(msgspec.Struct):
    """The game's hook (game.md "Accrual"): one per accepted L5 increment, never for L3, L4
    or imports. `episode` is the new episode number e; `cycle` is c = rewatches + (1 if the
    status was rewatching), both taken before the increment, as game.md defines them."""

    user_id: str
    anime_id: int
    episode: int
    cycle: int
    previous_status: Status | None  # null when the increment created the entry
    status: Status
    rewatches: int
    completed: bool  # this increment completed the anime (N5)
    rev: str
    at: str


class ListMilestone(msgspec.Struct):
    """anime.md R12's game domain events, from L3 and L5 (never imports). The game counts
    each once by `source_key` (game.md's metric registry), so repeats here are harmless:
    `anime_completed` carries the rewatch cycle (`complete:{anime}:{c}`; c ≥ 1 also counts as
    `rewatches_completed`), `anime_dropped` is `drop:{anime}`, `list_scored` `score:{anime}`."""

    user_id: str
    anime_id: int
    metric: Literal["anime_completed", "anime_dropped", "list_scored"]
    cycle: int
    source_key: str
    cause: Literal["put", "episode"]


ANIME_LIST_UPDATE = event_type("ANIME_LIST_UPDATE", AnimeListUpdate)
ANIME_LIST_IMPORT_DONE = event_type("ANIME_LIST_IMPORT_DONE", AnimeListImportDone)
ANIME_EPISODE_WATCHED = event_type("ANIME_EPISODE_WATCHED", EpisodeWatched)
ANIME_LIST_MILESTONE = event_type("ANIME_LIST_MILESTONE", ListMilestone)


# --- building shapes from rows -------------------------------------------------------------

ANIME_PREFIX = "anime__"
COMPACT_COLUMNS = (
    "id",
    "name",
    "russian",
    "english",
    "image_original",
    "image_preview",
    "image_x96",
    "image_x48",
    "kind",
    "score_x100",
    "status",
    "episodes",
    "episodes_aired",
    "aired_on",
    "released_on",
    "season",
    "rating",
    "duration",
)


def anime_columns() -> list[sa.Label]:
    """The catalog columns a ListEntry needs, labelled so they join beside the entry's."""
    return [anime.c[name].label(ANIME_PREFIX + name) for name in COMPACT_COLUMNS]


def day_text(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def compact_of(row: dict[str, Any], prefix: str = ANIME_PREFIX) -> AnimeCompact:
    """The catalog's AnimeCompact from a row holding its columns under `prefix`."""
    return catalog_compact_of({name: row[prefix + name] for name in COMPACT_COLUMNS})


def entry_of(row: dict[str, Any], anime_row: dict[str, Any], *, owner: bool) -> ListEntry:
    """A ListEntry from an entry row and a row holding the ANIME_PREFIX columns (often the
    same joined row)."""
    return ListEntry(
        id=str(row["id"]),
        anime_id=row["anime_id"],
        status=row["status"],
        score=row["score"],
        episodes=row["episodes"],
        rewatches=row["rewatches"],
        text=row["text"] if owner else msgspec.UNSET,
        started_on=day_text(row["started_on"]),
        completed_on=day_text(row["completed_on"]),
        rev=str(row["rev"]),
        created_at=rfc3339(row["created_at"]),
        updated_at=rfc3339(row["updated_at"]),
        anime=compact_of(anime_row),
    )


def job_of(row: dict[str, Any]) -> ImportJob:
    return ImportJob(
        id=str(row["id"]),
        format=row["format"],
        mode=row["mode"],
        state=row["state"],
        total=row["total"],
        added=row["added"],
        updated=row["updated"],
        skipped=row["skipped"],
        problems=[ImportProblem(ref=p["ref"], reason=p["reason"]) for p in row["problems"]],
        created_at=rfc3339(row["created_at"]),
        finished_at=rfc3339(row["finished_at"]) if row["finished_at"] else None,
    )
