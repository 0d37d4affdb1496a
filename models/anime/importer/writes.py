"""Writing records: one batch of up to 500 per transaction, a row or a child set written
only when it differs, the catalog version bumped once per batch that changed something (R6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from models.anime.catalog.caching import bump_version
from models.anime.catalog.text import build_search_text, search_titles
from models.anime.catalog_tables import (
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
from models.anime.importer.records import (
    BATCH_SIZE,
    CHILDREN,
    DEFAULT_IMAGE_BASE,
    IMPORTED_COLUMNS,
    LOCK_TARGETS,
    ImportReport,
    Malformed,
    Record,
    log,
    parse_record,
)
from server.cache import Cache
from server.db import Database


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
