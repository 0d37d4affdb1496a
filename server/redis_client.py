"""The Redis connection the production deployment shares, and what counts as "Redis is down"."""

from __future__ import annotations

import redis.asyncio as aioredis
import redis.exceptions

REDIS_DOWN_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


MAX_CONNECTIONS = 256
POOL_WAIT_S = 5.0


def connect_redis(url: str, timeout_s: float) -> aioredis.Redis:
    """A client with short connect timeouts (a dead Redis must fail fast, not hang a
    request) and a blocking pool: a burst of a thousand reconnecting sockets waits for a
    connection instead of failing on redis-py's default pool of 100, which raises at once.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=timeout_s,
        socket_timeout=None,
        health_check_interval=15,
        retry_on_timeout=False,
    )
    return aioredis.Redis(connection_pool=pool)
