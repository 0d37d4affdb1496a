"""The anime list (anime.md §2): watch lists with Shikimori `user_rates` semantics.

- `tables`: the entry, history, import and idempotency tables, and the domain's constants;
- `rules`: R8's N1-N8 as pure functions;
- `writes`: L3, L4, L5 (the game's hook: ANIME_EPISODE_WATCHED and `provide_game_hook`);
- `reads`: L1, L2, L6, L7, L11 and profiles' `list_summary`;
- `transfer`: L8-L10, MAL XML and Shikimori JSON, the import job.

Importing this package plugs the list into the rest of the product: the profile's
`list_summary` (users.md R3), the account export (R10) and deletion (R9).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from models.anime.lists import reads, rules, tables, transfer, writes
from models.anime.lists.reads import (
    EntryPage,
    HistoryPage,
    ListStats,
    check_filter,
    get_entry,
    list_entries,
    list_history,
    list_stats,
    list_summary,
    view_user_list,
)
from models.anime.lists.shapes import (
    ANIME_EPISODE_WATCHED,
    ANIME_LIST_IMPORT_DONE,
    ANIME_LIST_MILESTONE,
    ANIME_LIST_UPDATE,
    Effects,
    EntryResult,
    EpisodeWatched,
    ImportJob,
    ImportQueued,
    ListEntry,
    ListMilestone,
)
from models.anime.lists.tables import (
    HISTORY_RETENTION_DAYS,
    IDEMPOTENCY_RETENTION_HOURS,
    anime_list_entry,
    anime_list_history,
    anime_list_idempotency,
    anime_list_import,
)
from models.anime.lists.transfer import do_start_import, export_list, get_import
from models.anime.lists.writes import (
    EpisodeOutcome,
    PutOutcome,
    do_delete_entry,
    do_increment_episode,
    do_put_entry,
    provide_game_hook,
)
from models.exports import exporter
from models.users.deletion import on_account_deleted
from models.users.profiles import provide_profile_part
from server.db import Transaction
from server.events import rfc3339
from server.ids import snowflake_at
from server.services import Services

__all__ = [
    "ANIME_EPISODE_WATCHED",
    "ANIME_LIST_IMPORT_DONE",
    "ANIME_LIST_MILESTONE",
    "ANIME_LIST_UPDATE",
    "Effects",
    "EntryPage",
    "EntryResult",
    "EpisodeOutcome",
    "EpisodeWatched",
    "HistoryPage",
    "ImportJob",
    "ImportQueued",
    "ListEntry",
    "ListMilestone",
    "ListStats",
    "PutOutcome",
    "check_filter",
    "do_delete_entry",
    "do_increment_episode",
    "do_put_entry",
    "do_start_import",
    "export_list",
    "get_entry",
    "get_import",
    "list_entries",
    "list_history",
    "list_stats",
    "list_summary",
    "provide_game_hook",
    "reads",
    "rules",
    "sweep_anime_lists",
    "tables",
    "transfer",
    "view_user_list",
    "writes",
]

SWEEP_EVERY_S = 3600.0
SWEEP_BATCH = 5000

provide_profile_part("list_summary", list_summary)


async def sweep_anime_lists(services: Services, now: datetime | None = None) -> int:
    """Prune history older than HISTORY_RETENTION_DAYS (anime.md §2 Data) and stored
    Idempotency-Key answers older than IDEMPOTENCY_RETENTION_HOURS; returns rows removed.
    History ids are time-ordered snowflakes, so the cut is an id bound."""
    now = now or datetime.now(UTC)
    db = services.db
    cut = snowflake_at(now - timedelta(days=HISTORY_RETENTION_DAYS))
    removed = 0
    while True:
        batch = await db.fetch_all(
            sa.select(anime_list_history.c.id)
            .where(anime_list_history.c.id < cut)
            .order_by(anime_list_history.c.id)
            .limit(SWEEP_BATCH)
        )
        if not batch:
            break
        await db.execute(
            anime_list_history.delete().where(
                anime_list_history.c.id.in_([row["id"] for row in batch])
            )
        )
        removed += len(batch)
    keys = await db.fetch_all(
        anime_list_idempotency.delete()
        .where(
            anime_list_idempotency.c.created_at < now - timedelta(hours=IDEMPOTENCY_RETENTION_HOURS)
        )
        .returning(anime_list_idempotency.c.key)
    )
    return removed + len(keys)


@exporter("anime_list")
async def export_for_account(services: Services, user_id: int) -> dict[str, Any]:
    """users.md R10: the list (with notes and dates) and its change log."""
    entries = transfer.shikimori_rates(await transfer.export_rows(services, user_id))
    history = await services.db.fetch_all(
        sa.select(anime_list_history)
        .where(anime_list_history.c.user_id == user_id)
        .order_by(anime_list_history.c.id)
    )
    return {
        "entries": entries,
        "history": [
            {
                "id": str(row["id"]),
                "anime_id": row["anime_id"],
                "action": row["action"],
                "before": row["before"],
                "after": row["after"],
                "created_at": rfc3339(row["created_at"]),
            }
            for row in history
        ],
    }


@on_account_deleted
async def _forget_list(services: Services, tx: Transaction, user_id: int) -> None:
    """users.md R9: an anonymized account keeps no watch list, notes, history or imports."""
    for table in (anime_list_entry, anime_list_history, anime_list_import, anime_list_idempotency):
        await services.db.execute(table.delete().where(table.c.user_id == user_id))
