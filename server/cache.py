"""A small key-value cache with TTLs: in-process when embedded, Redis in production.

Values are bytes; callers encode. `add` (set-if-absent) is the primitive for throttles and
once-per-window gates (typing markers, IP-log gates).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import redis.asyncio as aioredis

from server.redis_client import REDIS_DOWN_ERRORS

log = logging.getLogger("anilay.cache")

CACHE_PREFIX = "anilay:cache:"


class Cache:
    async def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def get_many(self, *keys: str) -> list[bytes | None]:
        """The values of `keys`, in order, in one round trip."""
        raise NotImplementedError

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        raise NotImplementedError

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Set only if absent; True when this call set it."""
        raise NotImplementedError

    async def delete(self, *keys: str) -> None:
        raise NotImplementedError


class InProcessCache(Cache):
    """A bounded LRU with per-entry expiry; expired entries are dropped when touched."""

    def __init__(self, max_entries: int = 50_000, clock=time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _live(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def get_many(self, *keys: str) -> list[bytes | None]:
        return [self._live(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (self._clock() + ttl_s, bytes(value))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl_s)
        return True

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(key, None)


class RedisCache(Cache):
    """The shared cache. While Redis is unreachable it behaves as an empty cache (reads
    miss, so callers go to the database; writes are skipped), so REST keeps serving
    (platform.md R2). Deletions that could not be made are retried before the next
    operation once Redis answers again: an invalidation is never silently lost."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._undeleted: set[str] = set()

    async def _flush_undeleted(self) -> None:
        if self._undeleted:
            keys, self._undeleted = self._undeleted, set()
            try:
                await self.client.delete(*keys)
            except REDIS_DOWN_ERRORS:
                self._undeleted |= keys
                raise

    async def get(self, key: str) -> bytes | None:
        try:
            await self._flush_undeleted()
            return await self.client.get(CACHE_PREFIX + key)
        except REDIS_DOWN_ERRORS as error:
            log.warning("cache unreachable, reading through: %s", error)
            return None

    async def get_many(self, *keys: str) -> list[bytes | None]:
        try:
            await self._flush_undeleted()
            return await self.client.mget([CACHE_PREFIX + key for key in keys])
        except REDIS_DOWN_ERRORS as error:
            log.warning("cache unreachable, reading through: %s", error)
            return [None] * len(keys)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        try:
            await self._flush_undeleted()
            await self.client.set(CACHE_PREFIX + key, value, px=max(1, int(ttl_s * 1000)))
        except REDIS_DOWN_ERRORS as error:
            log.warning("cache unreachable, not caching: %s", error)

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        """While Redis is down nothing is added: throttled actions are skipped, not
        let through unthrottled."""
        try:
            await self._flush_undeleted()
            return bool(
                await self.client.set(
                    CACHE_PREFIX + key, value, px=max(1, int(ttl_s * 1000)), nx=True
                )
            )
        except REDIS_DOWN_ERRORS as error:
            log.warning("cache unreachable, treating %s as present: %s", key, error)
            return False

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        names = {CACHE_PREFIX + key for key in keys}
        try:
            await self._flush_undeleted()
            await self.client.delete(*names)
        except REDIS_DOWN_ERRORS as error:
            log.error("cache unreachable, invalidation postponed: %s", error)
            self._undeleted |= names
