"""The anime list (anime.md §2, L1-L11): my watch list, its stats, history, import and
export, and other users' lists as their `list_visibility` allows.

Bots read with `list:read` and write with `list:write` (auth.md R23).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import Response

from models.anime import lists
from models.anime.lists.shapes import Status
from models.anime.lists.tables import (
    EXPORT_RATE,
    IDEMPOTENCY_KEY_MAX,
    IMPORT_RATE,
    IMPORT_WIRE_MAX,
    WRITE_RATE,
)
from models.anime.lists.transfer import IMPORT_MEDIA_TYPES
from models.users import get_user
from server.errors import ApiError, Code, FieldError, validation_error
from server.http import Call, JsonBody, endpoint
from server.ids import parse_snowflake
from server.schemas import Schema

LIST_READ = "list:read"
LIST_WRITE = "list:write"
NO_STORE = {"Cache-Control": "no-store"}
ENTRY_WRITE_ERRORS = [Code.anime_not_found, Code.rate_limited, Code.banned]

Order = Literal["updated", "added", "title", "score", "episodes"]
Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]


class ListQuery(Schema):
    status: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    q: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    kind: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    order: Order = "updated"
    before: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    after: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    cursor: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    limit: Limit = 50


def _filter(call: Call[None, ListQuery]) -> lists.reads.ListFilter:
    query = call.query
    return lists.check_filter(
        call.services,
        status=query.status,
        kind=query.kind,
        q=query.q,
        order=query.order,
        before=query.before,
        after=query.after,
        cursor=query.cursor,
        limit=query.limit,
    )


async def _limit_writes(call: Call) -> None:
    await call.services.limiter.check(WRITE_RATE, "anime-list-write", str(call.user.user_id))


# --- L1, L6, L7 and the import/export routes (literal paths before /{anime_id}) -------------


@endpoint(
    "GET",
    "/anime-list",
    query=ListQuery,
    response=lists.EntryPage,
    auth="user",
    bot_scope=LIST_READ,
    errors=[Code.banned],
)
async def my_list(call: Call[None, ListQuery]) -> lists.EntryPage:
    """My list, filtered and ordered.

    `order=updated` (rev) and `added` (id) page with `before` (newest first) or `after`
    (oldest first, for syncing changes since a rev); `title`, `score` and `episodes` page
    with the opaque `cursor`."""
    call.headers.update(NO_STORE)
    return await lists.list_entries(call.services, call.user.user_id, _filter(call), owner=True)


@endpoint(
    "GET",
    "/anime-list/stats",
    response=lists.ListStats,
    auth="user",
    bot_scope=LIST_READ,
    errors=[Code.banned],
)
async def my_stats(call: Call) -> lists.ListStats:
    """My totals, time watched and score histogram."""
    call.headers.update(NO_STORE)
    return await lists.list_stats(call.services, call.user.user_id)


class HistoryQuery(Schema):
    anime_id: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None
    before: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    limit: Limit = 50


@endpoint(
    "GET",
    "/anime-list/history",
    query=HistoryQuery,
    response=lists.HistoryPage,
    auth="user",
    bot_scope=LIST_READ,
    errors=[Code.banned],
)
async def my_history(call: Call[None, HistoryQuery]) -> lists.HistoryPage:
    """My change log, newest first."""
    before = None
    if call.query.before is not None:
        before = parse_snowflake(call.query.before)
        if before is None:
            raise validation_error("before", "Not an id")
    call.headers.update(NO_STORE)
    return await lists.list_history(
        call.services, call.user.user_id, call.query.anime_id, before, call.query.limit
    )


class ImportQuery(Schema):
    format: Literal["mal_xml", "shikimori_json"]
    mode: Literal["add_only", "overwrite"] = "add_only"


@endpoint(
    "POST",
    "/anime-list/import",
    query=ImportQuery,
    response=lists.ImportQueued,
    status=202,
    auth="user",
    bot_scope=LIST_WRITE,
    content_types=IMPORT_MEDIA_TYPES,
    max_body=IMPORT_WIRE_MAX,
    errors=[
        Code.import_in_progress,
        Code.too_large,
        Code.unsupported_media_type,
        Code.rate_limited,
        Code.banned,
    ],
)
async def start_import(call: Call[None, ImportQuery]) -> lists.ImportQueued:
    """Import a MAL XML export (optionally gzipped) or a Shikimori JSON list, as a job.

    The body is the raw file. It is parsed before the answer: a broken file is a 422 with
    its line; over 5 MiB sent, 25 MiB decompressed or 20 000 entries is a 413."""
    user_id = call.user.user_id
    await call.services.limiter.check(IMPORT_RATE, "anime-list-import", str(user_id))
    media_type = call.request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in IMPORT_MEDIA_TYPES:
        raise ApiError(
            Code.unsupported_media_type, f"Send the file as {' or '.join(IMPORT_MEDIA_TYPES)}"
        )
    await lists.transfer.check_no_import_running(call.services, user_id)
    raw = await _read_file(call)
    return await lists.do_start_import(
        call.services,
        user_id,
        call.query.format,
        call.query.mode,
        raw,
        media_type,
        call.request.headers.get("content-encoding", ""),
    )


async def _read_file(call: Call) -> bytes:
    """The body as sent, refused past IMPORT_WIRE_MAX bytes without reading further."""
    declared = call.request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > IMPORT_WIRE_MAX):
        raise ApiError(Code.too_large, "The file is over 5 MiB")
    chunks, size = [], 0
    async for chunk in call.request.stream():
        size += len(chunk)
        if size > IMPORT_WIRE_MAX:
            raise ApiError(Code.too_large, "The file is over 5 MiB")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise validation_error("body", "The file is empty")
    return raw


@endpoint(
    "GET",
    "/anime-list/import/{job_id}",
    response=lists.ImportJob,
    auth="user",
    bot_scope=LIST_READ,
    errors=[Code.banned],
)
async def import_status(call: Call) -> lists.ImportJob:
    """An import job of mine."""
    call.headers.update(NO_STORE)
    return await lists.get_import(call.services, call.user.user_id, call.path_id("job_id"))


class ExportQuery(Schema):
    format: Literal["mal_xml", "shikimori_json"]


@endpoint(
    "GET",
    "/anime-list/export",
    query=ExportQuery,
    auth="user",
    bot_scope=LIST_READ,
    media_type="application/octet-stream",
    response_headers=["Content-Disposition"],
    errors=[Code.rate_limited, Code.banned],
)
async def export(call: Call[None, ExportQuery]) -> Response:
    """Download my list as MAL XML or Shikimori JSON (`anime_rates` shape)."""
    user_id = call.user.user_id
    await call.services.limiter.check(EXPORT_RATE, "anime-list-export", str(user_id))
    user = await get_user(call.services.db, user_id)
    username = user["username"] if user else str(user_id)
    body = await lists.export_list(call.services, user_id, username, call.query.format)
    xml = call.query.format == "mal_xml"
    return Response(
        body,
        media_type="application/xml" if xml else "application/json",
        headers={
            **NO_STORE,
            "Content-Disposition": (
                f'attachment; filename="anilay-anime-list-{user_id}.{"xml" if xml else "json"}"'
            ),
        },
    )


# --- L2-L5: one entry ----------------------------------------------------------------------


@endpoint(
    "GET",
    "/anime-list/{anime_id}",
    response=lists.ListEntry,
    auth="user",
    bot_scope=LIST_READ,
    errors=[Code.entry_not_found, Code.banned],
)
async def my_entry(call: Call) -> lists.ListEntry:
    """My entry for one anime."""
    anime_id = call.path_int("anime_id")
    call.headers.update(NO_STORE)
    return await lists.get_entry(call.services, call.user.user_id, anime_id)


class EntryPut(Schema):
    status: Status | UnsetType = UNSET
    score: Annotated[int, msgspec.Meta(ge=0, le=10)] | UnsetType = UNSET
    episodes: Annotated[int, msgspec.Meta(ge=0, le=9999)] | UnsetType = UNSET
    rewatches: Annotated[int, msgspec.Meta(ge=0, le=999)] | UnsetType = UNSET
    text: Annotated[str, msgspec.Meta(max_length=4096)] | UnsetType | None = UNSET
    rev: Annotated[str, msgspec.Meta(max_length=20)] | UnsetType = UNSET


@endpoint(
    "PUT",
    "/anime-list/{anime_id}",
    body=EntryPut,
    body_optional=True,
    response=lists.EntryResult,
    auth="user",
    bot_scope=LIST_WRITE,
    errors=[*ENTRY_WRITE_ERRORS, Code.stale_entry],
)
async def put_entry(call: Call[EntryPut, None]) -> lists.EntryResult | Response:
    """Create or update my entry; omitted fields keep their value (201 on create).

    `rev`, when sent, must be the stored one (409 `stale_entry` with the current entry)."""
    anime_id = call.path_int("anime_id")
    body = call.body or EntryPut()
    changes = {
        name: getattr(body, name)
        for name in ("status", "score", "episodes", "rewatches", "text")
        if getattr(body, name) is not UNSET
    }
    if "text" in changes:
        changes["text"] = lists.rules.check_text(changes["text"])
    expected_rev = None
    if body.rev is not UNSET:
        expected_rev = parse_snowflake(body.rev)
        if expected_rev is None:
            raise validation_error("rev", "Not a rev")
    await _limit_writes(call)
    outcome = await lists.do_put_entry(
        call.services, call.user.user_id, anime_id, changes, expected_rev
    )
    if outcome.created:
        return JsonBody(msgspec.json.encode(outcome.result), 201, call.headers)
    return outcome.result


@endpoint(
    "DELETE",
    "/anime-list/{anime_id}",
    auth="user",
    bot_scope=LIST_WRITE,
    errors=[Code.entry_not_found, Code.rate_limited, Code.banned],
)
async def delete_entry(call: Call) -> None:
    """Remove my entry (game progress is kept, R17)."""
    anime_id = call.path_int("anime_id")
    await _limit_writes(call)
    await lists.do_delete_entry(call.services, call.user.user_id, anime_id)


class EpisodeBody(Schema):
    expected_episodes: Annotated[int, msgspec.Meta(ge=0, le=9999)] | UnsetType = UNSET


def _idempotency_key(call: Call) -> str | None:
    key = call.request.headers.get("idempotency-key")
    if key is None:
        return None
    if not (0 < len(key) <= IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable()):
        raise ApiError(
            Code.validation_failed,
            "Idempotency-Key: 1 to 255 printable ASCII characters",
            errors=[FieldError("Idempotency-Key", "1 to 255 printable ASCII characters")],
        )
    return key


@endpoint(
    "POST",
    "/anime-list/{anime_id}/episode",
    body=EpisodeBody,
    body_optional=True,
    response=lists.EntryResult,
    auth="user",
    bot_scope=LIST_WRITE,
    errors=[
        *ENTRY_WRITE_ERRORS,
        Code.episode_limit,
        Code.not_aired,
        Code.stale_episodes,
        Code.stale_entry,
    ],
)
async def watch_episode(call: Call[EpisodeBody, None]) -> Response:
    """+1 episode watched (creating the entry as watching, 1: 201); the game's accrual hook.

    `expected_episodes` makes it conditional; `Idempotency-Key` makes a repeat answer the
    first response."""
    anime_id = call.path_int("anime_id")
    expected = call.body.expected_episodes if call.body is not None else UNSET
    key = _idempotency_key(call)
    await _limit_writes(call)
    outcome = await lists.do_increment_episode(
        call.services,
        call.user.user_id,
        anime_id,
        None if expected is UNSET else expected,
        key,
    )
    if outcome.replayed:
        call.headers["Idempotent-Replayed"] = "true"
    return JsonBody(outcome.body, outcome.status, call.headers)


# --- L11 ----------------------------------------------------------------------------------------


@endpoint(
    "GET",
    "/users/{user_id}/anime-list",
    query=ListQuery,
    response=lists.EntryPage,
    auth="optional",
    bot_scope=LIST_READ,
    errors=[Code.user_not_found, Code.banned],
)
async def user_list(call: Call[None, ListQuery]) -> lists.EntryPage:
    """Another user's list, without notes, if their `list_visibility` lets me see it."""
    owner_id = call.path_id("user_id")
    viewer = call.identity.user_id if call.identity is not None else None
    call.headers["Cache-Control"] = "private, no-cache"
    return await lists.view_user_list(call.services, viewer, owner_id, _filter(call))


routes = [
    my_list,
    my_stats,
    my_history,
    start_import,
    import_status,
    export,
    my_entry,
    put_entry,
    delete_entry,
    watch_episode,
    user_list,
]
