"""L8-L10: importing MAL XML and Shikimori JSON lists as a background job, and exporting
the list in both formats (R13, R14).

The file is read, decompressed and parsed before L8 answers, so a broken file is a 422 with
its line; what each row means is decided here too, and kept with the job as plain values.
The job then resolves the rows against the catalog and applies them 500 per transaction,
committing its counters with each batch: a crash keeps the applied batches, and the re-run
that follows reports the job `failed` with them.

XML is parsed with defusedxml: a DOCTYPE or an entity declaration is refused, never
expanded, and nothing external is ever fetched. Sizes are capped on the wire, after
decompression and in entries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import re
import zlib
from datetime import UTC, date, datetime
from typing import Any
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
import msgspec
import sqlalchemy as sa
from defusedxml.common import DefusedXmlException

from models.anime.catalog_tables import anime
from models.anime.lists.rules import EntryState, apply_import, bound, clean_text, state_of
from models.anime.lists.shapes import (
    ANIME_LIST_IMPORT_DONE,
    AnimeListImportDone,
    ImportJob,
    ImportQueued,
    job_of,
)
from models.anime.lists.tables import (
    EPISODES_MAX,
    IMPORT_BATCH,
    IMPORT_DECOMPRESSED_MAX,
    IMPORT_ENTRIES_MAX,
    IMPORT_IN_PROGRESS,
    IMPORT_JOB_KIND,
    IMPORT_PROBLEMS_MAX,
    REWATCHES_MAX,
    SCORE_MAX,
    STATUSES,
    TEXT_MAX,
    anime_list_entry,
    anime_list_history,
    anime_list_import,
)
from models.anime.lists.writes import _history_rows
from server.errors import ApiError, Code, FieldError
from server.events import make_event, rfc3339
from server.ids import new_id
from server.jobs import enqueue, job_handler
from server.services import Services

log = logging.getLogger("anilay.anime_list.import")

_e = anime_list_entry.c
_i = anime_list_import.c

GZIP_TYPES = ("application/gzip", "application/x-gzip")
IMPORT_MEDIA_TYPES = ("application/xml", "text/xml", "application/json", *GZIP_TYPES)

MAL_STATUSES = {
    "watching": "watching",
    "1": "watching",
    "completed": "completed",
    "2": "completed",
    "on-hold": "on_hold",
    "on hold": "on_hold",
    "3": "on_hold",
    "dropped": "dropped",
    "4": "dropped",
    "plan to watch": "planned",
    "6": "planned",
}
MAL_STATUS_NAMES = {
    "watching": "Watching",
    "rewatching": "Completed",  # MAL keeps a rewatch as Completed + my_rewatching=1
    "completed": "Completed",
    "on_hold": "On-Hold",
    "dropped": "Dropped",
    "planned": "Plan to Watch",
}
MAL_TYPES = {
    "tv": "TV",
    "movie": "Movie",
    "ova": "OVA",
    "ona": "ONA",
    "special": "Special",
    "tv_special": "TV Special",
    "music": "Music",
    "pv": "PV",
    "cm": "CM",
}
_MAL_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def _unprocessable(detail: str, field: str = "body") -> ApiError:
    return ApiError(Code.validation_failed, detail, errors=[FieldError(field, detail)])


def _too_large(detail: str) -> ApiError:
    return ApiError(Code.too_large, detail)


# --- reading the file ------------------------------------------------------------------------


def decompress(raw: bytes, media_type: str, content_encoding: str) -> bytes:
    """The file itself: gunzipped when sent gzipped (MAL exports are `.xml.gz`), at most
    IMPORT_DECOMPRESSED_MAX bytes once inflated (413), whatever the ratio."""
    gzipped = (
        "gzip" in content_encoding.lower() or media_type in GZIP_TYPES or raw[:2] == b"\x1f\x8b"
    )
    if not gzipped:
        return raw
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    data = raw
    try:
        while data:
            out += inflater.decompress(data, IMPORT_DECOMPRESSED_MAX + 1 - len(out))
            if len(out) > IMPORT_DECOMPRESSED_MAX:
                raise _too_large("The file is over 25 MiB once decompressed")
            data = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error:
        raise _unprocessable("The body is not valid gzip") from None
    if not inflater.eof:
        raise _unprocessable("The gzip stream is truncated")
    return bytes(out)


def parse_file(data: bytes, fmt: str) -> list[dict[str, Any]]:
    """Parse a whole file into rows of plain values (blocking: run it in a thread)."""
    rows = _parse_mal(data) if fmt == "mal_xml" else _parse_shikimori(data)
    if len(rows) > IMPORT_ENTRIES_MAX:
        raise _too_large(f"The file has over {IMPORT_ENTRIES_MAX} entries")
    return rows


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, max(0, offset)) + 1


def _parse_mal(data: bytes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    root_seen = False
    try:
        events = SafeET.iterparse(
            io.BytesIO(data),
            events=("start", "end"),
            forbid_dtd=True,
            forbid_entities=True,
            forbid_external=True,
        )
        depth = 0
        for event, element in events:
            if event == "start":
                depth += 1
                if depth == 1:
                    root_seen = True
                    if element.tag != "myanimelist":
                        raise _unprocessable("Not a MAL export: the root is not <myanimelist>")
                continue
            depth -= 1
            if depth == 1:
                if element.tag == "anime":
                    rows.append(_mal_row(len(rows) + 1, element))
                    if len(rows) > IMPORT_ENTRIES_MAX:
                        raise _too_large(f"The file has over {IMPORT_ENTRIES_MAX} entries")
                element.clear()
    except DefusedXmlException:
        marker = data.find(b"<!DOCTYPE")
        if marker < 0:
            marker = data.find(b"<!ENTITY")
        line = _line_of(data, marker)
        raise _unprocessable(
            f"Line {line}: DOCTYPE and entity declarations are not accepted"
        ) from None
    except SafeET.ParseError as error:
        line, column = getattr(error, "position", (0, 0))
        raise _unprocessable(f"Line {line}, column {column}: the XML is malformed") from None
    if not root_seen:
        raise _unprocessable("The file is empty")
    return rows


def _text(element: Any, tag: str) -> str | None:
    child = element.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _mal_row(position: int, element: Any) -> dict[str, Any]:
    problems: list[str] = []
    source_id = _int(_text(element, "series_animedb_id"))
    ref = str(source_id) if source_id else f"row {position}"
    if not source_id or source_id <= 0:
        return {"ref": ref, "error": "missing_id"}
    raw_status = (_text(element, "my_status") or "").lower()
    status = MAL_STATUSES.get(raw_status)
    if status is None:
        return {"ref": ref, "error": "invalid_status"}
    if _text(element, "my_rewatching") == "1":
        status = "rewatching"
    row = {
        "ref": ref,
        "source_id": source_id,
        "id_kind": "mal",
        "status": status,
        "score": _lenient_score(_text(element, "my_score"), problems),
        "episodes": _lenient_range(
            _text(element, "my_watched_episodes"), EPISODES_MAX, "invalid_episodes", problems
        ),
        "rewatches": _lenient_range(
            _text(element, "my_times_watched"), REWATCHES_MAX, "invalid_rewatches", problems
        ),
        "text": _lenient_text(element.findtext("my_comments"), problems),
        "started_on": _mal_date(_text(element, "my_start_date"), problems),
        "completed_on": _mal_date(_text(element, "my_finish_date"), problems),
    }
    row["problems"] = problems
    return row


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value.strip()):
        return int(value.strip())
    return None


def _lenient_score(value: Any, problems: list[str]) -> int:
    if value is None or value == "":
        return 0
    score = _int(value)
    if score is None or not 0 <= score <= SCORE_MAX:
        problems.append("score_out_of_range")
        return 0
    return score


def _lenient_range(value: Any, maximum: int, problem: str, problems: list[str]) -> int:
    """Counts: missing is 0; over the maximum is clamped (N2: not an error); a negative or
    non-number is 0, reported."""
    if value is None or value == "":
        return 0
    number = _int(value)
    if number is None or number < 0:
        problems.append(problem)
        return 0
    return min(number, maximum)


def _lenient_text(value: Any, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append("invalid_text")
        return None
    text = clean_text(value)
    if len(text) > TEXT_MAX:
        problems.append("text_truncated")
        text = text[:TEXT_MAX]
    return text or None


def _mal_date(value: str | None, problems: list[str]) -> str | None:
    """MAL dates; `0000-00-00` is none, and an unknown day or month (`2019-04-00`) is the
    first of it."""
    if not value or value == "0000-00-00":
        return None
    match = _MAL_DATE.match(value)
    if not match or match.group(1) == "0000":
        problems.append("invalid_date")
        return None
    year, month, day = (int(part) for part in match.groups())
    try:
        return date(year, month or 1, day or 1).isoformat()
    except ValueError:
        problems.append("invalid_date")
        return None


def _parse_shikimori(data: bytes) -> list[dict[str, Any]]:
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as error:
        match = re.search(r"\(byte (\d+)\)", str(error))
        line = _line_of(data, int(match.group(1))) if match else 1
        raise _unprocessable(f"Line {line}: the JSON is malformed") from None
    if not isinstance(document, list):
        raise _unprocessable("Expected a JSON array of list entries")
    if len(document) > IMPORT_ENTRIES_MAX:
        raise _too_large(f"The file has over {IMPORT_ENTRIES_MAX} entries")
    return [_shikimori_row(index + 1, item) for index, item in enumerate(document)]


def _shikimori_row(position: int, item: Any) -> dict[str, Any]:
    """One rate, shaped like `/api/users/:id/anime_rates` (nested `anime`) or like v2
    `user_rates` (`target_id`, `target_type`). Our export adds `started_on`/`completed_on`."""
    if not isinstance(item, dict):
        return {"ref": f"row {position}", "error": "not_an_object"}
    if "target_type" in item or "target_id" in item:
        if str(item.get("target_type", "Anime")).lower() != "anime":
            return {"ref": f"row {position}", "error": "not_anime"}
        source_id = _int(item.get("target_id"))
    else:
        if item.get("manga") or not isinstance(item.get("anime"), dict):
            return {"ref": f"row {position}", "error": "not_anime"}
        source_id = _int(item["anime"].get("id"))
    if not source_id or source_id <= 0:
        return {"ref": f"row {position}", "error": "missing_id"}
    ref = str(source_id)
    status = item.get("status")
    if status not in STATUSES:
        return {"ref": ref, "error": "invalid_status"}
    problems: list[str] = []
    return {
        "ref": ref,
        "source_id": source_id,
        "id_kind": "shikimori",
        "status": status,
        "score": _lenient_score(item.get("score"), problems),
        "episodes": _lenient_range(
            item.get("episodes"), EPISODES_MAX, "invalid_episodes", problems
        ),
        "rewatches": _lenient_range(
            item.get("rewatches"), REWATCHES_MAX, "invalid_rewatches", problems
        ),
        "text": _lenient_text(item.get("text"), problems),
        "started_on": _iso_date(item.get("started_on"), problems),
        "completed_on": _iso_date(item.get("completed_on"), problems),
        "problems": problems,
    }


def _iso_date(value: Any, problems: list[str]) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value)[:10]).isoformat()
    except ValueError:
        problems.append("invalid_date")
        return None


# --- L8: starting an import --------------------------------------------------------------------


def in_progress() -> ApiError:
    return ApiError(Code.import_in_progress, "An import of your list is already running")


async def check_no_import_running(services: Services, user_id: int) -> None:
    busy = await services.db.fetch_val(
        sa.select(_i.id).where(_i.user_id == user_id, _i.state.in_(IMPORT_IN_PROGRESS))
    )
    if busy is not None:
        raise in_progress()


async def do_start_import(
    services: Services,
    user_id: int,
    fmt: str,
    mode: str,
    raw: bytes,
    media_type: str,
    content_encoding: str,
) -> ImportQueued:
    """L8: parse the file now (422 for a broken one, 413 past a limit), then queue the job;
    one import queued or running per user (409)."""
    await check_no_import_running(services, user_id)
    rows = await asyncio.to_thread(_read_rows, raw, media_type, content_encoding, fmt)
    now = datetime.now(UTC)
    import_id = new_id()
    db = services.db
    async with db.transaction():
        created = await db.fetch_one(
            db.insert(anime_list_import)
            .values(
                id=import_id,
                user_id=user_id,
                format=fmt,
                mode=mode,
                state="queued",
                total=len(rows),
                added=0,
                updated=0,
                skipped=0,
                problems=[],
                entries=rows,
                applied=0,
                created_at=now,
                finished_at=None,
            )
            .on_conflict_do_nothing(
                index_elements=["user_id"],
                # A literal predicate: PostgreSQL must match it to the partial index even
                # when the statement runs as a generic prepared plan.
                index_where=sa.text("state IN ('queued', 'running')"),
            )
            .returning(anime_list_import)
        )
        if created is None:
            raise in_progress()
        await enqueue(db, IMPORT_JOB_KIND, {"import_id": str(import_id)})
    return ImportQueued(job=job_of(created))


def _read_rows(raw: bytes, media_type: str, content_encoding: str, fmt: str) -> list[dict]:
    return parse_file(decompress(raw, media_type, content_encoding), fmt)


async def get_import(services: Services, user_id: int, import_id: int) -> ImportJob:
    """L9; another user's job is not found, like a missing one (R15)."""
    row = await services.db.fetch_one(
        sa.select(anime_list_import).where(_i.id == import_id, _i.user_id == user_id)
    )
    if row is None:
        raise ApiError(Code.not_found, "There is no such import")
    return job_of(row)


