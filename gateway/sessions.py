"""Resumable gateway sessions (gateway.md Data: `anilay:session:{session_id}`).

A session records whose it is and which topics it had, so a client that comes back within
the resume window gets exactly what it missed. It is kept in the shared cache (Redis in
scale-out: a client may resume on another process) and its TTL restarts on every
heartbeat and on disconnect.
"""

from __future__ import annotations

import msgspec

from server.cache import Cache
from server.secrets import random_token


class GatewaySession(msgspec.Struct):
    session_id: str
    user_id: int
    namespace: str
    topics: list[str]
    device_id: int | None = None
    node: str = ""


_decode = msgspec.msgpack.Decoder(GatewaySession).decode
_encode = msgspec.msgpack.encode


def new_session_id() -> str:
    return random_token(18)


def _key(session_id: str) -> str:
    return f"gateway:session:{session_id}"


class SessionStore:
    def __init__(self, cache: Cache, window_s: float) -> None:
        self.cache = cache
        self.window_s = window_s

    async def save(self, session: GatewaySession) -> None:
        await self.cache.set(_key(session.session_id), _encode(session), self.window_s)

    async def load(self, session_id: str) -> GatewaySession | None:
        if not isinstance(session_id, str) or not 8 <= len(session_id) <= 64:
            return None
        blob = await self.cache.get(_key(session_id))
        return None if blob is None else _decode(blob)

    async def drop(self, session_id: str) -> None:
        await self.cache.delete(_key(session_id))
