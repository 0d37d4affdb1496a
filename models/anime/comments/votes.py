"""Votes and reports (CM7, CM8; R28, R32, R33) and the throttled COMMENT_VOTE event.

Both start by claiming the comment row with a conditional update (`WHERE state = 'visible'`):
on PostgreSQL that row lock orders every vote (and report) on one comment, so each reads the
voter's previous vote, writes the new one and stores counters computed from the previous
counters plus exactly its own change; on SQLite the write transaction is exclusive anyway.
After every commit `ups`, `downs`, `score`, `best_key` and `controversy_key` therefore equal
what the vote rows say, however many votes race (R28). The unique keys (comment, user) of
votes and reports make "one per user" a database fact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from models.anime.comments.access import (
    access_for_action,
    comment_deleted,
)
from models.anime.comments.shapes import VoteResult, ranking, vote_event
from models.anime.comments.tables import (
    COLLAPSE_AT_REPORTERS,
    REPORT_RATE,
    REPORT_TEXT_MAX,
    VOTE_EVENT_WINDOW_S,
    VOTE_RATE,
    comment,
    comment_report,
    comment_vote,
)
from models.anime.common import clean_text
from server.auth import Identity
from server.db import Transaction
from server.errors import ApiError, Code
from server.ids import new_id
from server.jobs import enqueue, job_handler
from server.services import Services

VOTE_EVENT_JOB = "comment_vote_event"


@dataclass(frozen=True)
class UpvoteReceived:
    """A +1 on someone's comment: game.md's metric `upvotes_received`, deduplicated by
    `source_key` (comment, voter), so toggling a vote cannot farm it (R33)."""

    author_id: int
    voter_id: int
    comment_id: int

    @property
    def source_key(self) -> str:
        return f"upvote:{self.comment_id}:{self.voter_id}"


UpvoteHook = Callable[[Services, Transaction, UpvoteReceived], Awaitable[None]]
UPVOTE_HOOKS: list[UpvoteHook] = []


async def _claim(services: Services, comment_id: int) -> dict[str, Any]:
    """Lock the comment for this vote or report; 409 when it is no longer visible."""
    claimed = await services.db.fetch_one(
        comment.update()
        .where(comment.c.id == comment_id, comment.c.state == "visible")
        .values(ups=comment.c.ups)
        .returning(*comment.c)
    )
    if claimed is None:
        raise comment_deleted()
    return claimed


def _check_target(identity: Identity, row: dict[str, Any], what: str) -> None:
    if row["author_id"] == identity.user_id:
        raise ApiError(Code.own_comment, f"You cannot {what} your own comment")
    if row["state"] != "visible":
        raise comment_deleted()


# --- CM7 -------------------------------------------------------------------------------------


async def do_vote(
    services: Services, identity: Identity, comment_id: int, value: int
) -> VoteResult:
    """CM7: +1, -1, or 0 to remove the vote. The same value again is a no-op."""
    db = services.db
    row = await access_for_action(services, identity, comment_id)
    _check_target(identity, row, "vote on")
    await services.limiter.check(VOTE_RATE, "comment-vote", str(identity.user_id))
    user_id = identity.user_id
    async with db.transaction() as tx:
        claimed = await _claim(services, comment_id)
        where = (comment_vote.c.comment_id == comment_id, comment_vote.c.user_id == user_id)
        previous = await db.fetch_val(sa.select(comment_vote.c.value).where(*where)) or 0
        if previous == value:
            return _result(claimed, value)
        now = datetime.now(UTC)
        if value == 0:
            await db.execute(comment_vote.delete().where(*where))
        elif previous == 0:
            await db.execute(
                comment_vote.insert().values(
                    comment_id=comment_id, user_id=user_id, value=value, updated_at=now
                )
            )
        else:
            await db.execute(
                comment_vote.update().where(*where).values(value=value, updated_at=now)
            )
        ups = claimed["ups"] + (value == 1) - (previous == 1)
        downs = claimed["downs"] + (value == -1) - (previous == -1)
        updated = await db.fetch_one(
            comment.update()
            .where(comment.c.id == comment_id)
            .values(**ranking(ups, downs))
            .returning(*comment.c)
        )
        assert updated is not None
        if value == 1:
            upvote = UpvoteReceived(
                author_id=row["author_id"], voter_id=user_id, comment_id=comment_id
            )
            for hook in UPVOTE_HOOKS:
                await hook(services, tx, upvote)

        async def announce() -> None:
            await schedule_vote_event(services, comment_id)

        tx.on_commit(announce)
    return _result(updated, value)


def _result(row: dict[str, Any], my_vote: int) -> VoteResult:
    return VoteResult(
        id=str(row["id"]), ups=row["ups"], downs=row["downs"], score=row["score"], my_vote=my_vote
    )


def _window_key(comment_id: int) -> str:
    return f"comment-vote-window:{comment_id}"


async def schedule_vote_event(services: Services, comment_id: int) -> None:
    """COMMENT_VOTE at most once per comment per 2 s, trailing: the first vote of a window
    schedules the event; the job publishes the counts as they are when it runs."""
    if await services.cache.add(_window_key(comment_id), b"1", VOTE_EVENT_WINDOW_S):
        await enqueue(
            services.db,
            VOTE_EVENT_JOB,
            {"comment_id": str(comment_id)},
            delay=timedelta(seconds=VOTE_EVENT_WINDOW_S),
        )


@job_handler(VOTE_EVENT_JOB)
async def publish_vote_counts(services: Services, payload: dict[str, Any]) -> None:
    comment_id = int(payload["comment_id"])
    # Open the next window first: a vote committing after the read below schedules its own.
    await services.cache.delete(_window_key(comment_id))
    row = await services.db.fetch_one(sa.select(comment).where(comment.c.id == comment_id))
    if row is None or row["state"] != "visible":
        return
    async with services.db.transaction() as tx:
        tx.emit(vote_event(row))


# --- CM8 -------------------------------------------------------------------------------------


async def do_report(
    services: Services, identity: Identity, comment_id: int, reason: str, text: str | None
) -> None:
    """CM8, R32: one report per reporter; from 5 distinct open reporters the comment is
    collapsed until a moderator resolves it. A repeat is a no-op."""
    db = services.db
    row = await access_for_action(services, identity, comment_id)
    _check_target(identity, row, "report")
    note = None
    if text is not None:
        note = clean_text(text, "text", maximum=REPORT_TEXT_MAX, multiline=True) or None
    await services.limiter.check(REPORT_RATE, "comment-report", str(identity.user_id))
    async with db.transaction():
        claimed = await _claim(services, comment_id)
        inserted = await db.fetch_one(
            db.insert(comment_report)
            .values(
                id=new_id(),
                comment_id=comment_id,
                reporter_id=identity.user_id,
                reason=reason,
                text=note,
                state="open",
                created_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing(index_elements=["comment_id", "reporter_id"])
            .returning(comment_report.c.id)
        )
        if inserted is None or claimed["collapsed"]:
            return
        open_reporters = await db.fetch_val(
            sa.select(sa.func.count()).where(
                comment_report.c.comment_id == comment_id, comment_report.c.state == "open"
            )
        )
        if open_reporters >= COLLAPSE_AT_REPORTERS:
            await db.execute(
                comment.update().where(comment.c.id == comment_id).values(collapsed=True)
            )
