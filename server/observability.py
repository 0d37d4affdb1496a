"""Structured JSON logs, request ids, access logs and Prometheus metrics.

`RequestMiddleware` is pure ASGI and keeps no per-request state outside the call: it stamps
an `X-Request-Id`, times the request, counts it under its route template (not the raw path,
so ids do not explode the label set) and writes one JSON access-log line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("anilay.access")
QUIET_PATHS = frozenset({"/api/v1/health/live", "/metrics"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True


class Metrics:
    """One registry per app, so several apps in one test process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "anilay_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "anilay_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.events_published = Gauge(
            "anilay_events_published",
            "Events appended to the log by this process",
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "anilay_outbox_pending",
            "1 while this process routes events to the outbox",
            registry=self.registry,
        )
        self.sockets = Gauge("anilay_gateway_sockets", "Connected sockets", registry=self.registry)
        # prometheus_client's labels() costs more than the observation itself: keep children.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, template: str, status: int, elapsed: float) -> None:
        """Count one request and time it, under its route template (never the raw path)."""
        if method not in HTTP_METHODS:  # a client-chosen label would grow without bound
            method = "OTHER"
        counter = self._counters.get((method, template, status))
        if counter is None:
            counter = self._counters[(method, template, status)] = self.requests.labels(
                method, template, str(status)
            )
        timer = self._timers.get((method, template))
        if timer is None:
            timer = self._timers[(method, template)] = self.latency.labels(method, template)
        counter.inc()
        timer.observe(elapsed)


class RequestMiddleware:
    """Request id, metrics and access log for the routes outside the API (the API's own
    router does the same inline, see server/routing.py)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log_requests: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = route.path if isinstance(route, Route) else "unmatched"
            self.metrics.observe(scope["method"], template, status, elapsed)
            if self.log_requests:
                log_access(scope, request_id, template, status, elapsed)


def log_access(scope: Scope, request_id: str, template: str, status: int, elapsed: float) -> None:
    """One JSON access-log line (probes and scrapes are left out: they would drown it)."""
    if scope["path"] in QUIET_PATHS:
        return
    access_log.info(
        "request",
        extra={
            "fields": {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "route": template,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": (scope.get("client") or ("", 0))[0],
            }
        },
    )


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= 64 and set(text) <= _REQUEST_ID_OK:
                return text
    return None
