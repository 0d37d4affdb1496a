"""Asking for a push and delivering it (R29-R32, P4): the internal PUSH_REQUEST event,
Expo messages, this process's transport, and what a ticket means."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import msgspec
import sqlalchemy as sa

from models.push.tables import (
    BATCH_WINDOW_S,
    BODY_MAX,
    CHANNEL_MAX,
    DATA_MAX_BYTES,
    DEFAULT_EXPIRY,
    MESSAGE_MAX_BYTES,
    PUSH_TOPIC,
    RATE_EXCEEDED_RETRY_S,
    TEST_ERRORS,
    TEST_MESSAGES,
    TEST_RATE,
    TITLE_MAX,
    UNHEALTHY_ERRORS,
    Priority,
    push_tickets,
    push_tokens,
)
from models.users import users
from server.db import Transaction
from server.errors import ApiError, Code
from server.events import event_type, make_event, rfc3339
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


def message_for(token: str, request: PushRequest) -> dict[str, Any]:
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


async def fail_tickets(services: Services, batch: list[Outgoing], error: ExpoError) -> None:
    """A request Expo never took: its messages are lost (at most once, R31)."""
    runtime = push_runtime(services)
    runtime.last_error = str(error)[:200]
    code = "Rejected" if isinstance(error, ExpoRejected) else "Unavailable"
    await services.db.execute(
        push_tickets.update()
        .where(push_tickets.c.id.in_([item.ticket_id for item in batch]))
        .values(status="error", error=code)
    )


async def claim_tickets(services: Services, push_id: int, token_ids: list[int]) -> dict[int, int]:
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
    claimed = await claim_tickets(services, new_id(), [row["id"] for row in tokens])
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
            await fail_tickets(services, todo, error)
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
