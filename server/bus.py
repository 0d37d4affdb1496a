"""Publishing: committed events go to the log; when the log is unreachable, to the outbox.

`Bus.publish` is the database's commit hook (server.db), so an event leaves only after its
transaction committed. If Redis cannot take it, the event is written to the `outbox` table
instead and the worker appends it later, in order. While anything waits in the outbox this
process sends its new events there too, so they cannot overtake the ones waiting.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import sqlalchemy as sa

from server.db import Database, UTCDateTime, metadata
from server.events import Event, decode_event, encode_event
from server.log import EventLog
from server.redis_client import REDIS_DOWN_ERRORS

log = logging.getLogger("anilay.bus")

OUTBOX_BATCH = 500

outbox = sa.Table(
    "outbox",
    metadata,
    # INTEGER on SQLite so the key is the rowid and increments; BIGSERIAL on PostgreSQL.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("event", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False, default=lambda: datetime.now(UTC)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
)


class Bus:
    def __init__(self, db: Database, log_: EventLog) -> None:
        self.db = db
        self.log = log_
        self.outbox_pending = False
        self._lock = asyncio.Lock()
        # Events this process appended directly (exported as a metric).
        self.published = 0

    async def publish(self, events: list[Event]) -> None:
        """Append committed events to the log, or park them in the outbox. Never raises for
        a log outage: the database write already happened and must not look failed."""
        if not events:
            return
        async with self._lock:
            if not self.outbox_pending:
                try:
                    await self.log.append(events)
                    self.published += len(events)
                    return
                except REDIS_DOWN_ERRORS as error:
                    log.warning("event log unreachable, using the outbox: %s", error)
                    self.outbox_pending = True
            await self._to_outbox(events)

    async def _to_outbox(self, events: list[Event]) -> None:
        now = datetime.now(UTC)
        await self.db.execute_many(
            outbox.insert(),
            [{"event": encode_event(event), "created_at": now, "attempts": 0} for event in events],
        )

    async def outbox_size(self) -> int:
        return int(await self.db.fetch_val(sa.select(sa.func.count()).select_from(outbox)) or 0)

    async def drain_outbox(self) -> int:
        """Append waiting events to the log, oldest first; return how many went out.

        Stops at the first failure and keeps the rest for the next call. Only one process
        (the worker role) drains; the append-then-delete order means a crash in between
        re-sends a batch rather than losing it (consumers drop duplicates by `uid`).
        """
        sent = 0
        async with self._lock:
            while True:
                rows = await self.db.fetch_all(
                    sa.select(outbox.c.id, outbox.c.event).order_by(outbox.c.id).limit(OUTBOX_BATCH)
                )
                if not rows:
                    self.outbox_pending = False
                    return sent
                try:
                    await self.log.append([decode_event(row["event"]) for row in rows])
                except REDIS_DOWN_ERRORS:
                    await self.db.execute(
                        outbox.update()
                        .where(outbox.c.id.in_([row["id"] for row in rows]))
                        .values(attempts=outbox.c.attempts + 1)
                    )
                    return sent
                await self.db.execute(outbox.delete().where(outbox.c.id <= rows[-1]["id"]))
                sent += len(rows)

    async def refresh_pending(self) -> None:
        """For processes that do not drain: stop routing to the outbox once it is empty."""
        if self.outbox_pending and await self.outbox_size() == 0:
            self.outbox_pending = False
