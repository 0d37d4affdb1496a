"""List reads: L1/L11 pages, L2, L6 stats, L7 history, and profiles' `list_summary`.

Each page joins the catalog in the same query (no N+1). Time orders (`updated` = rev,
`added` = id) page with snowflakes: `before` walks back newest-first; `after` walks forward
oldest-first, which is how a client syncs what changed since the last `rev` it saw. The
other orders page with an opaque, signed `cursor`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from typing import Any, Literal

import msgspec
import sqlalchemy as sa

from models import privacy
from models.anime.catalog_tables import KINDS, anime
from models.anime.lists.rules import normalize_search
from models.anime.lists.shapes import ListEntry, anime_columns, entry_of
from models.anime.lists.tables import STATUSES, anime_list_entry, anime_list_history
from models.anime.lists.writes import entry_not_found
from models.users import get_user, is_banned
from models.users.profiles import ListSummary, user_not_found
from server.errors import validation_error
from server.events import rfc3339
from server.ids import parse_snowflake
from server.secrets import b64url, b64url_decode
from server.services import Services
from server.tokens import load_key_encryption_key

Order = Literal["updated", "added", "title", "score", "episodes"]
TIME_ORDERS = ("updated", "added")
CURSOR_MAX = 200
_CURSOR_SALT = b"anilay/anime-list/cursor/v1"

_e = anime_list_entry.c
_h = anime_list_history.c


class EntryPage(msgspec.Struct):
    items: list[ListEntry]
    next_cursor: str | None


class ListFilter(msgspec.Struct, kw_only=True):
    """L1's query, checked (see `check_filter`)."""

    statuses: list[str] = []
    kinds: list[str] = []
    tokens: list[str] = []
    order: str = "updated"
    before: int | None = None
    after: int | None = None
    cursor: list[Any] | None = None
    limit: int = 50


def _comma_list(raw: str | None, allowed: tuple[str, ...], field: str) -> list[str]:
    if raw is None:
        return []
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if not values or len(values) > len(allowed):
        raise validation_error(field, f"A comma list of {', '.join(allowed)}")
    for value in values:
        if value not in allowed:
            raise validation_error(field, f"Unknown value {value[:32]!r}")
    return sorted(set(values))


def check_filter(
    services: Services,
    *,
    status: str | None,
    kind: str | None,
    q: str | None,
    order: str,
    before: str | None,
    after: str | None,
    cursor: str | None,
    limit: int,
) -> ListFilter:
    """Validate L1's parameters together: each problem is a 422 naming its parameter."""
    found = ListFilter(
        statuses=_comma_list(status, STATUSES, "status"),
        kinds=_comma_list(kind, KINDS, "kind"),
        tokens=normalize_search(q).split() if q else [],
        order=order,
        limit=limit,
    )
    if before is not None and after is not None:
        raise validation_error("after", "Give before or after, not both")
    for name, value in (("before", before), ("after", after)):
        if value is None:
            continue
        if order not in TIME_ORDERS:
            raise validation_error(name, f"order={order} pages with cursor")
        parsed = parse_snowflake(value)
        if parsed is None:
            raise validation_error(name, "Not an id")
        setattr(found, name, parsed)
    if cursor is not None:
        if order in TIME_ORDERS:
            raise validation_error("cursor", f"order={order} pages with before/after")
        found.cursor = decode_cursor(services, cursor, order)
    return found


# --- opaque cursors ----------------------------------------------------------------------------

_cursor_keys: dict[tuple[str | None, str], bytes] = {}


def _cursor_key(services: Services) -> bytes:
    """An HMAC key derived from the deployment's key-encryption key, so every process of a
    deployment accepts the others' cursors."""
    source = (services.settings.key_encryption_key, services.settings.key_encryption_key_file)
    key = _cursor_keys.get(source)
    if key is None:
        kek = load_key_encryption_key(*source)
        key = _cursor_keys[source] = hmac.new(kek, _CURSOR_SALT, hashlib.sha256).digest()
    return key


def _mac(services: Services, body: str) -> str:
    return b64url(hmac.new(_cursor_key(services), body.encode(), hashlib.sha256).digest()[:12])


def encode_cursor(services: Services, order: str, key: list[int]) -> str:
    """`<body>.<mac>`: the order and the last item's key, signed, so an edited or foreign
    cursor is a 422 rather than a silently different page."""
    body = b64url(json.dumps([order, *key], separators=(",", ":")).encode())
    return f"{body}.{_mac(services, body)}"


