"""Client → server events on the user namespace (gateway.md "Client → server events").

Every event is answered with an ack `{"ok": true, ...}` or `{"ok": false, "error": {...}}`.
Limits per socket: 16 KiB per payload, 120 events per 60 s (three refusals in a window
and the socket is closed), 20 anime topics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import socketio

from gateway import presence
from gateway.topics import MAX_ANIME_TOPICS
from models.auth.identity import ACTIVE_WRITE_EVERY, touch_last_active
from server.errors import ApiError, Code
from server.events import utc_now_text
from server.schemas import nul_fields

if TYPE_CHECKING:
    from gateway.connections import Connection
    from gateway.server import Gateway

log = logging.getLogger("anilay.gateway")

MAX_EVENT_BYTES = 16 * 1024
EVENTS_PER_WINDOW = 120
WINDOW_S = 60.0
STRIKES_BEFORE_DISCONNECT = 3
HEARTBEAT_COUNTED_EVERY_S = 5.0
TYPING_THROTTLE_S = 3.0
# The resume record's TTL is the resume window; refreshing it once a minute is plenty.
SESSION_REFRESH_S = 60.0
# A socket asks the shared throttle about last_active_at no more often than the throttle's
# own window (the connect already marked the user active).
ACTIVE_MARK_EVERY_S = ACTIVE_WRITE_EVERY.total_seconds()

# Domains plug in checks for typing targets and handlers for events they own (chat: `read`,
# `ack_envelopes`). A typing check returns the topic to notify, or raises ApiError.
TypingCheck = Callable[[Any, "Connection", str, int], Awaitable[str]]
TYPING_CHECKS: dict[str, TypingCheck] = {}
EVENT_HANDLERS: dict[str, Callable[[Any, Connection, dict], Awaitable[dict]]] = {}


AnimeId = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]  # as the catalog's ids


class Activity(msgspec.Struct, forbid_unknown_fields=True):
    anime_id: AnimeId
    episode: Annotated[int, msgspec.Meta(ge=0, le=100_000)]
    position_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)]
    party_id: Annotated[str, msgspec.Meta(max_length=32)] | None = None


class Heartbeat(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["online", "idle", "dnd", "invisible"]
    activity: Activity | None = None


class Subscription(msgspec.Struct, forbid_unknown_fields=True):
    anime_id: AnimeId | None = None
    collection_id: Annotated[str, msgspec.Meta(max_length=32)] | None = None


class SlidingCount:
    """How many things happened in the last `window` seconds, estimated from two fixed
    windows: the current one plus the previous one weighted by how much of it the sliding
    window still covers (the "sliding window counter" of the `limits` package). Three numbers
    per socket instead of a timestamp per event: with thousands of idle sockets, per-socket
    bytes are what a gateway process is made of."""

    __slots__ = ("current", "previous", "started", "window")

    def __init__(self, window: float, now: float) -> None:
        self.window = window
        self.started = now
        self.current = 0
        self.previous = 0

    def estimate(self, now: float) -> float:
        elapsed = now - self.started
        if elapsed >= self.window:
            if elapsed < 2 * self.window:  # the current window just ended
                self.previous, self.started = self.current, self.started + self.window
            else:  # both are over
                self.previous, self.started = 0, now
            self.current = 0
            elapsed = now - self.started
        return self.previous * (1 - elapsed / self.window) + self.current


class Limits:
    """Per-socket event budget and refusals (gateway.md: 120 events per 60 s)."""

    __slots__ = (
        "active_marked_at",
        "events",
        "last_counted_heartbeat",
        "session_saved_at",
        "strikes",
    )

    def __init__(self) -> None:
        now = time.monotonic()
        self.events = SlidingCount(WINDOW_S, now)
        self.strikes = SlidingCount(WINDOW_S, now)
        self.last_counted_heartbeat = 0.0
        self.session_saved_at = now  # saved at connect
        self.active_marked_at = now  # the connect's authentication marked the user active

    def allow(self, now: float) -> bool:
        if self.events.estimate(now) >= EVENTS_PER_WINDOW:
            return False
        self.events.current += 1
        return True

    def strike(self, now: float) -> int:
        """Count a refusal; the refusals in the window so far."""
        estimate = self.strikes.estimate(now)
        self.strikes.current += 1
        return int(estimate) + 1


def ok(**extra: Any) -> dict[str, Any]:
    return {"ok": True, **extra}


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _payload_refusal(data: Any) -> dict[str, Any] | None:
    """Why a payload is refused before any handler sees it, or None: over the size limit,
    text that is not Unicode (a lone surrogate), or text holding NUL (as REST refuses)."""
    try:
        encoded = msgspec.json.encode(data)
    except UnicodeEncodeError:
        return error("validation_failed", "Text must be valid Unicode")
    if len(encoded) > MAX_EVENT_BYTES:
        return error("payload_too_large", "Payloads are limited to 16 KiB")
    if b"\\u0000" in encoded and nul_fields(data):
        return error("validation_failed", "Text may not contain NUL characters")
    return None


def register(sio: socketio.AsyncServer, gateway: Gateway, namespace: str) -> None:
    limits: dict[str, Limits] = {}

    def guarded(name: str, handler):
        async def run(sid: str, data: Any = None) -> dict[str, Any]:
            connection = gateway.registry.by_sid.get(sid)
            if connection is None or connection.closing:
                return error("not_connected", "The session is not ready")
            budget = limits.setdefault(sid, Limits())
            now = time.monotonic()
            if not budget.allow(now):
                if budget.strike(now) >= STRIKES_BEFORE_DISCONNECT:
                    gateway.spawn(
                        gateway.dispatcher.close(connection, "rate_limited", "Too many events")
                    )
                return error("rate_limited", "More than 120 events in 60 s")
            refusal = _payload_refusal(data)
            if refusal is not None:
                return refusal
            try:
                return await handler(connection, data, budget)
            except ApiError as failure:
                return failure.to_ack()
            except msgspec.ValidationError as failure:
                return error("validation_failed", str(failure))
            except Exception as failure:  # a dependency failed: always ack, never hang
                log.warning("%s failed: %s", name, failure)
                return error("unavailable", "Try again shortly")

        return run

    async def heartbeat(connection: Connection, data: Any, budget: Limits) -> dict:
        beat = msgspec.convert(data, Heartbeat)
        now = time.monotonic()
        if now - budget.last_counted_heartbeat < HEARTBEAT_COUNTED_EVERY_S:
            return ok(counted=False)
        budget.last_counted_heartbeat = now
        connection.status = beat.status
        activity = msgspec.to_builtins(beat.activity) if beat.activity else None
        await presence.beat(
            gateway.services, connection.user_id, connection.session_id, beat.status, activity
        )
        if now - budget.session_saved_at >= SESSION_REFRESH_S:  # keep it resumable
            budget.session_saved_at = now
            await gateway.sessions.save(gateway.session_record(connection))
        if connection.intents is None and now - budget.active_marked_at >= ACTIVE_MARK_EVERY_S:
            budget.active_marked_at = now  # users.md: last_active_at follows heartbeats too
            await touch_last_active(gateway.services, connection.user_id)
        return ok(counted=True)

    async def typing(connection: Connection, data: Any, budget: Limits) -> dict:
        if not isinstance(data, dict) or len(data) != 1:
            raise ApiError(Code.validation_failed, "Send conversation_id or channel_id")
        ((field, raw_id),) = data.items()
        check = TYPING_CHECKS.get(field)
        if check is None:
            raise ApiError(Code.validation_failed, f"Unknown typing target {field}")
        target_id = (
            int(raw_id) if isinstance(raw_id, (str, int)) and str(raw_id).isdigit() else None
        )
        if target_id is None:
            raise ApiError(Code.not_found, "No such target")
        topic = await check(gateway.services, connection, field, target_id)
        marker = f"typing:{topic}:{connection.user_id}"
        if not await gateway.services.cache.add(marker, b"1", TYPING_THROTTLE_S):
            return ok(forwarded=False)
        payload = {"user_id": str(connection.user_id), field: str(target_id), "ts": utc_now_text()}
        # Volatile: through the Socket.IO manager (every process), to the topic's room,
        # never logged, never replayed; the typer's own sockets are skipped.
        skip = [c.sid for c in gateway.registry.of_user(connection.user_id)]
        await gateway.sio.emit(
            "TYPING_START", payload, room=topic, skip_sid=skip, namespace=connection.namespace
        )
        return ok(forwarded=True)

    async def subscribe(connection: Connection, data: Any, budget: Limits) -> dict:
        target = msgspec.convert(data, Subscription)
        if target.anime_id is None or target.anime_id < 1:
            raise ApiError(Code.validation_failed, "Send an anime_id")
        topic = f"anime:{target.anime_id}"
        if topic not in connection.topics:
            if sum(t.startswith("anime:") for t in connection.topics) >= MAX_ANIME_TOPICS:
                raise ApiError(Code.conflict, f"At most {MAX_ANIME_TOPICS} anime topics")
            gateway.registry.subscribe(connection, topic)
            await gateway.sio.enter_room(connection.sid, topic, connection.namespace)
            await gateway.sessions.save(gateway.session_record(connection))
        return ok(topic=topic)

    async def unsubscribe(connection: Connection, data: Any, budget: Limits) -> dict:
        target = msgspec.convert(data, Subscription)
        if target.anime_id is None:
            raise ApiError(Code.validation_failed, "Send an anime_id")
        topic = f"anime:{target.anime_id}"
        if topic in connection.topics:
            gateway.registry.unsubscribe(connection, topic)
            await gateway.sio.leave_room(connection.sid, topic, connection.namespace)
            await gateway.sessions.save(gateway.session_record(connection))
        return ok(topic=topic)

    def delegated(name: str):
        async def run(connection: Connection, data: Any, budget: Limits) -> dict:
            handler = EVENT_HANDLERS.get(name)
            if handler is None:
                return error("unknown_event", f"{name} is not available yet")
            if not isinstance(data, dict):
                raise ApiError(Code.validation_failed, "Send an object")
            return await handler(gateway.services, connection, data)

        return run

    table = {
        "heartbeat": heartbeat,
        "typing": typing,
        "subscribe": subscribe,
        "unsubscribe": unsubscribe,
        "ack_envelopes": delegated("ack_envelopes"),
        "read": delegated("read"),
    }
    for name, handler in table.items():
        sio.on(name, guarded(name, handler), namespace=namespace)

    async def unknown(event: str, sid: str, data: Any = None) -> dict:
        return error("unknown_event", f"No such event: {str(event)[:64]}")

    sio.on("*", unknown, namespace=namespace)

    async def forget(sid: str, reason: Any = None) -> None:
        limits.pop(sid, None)

    gateway.on_disconnect_hooks.append(forget)
