"""Comments (anime.md §4, CM1-CM9): threaded comments on anime pages, with votes.

Reads are public (any bot key may read them); writes need a user, or a bot with
`comments:write` (auth.md R23: post, edit, delete and vote, mute rules included); reports are
never a bot's. Moderation powers never come with a bot key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import Response

from models.anime import comments
from models.anime.comments.tables import ReportReason, Sort
from models.anime.common import CURSOR_MAX, Origin
from server.auth import ANY_SCOPE
from server.errors import ApiError, Code, validation_error
from server.http import Call, conditional, endpoint, strong_etag
from server.ids import parse_snowflake
from server.schemas import Schema

WRITE = "comments:write"
ANIME_ID_MAX = 2**31 - 1

Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=CURSOR_MAX)]
SnowflakeText = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,20}$")]
# A generous bound; the exact rule (1..4000 code points after trimming) is the model's.
Body = Annotated[str, msgspec.Meta(max_length=16_000)]

COMMON_ERRORS = [Code.unauthorized, Code.banned, Code.bot_not_allowed, Code.insufficient_scope]
_encoder = msgspec.json.Encoder()


def _anime_id(call: Call) -> int:
    try:
        return call.path_int("anime_id", ANIME_ID_MAX)
    except ApiError:
        raise ApiError(Code.anime_not_found, "There is no such anime") from None


def _comment_id(call: Call) -> int:
    try:
        return call.path_id("comment_id")
    except ApiError:
        raise ApiError(Code.not_found, "There is no such comment") from None


def _changes(body: msgspec.Struct) -> dict[str, Any]:
    return {
        name: getattr(body, name)
        for name in body.__struct_fields__
        if getattr(body, name) is not UNSET
    }


class ThreadQuery(Schema):
    sort: Sort = "best"
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20
    cursor: Cursor | None = None


# --- CM1, CM2 --------------------------------------------------------------------------------


@endpoint(
    "GET",
    "/anime/{anime_id}/comments",
    query=ThreadQuery,
    response=comments.CommentPage,
    auth="optional",
    bot_scope=ANY_SCOPE,
    response_headers=("Cache-Control", "ETag"),
    errors=[Code.unauthorized, Code.banned, Code.anime_not_found, Code.validation_failed],
)
async def list_anime_comments(call: Call[None, ThreadQuery]) -> Response:
    """An anime's top-level comments, each with up to 3 replies."""
    page = await comments.list_anime_comments(
        call.services,
        call.identity,
        _anime_id(call),
        sort=call.query.sort,
        limit=call.query.limit,
        cursor=call.query.cursor,
    )
    body = _encoder.encode(page)
    return conditional(call.request, body, strong_etag(body), {"Cache-Control": "no-cache"})


class CommentPost(Schema):
    body: Body
    parent_id: SnowflakeText | None = None
    spoiler: bool = False


@endpoint(
    "POST",
    "/anime/{anime_id}/comments",
    body=CommentPost,
    response=comments.Comment,
    status=201,
    auth="user",
    bot_scope=WRITE,
    errors=[
        *COMMON_ERRORS,
        Code.muted,
        Code.anime_not_found,
        Code.not_found,
        Code.validation_failed,
        Code.max_depth,
        Code.parent_deleted,
        Code.rate_limited,
    ],
)
async def post_comment(call: Call[CommentPost, None]) -> comments.Comment:
    """Comment on an anime, or reply to a comment."""
    body = call.body
    parent_id = None
    if body.parent_id is not None:
        parent_id = parse_snowflake(body.parent_id)
        if parent_id is None:
            raise ApiError(Code.not_found, "There is no such comment")
    return await comments.do_post(
        call.services,
        call.user,
        _anime_id(call),
        body.body,
        parent_id=parent_id,
        spoiler=body.spoiler,
    )


# --- CM3-CM8 ---------------------------------------------------------------------------------


@endpoint(
    "GET",
    "/comments/{comment_id}",
    response=comments.Permalink,
    auth="optional",
    bot_scope=ANY_SCOPE,
    errors=[Code.unauthorized, Code.banned, Code.not_found],
)
async def get_comment(call: Call) -> comments.Permalink:
    """A comment with its ancestors (root first) and its anime."""
    return await comments.permalink(call.services, call.identity, _comment_id(call))