def decode_cursor(services: Services, cursor: str, order: str) -> list[Any]:
    def bad() -> Exception:
        return validation_error("cursor", "Not a cursor of this list and order")

    body, _, mac = cursor.partition(".")
    if len(cursor) > CURSOR_MAX or not hmac.compare_digest(mac, _mac(services, body)):
        raise bad()
    try:
        decoded = json.loads(b64url_decode(body))
    except ValueError:
        raise bad() from None
    if not isinstance(decoded, list) or not decoded or decoded[0] != order:
        raise bad()
    key = decoded[1:]
    shape = 1 if order == "title" else 2
    if len(key) != shape or not all(type(v) is int and 0 <= v < 2**63 for v in key):
        raise bad()
    return key


# --- L1, L11 -----------------------------------------------------------------------------------


def _title_key(services: Services, column: Any) -> Any:
    """Case-insensitive title order, byte-wise on both engines (PostgreSQL's locale
    collation would order punctuation differently from SQLite)."""
    key = sa.func.lower(column)
    return key.collate("C") if services.db.dialect == "postgresql" else key


async def list_entries(
    services: Services, owner_id: int, query: ListFilter, *, owner: bool
) -> EntryPage:
    """One page of a list, filtered and ordered; `owner` decides whether notes are shown."""
    statement = (
        sa.select(anime_list_entry, *anime_columns())
        .select_from(anime_list_entry.join(anime, anime.c.id == _e.anime_id))
        .where(_e.user_id == owner_id)
    )
    if query.statuses:
        statement = statement.where(_e.status.in_(query.statuses))
    if query.kinds:
        statement = statement.where(anime.c.kind.in_(query.kinds))
    for token in query.tokens:
        escaped = token.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(anime.c.search_text.like(f"%{escaped}%", escape="\\"))
    order = query.order
    if order in TIME_ORDERS:
        key = _e.rev if order == "updated" else _e.id
        if query.after is not None:
            statement = statement.where(key > query.after).order_by(key.asc())
        else:
            if query.before is not None:
                statement = statement.where(key < query.before)
            statement = statement.order_by(key.desc())
    elif order == "title":
        name = _title_key(services, anime.c.name)
        if query.cursor is not None:
            (after_anime,) = query.cursor
            mark = (
                sa.select(_title_key(services, anime.c.name))
                .where(anime.c.id == after_anime)
                .scalar_subquery()
            )
            statement = statement.where(sa.tuple_(name, _e.anime_id) > sa.tuple_(mark, after_anime))
        statement = statement.order_by(name.asc(), _e.anime_id.asc())
    else:
        column = _e.score if order == "score" else _e.episodes
        if query.cursor is not None:
            value, entry_id = query.cursor
            statement = statement.where(sa.tuple_(column, _e.id) < sa.tuple_(value, entry_id))
        statement = statement.order_by(column.desc(), _e.id.desc())
    rows = await services.db.fetch_all(statement.limit(query.limit + 1))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        if order == "updated":
            next_cursor = str(last["rev"])
        elif order == "added":
            next_cursor = str(last["id"])
        elif order == "title":
            next_cursor = encode_cursor(services, order, [last["anime_id"]])
        else:
            next_cursor = encode_cursor(services, order, [last[order], last["id"]])
    return EntryPage(
        items=[entry_of(row, row, owner=owner) for row in rows], next_cursor=next_cursor
    )


async def view_user_list(
    services: Services, viewer_id: int | None, owner_id: int, query: ListFilter
) -> EntryPage:
    """L11: another user's list, without notes, when their `list_visibility` admits the
    viewer (users.md R4). A missing or deleted user, a block either way, a list the viewer
    may not see, and (as for profiles, R3) a user pending deletion or banned all answer
    the same 404 (R15: never 403)."""
    row = await get_user(services.db, owner_id)
    if row is None or row["status"] == "deleted":
        raise user_not_found()
    if viewer_id != owner_id and (
        row["status"] == "deletion_pending"
        or is_banned(row)
        or not await privacy.allows(services, viewer_id, owner_id, privacy.VIEW_LIST)
    ):
        raise user_not_found()
    return await list_entries(services, owner_id, query, owner=False)


# --- L2 ----------------------------------------------------------------------------------------


async def get_entry(services: Services, user_id: int, anime_id: int) -> ListEntry:
    row = await services.db.fetch_one(
        sa.select(anime_list_entry, *anime_columns())
        .select_from(anime_list_entry.join(anime, anime.c.id == _e.anime_id))
        .where(_e.user_id == user_id, _e.anime_id == anime_id)
    )
    if row is None:
        raise entry_not_found()
    return entry_of(row, row, owner=True)


