"""Comments in a user's data export (users.md R10). On account deletion comments stay,
attributed to the anonymized "deleted user" (users.md R9), so no deletion hook is needed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from models.anime.comments.tables import comment
from models.exports import exporter
from server.events import rfc3339
from server.services import Services


@exporter("comments")
async def export_comments(services: Services, user_id: int) -> list[dict[str, Any]]:
    rows = await services.db.fetch_all(
        sa.select(comment).where(comment.c.author_id == user_id).order_by(comment.c.id)
    )
    return [
        {
            "id": str(row["id"]),
            "anime_id": row["target_id"],
            "parent_id": str(row["parent_id"]) if row["parent_id"] is not None else None,
            "body": row["body"],
            "spoiler": row["spoiler"],
            "state": row["state"],
            "created_at": rfc3339(row["created_at"]),
            "edited_at": rfc3339(row["edited_at"]) if row["edited_at"] else None,
        }
        for row in rows
    ]
