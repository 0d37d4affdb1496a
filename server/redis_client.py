"""The Redis connection the production deployment shares, and what counts as "Redis is down"."""

from __future__ import annotations

import redis.asyncio as aioredis
import redis.exceptions

REDIS_DOWN_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def connect_redis(url: str, timeout_s: float) -> aioredis.Redis:
    """A client with short timeouts: a dead Redis must fail fast, not hang a request.

    Reads that block on purpose (XREAD BLOCK) pass their own, longer timeout.
    """
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=None,
        health_check_interval=15,
        retry_on_timeout=False,
    )
