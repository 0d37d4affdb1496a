"""The comment tables and the limits of anime.md §4 (Data, R24-R33).

Every list order has its index: top-level comments of a target (partial, parent_id IS NULL)
and the replies of a parent, each by best_key, score, controversy_key and id, all descending
with id as the tie-break, so a page is a range scan, never a sort of the whole thread.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import sqlalchemy as sa

from server.db import UTCDateTime, metadata

BODY_MAX = 4000
MAX_LINE_BREAKS = 100
MAX_DEPTH = 7  # depth 0..7: eight levels (R25)
EDIT_WINDOW = timedelta(hours=24)  # R26
INLINE_REPLIES = 3  # CM1: up to 3 replies under each top-level comment
COLLAPSE_AT_REPORTERS = 5  # R32
REPORT_TEXT_MAX = 500
GAME_COMMENT_MIN_CHARS = 20  # R33: `comment_posted` from 20 characters
VOTE_EVENT_WINDOW_S = 2.0  # COMMENT_VOTE: at most one per comment per 2 s, trailing
POST_RATES = ("5/minute", "200/day")  # R24, per user
VOTE_RATE = "60/minute"
REPORT_RATE = "20/hour"

Sort = Literal["best", "top", "new", "controversial"]
STATES = ("visible", "deleted", "removed")
ReportReason = Literal["spam", "harassment", "spoiler", "hate", "off_topic", "other"]
TOP_LEVEL = sa.text("parent_id IS NULL")

comment = sa.Table(
    "comment",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("target_type", sa.String(12), nullable=False),  # 'anime' ('collection': phase 2)
    sa.Column("target_id", sa.BigInteger, nullable=False),
    sa.Column("author_id", sa.BigInteger, nullable=False),
    sa.Column("parent_id", sa.BigInteger, nullable=True),
    sa.Column("root_id", sa.BigInteger, nullable=False),
    sa.Column("depth", sa.SmallInteger, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("spoiler", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("collapsed", sa.Boolean, nullable=False),
    sa.Column("ups", sa.Integer, nullable=False),
    sa.Column("downs", sa.Integer, nullable=False),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("best_key", sa.BigInteger, nullable=False),
    sa.Column("controversy_key", sa.BigInteger, nullable=False),
    sa.Column("reply_count", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("edited_at", UTCDateTime, nullable=True),
    sa.Column("deleted_at", UTCDateTime, nullable=True),
)

SORT_KEYS: dict[str, sa.Column] = {
    "best": comment.c.best_key,
    "top": comment.c.score,
    "controversial": comment.c.controversy_key,
    "new": comment.c.id,
}
for _name, _key in (
    ("best", comment.c.best_key),
    ("top", comment.c.score),
    ("controversial", comment.c.controversy_key),
):
    sa.Index(
        f"ix_comment_top_{_name}",
        comment.c.target_type,
        comment.c.target_id,
        _key.desc(),
        comment.c.id.desc(),
        postgresql_where=TOP_LEVEL,
        sqlite_where=TOP_LEVEL,
    )
    sa.Index(f"ix_comment_replies_{_name}", comment.c.parent_id, _key.desc(), comment.c.id.desc())
sa.Index(
    "ix_comment_top_new",
    comment.c.target_type,
    comment.c.target_id,
    comment.c.id.desc(),
    postgresql_where=TOP_LEVEL,
    sqlite_where=TOP_LEVEL,
)
sa.Index("ix_comment_replies_new", comment.c.parent_id, comment.c.id.desc())
sa.Index("ix_comment_author_id", comment.c.author_id, comment.c.id.desc())

comment_vote = sa.Table(
    "comment_vote",
    metadata,
    sa.Column("comment_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("value", sa.SmallInteger, nullable=False),  # +1 or -1; a 0 vote deletes the row
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_comment_vote_user_id", "user_id"),
)

comment_revision = sa.Table(
    "comment_revision",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("comment_id", sa.BigInteger, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("spoiler", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_comment_revision_comment_id_id", "comment_id", "id"),
)

comment_report = sa.Table(
    "comment_report",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("comment_id", sa.BigInteger, nullable=False),
    sa.Column("reporter_id", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(12), nullable=False),
    sa.Column("text", sa.String(REPORT_TEXT_MAX), nullable=True),
    sa.Column("state", sa.String(10), nullable=False),  # open resolved dismissed
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("comment_id", "reporter_id"),
    sa.Index("ix_comment_report_state_id", "state", "id"),  # admin.md A20's FIFO queue
)
