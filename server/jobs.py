"""A durable job queue in the database, for work that must not run in the request.

`enqueue` inside a transaction commits the job with the change that caused it. The worker
role claims due jobs with a conditional update (so two workers never run one job twice at
once), runs the handler registered for the kind, and deletes it; a failure is retried with
backoff up to `MAX_ATTEMPTS`. Used where a handler must answer the same whatever the data
(auth.md R4: "the handler only enqueues a job") and for mail.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from server.db import Database, UTCDateTime, metadata
from server.ids import new_id

log = logging.getLogger("anilay.jobs")

MAX_ATTEMPTS = 5
LEASE = timedelta(minutes=5)
BATCH = 50

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("run_at", UTCDateTime, nullable=False),
    sa.Column("locked_until", UTCDateTime, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.String(256), nullable=True),
    sa.Index("ix_jobs_run_at", "run_at"),
)

Handler = Callable[[Any, dict[str, Any]], Awaitable[None]]
_handlers: dict[str, Handler] = {}


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    """Register the function that runs jobs of `kind`; it gets (services, payload)."""

    def register(handler: Handler) -> Handler:
        _handlers[kind] = handler
        return handler

    return register


async def enqueue(
    db: Database, kind: str, payload: dict[str, Any], delay: timedelta = timedelta(0)
) -> int:
    job_id = new_id()
    await db.execute(
        jobs.insert().values(
            id=job_id,
            kind=kind,
            payload=payload,
            run_at=datetime.now(UTC) + delay,
            locked_until=None,
            attempts=0,
        )
    )
    return job_id


async def run_due_jobs(services: Any) -> int:
    """Claim and run the jobs that are due; return how many ran."""
    db: Database = services.db
    now = datetime.now(UTC)
    due = await db.fetch_all(
        sa.select(jobs.c.id)
        .where(
            jobs.c.run_at <= now,
            sa.or_(jobs.c.locked_until.is_(None), jobs.c.locked_until < now),
        )
        .order_by(jobs.c.run_at, jobs.c.id)
        .limit(BATCH)
    )
    ran = 0
    for row in due:
        claimed = await db.fetch_one(
            jobs.update()
            .where(
                jobs.c.id == row["id"],
                sa.or_(jobs.c.locked_until.is_(None), jobs.c.locked_until < now),
            )
            .values(locked_until=now + LEASE, attempts=jobs.c.attempts + 1)
            .returning(jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.attempts)
        )
        if claimed is None:  # another worker took it
            continue
        handler = _handlers.get(claimed["kind"])
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {claimed['kind']}")
            await handler(services, claimed["payload"])
        except Exception as error:  # a failing job is retried, never fatal to the loop
            log.warning("job %s (%s) failed: %s", claimed["id"], claimed["kind"], error)
            if claimed["attempts"] >= MAX_ATTEMPTS:
                await db.execute(jobs.delete().where(jobs.c.id == claimed["id"]))
            else:
                backoff = timedelta(seconds=2 ** claimed["attempts"])
                await db.execute(
                    jobs.update()
                    .where(jobs.c.id == claimed["id"])
                    .values(run_at=now + backoff, locked_until=None, last_error=str(error)[:256])
                )
            continue
        await db.execute(jobs.delete().where(jobs.c.id == claimed["id"]))
        ran += 1
    return ran
