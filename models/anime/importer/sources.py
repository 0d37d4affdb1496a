"""Where records come from besides the network: JSON files and directories, and the demo
catalog shipped in `models/anime/data/demo_catalog.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from models.anime.catalog_tables import (
    anime,
)
from models.anime.importer.records import (
    DEFAULT_IMAGE_BASE,
    ImportReport,
    is_int,
)
from models.anime.importer.writes import import_records
from server.cache import Cache
from server.db import Database

DEMO_CATALOG = Path(__file__).resolve().parent.parent / "data" / "demo_catalog.json"


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
        yield (f"{name}: id {anime_id}" if is_int(anime_id) else f"{name}: #{index}"), raw


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
