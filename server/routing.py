"""The REST front door: every `/api/v1/...` request is matched, served and accounted here.

Starlette's router tries routes one regex at a time through nested Mounts, behind two
exception layers and a middleware; for our smallest endpoints that was half of the time a
request spent in Python. Here a request costs one dict lookup for a literal path (most of
them), or a dict lookup on the first segment and a few regexes of that group otherwise.
The same pass stamps the request id, counts the request under its route template and
writes the access log, so no middleware wraps `send`.

Matching follows Starlette's rules where they matter: a literal path wins over a
parameterised one, parameterised ones are tried in declaration order, a path that exists
with another method is a 405 naming what it allows, and HEAD is served by GET.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import ApiError, Code
from server.http import Endpoint, problem_response
from server.observability import Metrics, incoming_request_id, log_access
from server.services import Services

log = logging.getLogger("anilay.http")


@dataclass
class _Path:
    """One path template and the endpoint serving each of its methods."""

    template: str
    methods: dict[str, Endpoint] = field(default_factory=dict)
    regex: re.Pattern[str] | None = None
    convertors: dict[str, Convertor[Any]] = field(default_factory=dict)

    def allowed(self) -> str:
        methods = set(self.methods)
        if "GET" in methods:
            methods.add("HEAD")
        return ", ".join(sorted(methods))


class RouteTable:
    """Endpoints indexed for matching; paths are relative to the API prefix."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self.literal: dict[str, _Path] = {}
        self.by_segment: dict[str, list[_Path]] = {}
        for endpoint in endpoints:
            self._add(endpoint)

    def _add(self, endpoint: Endpoint) -> None:
        segment = _first_segment(endpoint.path)
        if "{" in segment:
            raise ValueError(f"a path must start with a literal segment: {endpoint.path}")
        if "{" not in endpoint.path:
            entry = self.literal.setdefault(endpoint.path, _Path(endpoint.path))
        else:
            group = self.by_segment.setdefault(segment, [])
            entry = next((p for p in group if p.template == endpoint.path), None)
            if entry is None:
                regex, _, convertors = compile_path(endpoint.path)
                entry = _Path(endpoint.path, regex=regex, convertors=convertors)
                group.append(entry)
        if endpoint.method in entry.methods:
            raise ValueError(f"{endpoint.method} {endpoint.path} is declared twice")
        entry.methods[endpoint.method] = endpoint

    def operations(self) -> set[tuple[str, str]]:
        """Every (method, path template) served."""
        paths = [*self.literal.values(), *(p for g in self.by_segment.values() for p in g)]
        return {(method, path.template) for path in paths for method in path.methods}

    def match(self, path: str, method: str) -> tuple[Endpoint, dict[str, Any], str]:
        """The endpoint, its path parameters and its template; ApiError 404/405 otherwise."""
        if "\x00" in path:  # no resource is named with a NUL (and no text column stores one)
            raise ApiError(Code.not_found)
        found = self.literal.get(path)
        if found is not None:
            endpoint = _for_method(found, method)
            if endpoint is not None:
                return endpoint, {}, found.template
        for candidate in self.by_segment.get(_first_segment(path), ()):
            matched = candidate.regex.match(path)  # type: ignore[union-attr]
            if matched is None:
                continue
            if found is None:
                found = candidate
            endpoint = _for_method(candidate, method)
            if endpoint is not None:
                params = {
                    name: candidate.convertors[name].convert(value)
                    for name, value in matched.groupdict().items()
                }
                return endpoint, params, candidate.template
        if found is not None:
            raise ApiError(
                Code.method_not_allowed,
                "This route does not take that method",
                headers={"Allow": found.allowed()},
            )
        raise ApiError(Code.not_found)


def _for_method(path: _Path, method: str) -> Endpoint | None:
    endpoint = path.methods.get(method)
    if endpoint is None and method == "HEAD":
        endpoint = path.methods.get("GET")
    return endpoint


def _first_segment(path: str) -> str:
    return path.split("/", 2)[1] if path.startswith("/") else ""


class ApiRouter:
    """The ASGI app for HTTP requests under `prefix`.

    `app` is the Starlette application whose `state` handlers may read through
    `request.app`; it is put in the scope as Starlette would.
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        prefix: str,
        services: Services,
        metrics: Metrics,
        app: ASGIApp,
        log_requests: bool,
    ) -> None:
        self.table = RouteTable(endpoints)
        self.prefix = prefix
        self.services = services
        self.metrics = metrics
        self.app = app
        self.log_requests = log_requests
        # Request ids: a random per-process prefix and a counter — unique, and far cheaper
        # than a uuid4 per request on the hottest path we have.
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = incoming_request_id(scope) or f"{self._id_prefix}{next(self._ids):016x}"
        scope.setdefault("state", {})["request_id"] = request_id
        scope["app"] = self.app
        method = scope["method"]
        template = "unmatched"
        try:
            endpoint, params, relative = self.table.match(scope["path"][len(self.prefix) :], method)
            template = self.prefix + relative
            scope["path_params"] = params
            response = await endpoint.respond(Request(scope, receive), self.services)
        except ApiError as error:
            response = problem_response(error)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"path": scope["path"]}})
            response = problem_response(ApiError(Code.internal, "Something went wrong on our side"))
        response.raw_headers.append((b"x-request-id", request_id.encode()))
        try:
            await response(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(method, template, response.status_code, elapsed)
            if self.log_requests:
                log_access(scope, request_id, template, response.status_code, elapsed)
