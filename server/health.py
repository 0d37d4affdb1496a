"""Readiness: is this process able to serve? (platform.md R2)

The database (SELECT 1 and the schema at the code's migration head) and Redis (PING) are
checked concurrently, each with a 1 s timeout, and the answer is cached for 1 s so a probe
storm costs one check. A Redis outage makes `gateway` and `worker` processes unready but
leaves `rest`/`all` serving as `degraded`: REST has fallbacks for everything Redis does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
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


async def _timed(check: Callable[[], Awaitable[object]]) -> tuple[CheckResult, float | None]:
    """Run one dependency check under the probe's timeout: its status (what the check
    returned when that is a status, else "ok") and how long it took in ms. Any failure is a
    status: a probe never 500s."""
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return "timeout", None
    except Exception:
        return "fail", None
    status: CheckResult = result if isinstance(result, str) else "ok"  # type: ignore[assignment]
    return status, round((time.perf_counter() - started) * 1000, 2)


async def check_readiness(services: Services) -> Readiness:
    cached = _cache.get(id(services))
    now = time.monotonic()
    if cached and now - cached[0] < CACHE_S:
        return cached[1]
    (database, _), (redis, _) = await asyncio.gather(
        _timed(partial(_check_database, services)), _timed(partial(_check_redis, services))
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


DETAILS_CACHE_S = 5.0
_details_cache: dict[int, tuple[float, dict]] = {}


async def details(services: Services, extra_checks: dict[str, dict]) -> dict:
    """The staff view (platform.md H3): never a secret, DSN, host name or address."""
    cached = _details_cache.get(id(services))
    now = time.monotonic()
    if cached and now - cached[0] < DETAILS_CACHE_S:
        return cached[1]
    settings = services.settings
    db_status, db_ms = await _timed(services.db.ping)
    revisions = await current_revisions(services.db) if db_status == "ok" else frozenset()
    redis_check = None
    if services.redis is not None:
        redis_status, redis_ms = await _timed(services.redis.ping)
        redis_check = {"status": redis_status, "latency_ms": redis_ms}
    try:
        stream_length = await services.log.length()
        bus_status = "degraded" if services.bus.outbox_pending else "ok"
    except Exception:  # the log is unreachable: the outbox keeps events
        stream_length, bus_status = None, "fail"
    pending = await services.bus.outbox_size() if db_status == "ok" else None
    sweepers = [
        {
            "name": name,
            "last_run_at": record.get("last_run_at"),
            "last_status": record.get("last_status"),
        }
        for name, record in sorted(services.sweepers.items())
    ]
    keys = services.keys
    checks: dict = {
        "database": {
            "status": db_status if revisions == _HEADS else "behind",
            "latency_ms": db_ms,
            "dialect": services.db.dialect,
            "schema_revision": ",".join(sorted(revisions)) or None,
            "expected_revision": ",".join(sorted(_HEADS)),
        },
        "redis": redis_check,
        "bus": {
            "status": bus_status,
            "stream_length": stream_length,
            "pending": pending,
            "oldest_pending_age_s": None,
        },
        "gateway": {
            "connected_sockets": len(services.gateway.registry)
            if services.gateway is not None
            else 0
        },
        "sweepers": sweepers,
        "signing_keys": {
            "active_kid": keys.active_kid if keys else None,
            "active_age_days": None,
            "published": len(keys.jwks()["keys"]) if keys else 0,
        },
        **extra_checks,
    }
    statuses = [checks["database"]["status"], checks["bus"]["status"]]
    statuses += [redis_check["status"]] if redis_check else []
    statuses += [s["last_status"] for s in sweepers if s["last_status"]]
    statuses += [c.get("status") for c in extra_checks.values()]
    body = {
        "status": "ok" if all(s == "ok" for s in statuses) else "degraded",
        "version": settings.version,
        "commit": settings.commit,
        "started_at": services.started_at,
        "uptime_s": round(time.time() - services.started_at, 1),
        "role": settings.role,
        "deployment": settings.deployment,
        "checks": checks,
    }
    _details_cache[id(services)] = (now, body)
    return body
