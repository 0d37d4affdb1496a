"""The composition root: `create_app(settings)` builds everything a process runs.

One ASGI app serves REST under /api/v1, the Socket.IO gateway at /api/v1/ws and
/api/v1/chat/ws, and /metrics. Connections open in the lifespan; nothing is global.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from functools import partial

import socketio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import models  # noqa: F401  (registers every table before anything queries)
import rest
from gateway.presence import sweep as presence_sweep
from gateway.server import ENGINEIO_PATHS, create_socket_server
from models.auth.identity import make_resolver
from rest.auth import jwks_response
from rest.docs import document as openapi_document
from server import ids
from server.bus import Bus
from server.cache import Cache, InProcessCache, RedisCache
from server.db import Database
from server.errors import ApiError, Code
from server.http import Endpoint, problem_response
from server.log import EventLog, InProcessLog, RedisLog
from server.observability import Metrics, RequestMiddleware
from server.passwords import Passwords
from server.presence import InProcessPresence, RedisPresence
from server.ratelimit import RateLimiter
from server.redis_client import connect_redis
from server.routing import ApiRouter, RouteTable
from server.services import Services
from server.settings import Settings
from server.tokens import KeyRing, load_key_encryption_key
from server.workers import lease_worker_id, start_background, start_loop

log = logging.getLogger("anilay.app")

API_PREFIX = "/api/v1"
API_PREFIX_SLASH = API_PREFIX + "/"
# (name, period in seconds, step(services)) for the worker role; server/workers.py runs the
# platform's own loops and the clock-driven domain sweeps. Presence lapses are the gateway's
# liveness: they always run.
DOMAIN_SWEEPERS = (("presence_expiry", 1.0, presence_sweep),)


def build_services(settings: Settings) -> Services:
    """Construct (not connect) the process's services for these settings."""
    db = Database(
        settings.database_url, pool_min=settings.db_pool_min, pool_max=settings.db_pool_max
    )
    redis = (
        connect_redis(settings.redis_url, settings.redis_timeout_s) if settings.redis_url else None
    )
    event_log: EventLog
    cache: Cache
    if redis is not None:
        event_log = RedisLog(redis, settings.gateway_log_maxlen, settings.gateway_log_retention_s)
        cache = RedisCache(redis)
    else:
        event_log = InProcessLog(settings.gateway_log_maxlen, settings.gateway_log_retention_s)
        cache = InProcessCache()
    bus = Bus(db, event_log)
    db.set_commit_hook(bus.publish)
    services = Services(
        settings=settings,
        db=db,
        log=event_log,
        bus=bus,
        cache=cache,
        limiter=RateLimiter(settings.redis_url),
        redis=redis,
    )
    services.presence = RedisPresence(redis) if redis is not None else InProcessPresence()
    services.passwords = Passwords(settings)
    services.resolve_identity = make_resolver(services)
    return services