# --- L6 and the profile summary ----------------------------------------------------------------


class ListStats(msgspec.Struct):
    total: int
    statuses: dict[str, int]
    episodes_watched: int
    minutes_watched: int
    days_watched: float
    mean_score: float | None
    scored: int
    score_histogram: dict[str, int]
    kinds: dict[str, int]


def _watched_expression() -> Any:
    """Episodes watched by an entry: its progress plus each finished rewatch in full."""
    return _e.episodes + _e.rewatches * anime.c.episodes


async def _groups(services: Services, user_id: int) -> list[dict[str, Any]]:
    watched = _watched_expression()
    return await services.db.fetch_all(
        sa.select(
            _e.status,
            _e.score,
            anime.c.kind,
            sa.func.count().label("entries"),
            sa.func.coalesce(sa.func.sum(watched), 0).label("episodes"),
            sa.func.coalesce(sa.func.sum(watched * anime.c.duration), 0).label("minutes"),
        )
        .select_from(anime_list_entry.join(anime, anime.c.id == _e.anime_id))
        .where(_e.user_id == user_id)
        .group_by(_e.status, _e.score, anime.c.kind)
    )


async def list_stats(services: Services, user_id: int) -> ListStats:
    """L6: totals, the status counts, time watched and the score histogram."""
    statuses: Counter[str] = Counter()
    scores: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    episodes = minutes = 0
    for group in await _groups(services, user_id):
        statuses[group["status"]] += group["entries"]
        if group["score"] > 0:
            scores[group["score"]] += group["entries"]
        if group["kind"] is not None:
            kinds[group["kind"]] += group["entries"]
        episodes += int(group["episodes"])
        minutes += int(group["minutes"])
    scored = sum(scores.values())
    mean = sum(s * n for s, n in scores.items()) / scored if scored else None
    return ListStats(
        total=sum(statuses.values()),
        statuses={status: statuses[status] for status in STATUSES},
        episodes_watched=episodes,
        minutes_watched=minutes,
        days_watched=round(minutes / 1440, 1),
        mean_score=round(mean, 2) if mean is not None else None,
        scored=scored,
        score_histogram={str(score): scores[score] for score in range(1, 11)},
        kinds={kind: kinds[kind] for kind in KINDS},
    )


async def list_summary(services: Services, user_id: int) -> ListSummary:
    """users.md's `list_summary`. The Profile shape has no `rewatching`: a rewatch is being
    watched, so it counts as `watching`."""
    counts: Counter[str] = Counter()
    episodes = 0
    for group in await _groups(services, user_id):
        status = "watching" if group["status"] == "rewatching" else group["status"]
        counts[status] += group["entries"]
        episodes += int(group["episodes"])
    return ListSummary(
        watching=counts["watching"],
        completed=counts["completed"],
        on_hold=counts["on_hold"],
        dropped=counts["dropped"],
        planned=counts["planned"],
        episodes_watched=episodes,
    )


# --- L7 ----------------------------------------------------------------------------------------


class AnimeRef(msgspec.Struct):
    id: int
    name: str | None  # null once the title has left the catalog
    russian: str | None


class HistoryItem(msgspec.Struct):
    id: str
    anime: AnimeRef
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: str


class HistoryPage(msgspec.Struct):
    items: list[HistoryItem]
    next_cursor: str | None


async def list_history(
    services: Services, user_id: int, anime_id: int | None, before: int | None, limit: int
) -> HistoryPage:
    """L7: my change log, newest first."""
    statement = (
        sa.select(
            anime_list_history,
            anime.c.name.label("anime_name"),
            anime.c.russian.label("anime_russian"),
        )
        .select_from(anime_list_history.outerjoin(anime, anime.c.id == _h.anime_id))
        .where(_h.user_id == user_id)
    )
    if anime_id is not None:
        statement = statement.where(_h.anime_id == anime_id)
    if before is not None:
        statement = statement.where(_h.id < before)
    rows = await services.db.fetch_all(statement.order_by(_h.id.desc()).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return HistoryPage(
        items=[
            HistoryItem(
                id=str(row["id"]),
                anime=AnimeRef(
                    id=row["anime_id"], name=row["anime_name"], russian=row["anime_russian"]
                ),
                action=row["action"],
                before=row["before"],
                after=row["after"],
                created_at=rfc3339(row["created_at"]),
            )
            for row in rows
        ],
        next_cursor=str(rows[-1]["id"]) if more and rows else None,
    )
