"""Posting, editing and deleting comments (CM2, CM5, CM6; R24-R27, R33).

Threading stays exact under concurrency: a reply increments its parent's `reply_count` with
a conditional update (`WHERE state = 'visible'`) in the insert's transaction, so a reply and a
delete of its parent racing end either with the reply counted and the parent a placeholder,
or with the reply refused (409 parent_deleted), never with a reply under a vanished parent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from msgspec import UNSET

from models import social_graph
from models.anime.comments.access import (
    access_comment,
    check_body,
    check_not_muted,
    comment_deleted,
    comment_not_found,
    is_staff,
    load_comment,
    require_anime,
)
from models.anime.comments.shapes import (
    Comment,
    Shaper,
    comment_of,
    emit_create,
    emit_delete,
    emit_update,
)
from models.anime.comments.tables import (
    EDIT_WINDOW,
    GAME_COMMENT_MIN_CHARS,
    MAX_DEPTH,
    POST_RATES,
    comment,
    comment_revision,
)
from models.anime.common import Origin, StaffAction, record_staff_action
from models.users import get_user, summary_of
from server.auth import Identity
from server.db import Transaction
from server.errors import ApiError, Code, FieldError
from server.ids import new_id
from server.services import Services

EDIT_RETRIES = 3


# --- side effects other groups plug in (R33) ---------------------------------------------------


@dataclass(frozen=True)
class CommentReply:
    """A reply to someone else's comment: social.md's `notify` makes a `comment_reply`
    notification (group key `reply:<parent_id>`). Never sent across a block."""

    recipient_id: int
    author_id: int
    comment_id: int
    parent_id: int
    anime_id: int


@dataclass(frozen=True)
class CommentPosted:
    """A comment of ≥ 20 characters: game.md's metric `comments_posted`."""

    user_id: int
    comment_id: int
    anime_id: int

    @property
    def source_key(self) -> str:
        return f"comment:{self.comment_id}"


ReplyHook = Callable[[Services, Transaction, CommentReply], Awaitable[None]]
PostedHook = Callable[[Services, Transaction, CommentPosted], Awaitable[None]]
REPLY_HOOKS: list[ReplyHook] = []
POSTED_HOOKS: list[PostedHook] = []


def _bad(field: str, message: str, code: Code = Code.validation_failed) -> ApiError:
    return ApiError(code, f"{field}: {message}", errors=[FieldError(field, message)])


# --- CM2 -------------------------------------------------------------------------------------


async def do_post(
    services: Services,
    identity: Identity,
    anime_id: int,
    body: str,
    *,
    parent_id: int | None = None,
    spoiler: bool = False,
) -> Comment:
    """CM2: a comment or a reply; COMMENT_CREATE to `anime:{id}` after commit."""
    db = services.db
    check_not_muted(identity)
    text = check_body(body)
    await require_anime(services, anime_id)
    parent = None
    if parent_id is not None:
        parent = await load_comment(services, parent_id)
        if parent is None or (
            parent["author_id"] != identity.user_id
            and await social_graph.is_blocked(services, identity.user_id, parent["author_id"])
        ):
            raise comment_not_found()
        if parent["target_id"] != anime_id:
            raise _bad("parent_id", "the parent is on another anime")
        if parent["state"] != "visible":
            raise ApiError(Code.parent_deleted, "The comment you reply to has been deleted")
        if parent["depth"] >= MAX_DEPTH:
            raise _bad("parent_id", f"replies nest at most {MAX_DEPTH + 1} levels", Code.max_depth)
    for rule in POST_RATES:
        await services.limiter.check(rule, "comment-post", str(identity.user_id))
    comment_id = new_id()
    row: dict[str, Any] = {
        "id": comment_id,
        "target_type": "anime",
        "target_id": anime_id,
        "author_id": identity.user_id,
        "parent_id": parent_id,
        "root_id": comment_id if parent is None else parent["root_id"],
        "depth": 0 if parent is None else parent["depth"] + 1,
        "body": text,
        "spoiler": spoiler,
        "state": "visible",
        "collapsed": False,
        "ups": 0,
        "downs": 0,
        "score": 0,
        "best_key": 0,
        "controversy_key": 0,
        "reply_count": 0,
        "created_at": datetime.now(UTC),
        "edited_at": None,
        "deleted_at": None,
    }
    author = await get_user(db, identity.user_id)
    assert author is not None
    async with db.transaction() as tx:
        if parent is not None:
            counted = await db.fetch_one(
                comment.update()
                .where(comment.c.id == parent["id"], comment.c.state == "visible")
                .values(reply_count=comment.c.reply_count + 1)
                .returning(comment.c.id)
            )
            if counted is None:
                raise ApiError(Code.parent_deleted, "The comment you reply to has been deleted")
        await db.execute(comment.insert().values(**row))
        emit_create(tx, row, comment_of(row, "visible", summary_of(author), my_vote=UNSET))
        if len(text) >= GAME_COMMENT_MIN_CHARS:
            posted = CommentPosted(
                user_id=identity.user_id, comment_id=comment_id, anime_id=anime_id
            )
            for hook in POSTED_HOOKS:
                await hook(services, tx, posted)
        if parent is not None and parent["author_id"] != identity.user_id:
            reply = CommentReply(
                recipient_id=parent["author_id"],
                author_id=identity.user_id,
                comment_id=comment_id,
                parent_id=parent["id"],
                anime_id=anime_id,
            )
            for reply_hook in REPLY_HOOKS:
                await reply_hook(services, tx, reply)
    return comment_of(row, "visible", summary_of(author), my_vote=0)