# --- the job -------------------------------------------------------------------------------------


@job_handler(IMPORT_JOB_KIND)
async def run_import(services: Services, payload: dict[str, Any]) -> None:
    import_id = int(payload["import_id"])
    db = services.db
    job = await db.fetch_one(sa.select(anime_list_import).where(_i.id == import_id))
    if job is None or job["state"] in ("done", "failed"):
        return
    if job["state"] == "running":
        # A previous run died mid-way (R13): its batches are kept and reported.
        await _finish(services, job, "failed", ["interrupted"])
        return
    claimed = await db.fetch_one(
        anime_list_import.update()
        .where(_i.id == import_id, _i.state == "queued")
        .values(state="running")
        .returning(anime_list_import)
    )
    if claimed is None:
        return
    try:
        await _apply(services, claimed)
    except Exception:
        log.exception("list import %s failed", import_id)
        current = await db.fetch_one(sa.select(anime_list_import).where(_i.id == import_id))
        await _finish(services, current or claimed, "failed", ["internal_error"])
        return
    current = await db.fetch_one(sa.select(anime_list_import).where(_i.id == import_id))
    await _finish(services, current, "done", [])


async def _finish(services: Services, job: dict[str, Any], state: str, reasons: list[str]) -> None:
    problems = list(job["problems"])
    for reason in reasons:
        if len(problems) < IMPORT_PROBLEMS_MAX:
            problems.append({"ref": "job", "reason": reason})
    unapplied = max(0, job["total"] - job["added"] - job["updated"] - job["skipped"])
    async with services.db.transaction() as tx:
        row = await services.db.fetch_one(
            anime_list_import.update()
            .where(_i.id == job["id"], _i.state.in_(IMPORT_IN_PROGRESS))
            .values(
                state=state,
                problems=problems,
                skipped=job["skipped"] + unapplied,
                entries=None,
                finished_at=datetime.now(UTC),
            )
            .returning(anime_list_import)
        )
        if row is not None:
            tx.emit(
                make_event(
                    ANIME_LIST_IMPORT_DONE,
                    AnimeListImportDone(job=job_of(row)),
                    [f"user:{row['user_id']}"],
                )
            )


