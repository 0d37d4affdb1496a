"""The Socket.IO server: created once per process, mounted at both Engine.IO paths.

With Redis configured, python-socketio's AsyncRedisManager carries volatile emits between
gateway processes; durable events never go through it (each process tails the log).
"""

from __future__ import annotations

import socketio

from server.services import Services

ENGINEIO_PATHS = ("/api/v1/ws", "/api/v1/chat/ws")
NAMESPACES = ("/", "/party", "/bots")
PING_INTERVAL_S = 25
PING_TIMEOUT_S = 20
MAX_PAYLOAD_BYTES = 64 * 1024  # whole Engine.IO packet; per-event limits are stricter


class AuthRefused(socketio.exceptions.ConnectionRefusedError):
    """Refuse a connection with gateway.md's `{"code", "message"}` connect_error data."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error_args = {"code": code, "message": message}  # sent as connect_error data


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
    for namespace in NAMESPACES:
        sio.on("connect", _refuse_until_identity, namespace=namespace)
    return sio


async def _refuse_until_identity(sid: str, environ: dict, auth: object = None) -> None:
    """Until tokens exist (identity issue) no credential can be valid: refuse every connect
    the way a bad token is refused, so the namespaces exist without an open door."""
    raise AuthRefused("auth_failed", "A valid access token is required")
