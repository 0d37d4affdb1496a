"""The push worker (R29-R33): fan-out from the event log, and the receipts sweeper."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import msgspec
import sqlalchemy as sa

from models.push.delivery import (
    PUSH_REQUEST,
    Outgoing,
    PushRequest,
    PushRuntime,
    apply_tickets,
    claim_tickets,
    fail_tickets,
    message_for,
    push_runtime,
)
from models.push.tables import (
    BATCH_MAX,
    CURSOR_KEY,
    CURSOR_SAVE_EVERY_S,
    CURSOR_TTL_S,
    READ_BLOCK_MS,
    RECEIPT_AFTER,
    RECEIPT_GIVE_UP,
    RECEIPTS_PER_SWEEP,
    TICKET_RETENTION,
    UNHEALTHY_ERRORS,
    push_tickets,
    push_tokens,
)
from server.events import LoggedEvent
from server.expo import ExpoError
from server.services import Services

log = logging.getLogger("anilay.push")

# --- the fan-out worker (R29–R32) ----------------------------------------------------------


class PushFanout:
    """Consumes PUSH_REQUEST from the event log and delivers it, in batches, at most once.

    It keeps its place in the log in memory and, every second, in the shared cache, so a
    restarted worker resumes where it stopped (while the log still holds that point)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.cursor: str | None = None
        self.pending: list[Outgoing] = []
        self.deadline: float | None = None
        self.retries: list[tuple[float, Outgoing]] = []
        self._saved_at = 0.0

    @property
    def runtime(self) -> PushRuntime:
        return push_runtime(self.services)

    async def run(self) -> None:
        record = self.services.sweepers.setdefault(
            "push_fanout", {"last_run_at": None, "last_status": None}
        )
        while True:
            try:
                await self.step()
                record["last_status"] = "ok"
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a failing pass is reported and retried, never fatal
                record["last_status"] = "fail"
                log.warning("push fan-out failed: %s", error)
                await asyncio.sleep(1.0)
            record["last_run_at"] = time.time()

    async def _start_cursor(self) -> str:
        log_ = self.services.log
        saved = await self.services.cache.get(CURSOR_KEY)
        if saved is not None and await log_.can_resume_from(saved.decode()):
            return saved.decode()
        return await log_.last_id()

    def _wait_ms(self) -> int:
        now = time.monotonic()
        waits = [READ_BLOCK_MS / 1000]
        if self.deadline is not None:
            waits.append(self.deadline - now)
        if self.retries:
            waits.append(min(due for due, _ in self.retries) - now)
        return max(1, int(min(waits) * 1000))

    async def step(self) -> None:
        """Read what the log has (waiting at most until the next batch is due), claim and
        queue the pushes in it, and send what is due."""
        if self.cursor is None:
            self.cursor = await self._start_cursor()
        events = await self.services.log.read_after(
            self.cursor, count=500, block_ms=self._wait_ms()
        )
        for event in events:
            if event.type == PUSH_REQUEST:
                await self.accept(event)
            self.cursor = event.id
        await self._save_cursor()
        now = time.monotonic()
        due = [item for at, item in self.retries if at <= now]
        if due:
            self.retries = [(at, item) for at, item in self.retries if at > now]
            await self._send(due)
        while len(self.pending) >= BATCH_MAX:
            batch, self.pending = self.pending[:BATCH_MAX], self.pending[BATCH_MAX:]
            await self._send(batch)
        if self.pending and self.deadline is not None and time.monotonic() >= self.deadline:
            batch, self.pending = self.pending, []
            await self._send(batch)
        if not self.pending:
            self.deadline = None
        self.runtime.queue_depth = len(self.pending) + len(self.retries)

    async def _save_cursor(self) -> None:
        if self.cursor is None or time.monotonic() - self._saved_at < CURSOR_SAVE_EVERY_S:
            return
        self._saved_at = time.monotonic()
        await self.services.cache.set(CURSOR_KEY, self.cursor.encode(), CURSOR_TTL_S)

    async def accept(self, event: LoggedEvent) -> None:
        """Claim one ticket per token of the user and queue the messages (R29, R31)."""
        try:
            request = msgspec.convert(event.data, PushRequest)
            expires_at = datetime.fromisoformat(request.expires_at.replace("Z", "+00:00"))
            user_id, push_id = int(request.user_id), int(request.push_id)
        except (msgspec.ValidationError, ValueError) as error:
            log.warning("dropping malformed PUSH_REQUEST %s: %s", event.id, error)
            return
        if expires_at <= datetime.now(UTC):
            return  # too late to be useful (R29)
        tokens = await self.services.db.fetch_all(
            sa.select(push_tokens.c.id, push_tokens.c.token).where(push_tokens.c.user_id == user_id)
        )
        claimed = await claim_tickets(self.services, push_id, [row["id"] for row in tokens])
        for row in tokens:
            ticket_id = claimed.get(row["id"])
            if ticket_id is not None:
                self.pending.append(
                    Outgoing(ticket_id, row["id"], message_for(row["token"], request))
                )
        if self.pending and self.deadline is None:
            self.deadline = time.monotonic() + self.runtime.batch_window_s

    async def _send(self, batch: list[Outgoing]) -> None:
        for start in range(0, len(batch), BATCH_MAX):
            chunk = batch[start : start + BATCH_MAX]
            try:
                tickets = await self.runtime.transport.send([item.message for item in chunk])
            except ExpoError as error:
                log.warning("push request of %d messages failed: %s", len(chunk), error)
                await fail_tickets(self.services, chunk, error)
                continue
            outcomes = await apply_tickets(self.services, chunk, tickets)
            retry_at = time.monotonic() + self.runtime.rate_exceeded_retry_s
            for item, outcome in zip(chunk, outcomes, strict=True):
                if outcome.retry:
                    item.retried = True
                    self.retries.append((retry_at, item))


