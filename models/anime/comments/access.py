"""Loading a comment as a caller may see it, and the checks every comment write shares
(R24's body and mute rules, R27's and R31's "treated like deleted")."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from models import social_graph
from models.anime.catalog_tables import anime
from models.anime.comments.shapes import shown_state
from models.anime.comments.tables import BODY_MAX, MAX_LINE_BREAKS, comment
from models.anime.common import clean_text
from server.auth import Identity
from server.errors import ApiError, Code
from server.events import rfc3339
from server.services import Services


def comment_not_found() -> ApiError:
    return ApiError(Code.not_found, "There is no such comment")


def anime_not_found() -> ApiError:
    return ApiError(Code.anime_not_found, "There is no such anime")


def comment_deleted() -> ApiError:
    return ApiError(Code.comment_deleted, "This comment has been deleted")


def is_staff(identity: Identity | None) -> bool:
    """Moderation belongs to staff sessions, never to bot keys."""
    return identity is not None and identity.is_staff and not identity.is_bot


def check_not_muted(identity: Identity) -> None:
    """R24: a muted user cannot post or edit (they may still vote and report)."""
    if identity.muted():
        assert identity.muted_until is not None
        raise ApiError(
            Code.muted,
            "You are muted and cannot post or edit comments",
            extra={"muted_until": rfc3339(identity.muted_until)},
        )


def check_body(value: str) -> str:
    """R24: trimmed, 1..4000 code points, ≤ 100 line breaks, no control characters but
    `\\n` and `\\t` (CRLF counts as one line break)."""
    return clean_text(
        value, "body", minimum=1, maximum=BODY_MAX, multiline=True, max_line_breaks=MAX_LINE_BREAKS
    )


async def require_anime(services: Services, anime_id: int) -> dict[str, Any]:
    row = await services.db.fetch_one(sa.select(anime).where(anime.c.id == anime_id))
    if row is None:
        raise anime_not_found()
    return row


async def blocked_for(services: Services, identity: Identity | None) -> set[int]:
    """The users in a block relation with the caller, either direction (R31)."""
    if identity is None:
        return set()
    return await social_graph.blocked_ids(services, identity.user_id)


async def load_comment(services: Services, comment_id: int) -> dict[str, Any] | None:
    return await services.db.fetch_one(
        sa.select(comment).where(comment.c.id == comment_id, comment.c.target_type == "anime")
    )


async def access_comment(
    services: Services, identity: Identity | None, comment_id: int
) -> tuple[dict[str, Any], str, set[int]]:
    """The comment as the caller sees it (its shown state), or 404 when it is left out for
    them: unknown, deleted without replies, or by someone in a block relation with them."""
    row = await load_comment(services, comment_id)
    if row is None:
        raise comment_not_found()
    blocked = await blocked_for(services, identity)
    state = shown_state(row, blocked)
    if state is None:
        raise comment_not_found()
    return row, state, blocked


async def access_for_action(
    services: Services, identity: Identity, comment_id: int
) -> dict[str, Any]:
    """A comment the caller acts on (vote, report, reply): 404 when unknown or by someone in
    a block relation with them; 409 comment_deleted when deleted or removed (R27)."""
    row = await load_comment(services, comment_id)
    if row is None:
        raise comment_not_found()
    if row["author_id"] != identity.user_id and await social_graph.is_blocked(
        services, identity.user_id, row["author_id"]
    ):
        raise comment_not_found()
    return row