async def _resolve(
    services: Services, rows: list[dict[str, Any]]
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Catalog rows by `myanimelist_id` (for MAL rows) and by id, for the file's ids."""
    db = services.db
    columns = (anime.c.id, anime.c.myanimelist_id, anime.c.episodes, anime.c.episodes_aired)
    mal_ids = sorted({r["source_id"] for r in rows if r.get("id_kind") == "mal"})
    all_ids = sorted({r["source_id"] for r in rows if "source_id" in r})
    by_mal: dict[int, dict[str, Any]] = {}
    by_id: dict[int, dict[str, Any]] = {}
    for start in range(0, len(mal_ids), IMPORT_BATCH):
        chunk = mal_ids[start : start + IMPORT_BATCH]
        for found in await db.fetch_all(
            sa.select(*columns).where(anime.c.myanimelist_id.in_(chunk))
        ):
            by_mal[found["myanimelist_id"]] = found
    for start in range(0, len(all_ids), IMPORT_BATCH):
        chunk = all_ids[start : start + IMPORT_BATCH]
        for found in await db.fetch_all(sa.select(*columns).where(anime.c.id.in_(chunk))):
            by_id[found["id"]] = found
    return by_mal, by_id


async def _apply(services: Services, job: dict[str, Any]) -> None:
    """Apply the rows not yet applied, IMPORT_BATCH per transaction, with the counters."""
    rows: list[dict[str, Any]] = job["entries"] or []
    user_id = job["user_id"]
    by_mal, by_id = await _resolve(services, rows)

    def target(row: dict[str, Any]) -> dict[str, Any] | None:
        """L8: a MAL id is the anime with that `myanimelist_id`, else the same id."""
        if "source_id" not in row:
            return None
        if row["id_kind"] == "mal" and row["source_id"] in by_mal:
            return by_mal[row["source_id"]]
        return by_id.get(row["source_id"])

    # A repeated anime: the last row wins (R: `duplicate`).
    last_for: dict[int, int] = {}
    for index, row in enumerate(rows):
        found = target(row)
        if "error" not in row and found is not None:
            last_for[found["id"]] = index
    start = job["applied"]
    for batch_start in range(start, len(rows), IMPORT_BATCH):
        batch = list(enumerate(rows[batch_start : batch_start + IMPORT_BATCH], batch_start))
        await _apply_batch(services, job, user_id, batch, target, last_for)


async def _apply_batch(
    services: Services,
    job: dict[str, Any],
    user_id: int,
    batch: list[tuple[int, dict[str, Any]]],
    target: Any,
    last_for: dict[int, int],
) -> None:
    db = services.db
    now = datetime.now(UTC)
    mode = job["mode"]
    added = updated = skipped = 0
    problems: list[dict[str, str]] = []
    plan: list[tuple[dict[str, Any], dict[str, Any], EntryState]] = []
    for index, row in batch:
        if "error" in row:
            skipped += 1
            problems.append({"ref": row["ref"], "reason": row["error"]})
            continue
        found = target(row)
        if found is None:
            skipped += 1
            problems.append({"ref": row["ref"], "reason": "not_in_catalog"})
            continue
        if last_for.get(found["id"]) != index:
            skipped += 1
            problems.append({"ref": row["ref"], "reason": "duplicate"})
            continue
        problems.extend({"ref": row["ref"], "reason": p} for p in row.get("problems", []))
        values = dict(row)
        for key in ("started_on", "completed_on"):
            values[key] = date.fromisoformat(row[key]) if row[key] else None
        state = apply_import(values, found["episodes"], bound(found))
        plan.append((row, found, state))
    async with db.transaction():
        existing = {}
        ids = [found["id"] for _, found, _ in plan]
        if ids:
            for entry in await db.fetch_all(
                sa.select(anime_list_entry).where(_e.user_id == user_id, _e.anime_id.in_(ids))
            ):
                existing[entry["anime_id"]] = entry
        inserts: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        for _row, found, state in plan:
            anime_id = found["id"]
            current = existing.get(anime_id)
            before = state_of(current) if current else None
            if before is not None:  # a file without dates (Shikimori's) keeps ours
                state = dataclasses.replace(
                    state,
                    started_on=state.started_on or before.started_on,
                    completed_on=state.completed_on or before.completed_on,
                )
            if current is not None and (mode == "add_only" or before == state):
                skipped += 1
                continue
            if current is None:
                added += 1
            else:
                updated += 1
            inserts.append(
                {
                    "id": new_id(),
                    "user_id": user_id,
                    "anime_id": anime_id,
                    "rev": new_id(),
                    "created_at": now,
                    "updated_at": now,
                    "status": state.status,
                    "score": state.score,
                    "episodes": state.episodes,
                    "rewatches": state.rewatches,
                    "text": state.text,
                    "started_on": state.started_on,
                    "completed_on": state.completed_on,
                }
            )
            history.extend(_history_rows(user_id, anime_id, before, state, now, action="import"))
        if inserts:
            statement = db.insert(anime_list_entry)
            if mode == "overwrite":  # R13: per anime, the later write wins
                statement = statement.on_conflict_do_update(
                    index_elements=["user_id", "anime_id"],
                    set_={
                        name: statement.excluded[name]
                        for name in (
                            "status",
                            "score",
                            "episodes",
                            "rewatches",
                            "text",
                            "started_on",
                            "completed_on",
                            "rev",
                            "updated_at",
                        )
                    },
                )
            else:
                statement = statement.on_conflict_do_nothing(index_elements=["user_id", "anime_id"])
            await db.execute_many(statement, inserts)
            await db.execute_many(anime_list_history.insert(), history)
        await db.execute(
            anime_list_import.update()
            .where(_i.id == job["id"])
            .values(
                added=_i.added + added,
                updated=_i.updated + updated,
                skipped=_i.skipped + skipped,
                applied=_i.applied + len(batch),
            )
        )
        if problems:
            await _add_problems(services, job["id"], problems)


async def _add_problems(services: Services, import_id: int, problems: list[dict]) -> None:
    current = await services.db.fetch_val(sa.select(_i.problems).where(_i.id == import_id))
    merged = list(current or [])
    room = IMPORT_PROBLEMS_MAX - len(merged)
    if room <= 0:
        return
    merged.extend(problems[:room])
    await services.db.execute(
        anime_list_import.update().where(_i.id == import_id).values(problems=merged)
    )


# --- L10: export -------------------------------------------------------------------------------


async def export_rows(services: Services, user_id: int) -> list[dict[str, Any]]:
    return await services.db.fetch_all(
        sa.select(
            anime_list_entry,
            anime.c.name.label("anime_name"),
            anime.c.russian.label("anime_russian"),
            anime.c.kind.label("anime_kind"),
            anime.c.episodes.label("anime_episodes"),
            anime.c.episodes_aired.label("anime_episodes_aired"),
            anime.c.myanimelist_id.label("anime_myanimelist_id"),
            anime.c.score_x100.label("anime_score_x100"),
            anime.c.status.label("anime_status"),
            anime.c.aired_on.label("anime_aired_on"),
            anime.c.released_on.label("anime_released_on"),
            anime.c.image_original.label("anime_image_original"),
            anime.c.image_preview.label("anime_image_preview"),
            anime.c.image_x96.label("anime_image_x96"),
            anime.c.image_x48.label("anime_image_x48"),
        )
        .select_from(anime_list_entry.join(anime, anime.c.id == _e.anime_id))
        .where(_e.user_id == user_id)
        .order_by(_e.id)
    )


def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def shikimori_rates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The list in Shikimori's `anime_rates` shape, plus the dates Shikimori lacks."""
    return [
        {
            "id": str(row["id"]),
            "score": row["score"],
            "status": row["status"],
            "text": row["text"],
            "episodes": row["episodes"],
            "chapters": None,
            "volumes": None,
            "text_html": None,
            "rewatches": row["rewatches"],
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["updated_at"]),
            "started_on": _day(row["started_on"]),
            "completed_on": _day(row["completed_on"]),
            "anime": {
                "id": row["anime_id"],
                "name": row["anime_name"],
                "russian": row["anime_russian"],
                "image": {
                    "original": row["anime_image_original"],
                    "preview": row["anime_image_preview"],
                    "x96": row["anime_image_x96"],
                    "x48": row["anime_image_x48"],
                },
                "url": f"/animes/{row['anime_id']}",
                "kind": row["anime_kind"],
                "score": f"{row['anime_score_x100'] / 100:.2f}",
                "status": row["anime_status"],
                "episodes": row["anime_episodes"],
                "episodes_aired": row["anime_episodes_aired"],
                "aired_on": _day(row["anime_aired_on"]),
                "released_on": _day(row["anime_released_on"]),
            },
            "manga": None,
        }
        for row in rows
    ]