# --- CM5 -------------------------------------------------------------------------------------


async def do_edit(
    services: Services, identity: Identity, comment_id: int, changes: dict[str, Any]
) -> Comment:
    """CM5, R26: the author, within 24 h; the previous version becomes a revision. A change
    racing another edit is retried against the new version, so each revision is exactly the
    version it replaced."""
    db = services.db
    row = await _own_comment(services, identity, comment_id)
    check_not_muted(identity)
    new_body = check_body(changes["body"]) if "body" in changes else None
    for _ in range(1 + EDIT_RETRIES):
        _check_editable(row)
        body = row["body"] if new_body is None else new_body
        spoiler = changes.get("spoiler", row["spoiler"])
        if body == row["body"] and spoiler == row["spoiler"]:
            return await _as_author(services, identity, row)
        now = datetime.now(UTC)
        async with db.transaction() as tx:
            updated = await db.fetch_one(
                comment.update()
                .where(
                    comment.c.id == comment_id,
                    comment.c.state == "visible",
                    comment.c.created_at > now - EDIT_WINDOW,
                    comment.c.body == row["body"],
                    comment.c.spoiler == row["spoiler"],
                )
                .values(body=body, spoiler=spoiler, edited_at=now)
                .returning(*comment.c)
            )
            if updated is not None:
                await db.execute(
                    comment_revision.insert().values(
                        id=new_id(),
                        comment_id=comment_id,
                        body=row["body"],
                        spoiler=row["spoiler"],
                        created_at=now,
                    )
                )
                emit_update(tx, updated)
                return await _as_author(services, identity, updated)
        reloaded = await load_comment(services, comment_id)
        if reloaded is None:
            raise comment_not_found()
        row = reloaded
    raise ApiError(Code.conflict, "This comment is being edited elsewhere; retry")


async def _own_comment(services: Services, identity: Identity, comment_id: int) -> dict[str, Any]:
    """The caller's own comment (any state), or 403 for someone else's that they can see,
    404 for one they cannot."""
    row = await load_comment(services, comment_id)
    if row is None:
        raise comment_not_found()
    if row["author_id"] != identity.user_id:
        await access_comment(services, identity, comment_id)  # 404 when hidden from them
        raise ApiError(Code.forbidden, "Only the author can edit a comment")
    return row


def _check_editable(row: dict[str, Any]) -> None:
    if row["state"] != "visible":
        raise comment_deleted()
    if row["created_at"] + EDIT_WINDOW <= datetime.now(UTC):
        raise ApiError(Code.edit_window_closed, "Comments can be edited for 24 hours")


async def _as_author(services: Services, identity: Identity, row: dict[str, Any]) -> Comment:
    shaped = await Shaper(services.db, identity.user_id, set()).one(row)
    assert shaped is not None
    return shaped


# --- CM6 -------------------------------------------------------------------------------------


async def do_delete(
    services: Services, identity: Identity, comment_id: int, origin: Origin
) -> None:
    """CM6, R27: the author's delete sets `deleted`, a moderator's `removed` (audited). The
    body stays for staff. 204 on a repeat; a no-op emits nothing."""
    db = services.db
    row = await load_comment(services, comment_id)
    if row is None:
        raise comment_not_found()
    by_author = row["author_id"] == identity.user_id
    if not by_author and not is_staff(identity):
        await access_comment(services, identity, comment_id)  # 404 when hidden from them
        raise ApiError(Code.forbidden, "Only the author or a moderator can delete a comment")
    state = "deleted" if by_author else "removed"
    now = datetime.now(UTC)
    async with db.transaction() as tx:
        updated = await db.fetch_one(
            comment.update()
            .where(comment.c.id == comment_id, comment.c.state == "visible")
            .values(state=state, deleted_at=now)
            .returning(*comment.c)
        )
        if updated is None:  # already deleted or removed: nothing to do
            return
        emit_delete(tx, updated)
        if not by_author:
            await record_staff_action(
                services,
                tx,
                StaffAction(
                    actor_id=identity.user_id,
                    actor_role=identity.role,
                    action="comment.remove",
                    target_type="comment",
                    target_id=str(comment_id),
                    ip=origin.ip,
                    user_agent=origin.user_agent,
                    before={"state": "visible"},
                    after={"state": "removed"},
                ),
            )
