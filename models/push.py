"""Expo push: device tokens and delivery (auth.md P1–P4, R27–R34).

A device token belongs to one user and to the session that registered it: revoking that
session deletes it (R28), so a signed-out phone receives nothing. Producers never talk to
Expo: inside their transaction they call `request_push`, which emits the internal
PUSH_REQUEST event (topic `internal:push`, which no socket subscribes to). The worker's
`PushFanout` reads the event log, claims one `push_tickets` row per (push, token) *before*
sending — the unique index makes delivery at most once, so a replayed or redelivered request
sends nothing (R31) — gathers messages for up to 500 ms, and hands them to the Expo transport
(server.expo) in requests of at most 100. The receipts sweeper follows up 15 min later (R33).

Push never slows or fails the action that asked for it (R27): the producer only appends an
event; everything that can be slow or fail happens in the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import msgspec
import sqlalchemy as sa

from models.auth.sessions import SESSION_REVOKE_HOOKS
from models.exports import exporter
from models.users import users
from models.users.deletion import on_account_deleted
from server.auth import Identity
from server.db import Transaction, UTCDateTime, metadata
from server.errors import ApiError, Code, FieldError
from server.events import LoggedEvent, event_type, make_event, rfc3339
from server.expo import (
    ExpoError,
    ExpoRejected,
    ExpoTransport,
    LocalTokenBucket,
    RedisTokenBucket,
    Ticket,
)
from server.ids import new_id
from server.services import Services

log = logging.getLogger("anilay.push")

# --- constants from the spec ---------------------------------------------------------------

TOKEN_PATTERN = re.compile(r"^Expo(nent)?PushToken\[[A-Za-z0-9_-]{8,200}\]$")
TOKENS_PER_USER = 20  # a 21st evicts the least recently registered (R28)
REGISTER_RATE = "30/hour"  # P2, per user
TEST_RATE = "5/hour"  # P4, per user
TITLE_MAX = 100
BODY_MAX = 240
DATA_MAX_BYTES = 1024
CHANNEL_MAX = 32
MESSAGE_MAX_BYTES = 4096  # each message's JSON (R29)
DEFAULT_EXPIRY = timedelta(minutes=5)
BATCH_WINDOW_S = 0.5  # R30
BATCH_MAX = 100
RATE_EXCEEDED_RETRY_S = 2.0  # R32: MessageRateExceeded is retried once, after 2 s
RECEIPTS_EVERY_S = 300.0  # R33
RECEIPT_AFTER = timedelta(minutes=15)
RECEIPT_GIVE_UP = timedelta(hours=24)
TICKET_RETENTION = timedelta(days=2)
RECEIPTS_PER_SWEEP = 3000
PUSH_TOPIC = "internal:push"  # no socket ever subscribes to it
CURSOR_KEY = "push:cursor"
CURSOR_TTL_S = 86_400
CURSOR_SAVE_EVERY_S = 1.0
READ_BLOCK_MS = 1000
UNHEALTHY_ERRORS = frozenset({"InvalidCredentials", "MismatchSenderId"})
TEST_ERRORS = frozenset(
    {"DeviceNotRegistered", "MessageTooBig", "MessageRateExceeded", "InvalidCredentials"}
)
TEST_MESSAGES = {
    "en": ("Anilay", "Test notification: push works on this device."),
    "ru": ("Anilay", "Тестовое уведомление: push на этом устройстве работает."),
}

Platform = Literal["ios", "android"]
Priority = Literal["default", "high"]

# --- tables --------------------------------------------------------------------------------

push_tokens = sa.Table(
    "push_tokens",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("session_id", sa.BigInteger, nullable=True, index=True),
    sa.Column("token", sa.String(256), nullable=False, unique=True),
    sa.Column("platform", sa.String(8), nullable=False),
    sa.Column("device_name", sa.String(64), nullable=True),
    sa.Column("app_version", sa.String(32), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_registered_at", UTCDateTime, nullable=False),
    sa.Column("last_sent_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.String(64), nullable=True),
    # Serves "tokens of a user" and the eviction order (R28).
    sa.Index("ix_push_tokens_user_id_last_registered_at", "user_id", "last_registered_at"),
)

push_tickets = sa.Table(
    "push_tickets",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("push_id", sa.BigInteger, nullable=False),
    sa.Column("token_id", sa.BigInteger, nullable=False),
    sa.Column("receipt_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(8), nullable=False),  # pending, sent, error
    sa.Column("error", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("checked_at", UTCDateTime, nullable=True),
    # The at-most-once guard (R31).
    sa.UniqueConstraint("push_id", "token_id"),
    sa.Index("ix_push_tickets_status_created_at", "status", "created_at"),
    sa.Index("ix_push_tickets_created_at", "created_at"),
)

# --- the internal event (R29) --------------------------------------------------------------


class PushRequest(msgspec.Struct):
    push_id: str
    user_id: str
    title: str
    body: str
    data: dict[str, Any]
    channel_id: str
    priority: Priority
    expires_at: str
    badge: int | None = None
    ttl_s: int | None = None


PUSH_REQUEST = event_type("PUSH_REQUEST", PushRequest)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def request_push(
    services: Services,
    tx: Transaction,
    user_id: int,
    title: str,
    body: str,
    data: dict[str, Any] | None = None,
    channel_id: str = "default",
    priority: Priority = "default",
    *,
    badge: int | None = None,
    ttl_s: int | None = None,
    expires_in: timedelta = DEFAULT_EXPIRY,
) -> int:
    """Ask for a push to every device of `user_id`, sent once `tx` commits (R29).

    Call it after deciding the user wants this push (notification settings are the
    producer's business). Title and body are cut with "…" to 100 and 240 characters;
    `data` must encode to at most 1 KiB of JSON. Returns the push id.
    """
    data = data or {}
    if len(msgspec.json.encode(data)) > DATA_MAX_BYTES:
        raise ValueError(f"push data is over {DATA_MAX_BYTES} bytes of JSON")
    if not 0 < len(channel_id) <= CHANNEL_MAX:
        raise ValueError(f"channel_id must be 1..{CHANNEL_MAX} characters")
    push_id = new_id()
    tx.emit(
        make_event(
            PUSH_REQUEST,
            PushRequest(
                push_id=str(push_id),
                user_id=str(user_id),
                title=_cut(title, TITLE_MAX),
                body=_cut(body, BODY_MAX),
                data=data,
                channel_id=channel_id,
                priority=priority,
                expires_at=rfc3339(datetime.now(UTC) + expires_in),
                badge=badge,
                ttl_s=ttl_s,
            ),
            [PUSH_TOPIC],
        )
    )
    return push_id


# --- messages -------------------------------------------------------------------------------

_json = msgspec.json.encode


def build_message(
    token: str,
    *,
    title: str,
    body: str,
    data: dict[str, Any],
    channel_id: str,
    priority: str,
    badge: int | None = None,
    ttl_s: int | None = None,
) -> dict[str, Any]:
    """One Expo message, its JSON at most 4096 bytes: the body is cut with "…" to fit."""
    message: dict[str, Any] = {
        "to": token,
        "title": title,
        "body": body,
        "data": data,
        "sound": "default",
        "priority": priority,
        "channelId": channel_id,
    }
    if badge is not None:
        message["badge"] = badge
    if ttl_s is not None:
        message["ttl"] = ttl_s
    if len(_json(message)) <= MESSAGE_MAX_BYTES:
        return message
    low, high = 0, len(body)  # the longest prefix of the body that fits with its "…"
    while low < high:
        middle = (low + high + 1) // 2
        message["body"] = body[:middle] + "…"
        if len(_json(message)) <= MESSAGE_MAX_BYTES:
            low = middle
        else:
            high = middle - 1
    message["body"] = body[:low] + "…"
    return message


def _message_for(token: str, request: PushRequest) -> dict[str, Any]:
    return build_message(
        token,
        title=request.title,
        body=request.body,
        data=request.data,
        channel_id=request.channel_id,
        priority=request.priority,
        badge=request.badge,
        ttl_s=request.ttl_s,
    )


# --- the transport this process uses -------------------------------------------------------


@dataclasses.dataclass
class PushRuntime:
    """This process's way to Expo and what it has learnt about it (platform.md H3 `push`)."""

    transport: ExpoTransport
    batch_window_s: float = BATCH_WINDOW_S
    rate_exceeded_retry_s: float = RATE_EXCEEDED_RETRY_S
    healthy: bool = True
    last_error: str | None = None
    last_success_at: datetime | None = None
    queue_depth: int = 0


_runtimes: dict[int, PushRuntime] = {}


def build_transport(services: Services) -> ExpoTransport:
    settings = services.settings
    client = httpx.AsyncClient(timeout=10.0, headers={"User-Agent": f"Anilay/{settings.version}"})
    bucket = RedisTokenBucket(services.redis) if services.redis is not None else LocalTokenBucket()
    return ExpoTransport(
        client,
        base_url=settings.expo_base_url,
        access_token=settings.expo_access_token,
        bucket=bucket,
    )


def push_runtime(services: Services) -> PushRuntime:
    """The process's push runtime, built on first use from the settings."""
    key = id(services)
    runtime = _runtimes.get(key)
    if runtime is None:
        runtime = _runtimes[key] = PushRuntime(transport=build_transport(services))
        weakref.finalize(services, _runtimes.pop, key, None)
    return runtime


def install_transport(services: Services, transport: ExpoTransport) -> ExpoTransport:
    """Swap the transport (tests point it at a local fake Expo); returns the previous one."""
    runtime = push_runtime(services)
    previous, runtime.transport = runtime.transport, transport
    return previous


def push_status(services: Services) -> dict[str, Any]:
    """`push` of the staff health view: unhealthy after InvalidCredentials/MismatchSenderId
    until a request succeeds again."""
    runtime = push_runtime(services)
    return {
        "status": "ok" if runtime.healthy else "unhealthy",
        "queue_depth": runtime.queue_depth,
        "last_success_at": rfc3339(runtime.last_success_at) if runtime.last_success_at else None,
        "last_error": runtime.last_error,
    }


# --- applying tickets (R32) ----------------------------------------------------------------


@dataclasses.dataclass
class Outgoing:
    """One message on its way, with the ticket row that claimed it."""

    ticket_id: int
    token_id: int
    message: dict[str, Any]
    retried: bool = False


@dataclasses.dataclass
class Outcome:
    status: Literal["ok", "error"]
    error: str | None = None
    removed: bool = False
    retry: bool = False  # MessageRateExceeded on a first try: send again after 2 s


async def apply_tickets(
    services: Services, batch: list[Outgoing], tickets: list[Ticket]
) -> list[Outcome]:
    """Record what Expo said about each message and act on it (R32)."""
    runtime = push_runtime(services)
    now = datetime.now(UTC)
    outcomes: list[Outcome] = []
    ticket_rows: list[dict[str, Any]] = []
    token_errors: dict[int, str] = {}
    sent_tokens: list[int] = []
    dead_tokens: list[int] = []
    credential_error: str | None = None
    for item, ticket in zip(batch, tickets, strict=True):
        code = ticket.error
        if code is None:
            outcomes.append(Outcome(status="ok"))
            ticket_rows.append({"id": item.ticket_id, "status": "sent", "receipt": ticket.id})
            sent_tokens.append(item.token_id)
            continue
        outcome = Outcome(status="error", error=code)
        if code == "DeviceNotRegistered":
            dead_tokens.append(item.token_id)
            outcome.removed = True
        elif code == "MessageRateExceeded" and not item.retried:
            outcome.retry = True
        elif code in UNHEALTHY_ERRORS:
            credential_error = code
        elif code == "MessageTooBig":
            log.warning("expo refused push ticket %s as too big", item.ticket_id)
        outcomes.append(outcome)
        if not outcome.retry:
            ticket_rows.append({"id": item.ticket_id, "status": "error", "error": code[:64]})
            token_errors[item.token_id] = code[:64]
    db = services.db
    async with db.transaction():
        sent = {row["id"]: row["receipt"] for row in ticket_rows if row["status"] == "sent"}
        failed = {row["id"]: row["error"] for row in ticket_rows if row["status"] == "error"}
        if sent:
            await db.execute(
                push_tickets.update()
                .where(push_tickets.c.id.in_(list(sent)))
                .values(status="sent", receipt_id=sa.case(sent, value=push_tickets.c.id))
            )
        if failed:
            await db.execute(
                push_tickets.update()
                .where(push_tickets.c.id.in_(list(failed)))
                .values(status="error", error=sa.case(failed, value=push_tickets.c.id))
            )
        if sent_tokens:
            await db.execute(
                push_tokens.update()
                .where(push_tokens.c.id.in_(sent_tokens))
                .values(last_sent_at=now, last_error=None)
            )
        for token_id, code in token_errors.items():
            if token_id not in dead_tokens:
                await db.execute(
                    push_tokens.update().where(push_tokens.c.id == token_id).values(last_error=code)
                )
        if dead_tokens:
            await db.execute(push_tokens.delete().where(push_tokens.c.id.in_(dead_tokens)))
    if credential_error is not None:
        runtime.healthy = False
        runtime.last_error = credential_error
        log.error("expo refused our credentials (%s): push is unhealthy", credential_error)
    elif sent_tokens:
        runtime.healthy = True
        runtime.last_success_at = now
    return outcomes


async def _fail_tickets(services: Services, batch: list[Outgoing], error: ExpoError) -> None:
    """A request Expo never took: its messages are lost (at most once, R31)."""
    runtime = push_runtime(services)
    runtime.last_error = str(error)[:200]
    code = "Rejected" if isinstance(error, ExpoRejected) else "Unavailable"
    await services.db.execute(
        push_tickets.update()
        .where(push_tickets.c.id.in_([item.ticket_id for item in batch]))
        .values(status="error", error=code)
    )


async def _claim(services: Services, push_id: int, token_ids: list[int]) -> dict[int, int]:
    """Insert the tickets of (push_id, token) that do not exist yet; {token_id: ticket_id}
    of those this call inserted. Already-claimed pairs are never sent again (R31)."""
    if not token_ids:
        return {}
    now = datetime.now(UTC)
    db = services.db
    rows = await db.fetch_all(
        db.insert(push_tickets)
        .values(
            [
                {
                    "id": new_id(),
                    "push_id": push_id,
                    "token_id": token_id,
                    "receipt_id": None,
                    "status": "pending",
                    "error": None,
                    "created_at": now,
                    "checked_at": None,
                }
                for token_id in token_ids
            ]
        )
        .on_conflict_do_nothing(index_elements=["push_id", "token_id"])
        .returning(push_tickets.c.id, push_tickets.c.token_id)
    )
    return {row["token_id"]: row["id"] for row in rows}


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
        claimed = await _claim(self.services, push_id, [row["id"] for row in tokens])
        for row in tokens:
            ticket_id = claimed.get(row["id"])
            if ticket_id is not None:
                self.pending.append(
                    Outgoing(ticket_id, row["id"], _message_for(row["token"], request))
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
                await _fail_tickets(self.services, chunk, error)
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


# --- device tokens (P1–P3, R28) -------------------------------------------------------------


class PushTokenView(msgspec.Struct):
    """The PushToken shape: the token itself never leaves the server whole."""

    id: str
    platform: str
    device_name: str | None
    app_version: str | None
    token_preview: str
    created_at: str
    last_registered_at: str
    last_sent_at: str | None
    this_session: bool


def token_preview(token: str) -> str:
    head, _, inner = token.partition("[")
    return f"{head}[{inner[:4]}…]"


def token_view(row: dict[str, Any], session_id: int | None) -> PushTokenView:
    return PushTokenView(
        id=str(row["id"]),
        platform=row["platform"],
        device_name=row["device_name"],
        app_version=row["app_version"],
        token_preview=token_preview(row["token"]),
        created_at=rfc3339(row["created_at"]),
        last_registered_at=rfc3339(row["last_registered_at"]),
        last_sent_at=rfc3339(row["last_sent_at"]) if row["last_sent_at"] else None,
        this_session=session_id is not None and row["session_id"] == session_id,
    )


def check_push_token(token: str) -> str:
    if not TOKEN_PATTERN.match(token):
        raise ApiError(
            Code.invalid_push_token,
            "Expected an Expo push token: ExponentPushToken[...]",
            errors=[FieldError("token", "not an Expo push token")],
        )
    return token


async def list_tokens(services: Services, user_id: int) -> list[dict[str, Any]]:
    return await services.db.fetch_all(
        sa.select(push_tokens)
        .where(push_tokens.c.user_id == user_id)
        .order_by(push_tokens.c.last_registered_at.desc(), push_tokens.c.id.desc())
        .limit(TOKENS_PER_USER)
    )


async def do_register_token(
    services: Services,
    identity: Identity,
    *,
    token: str,
    platform: str,
    device_name: str | None,
    app_version: str | None,
) -> tuple[dict[str, Any], bool]:
    """P2: upsert the device's token, bound to the caller and the current session (R28).

    A token another user held moves to the caller (the device changed hands). Past 20
    tokens the least recently registered go. Returns (row, created)."""
    check_push_token(token)
    await services.limiter.check(REGISTER_RATE, "push-register", str(identity.user_id))
    db = services.db
    now = datetime.now(UTC)
    fresh_id = new_id()
    binding = {
        "user_id": identity.user_id,
        "session_id": identity.session_id,
        "platform": platform,
        "device_name": device_name,
        "app_version": app_version,
        "last_registered_at": now,
        "last_error": None,
    }
    async with db.transaction():
        row = await db.fetch_one(
            db.upsert(
                push_tokens,
                {
                    **binding,
                    "id": fresh_id,
                    "token": token,
                    "created_at": now,
                    "last_sent_at": None,
                },
                conflict=["token"],
                update=binding,
            ).returning(*push_tokens.c)
        )
        assert row is not None
        overflow = await db.fetch_all(
            sa.select(push_tokens.c.id)
            .where(push_tokens.c.user_id == identity.user_id)
            .order_by(push_tokens.c.last_registered_at.desc(), push_tokens.c.id.desc())
            .offset(TOKENS_PER_USER)
        )
        if overflow:
            await db.execute(
                push_tokens.delete().where(push_tokens.c.id.in_([r["id"] for r in overflow]))
            )
    return row, row["id"] == fresh_id


async def do_unregister_token(services: Services, user_id: int, token_id: int) -> None:
    """P3; 404 for a token that is not the caller's."""
    row = await services.db.fetch_one(
        push_tokens.delete()
        .where(push_tokens.c.id == token_id, push_tokens.c.user_id == user_id)
        .returning(push_tokens.c.id)
    )
    if row is None:
        raise ApiError(Code.not_found, "No such push token")


async def _forget_session_tokens(services: Services, user_id: int, session_ids: list[int]) -> None:
    """A revoked session's devices receive nothing more (R28)."""
    await services.db.execute(push_tokens.delete().where(push_tokens.c.session_id.in_(session_ids)))


SESSION_REVOKE_HOOKS.append(_forget_session_tokens)


@on_account_deleted
async def delete_user_tokens(services: Services, tx: Transaction, user_id: int) -> None:
    """Anonymization deletes every device token of the account (users.md R9)."""
    await services.db.execute(push_tokens.delete().where(push_tokens.c.user_id == user_id))


@exporter("push_tokens")
async def export_push_tokens(services: Services, user_id: int) -> list[dict[str, Any]]:
    """Devices, with the token masked (users.md R10)."""
    rows = await list_tokens(services, user_id)
    return [
        {
            key: value
            for key, value in msgspec.structs.asdict(token_view(row, None)).items()
            if key != "this_session"
        }
        | {"last_error": row["last_error"]}
        for row in rows
    ]


# --- P4: a test push, sent now --------------------------------------------------------------


class PushTestResult(msgspec.Struct):
    token_id: str
    status: Literal["ok", "error"]
    error: str | None
    removed: bool


async def do_test_push(
    services: Services, user_id: int, token_id: int | None
) -> list[PushTestResult]:
    """P4: a fixed message in the user's locale on channel `system`, sent synchronously
    through the same transport and ticket handling as the fan-out."""
    db = services.db
    query = sa.select(push_tokens.c.id, push_tokens.c.token).where(push_tokens.c.user_id == user_id)
    if token_id is not None:
        query = query.where(push_tokens.c.id == token_id)
    tokens = await db.fetch_all(query.order_by(push_tokens.c.id))
    if not tokens:
        if token_id is not None:
            raise ApiError(Code.not_found, "No such push token")
        raise ApiError(Code.no_push_tokens, "Register a device first")
    await services.limiter.check(TEST_RATE, "push-test", str(user_id))
    locale = await db.fetch_val(sa.select(users.c.locale).where(users.c.id == user_id))
    title, body = TEST_MESSAGES.get(locale or "en", TEST_MESSAGES["en"])
    claimed = await _claim(services, new_id(), [row["id"] for row in tokens])
    batch = [
        Outgoing(
            claimed[row["id"]],
            row["id"],
            build_message(
                row["token"],
                title=title,
                body=body,
                data={"type": "test"},
                channel_id="system",
                priority="high",
            ),
        )
        for row in tokens
    ]
    runtime = push_runtime(services)
    results: dict[int, Outcome] = {}
    todo = batch
    while todo:
        try:
            tickets = await runtime.transport.send([item.message for item in todo])
        except ExpoError as error:
            await _fail_tickets(services, todo, error)
            raise ApiError(
                Code.push_unavailable, "The push service is not answering; try again later"
            ) from None
        outcomes = await apply_tickets(services, todo, tickets)
        again = []
        for item, outcome in zip(todo, outcomes, strict=True):
            results[item.ticket_id] = outcome
            if outcome.retry:
                item.retried = True
                again.append(item)
        if again:
            await asyncio.sleep(runtime.rate_exceeded_retry_s)
        todo = again
    return [
        PushTestResult(
            token_id=str(item.token_id),
            status=results[item.ticket_id].status,
            error=_test_error(results[item.ticket_id].error),
            removed=results[item.ticket_id].removed,
        )
        for item in batch
    ]


def _test_error(code: str | None) -> str | None:
    if code is None:
        return None
    return code if code in TEST_ERRORS else "Unknown"
