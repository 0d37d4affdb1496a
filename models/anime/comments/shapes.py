"""What comments look like outside (anime.md §4 "Comment"), their events, and the ranking
functions of R29."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import sqlalchemy as sa
from msgspec import UNSET, UnsetType

from models.anime.comments.tables import comment_vote
from models.anime.common import PUBLIC_ACTIVITY_TOPIC
from models.users import UserSummary, summary_of, users
from server.db import Database, Transaction
from server.events import event_type, make_event, rfc3339

WILSON_Z = 1.281551565545  # 80 %: Reddit's "best"


def best_key(ups: int, downs: int) -> int:
    """floor(10⁹ × the Wilson score interval's lower bound); 0 without votes (R29)."""
    n = ups + downs
    if n == 0:
        return 0
    z2 = WILSON_Z * WILSON_Z
    p = ups / n
    lower = (p + z2 / (2 * n) - WILSON_Z * math.sqrt((p * (1 - p) + z2 / (4 * n)) / n)) / (
        1 + z2 / n
    )
    return max(0, math.floor(1e9 * lower))


def controversy_key(ups: int, downs: int) -> int:
    """floor(10⁶ × (ups+downs)^(min/max)) when both sides voted, else 0 (R29)."""
    if ups <= 0 or downs <= 0:
        return 0
    return math.floor(1e6 * (ups + downs) ** (min(ups, downs) / max(ups, downs)))


def ranking(ups: int, downs: int) -> dict[str, int]:
    """Every stored value derived from the counts (R28: equal after every commit)."""
    return {
        "ups": ups,
        "downs": downs,
        "score": ups - downs,
        "best_key": best_key(ups, downs),
        "controversy_key": controversy_key(ups, downs),
    }


class Comment(msgspec.Struct):
    id: str
    anime_id: int
    parent_id: str | None
    root_id: str
    depth: int
    author: UserSummary | None
    body: str | None
    spoiler: bool
    state: str  # visible deleted removed blocked
    collapsed: bool
    ups: int
    downs: int
    score: int
    reply_count: int
    created_at: str
    edited_at: str | None
    my_vote: int | UnsetType = UNSET  # with auth only
    replies: list[Comment] | UnsetType = UNSET  # CM1's inline replies


class CommentPage(msgspec.Struct):
    items: list[Comment]
    next_cursor: str | None


class AnimeImage(msgspec.Struct):
    original: str | None
    preview: str | None
    x96: str | None
    x48: str | None


class AnimeCompact(msgspec.Struct):
    """anime.md §1 AnimeCompact, as CM3 embeds it."""

    id: int
    name: str
    russian: str | None
    english: str | None
    image: AnimeImage
    kind: str | None
    score: float
    status: str | None
    episodes: int
    episodes_aired: int
    aired_on: str | None
    released_on: str | None
    season: str | None
    rating: str | None


class Permalink(msgspec.Struct):
    comment: Comment
    ancestors: list[Comment]
    anime: AnimeCompact


class AnimeRef(msgspec.Struct):
    id: int
    name: str
    russian: str | None


class UserComment(Comment):
    """CM9: a comment with the anime it is on."""

    anime: AnimeRef | None = None


class UserCommentPage(msgspec.Struct):
    items: list[UserComment]
    next_cursor: str | None


class VoteResult(msgspec.Struct):
    id: str
    ups: int
    downs: int
    score: int
    my_vote: int


# --- events ----------------------------------------------------------------------------------


class CommentCreate(msgspec.Struct):
    comment: Comment  # without my_vote


class CommentUpdate(msgspec.Struct):
    id: str
    body: str
    spoiler: bool
    edited_at: str
    # Not in anime.md's table: the gateway needs the author to drop the event for readers in
    # a block relation with them (R31), as COMMENT_CREATE's `comment.author` allows.
    author_id: str


class CommentDelete(msgspec.Struct):
    id: str
    state: str
    placeholder: bool


class CommentVote(msgspec.Struct):
    id: str
    ups: int
    downs: int
    score: int


COMMENT_CREATE = event_type("COMMENT_CREATE", CommentCreate)
COMMENT_UPDATE = event_type("COMMENT_UPDATE", CommentUpdate)
COMMENT_DELETE = event_type("COMMENT_DELETE", CommentDelete)
COMMENT_VOTE = event_type("COMMENT_VOTE", CommentVote)


def topic_of(row: dict[str, Any]) -> str:
    return f"{row['target_type']}:{row['target_id']}"


def emit_create(tx: Transaction, row: dict[str, Any], shown: Comment) -> None:
    tx.emit(
        make_event(
            COMMENT_CREATE, CommentCreate(comment=shown), [topic_of(row), PUBLIC_ACTIVITY_TOPIC]
        )
    )


def emit_update(tx: Transaction, row: dict[str, Any]) -> None:
    payload = CommentUpdate(
        id=str(row["id"]),
        body=row["body"],
        spoiler=row["spoiler"],
        edited_at=rfc3339(row["edited_at"]),
        author_id=str(row["author_id"]),
    )
    tx.emit(make_event(COMMENT_UPDATE, payload, [topic_of(row)]))


def emit_delete(tx: Transaction, row: dict[str, Any]) -> None:
    payload = CommentDelete(
        id=str(row["id"]), state=row["state"], placeholder=row["reply_count"] > 0
    )
    tx.emit(make_event(COMMENT_DELETE, payload, [topic_of(row)]))


def vote_event(row: dict[str, Any]):
    payload = CommentVote(id=str(row["id"]), ups=row["ups"], downs=row["downs"], score=row["score"])
    return make_event(COMMENT_VOTE, payload, [topic_of(row)])


# --- building shapes ---------------------------------------------------------------------------


def shown_state(row: dict[str, Any], blocked: set[int]) -> str | None:
    """How a viewer sees a comment (R27, R31): its state; `blocked` for a visible comment by
    someone in a block relation with them; None when it is left out (not visible, no replies)."""
    if row["state"] != "visible":
        return row["state"] if row["reply_count"] > 0 else None
    if row["author_id"] in blocked:
        return "blocked" if row["reply_count"] > 0 else None
    return "visible"


def shown_filter(comment_table: sa.Table, blocked: set[int]) -> sa.ColumnElement[bool]:
    """SQL for "not left out" (shown_state is not None), so pages are full."""
    visible = comment_table.c.state == "visible"
    if blocked:
        visible = sa.and_(visible, comment_table.c.author_id.not_in(blocked))
    return sa.or_(visible, comment_table.c.reply_count > 0)


class Shaper:
    """Turns rows into Comments for one viewer, loading authors and votes in one query each."""

    def __init__(self, db: Database, viewer_id: int | None, blocked: set[int]) -> None:
        self.db = db
        self.viewer_id = viewer_id
        self.blocked = blocked

    async def shape(self, rows: list[dict[str, Any]]) -> list[Comment]:
        shown = [(row, shown_state(row, self.blocked)) for row in rows]
        shown = [(row, state) for row, state in shown if state is not None]
        author_ids = {row["author_id"] for row, state in shown if state == "visible"}
        authors: dict[int, UserSummary] = {}
        if author_ids:
            found = await self.db.fetch_all(
                sa.select(
                    users.c.id, users.c.username, users.c.display_name, users.c.custom_avatar_url
                ).where(users.c.id.in_(author_ids))
            )
            authors = {r["id"]: summary_of(r) for r in found}
        votes: dict[int, int] = {}
        if self.viewer_id is not None and shown:
            found = await self.db.fetch_all(
                sa.select(comment_vote.c.comment_id, comment_vote.c.value).where(
                    comment_vote.c.user_id == self.viewer_id,
                    comment_vote.c.comment_id.in_([row["id"] for row, _ in shown]),
                )
            )
            votes = {r["comment_id"]: r["value"] for r in found}
        return [
            comment_of(
                row,
                state,
                authors.get(row["author_id"]),
                votes.get(row["id"], 0) if self.viewer_id is not None else UNSET,
            )
            for row, state in shown
        ]

    async def one(self, row: dict[str, Any]) -> Comment | None:
        shaped = await self.shape([row])
        return shaped[0] if shaped else None


def comment_of(
    row: dict[str, Any], state: str, author: UserSummary | None, my_vote: int | UnsetType
) -> Comment:
    placeholder = state != "visible"
    return Comment(
        id=str(row["id"]),
        anime_id=row["target_id"],
        parent_id=str(row["parent_id"]) if row["parent_id"] is not None else None,
        root_id=str(row["root_id"]),
        depth=row["depth"],
        author=None if placeholder else author,
        body=None if placeholder else row["body"],
        spoiler=row["spoiler"],
        state=state,
        collapsed=row["collapsed"],
        ups=row["ups"],
        downs=row["downs"],
        score=row["score"],
        reply_count=row["reply_count"],
        created_at=rfc3339(row["created_at"]),
        edited_at=rfc3339(row["edited_at"]) if row["edited_at"] else None,
        my_vote=my_vote,
    )
