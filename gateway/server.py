"""The Socket.IO server: created once per process, mounted at both Engine.IO paths.

With Redis configured, python-socketio's AsyncRedisManager carries volatile emits (typing,
party clocks) between gateway processes; durable events never go through it (each process
tails the log, gateway.delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import socketio
from starlette.requests import HTTPConnection

from gateway import handlers
from gateway.bots import ALL_INTENTS, bot_topics, uncovered_intents
from gateway.connections import Connection, Registry
from gateway.delivery import Dispatcher
from gateway.presence import online_friends
from gateway.sessions import GatewaySession, SessionStore, new_session_id
from gateway.topics import BOT_TOPIC_PROVIDERS, topics_for
from models.users import get_user, summary_of
from server.auth import Identity
from server.errors import ApiError, Code
from server.log import parse_log_id
from server.services import Services

log = logging.getLogger("anilay.gateway")

ENGINEIO_PATHS = ("/api/v1/ws", "/api/v1/chat/ws")
NAMESPACES = ("/", "/party", "/bots")
PING_INTERVAL_S = 25
PING_TIMEOUT_S = 20
MAX_PAYLOAD_BYTES = 64 * 1024  # whole Engine.IO packet; per-event limits are stricter
HEARTBEAT_INTERVAL_MS = 15_000
REPLAY_BATCH = 500
DRAIN_BATCH = 200

_AUTH_CODES = {
    Code.session_revoked: "session_revoked",
    Code.banned: "banned",
}


class AuthRefused(socketio.exceptions.ConnectionRefusedError):
    """Refuse a connection with gateway.md's `{"code", "message"}` connect_error data."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error_args = {"code": code, "message": message}  # sent as connect_error data


