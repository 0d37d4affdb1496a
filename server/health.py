"""Readiness: is this process able to serve? (platform.md R2)

The database (SELECT 1 and the schema at the code's migration head) and Redis (PING) are
checked concurrently, each with a 1 s timeout, and the answer is cached for 1 s so a probe
storm costs one check. A Redis outage makes `gateway` and `worker` processes unready but
leaves `rest`/`all` serving as `degraded`: REST has fallbacks for everything Redis does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import msgspec

from server.migrate import current_revisions, head_revisions
from server.services import Services

CHECK_TIMEOUT_S = 1.0
CACHE_S = 1.0

CheckResult = Literal["ok", "fail", "timeout", "skipped", "behind"]


class Readiness(msgspec.Struct, frozen=True):
    ready: bool
    status: Literal["ready", "degraded", "not_ready"]
    checks: dict[str, str]


_HEADS = head_revisions()
_cache: dict[int, tuple[float, Readiness]] = {}


async def _check_database(services: Services) -> CheckResult:
    await services.db.ping()
    return "ok" if await current_revisions(services.db) == _HEADS else "behind"


async def _check_redis(services: Services) -> CheckResult:
    if services.redis is None:
        return "skipped"
    await services.redis.ping()
    return "ok"


async def _timed(check, services: Services) -> CheckResult:
    try:
        return await asyncio.wait_for(check(services), CHECK_TIMEOUT_S)
    except TimeoutError:
        return "timeout"
    except Exception:  # any failure of a dependency is "fail"; the probe itself never 500s
        return "fail"


async def check_readiness(services: Services) -> Readiness:
    cached = _cache.get(id(services))
    now = time.monotonic()
    if cached and now - cached[0] < CACHE_S:
        return cached[1]
    database, redis = await asyncio.gather(
        _timed(_check_database, services), _timed(_check_redis, services)
    )
    checks = {"database": database, "redis": redis}
    redis_ok = redis in ("ok", "skipped")
    needs_redis = services.settings.role in ("gateway", "worker")
    if (
        not services.ready
        or services.draining
        or database != "ok"
        or (needs_redis and not redis_ok)
    ):
        result = Readiness(ready=False, status="not_ready", checks=checks)
    else:
        result = Readiness(ready=True, status="ready" if redis_ok else "degraded", checks=checks)
    _cache[id(services)] = (now, result)
    return result