@endpoint(
    "GET",
    "/comments/{comment_id}/replies",
    query=ThreadQuery,
    response=comments.CommentPage,
    auth="optional",
    bot_scope=ANY_SCOPE,
    errors=[Code.unauthorized, Code.banned, Code.not_found, Code.validation_failed],
)
async def list_comment_replies(call: Call[None, ThreadQuery]) -> comments.CommentPage:
    """A comment's direct replies, paged."""
    return await comments.list_replies(
        call.services,
        call.identity,
        _comment_id(call),
        sort=call.query.sort,
        limit=call.query.limit,
        cursor=call.query.cursor,
    )


class CommentEdit(Schema):
    body: Body | UnsetType = UNSET
    spoiler: bool | UnsetType = UNSET


@endpoint(
    "PATCH",
    "/comments/{comment_id}",
    body=CommentEdit,
    response=comments.Comment,
    auth="user",
    bot_scope=WRITE,
    errors=[
        *COMMON_ERRORS,
        Code.forbidden,
        Code.muted,
        Code.not_found,
        Code.validation_failed,
        Code.edit_window_closed,
        Code.comment_deleted,
        Code.conflict,
    ],
)
async def edit_comment(call: Call[CommentEdit, None]) -> comments.Comment:
    """Edit my comment within 24 hours of posting it."""
    return await comments.do_edit(call.services, call.user, _comment_id(call), _changes(call.body))


@endpoint(
    "DELETE",
    "/comments/{comment_id}",
    status=204,
    auth="user",
    bot_scope=WRITE,
    errors=[*COMMON_ERRORS, Code.forbidden, Code.not_found],
)
async def delete_comment(call: Call) -> None:
    """Delete my comment (a moderator removes anyone's); replies keep their place."""
    await comments.do_delete(
        call.services,
        call.user,
        _comment_id(call),
        Origin(ip=call.client_ip, user_agent=call.user_agent),
    )


class Vote(Schema):
    value: Literal[-1, 0, 1]


@endpoint(
    "PUT",
    "/comments/{comment_id}/vote",
    body=Vote,
    response=comments.VoteResult,
    auth="user",
    bot_scope=WRITE,
    errors=[
        *COMMON_ERRORS,
        Code.own_comment,
        Code.not_found,
        Code.validation_failed,
        Code.comment_deleted,
        Code.rate_limited,
    ],
)
async def vote_comment(call: Call[Vote, None]) -> comments.VoteResult:
    """Vote +1 or -1 on a comment; 0 removes my vote."""
    return await comments.do_vote(call.services, call.user, _comment_id(call), call.body.value)


class Report(Schema):
    reason: ReportReason
    text: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


@endpoint(
    "POST",
    "/comments/{comment_id}/report",
    body=Report,
    status=204,
    auth="user",
    errors=[
        *COMMON_ERRORS,
        Code.own_comment,
        Code.not_found,
        Code.validation_failed,
        Code.comment_deleted,
        Code.rate_limited,
    ],
)
async def report_comment(call: Call[Report, None]) -> None:
    """Report a comment to the moderators (a repeat changes nothing)."""
    await comments.do_report(
        call.services, call.user, _comment_id(call), call.body.reason, call.body.text
    )


# --- CM9 -------------------------------------------------------------------------------------


class UserCommentsQuery(Schema):
    before: SnowflakeText | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50


@endpoint(
    "GET",
    "/users/{user_id}/comments",
    query=UserCommentsQuery,
    response=comments.UserCommentPage,
    auth="optional",
    bot_scope=ANY_SCOPE,
    errors=[Code.unauthorized, Code.banned, Code.user_not_found, Code.validation_failed],
)
async def list_user_comments(call: Call[None, UserCommentsQuery]) -> comments.UserCommentPage:
    """A user's visible comments, newest first."""
    try:
        user_id = call.path_id("user_id")
    except ApiError:
        raise ApiError(Code.user_not_found, "There is no such user") from None
    before = None
    if call.query.before is not None:
        before = parse_snowflake(call.query.before)
        if before is None:
            raise validation_error("before", "not an id")
    return await comments.list_user_comments(
        call.services, call.identity, user_id, before=before, limit=call.query.limit
    )


routes = [
    list_anime_comments,
    post_comment,
    get_comment,
    list_comment_replies,
    edit_comment,
    delete_comment,
    vote_comment,
    report_comment,
    list_user_comments,
]
