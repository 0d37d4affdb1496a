"""Liveness and readiness probes (platform.md H1, H2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from server.errors import ApiError, Code
from server.events import rfc3339
from server.health import check_readiness, details
from server.http import Call, endpoint


class Live(msgspec.Struct):
    status: Literal["ok"]


class Ready(msgspec.Struct):
    status: Literal["ready", "degraded"]
    checks: dict[str, str]


NO_STORE = {"Cache-Control": "no-store"}


@endpoint("GET", "/health/live", response=Live, tag="health")
async def health_live(call: Call) -> Live:
    """Liveness: the event loop answers. Touches no dependency."""
    call.headers.update(NO_STORE)
    return Live(status="ok")


@endpoint("GET", "/health/ready", response=Ready, errors=[Code.not_ready], tag="health")
async def health_ready(call: Call) -> Ready:
    """Readiness: the database (and Redis, when configured) answer and the schema is current."""
    readiness = await check_readiness(call.services)
    if not readiness.ready:
        raise ApiError(
            Code.not_ready,
            "Not ready: " + ", ".join(f"{k} {v}" for k, v in readiness.checks.items()),
            extra={"checks": readiness.checks},
            headers=NO_STORE,
        )
    call.headers.update(NO_STORE)
    return Ready(status=readiness.status, checks=readiness.checks)  # type: ignore[arg-type]


class Details(msgspec.Struct):
    status: Literal["ok", "degraded"]
    version: str
    commit: str
    started_at: str
    uptime_s: float
    role: str
    deployment: Literal["embedded", "scale_out"]
    checks: dict[str, Any]


@endpoint("GET", "/health/details", response=Details, auth="staff", tag="health")
async def health_details(call: Call) -> Details:
    """Detailed status for staff: dependencies, the bus, sweepers, push, signing keys."""
    from models.push.delivery import push_status

    body = await details(call.services, {"push": push_status(call.services)})
    call.headers.update(NO_STORE)
    started = datetime.fromtimestamp(body["started_at"], UTC)
    return msgspec.convert({**body, "started_at": rfc3339(started)}, Details)


routes = [health_live, health_ready, health_details]
