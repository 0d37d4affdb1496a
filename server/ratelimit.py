"""Rate limits through the `limits` package: in memory when embedded, Redis in production.

When Redis is unreachable the limiter falls back to per-process memory rather than failing
the request (platform.md R2: a Redis outage must not take REST down).
"""

from __future__ import annotations

import contextvars
import logging
import math
import time

import limits
import limits.aio.storage
import limits.aio.strategies
import msgspec

from server.errors import ApiError, Code
from server.redis_client import REDIS_DOWN_ERRORS

log = logging.getLogger("anilay.ratelimit")


# The tightest limit a request was checked against, reported in its response headers
# (DESIGN: X-RateLimit-*). The HTTP layer opens a slot per request; elsewhere it is None.
current_limit: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "current_limit", default=None
)


class RateLimitResult(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # unix seconds when the window frees up

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_at - time.time())))
        return headers


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        self._memory = limits.aio.strategies.SlidingWindowCounterRateLimiter(
            limits.aio.storage.MemoryStorage()
        )
        self._redis = None
        if redis_url:
            storage = limits.aio.storage.RedisStorage(
                "async+" + redis_url, implementation="redispy", key_prefix="anilay:rl"
            )
            self._redis = limits.aio.strategies.SlidingWindowCounterRateLimiter(storage)
        self._parsed: dict[str, limits.RateLimitItem] = {}

    def _item(self, rule: str) -> limits.RateLimitItem:
        item = self._parsed.get(rule)
        if item is None:
            item = self._parsed[rule] = limits.parse(rule)
        return item

    async def hit(self, rule: str, *identifiers: str, cost: int = 1) -> RateLimitResult:
        """Count one use of `rule` (e.g. "60/minute") for these identifiers."""
        item = self._item(rule)
        strategy = self._redis or self._memory
        try:
            allowed = await strategy.hit(item, *identifiers, cost=cost)
            stats = await strategy.get_window_stats(item, *identifiers)
        except REDIS_DOWN_ERRORS as error:
            log.warning("rate limit storage unreachable, limiting per process: %s", error)
            strategy = self._memory
            allowed = await strategy.hit(item, *identifiers, cost=cost)
            stats = await strategy.get_window_stats(item, *identifiers)
        return RateLimitResult(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_at=stats.reset_time,
        )

    async def check(self, rule: str, *identifiers: str, cost: int = 1) -> RateLimitResult:
        """Hit the limit and raise 429 (with Retry-After) when it is exceeded."""
        result = await self.hit(rule, *identifiers, cost=cost)
        slot = current_limit.get()
        if slot is not None and (not slot or result.remaining < slot[0].remaining):
            slot[:] = [result]
        if not result.allowed:
            raise ApiError(
                Code.rate_limited, "Too many requests; retry later", headers=result.headers()
            )
        return result

    async def ensure_room(self, rule: str, *identifiers: str) -> None:
        """Raise 429 if `rule` is already exhausted, without counting this call (for limits
        that count only failures, such as wrong passwords)."""
        item = self._item(rule)
        try:
            strategy = self._redis or self._memory
            room = await strategy.test(item, *identifiers)
            stats = await strategy.get_window_stats(item, *identifiers) if not room else None
        except REDIS_DOWN_ERRORS:
            strategy = self._memory
            room = await strategy.test(item, *identifiers)
            stats = await strategy.get_window_stats(item, *identifiers) if not room else None
        if not room and stats is not None:
            result = RateLimitResult(
                allowed=False, limit=item.amount, remaining=0, reset_at=stats.reset_time
            )
            raise ApiError(
                Code.rate_limited, "Too many requests; retry later", headers=result.headers()
            )

    async def clear(self, rule: str, *identifiers: str) -> None:
        """Forget the count of `rule` for these identifiers (a success resets failures)."""
        item = self._item(rule)
        try:
            await (self._redis or self._memory).clear(item, *identifiers)
        except REDIS_DOWN_ERRORS:
            await self._memory.clear(item, *identifiers)

    async def reset(self) -> None:
        await self._memory.storage.reset()
        if self._redis is not None:
            await self._redis.storage.reset()