class Gateway:
    """Everything live in one process: the sockets, the log tailer, the session store."""

    def __init__(self, services: Services, sio: socketio.AsyncServer) -> None:
        self.services = services
        self.sio = sio
        self.registry = Registry()
        self.dispatcher = Dispatcher(services, sio, self.registry)
        self.sessions = SessionStore(services.cache, services.settings.gateway_resume_window_s)
        self._tasks: set[asyncio.Task] = set()
        self.on_disconnect_hooks: list = []
        self.draining = False
        self.emptied = asyncio.Event()  # set whenever the last socket leaves

    def spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- connect -----------------------------------------------------------------------
    async def authenticate(self, namespace: str, environ: dict, auth: Any) -> Identity:
        if not isinstance(auth, dict):
            raise AuthRefused("auth_failed", "A valid access token is required")
        try:
            if namespace == "/bots":
                key = auth.get("api_key")
                if not isinstance(key, str) or not key:
                    raise AuthRefused("auth_failed", "A valid API key is required")
                from models.api_keys import identify_bot

                identity = await identify_bot(
                    self.services, key, HTTPConnection(environ.get("asgi.scope", {"type": "http"}))
                )
            else:
                token = auth.get("token")
                if not isinstance(token, str) or not token or len(token) > 4096:
                    raise AuthRefused("auth_failed", "A valid access token is required")
                from models.auth.identity import identify_bearer

                identity = await identify_bearer(self.services, token)
        except ApiError as error:
            code = _AUTH_CODES.get(error.code, "auth_failed")
            raise AuthRefused(code, str(error)) from None
        if identity.banned():
            raise AuthRefused("banned", "This account is banned")
        return identity

    async def connect(self, sid: str, environ: dict, auth: Any, namespace: str) -> None:
        if self.draining:
            raise AuthRefused("draining", "This server is restarting; connect again")
        identity = await self.authenticate(namespace, environ, auth)
        if namespace == "/party":
            return  # the watch-party protocol arrives with parties
        device_id, intents = None, None
        if namespace == "/bots":
            intents = self._intents(identity, auth.get("intents"))
            topics = bot_topics(identity.user_id, intents)
            for provider in BOT_TOPIC_PROVIDERS:
                topics |= await provider(self.services, identity, intents)
        else:
            device_id = auth.get("device_id")
            if device_id is not None and (
                isinstance(device_id, bool)
                or not isinstance(device_id, int)
                or not 1 <= device_id <= 127
            ):
                raise AuthRefused("auth_failed", "device_id must be an integer 1..127")
            topics = await topics_for(self.services, identity, device_id)
        resume = auth.get("resume")
        resumed = await self._resumable(identity, namespace, resume)
        if resumed is not None:
            session_id = resumed.session_id
            topics |= {t for t in resumed.topics if t.startswith(("anime:", "collection:"))}
            start = resume["last_event_id"]
        else:
            session_id = new_session_id()
            start = self.dispatcher.position
        connection = Connection(
            sid=sid,
            eio_sid=self.sio.manager.eio_sid_from_sid(sid, namespace),
            namespace=namespace,
            identity=identity,
            session_id=session_id,
            topics=topics,
            device_id=device_id,
            last_delivered=parse_log_id(start) or (0, 0),
            intents=intents,
        )
        # Registered before any await: from here on every event for it is buffered.
        self.registry.add(connection)
        for topic in topics:
            await self.sio.enter_room(sid, topic, namespace)
        await self.sessions.save(self.session_record(connection))
        self.spawn(
            self.welcome(
                connection,
                resumed is not None,
                invalid=resume is not None and resumed is None,
                start=start,
            )
        )

    @staticmethod
    def _intents(identity: Identity, raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= ALL_INTENTS:
            raise AuthRefused("auth_failed", f"intents must be an integer 0..{ALL_INTENTS}")
        uncovered = uncovered_intents(raw, identity.scopes or frozenset())
        if uncovered:
            raise AuthRefused(
                "intent_not_allowed", "The key's scopes do not allow " + ", ".join(uncovered)
            )
        return raw

    async def _resumable(
        self, identity: Identity, namespace: str, resume: Any
    ) -> GatewaySession | None:
        """The stored session, when a resume is complete-able; else None (never partial)."""
        if not isinstance(resume, dict):
            return None
        session_id, last_event_id = resume.get("session_id"), resume.get("last_event_id")
        if not isinstance(session_id, str) or not isinstance(last_event_id, str):
            return None
        stored = await self.sessions.load(session_id)
        if stored is None or stored.user_id != identity.user_id or stored.namespace != namespace:
            return None  # unknown or another user's: refused alike (G5)
        if not await self.services.log.can_resume_from(last_event_id):
            return None  # older than the retained log (G4)
        return stored

    async def welcome(
        self, connection: Connection, resumed: bool, invalid: bool, start: str
    ) -> None:
        try:
            if resumed:
                replayed = await self.replay(connection, start)
                await self.dispatcher.emit_one(
                    connection,
                    "RESUMED",
                    {"session_id": connection.session_id, "replayed": replayed},
                )
            else:
                if invalid:
                    await self.dispatcher.emit_one(
                        connection, "INVALID_SESSION", {"resumable": False}
                    )
                await self.dispatcher.emit_one(
                    connection, "READY", await self.ready_payload(connection, start)
                )
            await self.dispatcher.go_live(connection)
        except Exception:  # a socket that cannot be welcomed is closed, not left half-open
            log.exception("welcome failed for %s", connection.sid)
            await self.dispatcher.close(connection, "internal", "Could not start the session")

    async def replay(self, connection: Connection, after: str) -> int:
        """Every event after `after` for the connection's topics, in log order."""
        replayed = 0
        cursor = after
        while True:
            batch = await self.services.log.read_after(cursor, REPLAY_BATCH)
            if not batch:
                return replayed
            for event in batch:
                cursor = event.id
                if connection.closing:
                    return replayed
                if not connection.topics.isdisjoint(
                    event.targets.topics
                ) and await self.dispatcher.deliver_one(connection, event):
                    replayed += 1

    async def ready_payload(self, connection: Connection, start: str) -> dict[str, Any]:
        row = await get_user(self.services.db, connection.user_id)
        user: dict[str, Any] = {}
        if row is not None:
            user = {**_struct_dict(summary_of(row)), "role": connection.identity.role}
        if connection.intents is not None:
            return {
                "session_id": connection.session_id,
                "user": user,  # a key acts as its owner (auth.md "Decided")
                "api_key_id": str(connection.identity.api_key_id),
                "scopes": sorted(connection.identity.scopes or ()),
                "intents": connection.intents,
                "servers": sorted(
                    t.removeprefix("server:") for t in connection.topics if t.startswith("server:")
                ),
                "subscriptions": sorted(connection.topics),
                "last_event_id": start,
            }
        return {
            "session_id": connection.session_id,
            "user": user,
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            "presence": await online_friends(self.services, connection.user_id),
            "unread": {"notifications": 0, "conversations": {}, "channels": {}},
            "subscriptions": sorted(connection.topics),
            "last_event_id": start,
        }

    def session_record(self, connection: Connection) -> GatewaySession:
        return GatewaySession(
            session_id=connection.session_id,
            user_id=connection.user_id,
            namespace=connection.namespace,
            topics=sorted(connection.topics),
            device_id=connection.device_id,
        )

    # --- draining ----------------------------------------------------------------------
    async def drain(self, within_s: float, batch: int = DRAIN_BATCH) -> None:
        """Graceful shutdown (gateway.md): refuse new sockets, ask the open ones to come
        back elsewhere after a jittered delay, in batches, and wait up to `within_s` for
        them to leave. Their sessions stay resumable."""
        self.draining = True
        spread_ms = int(within_s * 1000 * 0.7)
        connections = list(self.registry.by_sid.values())
        random.shuffle(connections)
        for start in range(0, len(connections), batch):
            for connection in connections[start : start + batch]:
                if not connection.closing:
                    await self.dispatcher.emit_one(
                        connection, "RECONNECT", {"after_ms": random.randint(0, spread_ms)}
                    )
            await asyncio.sleep(0)
        if len(self.registry):
            self.emptied.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.emptied.wait(), within_s)

    # --- disconnect --------------------------------------------------------------------
    async def disconnect(self, sid: str, namespace: str) -> None:
        for hook in self.on_disconnect_hooks:
            await hook(sid)
        connection = self.registry.remove(sid)
        if not len(self.registry):
            self.emptied.set()
        if connection is None:
            return
        await self.sessions.save(self.session_record(connection))  # the resume window starts
        from gateway.presence import left

        await left(self.services, connection.user_id, connection.session_id)