# --- receipts (R33) -------------------------------------------------------------------------


async def sweep_receipts(services: Services) -> None:
    """Fetch receipts of tickets older than 15 min; DeviceNotRegistered deletes the token;
    tickets still without a receipt after 24 h are dropped; tickets go after 2 days."""
    db = services.db
    now = datetime.now(UTC)
    await db.execute(
        push_tickets.delete().where(push_tickets.c.created_at < now - TICKET_RETENTION)
    )
    rows = await db.fetch_all(
        sa.select(push_tickets)
        .where(
            push_tickets.c.status == "sent",
            push_tickets.c.created_at <= now - RECEIPT_AFTER,
            push_tickets.c.checked_at.is_(None),
            push_tickets.c.receipt_id.is_not(None),
        )
        .order_by(push_tickets.c.created_at)
        .limit(RECEIPTS_PER_SWEEP)
    )
    if not rows:
        return
    runtime = push_runtime(services)
    receipts = await runtime.transport.get_receipts([row["receipt_id"] for row in rows])
    for row in rows:
        receipt = receipts.get(row["receipt_id"])
        if receipt is None:
            if row["created_at"] <= now - RECEIPT_GIVE_UP:
                await db.execute(push_tickets.delete().where(push_tickets.c.id == row["id"]))
            continue
        code = receipt.error
        async with db.transaction():
            await db.execute(
                push_tickets.update()
                .where(push_tickets.c.id == row["id"])
                .values(
                    checked_at=now,
                    status="sent" if code is None else "error",
                    error=code[:64] if code else None,
                )
            )
            if code == "DeviceNotRegistered":
                # Unless the device registered the token again after this push went out.
                await db.execute(
                    push_tokens.delete().where(
                        push_tokens.c.id == row["token_id"],
                        push_tokens.c.last_registered_at <= row["created_at"],
                    )
                )
            elif code is not None:
                await db.execute(
                    push_tokens.update()
                    .where(push_tokens.c.id == row["token_id"])
                    .values(last_error=code[:64])
                )
        if code in UNHEALTHY_ERRORS:
            runtime.healthy = False
            runtime.last_error = code
