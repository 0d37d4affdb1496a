"""Reading comments: an anime's threads (CM1), a permalink (CM3), replies (CM4), a user's
comments (CM9). Each page is a range scan of one index (tables.py); R30's cursor holds the
sort key and id of the last item."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from models.anime.catalog_tables import anime
from models.anime.comments.access import (
    access_comment,
    blocked_for,
    comment_not_found,
    require_anime,
)
from models.anime.comments.shapes import (
    AnimeCompact,
    AnimeImage,
    AnimeRef,
    Comment,
    CommentPage,
    Permalink,
    Shaper,
    UserComment,
    UserCommentPage,
    shown_filter,
)
from models.anime.comments.tables import INLINE_REPLIES, SORT_KEYS, comment
from models.anime.common import decode_cursor, encode_cursor, keyset_after
from models.users import get_user
from models.users.profiles import user_not_found
from server.auth import Identity
from server.services import Services


def _viewer(identity: Identity | None) -> int | None:
    return identity.user_id if identity is not None else None


def _ordered(query: sa.Select, sort: str) -> sa.Select:
    key = SORT_KEYS[sort]
    if key is comment.c.id:
        return query.order_by(comment.c.id.desc())
    return query.order_by(key.desc(), comment.c.id.desc())


async def _page(
    services: Services,
    query: sa.Select,
    sort: str,
    scope: str,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    key = SORT_KEYS[sort]
    if cursor is not None:
        last_key, last_id = decode_cursor(services, cursor, scope, 2)
        query = query.where(keyset_after(key, comment.c.id, last_key, last_id))
    rows = await services.db.fetch_all(_ordered(query, sort).limit(limit + 1))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor(services, scope, last[key.name], last["id"])


async def list_anime_comments(
    services: Services,
    identity: Identity | None,
    anime_id: int,
    *,
    sort: str,
    limit: int,
    cursor: str | None,
) -> CommentPage:
    """CM1: top-level comments, each with up to 3 replies in the same order."""
    await require_anime(services, anime_id)
    blocked = await blocked_for(services, identity)
    query = sa.select(comment).where(
        comment.c.target_type == "anime",
        comment.c.target_id == anime_id,
        comment.c.parent_id.is_(None),
        shown_filter(comment, blocked),
    )
    rows, next_cursor = await _page(services, query, sort, f"cm1:{anime_id}:{sort}", cursor, limit)
    shaper = Shaper(services.db, _viewer(identity), blocked)
    top = await shaper.shape(rows)
    parents = [row["id"] for row in rows if row["reply_count"] > 0]
    replies = await _inline_replies(services, shaper, parents, sort, blocked)
    for item in top:
        item.replies = replies.get(item.id, [])
    return CommentPage(items=top, next_cursor=next_cursor)


async def _inline_replies(
    services: Services, shaper: Shaper, parent_ids: list[int], sort: str, blocked: set[int]
) -> dict[str, list[Comment]]:
    """The first replies of each parent, one LIMIT 3 index range per parent, in one query."""
    if not parent_ids:
        return {}
    parts = [
        sa.select(
            _ordered(
                sa.select(comment).where(
                    comment.c.parent_id == parent_id, shown_filter(comment, blocked)
                ),
                sort,
            )
            .limit(INLINE_REPLIES)
            .subquery(f"replies_{n}")
        )
        for n, parent_id in enumerate(parent_ids)
    ]
    query = parts[0] if len(parts) == 1 else sa.union_all(*parts)
    rows = await services.db.fetch_all(query)
    key = SORT_KEYS[sort].name
    rows.sort(key=lambda r: (r["parent_id"], -r[key], -r["id"]))
    grouped: dict[str, list[Comment]] = {}
    for shaped in await shaper.shape(rows):
        assert shaped.parent_id is not None
        grouped.setdefault(shaped.parent_id, []).append(shaped)
    return grouped


async def list_replies(
    services: Services,
    identity: Identity | None,
    comment_id: int,
    *,
    sort: str,
    limit: int,
    cursor: str | None,
) -> CommentPage:
    """CM4: the direct replies of a comment the caller can see (a placeholder included)."""
    await access_comment(services, identity, comment_id)
    blocked = await blocked_for(services, identity)
    query = sa.select(comment).where(
        comment.c.parent_id == comment_id, shown_filter(comment, blocked)
    )
    rows, next_cursor = await _page(
        services, query, sort, f"cm4:{comment_id}:{sort}", cursor, limit
    )
    items = await Shaper(services.db, _viewer(identity), blocked).shape(rows)
    return CommentPage(items=items, next_cursor=next_cursor)


def anime_compact(row: dict[str, Any]) -> AnimeCompact:
    return AnimeCompact(
        id=row["id"],
        name=row["name"],
        russian=row["russian"],
        english=row["english"],
        image=AnimeImage(
            original=row["image_original"],
            preview=row["image_preview"],
            x96=row["image_x96"],
            x48=row["image_x48"],
        ),
        kind=row["kind"],
        score=round(row["score_x100"] / 100, 2),
        status=row["status"],
        episodes=row["episodes"],
        episodes_aired=row["episodes_aired"],
        aired_on=row["aired_on"].isoformat() if row["aired_on"] else None,
        released_on=row["released_on"].isoformat() if row["released_on"] else None,
        season=row["season"],
        rating=row["rating"],
    )


async def permalink(services: Services, identity: Identity | None, comment_id: int) -> Permalink:
    """CM3: the comment, its ancestors root first (placeholders where deleted or blocked),
    and the anime."""
    row, _, blocked = await access_comment(services, identity, comment_id)
    chain: list[dict[str, Any]] = []
    parent_id = row["parent_id"]
    while parent_id is not None:  # at most 7 steps (R25)
        parent = await services.db.fetch_one(sa.select(comment).where(comment.c.id == parent_id))
        if parent is None:
            break
        chain.append(parent)
        parent_id = parent["parent_id"]
    chain.reverse()
    shaped = await Shaper(services.db, _viewer(identity), blocked).shape([*chain, row])
    if not shaped or shaped[-1].id != str(row["id"]):
        raise comment_not_found()
    anime_row = await require_anime(services, row["target_id"])
    return Permalink(comment=shaped[-1], ancestors=shaped[:-1], anime=anime_compact(anime_row))


async def list_user_comments(
    services: Services,
    identity: Identity | None,
    user_id: int,
    *,
    before: int | None,
    limit: int,
) -> UserCommentPage:
    """CM9: a user's visible comments, newest first; 404 for a missing or deleted user and
    when a block lies between the two."""
    user = await get_user(services.db, user_id)
    if user is None or user["status"] == "deleted":
        raise user_not_found()
    blocked = await blocked_for(services, identity)
    if user_id in blocked:
        raise user_not_found()
    query = sa.select(comment).where(comment.c.author_id == user_id, comment.c.state == "visible")
    if before is not None:
        query = query.where(comment.c.id < before)
    rows = await services.db.fetch_all(query.order_by(comment.c.id.desc()).limit(limit + 1))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = str(rows[-1]["id"])
    shaped = await Shaper(services.db, _viewer(identity), blocked).shape(rows)
    anime_ids = {row["target_id"] for row in rows}
    titles: dict[int, AnimeRef] = {}
    if anime_ids:
        found = await services.db.fetch_all(
            sa.select(anime.c.id, anime.c.name, anime.c.russian).where(anime.c.id.in_(anime_ids))
        )
        titles = {
            r["id"]: AnimeRef(id=r["id"], name=r["name"], russian=r["russian"]) for r in found
        }
    items = [
        UserComment(
            **{f: getattr(c, f) for f in Comment.__struct_fields__},
            anime=titles.get(c.anime_id),
        )
        for c in shaped
    ]
    return UserCommentPage(items=items, next_cursor=next_cursor)