def _struct_dict(value) -> dict[str, Any]:
    import msgspec

    return msgspec.structs.asdict(value)


def create_socket_server(services: Services) -> socketio.AsyncServer:
    settings = services.settings
    manager = (
        socketio.AsyncRedisManager(settings.redis_url, channel="anilay:socketio")
        if settings.redis_url
        else None
    )
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=list(settings.cors_origins) or [],
        ping_interval=PING_INTERVAL_S,
        ping_timeout=PING_TIMEOUT_S,
        max_http_buffer_size=MAX_PAYLOAD_BYTES,
        logger=False,
        engineio_logger=False,
    )
    gateway = Gateway(services, sio)
    services.gateway = gateway
    for namespace in NAMESPACES:
        _register(sio, gateway, namespace)
    return sio


def _register(sio: socketio.AsyncServer, gateway: Gateway, namespace: str) -> None:
    async def on_connect(sid: str, environ: dict, auth: Any = None) -> None:
        # Socket.IO keeps the handshake's environ for the connection's whole life: a WSGI
        # copy of every header and a class the ASGI driver makes per request (~4 KB a
        # socket). The transport took what it needed from it before any namespace connects;
        # all we read, now or when another namespace joins, is the ASGI scope.
        scope = environ.get("asgi.scope")
        environ.clear()
        if scope is not None:
            environ["asgi.scope"] = scope
        try:
            await gateway.connect(sid, environ, auth, namespace)
        except AuthRefused:
            raise
        except Exception:  # a dependency failed: refuse with a reason, never hang the client
            log.exception("connect failed")
            gateway.registry.remove(sid)
            raise AuthRefused("unavailable", "Try again shortly") from None

    async def on_disconnect(sid: str, reason: Any = None) -> None:
        try:
            await gateway.disconnect(sid, namespace)
        except Exception:  # the socket is gone either way; its presence entry will lapse
            log.exception("disconnect bookkeeping failed")

    sio.on("connect", on_connect, namespace=namespace)
    sio.on("disconnect", on_disconnect, namespace=namespace)
    if namespace in ("/", "/bots"):
        handlers.register(sio, gateway, namespace)