class Application:
    """The ASGI entry point: Engine.IO paths go to Socket.IO, HTTP under /api/v1 to the API
    router, everything else (lifespan, /metrics, the root JWKS, 404s) to Starlette."""

    def __init__(
        self,
        http: Starlette,
        api: ASGIApp,
        routes: RouteTable,
        sio: socketio.AsyncServer | None,
        services: Services,
    ) -> None:
        self.http = http
        self.api = api
        self.routes = routes  # what `api` serves, for introspection
        self.sio = sio
        self.services = services
        self._engineio = (
            {path: socketio.ASGIApp(sio, socketio_path=path.lstrip("/")) for path in ENGINEIO_PATHS}
            if sio is not None
            else {}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if path.startswith(API_PREFIX_SLASH):
                for prefix, engineio_app in self._engineio.items():
                    if path == prefix or path.startswith(prefix + "/"):
                        await engineio_app(scope, receive, send)
                        return
                if scope["type"] == "http":
                    await self.api(scope, receive, send)
                    return
        await self.http(scope, receive, send)


def create_app(
    settings: Settings,
    services: Services | None = None,
    endpoints: list[Endpoint] | None = None,
) -> Application:
    """Build the process. `endpoints` defaults to the whole API (tests mount their own)."""
    services = services or build_services(settings)
    endpoints = rest.endpoints() if endpoints is None else endpoints
    # A gateway or worker process serves the probes only; REST lives in rest processes.
    served = endpoints if settings.runs_rest else [e for e in endpoints if e.tag == "health"]
    metrics = Metrics()
    sio = create_socket_server(services)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.db.connect()
        background: list[asyncio.Task] = []
        try:
            ids.configure(await lease_worker_id(services, background))
            kek = await asyncio.to_thread(
                load_key_encryption_key,
                settings.key_encryption_key,
                settings.key_encryption_key_file,
            )
            services.keys = KeyRing(services.db, kek, settings.issuer)
            try:
                await services.keys.ensure_active()
            except Exception as error:  # e.g. an unmigrated database: serve, report not ready
                log.error("signing keys unavailable: %s", error)
            background.extend(start_background(services))
            if settings.runs_worker:  # domain sweepers: one process runs them for all
                background.extend(
                    start_loop(services, name, every_s, partial(step, services))
                    for name, every_s, step in DOMAIN_SWEEPERS
                )
            if settings.runs_gateway:
                background.append(
                    asyncio.create_task(
                        services.gateway.dispatcher.run(), name="gateway:dispatcher"
                    )
                )
                await services.gateway.dispatcher.started.wait()
            if settings.runs_rest:  # R29: generated at startup; a bad declaration fails boot
                await asyncio.to_thread(openapi_document, http)
            services.ready = True
            # Startup objects (routes, schemas, modules) never die: move them out of the
            # collector's sight, so full collections stay short with thousands of sockets.
            gc.freeze()
            yield
        finally:
            services.ready = False
            services.draining = True
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await services.log.close()
            if services.redis is not None:
                await services.redis.aclose()
            await services.db.disconnect()

    async def jwks_at_root(request: Request) -> Response:
        return jwks_response(services, request)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.events_published.set(services.bus.published)
        metrics.outbox_pending.set(1 if services.bus.outbox_pending else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    http = Starlette(
        routes=[
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/.well-known/jwks.json", jwks_at_root, methods=["GET"]),
        ],
        middleware=_middleware(settings, metrics),
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    http.state.services = services
    http.state.endpoints = served
    http.state.metrics = metrics
    http.state.sio = sio
    router = ApiRouter(
        served,
        prefix=API_PREFIX,
        services=services,
        metrics=metrics,
        app=http,
        log_requests=settings.access_log,
    )
    api: ASGIApp = router
    if settings.cors_origins:  # no origins configured: skip the layer and its per-request cost
        api = CORSMiddleware(router, **_cors_options(settings))
    return Application(http, api, router.table, sio if settings.runs_gateway else None, services)


def _middleware(settings: Settings, metrics: Metrics) -> list[Middleware]:
    stack = [Middleware(RequestMiddleware, metrics=metrics, log_requests=settings.access_log)]
    if settings.cors_origins:
        stack.append(Middleware(CORSMiddleware, **_cors_options(settings)))
    return stack


def _cors_options(settings: Settings) -> dict:
    return {
        "allow_origins": list(settings.cors_origins),
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
        "allow_headers": [
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "If-None-Match",
            "X-Request-Id",
        ],
        "expose_headers": [
            "ETag",
            "Retry-After",
            "X-Request-Id",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ],
        "max_age": 600,
    }


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return problem_response(error)


_HTTP_CODES = {
    404: Code.not_found,
    405: Code.method_not_allowed,
    400: Code.malformed,
    413: Code.too_large,
}


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = _HTTP_CODES.get(error.status_code, Code.malformed)
    headers = dict(error.headers or {})
    if error.status_code == 405:
        return problem_response(
            ApiError(code, "This route does not take that method", headers=headers)
        )
    return problem_response(ApiError(code, headers=headers, status=error.status_code))


async def _unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unhandled error", extra={"fields": {"path": request.url.path}})
    return problem_response(ApiError(Code.internal, "Something went wrong on our side"))
