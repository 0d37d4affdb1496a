"""Finding users by name (users.md U3, R7).

A prefix match is a range on the lower-cased columns, [q, q's successor), which the prefix
indexes serve on both engines (see `starts_with`); there is no LIKE, so `%`, `_` and `\\` in a
query are ordinary characters.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from models import social_graph
from models.privacy import user_privacy
from models.users import users
from models.users.profiles import SearchItem, card_of, equipped_frames
from server.services import Services

SEARCH_LIMIT_MAX = 25

# platform.md R26 plugs its search-log writer in here; a logging failure never fails a search.
SearchLogger = Callable[..., Awaitable[None]]
SEARCH_LOGGERS: list[SearchLogger] = []
log = logging.getLogger("anilay.users")


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string that starts with `prefix`, in code point
    order (None: no upper bound). [prefix, bound) is then exactly the strings with that
    prefix — no LIKE, so `%`, `_` and `\\` in a query are ordinary characters."""
    chars = list(prefix)
    while chars:
        following = ord(chars[-1]) + 1
        if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be stored: skip past them
            following = 0xE000
        if following <= 0x10FFFF:
            chars[-1] = chr(following)
            return "".join(chars)
        chars.pop()
    return None


def starts_with(dialect: str, column: sa.ColumnElement, prefix: str) -> sa.ColumnElement[bool]:
    """A range that the prefix indexes serve: `~>=~`/`~<~` compare bytes on PostgreSQL (the
    text_pattern_ops index), plain comparisons use SQLite's BINARY collation."""
    upper = prefix_upper_bound(prefix)
    if dialect == "postgresql":
        lower_ok = column.op("~>=~", is_comparison=True)(prefix)
        upper_ok = column.op("~<~", is_comparison=True)(upper) if upper else None
    else:
        lower_ok = column >= prefix
        upper_ok = column < upper if upper else None
    return lower_ok if upper_ok is None else sa.and_(lower_ok, upper_ok)


def normalize_query(q: str) -> str | None:
    """The search text: NFC, trimmed, lower-cased; None when it is not 2..32 code points or
    holds control characters."""
    text = unicodedata.normalize("NFC", q).strip()
    if not 2 <= len(text) <= 32 or any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        return None
    return text.lower()


async def search_users(
    services: Services, viewer_id: int | None, needle: str, limit: int
) -> list[SearchItem]:
    """R7: exact username, then username prefix, then display-name prefix; within a tier the
    viewer's friends, then shorter usernames, then ids. Hidden: not searchable, not active,
    banned, and anyone in a block with the viewer."""
    dialect = services.db.dialect
    friends = await social_graph.friend_ids(services, viewer_id) if viewer_id else set()
    blocked = await social_graph.blocked_ids(services, viewer_id) if viewer_id else set()
    now = datetime.now(UTC)
    # Every condition is built afresh where it is used: `databases` binds positionally and
    # mishandles one bind parameter object appearing twice in a statement.
    by_username = starts_with(dialect, users.c.username_lower, needle)
    by_display = starts_with(dialect, users.c.display_name_lower, needle)
    tier = sa.case(
        (users.c.username_lower == needle, sa.literal_column("0")),
        (starts_with(dialect, users.c.username_lower, needle), sa.literal_column("1")),
        else_=sa.literal_column("2"),
    )
    order = [tier, sa.func.length(users.c.username), users.c.id]
    if friends:  # friends first within a tier
        order.insert(
            1,
            sa.case(
                (users.c.id.in_(friends), sa.literal_column("0")), else_=sa.literal_column("1")
            ),
        )
    query = (
        sa.select(users, user_privacy.c.profile_visibility)
        .select_from(users.outerjoin(user_privacy, user_privacy.c.user_id == users.c.id))
        .where(
            sa.or_(by_username, by_display),
            # `|| ''` keeps the (unselective) status index out of the plan: without table
            # statistics SQLite would otherwise scan every active user instead of the two
            # prefix ranges (MULTI-INDEX OR on SQLite, BitmapOr on PostgreSQL).
            users.c.status.concat("") == "active",
            sa.or_(users.c.banned_until.is_(None), users.c.banned_until <= now),
            sa.or_(user_privacy.c.searchable.is_(None), user_privacy.c.searchable.is_(True)),
        )
        .order_by(*order)
        .limit(min(limit, SEARCH_LIMIT_MAX))
    )
    if blocked:
        query = query.where(users.c.id.not_in(blocked))
    rows = await services.db.fetch_all(query)
    frames = await equipped_frames(services, [row["id"] for row in rows])
    items = []
    for row in rows:
        visibility = row["profile_visibility"] or "public"
        is_friend = row["id"] in friends
        hidden = row["id"] != viewer_id and (
            visibility == "private" or (visibility == "friends" and not is_friend)
        )
        card = card_of(row, frames.get(row["id"]), is_private=hidden)
        items.append(SearchItem(**msgspec.structs.asdict(card), friend=is_friend))
    return items


async def log_search(services: Services, **entry: Any) -> None:
    for logger in SEARCH_LOGGERS:
        try:
            await logger(services, scope="users", **entry)
        except Exception as error:  # R26: a logging failure never affects the response
            log.warning("user search log failed: %s", error)
