"""Where presence lives: who has a session that heartbeated in the last 45 s, and what it
watches (gateway.md "Presence"). One interface, in process (embedded) or on Redis (every
gateway process shares it, and a crashed process's entries expire on their own).

An entry is per (user, session): `{"status", "activity", "activity_at", "expires_at"}`.
A global expiry index lets one sweeper find the entries that lapsed without a disconnect.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

ENTRY_TTL_S = 45.0
KEY = "anilay:presence:{}"
EXPIRY_KEY = "anilay:presence:expiry"
LAST_KEY = "anilay:presence:last:{}"


class PresenceEntry(msgspec.Struct, frozen=True):
    status: str
    activity: dict[str, Any] | None
    activity_at: float | None
    beat_at: float
    expires_at: float


_encode = msgspec.json.encode
_decode_entry = msgspec.json.Decoder(PresenceEntry).decode


class PresenceStore:
    async def put(self, user_id: int, session_id: str, entry: PresenceEntry) -> None:
        raise NotImplementedError

    async def get(self, user_id: int, session_id: str) -> PresenceEntry | None:
        return (await self.entries(user_id)).get(session_id)

    async def entries(self, user_id: int) -> dict[str, PresenceEntry]:
        """Live (unexpired) entries of a user, by session id."""
        raise NotImplementedError

    async def remove(self, user_id: int, session_id: str) -> None:
        raise NotImplementedError

    async def expired(self, now: float | None = None, limit: int = 500) -> list[tuple[int, str]]:
        """(user, session) pairs whose entry lapsed; they are removed as they are returned."""
        raise NotImplementedError

    async def last_published(self, user_id: int) -> bytes | None:
        raise NotImplementedError

    async def set_last_published(self, user_id: int, value: bytes | None) -> None:
        raise NotImplementedError


class InProcessPresence(PresenceStore):
    def __init__(self) -> None:
        self._entries: dict[int, dict[str, PresenceEntry]] = {}
        self._last: dict[int, bytes] = {}

    async def put(self, user_id: int, session_id: str, entry: PresenceEntry) -> None:
        self._entries.setdefault(user_id, {})[session_id] = entry

    async def entries(self, user_id: int) -> dict[str, PresenceEntry]:
        now = time.time()
        return {s: e for s, e in self._entries.get(user_id, {}).items() if e.expires_at > now}

    async def remove(self, user_id: int, session_id: str) -> None:
        sessions = self._entries.get(user_id)
        if sessions is not None:
            sessions.pop(session_id, None)
            if not sessions:
                del self._entries[user_id]

    async def expired(self, now: float | None = None, limit: int = 500) -> list[tuple[int, str]]:
        now = time.time() if now is None else now
        lapsed = [
            (user_id, session_id)
            for user_id, sessions in self._entries.items()
            for session_id, entry in sessions.items()
            if entry.expires_at <= now
        ][:limit]
        for user_id, session_id in lapsed:
            await self.remove(user_id, session_id)
        return lapsed

    async def last_published(self, user_id: int) -> bytes | None:
        return self._last.get(user_id)

    async def set_last_published(self, user_id: int, value: bytes | None) -> None:
        if value is None:
            self._last.pop(user_id, None)
        else:
            self._last[user_id] = value


class RedisPresence(PresenceStore):
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def put(self, user_id: int, session_id: str, entry: PresenceEntry) -> None:
        key = KEY.format(user_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, session_id, _encode(entry))
            pipe.expire(key, int(ENTRY_TTL_S) + 60)
            pipe.zadd(EXPIRY_KEY, {f"{user_id}:{session_id}": entry.expires_at})
            await pipe.execute()

    async def entries(self, user_id: int) -> dict[str, PresenceEntry]:
        now = time.time()
        raw = await self.client.hgetall(KEY.format(user_id))
        out = {}
        for session_id, blob in raw.items():
            entry = _decode_entry(blob)
            if entry.expires_at > now:
                out[session_id.decode() if isinstance(session_id, bytes) else session_id] = entry
        return out

    async def remove(self, user_id: int, session_id: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(KEY.format(user_id), session_id)
            pipe.zrem(EXPIRY_KEY, f"{user_id}:{session_id}")
            await pipe.execute()

    async def expired(self, now: float | None = None, limit: int = 500) -> list[tuple[int, str]]:
        now = time.time() if now is None else now
        members = await self.client.zrangebyscore(EXPIRY_KEY, "-inf", now, start=0, num=limit)
        lapsed = []
        for member in members:
            text = member.decode() if isinstance(member, bytes) else member
            # ZREM decides between two sweepers: only the one that removed it reports it.
            if await self.client.zrem(EXPIRY_KEY, text):
                user_text, _, session_id = text.partition(":")
                blob = await self.client.hget(KEY.format(user_text), session_id)
                if blob is not None and (entry := _decode_entry(blob)).expires_at > now:
                    # Refreshed in the meantime: our ZREM may have taken its new score.
                    await self.client.zadd(EXPIRY_KEY, {text: entry.expires_at})
                    continue
                await self.client.hdel(KEY.format(user_text), session_id)
                lapsed.append((int(user_text), session_id))
        return lapsed

    async def last_published(self, user_id: int) -> bytes | None:
        return await self.client.get(LAST_KEY.format(user_id))

    async def set_last_published(self, user_id: int, value: bytes | None) -> None:
        if value is None:
            await self.client.delete(LAST_KEY.format(user_id))
        else:
            await self.client.set(LAST_KEY.format(user_id), value, ex=24 * 3600)