def mal_xml(rows: list[dict[str, Any]], username: str) -> bytes:
    """The list as a MAL export: `<myinfo>` with counts per status, one `<anime>` each."""
    counts = {name: 0 for name in ("Watching", "Completed", "On-Hold", "Dropped", "Plan to Watch")}
    for row in rows:
        counts[MAL_STATUS_NAMES[row["status"]]] += 1
    out = io.StringIO()
    out.write('<?xml version="1.0" encoding="UTF-8" ?>\n<myanimelist>\n\t<myinfo>\n')
    for tag, value in (
        ("user_name", username),
        ("user_export_type", "1"),
        ("user_total_anime", str(len(rows))),
        ("user_total_watching", str(counts["Watching"])),
        ("user_total_completed", str(counts["Completed"])),
        ("user_total_onhold", str(counts["On-Hold"])),
        ("user_total_dropped", str(counts["Dropped"])),
        ("user_total_plantowatch", str(counts["Plan to Watch"])),
    ):
        out.write(f"\t\t<{tag}>{escape(value)}</{tag}>\n")
    out.write("\t</myinfo>\n")
    for row in rows:
        fields = (
            ("series_animedb_id", str(row["anime_myanimelist_id"] or row["anime_id"])),
            ("series_title", row["anime_name"]),
            ("series_type", MAL_TYPES.get(row["anime_kind"] or "", "Unknown")),
            ("series_episodes", str(row["anime_episodes"])),
            ("my_id", "0"),
            ("my_watched_episodes", str(row["episodes"])),
            ("my_start_date", _day(row["started_on"]) or "0000-00-00"),
            ("my_finish_date", _day(row["completed_on"]) or "0000-00-00"),
            ("my_score", str(row["score"])),
            ("my_status", MAL_STATUS_NAMES[row["status"]]),
            ("my_comments", row["text"] or ""),
            ("my_times_watched", str(row["rewatches"])),
            ("my_rewatching", "1" if row["status"] == "rewatching" else "0"),
            ("my_rewatching_ep", str(row["episodes"]) if row["status"] == "rewatching" else "0"),
            ("update_on_import", "0"),
        )
        out.write("\t<anime>\n")
        for tag, value in fields:
            out.write(f"\t\t<{tag}>{escape(value)}</{tag}>\n")
        out.write("\t</anime>\n")
    out.write("</myanimelist>\n")
    return out.getvalue().encode()


async def export_list(services: Services, user_id: int, username: str, fmt: str) -> bytes:
    """L10: the whole list as a file of `fmt`."""
    rows = await export_rows(services, user_id)
    if fmt == "mal_xml":
        return mal_xml(rows, username)
    return msgspec.json.encode(shikimori_rates(rows))
