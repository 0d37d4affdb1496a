"""Declaring endpoints: one decorator carries everything the router, the request parser,
the authorizer and the OpenAPI generator need to know about a route.

    @endpoint("POST", "/support/contact", body=ContactForm, response=ContactCreated,
              status=201, auth="optional", errors=[Code.rate_limited])
    async def create_contact(call: Call[ContactForm]) -> ContactCreated: ...

A handler returns a msgspec struct (encoded as JSON with the declared status), `None` (204)
or a Starlette `Response`. It raises `ApiError` for anything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from server.auth import Identity, authorize, read_credentials
from server.errors import PROBLEM_JSON, ApiError, Code, FieldError
from server.ids import parse_snowflake
from server.ratelimit import current_limit
from server.schemas import decode_json_body, decode_query
from server.services import Services

Auth = Literal["none", "optional", "user", "staff", "admin"]
BodyT = TypeVar("BodyT")
QueryT = TypeVar("QueryT")

_encoder = msgspec.json.Encoder()


@dataclasses.dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # under /api/v1, Starlette syntax: /anime/{anime_id}
    handler: Callable[[Call], Awaitable[Any]]
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    errors: tuple[Code, ...] = ()
    auth: Auth = "none"
    bot_scope: str | None = None  # None: bots are refused (403 bot_not_allowed)
    summary: str = ""
    tag: str = ""
    content_types: tuple[str, ...] = ("application/json",)
    max_body: int | None = None
    response_headers: tuple[str, ...] = ()
    # For handlers that return a raw Response (HTML, a file, a pre-encoded document).
    media_type: str = "application/json"
    # A body may be absent (empty); the handler then gets None.
    body_optional: bool = False
    # Banned callers may still use this route (auth.md R9: login, refresh, logout, me).
    allow_banned: bool = False
    # "optional" routes that must never 401 (beacons): a bad credential means anonymous.
    lenient_auth: bool = False

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    async def respond(self, request: Request, services: Services) -> Response:
        """Serve one request. A domain error becomes its problem response here; anything
        unexpected propagates to the router (a 500 problem)."""
        tightest: list = []
        token = current_limit.set(tightest)
        try:
            response = await self._serve(request, services)
        except ApiError as error:
            response = problem_response(error)
        finally:
            current_limit.reset(token)
        if tightest:
            for name, value in tightest[0].headers().items():
                if name.lower() not in response.headers:
                    response.headers[name] = value
        return response

    async def _serve(self, request: Request, services: Services) -> Response:
        call = Call(request=request, services=services, endpoint=self)
        if self.auth != "none":
            call.identity = await self._identify(request, services)
        authorize(
            call.identity, auth=self.auth, bot_scope=self.bot_scope, allow_banned=self.allow_banned
        )
        if self.body is not None:
            raw = await self._read_body(request, services)
            if not (self.body_optional and not raw.strip()):
                call.body = decode_json_body(raw, self.body)
        if self.query is not None:
            call.query = decode_query(
                request.query_params, request.query_params.getlist, self.query
            )
        elif request.scope["query_string"] and request.query_params:
            raise ApiError(
                Code.validation_failed,
                "This route takes no query parameters",
                errors=[
                    FieldError(name, "Unknown query parameter") for name in request.query_params
                ],
            )
        result = await self.handler(call)
        if isinstance(result, Response):
            return result
        if result is None:
            return Response(status_code=204, headers=call.headers)
        return JsonBody(_encoder.encode(result), self.status, call.headers)

    async def _identify(self, request: Request, services: Services) -> Identity | None:
        try:
            credentials = read_credentials(request)
            if credentials is None:
                return None
            if services.resolve_identity is None:
                raise ApiError(Code.unauthorized, "Authentication is not available")
            return await services.resolve_identity(credentials, request)
        except ApiError as error:
            if self.lenient_auth and error.status in (400, 401):
                return None
            raise

    async def _read_body(self, request: Request, services: Services) -> bytes:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if (
            self.body_optional
            and not media_type
            and request.headers.get("content-length", "0") == "0"
        ):
            return b""
        if media_type not in self.content_types:
            raise ApiError(
                Code.unsupported_media_type,
                f"Send the body as {' or '.join(self.content_types)}",
            )
        limit = self.max_body or services.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise ApiError(Code.too_large, f"The body is over {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(Code.too_large, f"The body is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


@dataclasses.dataclass
class Call(Generic[BodyT, QueryT]):
    """One request as a handler sees it: validated input, the caller, the services."""

    request: Request
    services: Services
    endpoint: Endpoint
    body: BodyT = None  # type: ignore[assignment]
    query: QueryT = None  # type: ignore[assignment]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    identity: Identity | None = None

    @property
    def user(self) -> Identity:
        """The caller, on routes whose `auth` guarantees one."""
        if self.identity is None:
            raise ApiError(Code.unauthorized, "Sign in to do this")
        return self.identity

    def path_id(self, name: str) -> int:
        """A snowflake from the path; a malformed one is a 404, like a missing one."""
        value = parse_snowflake(self.request.path_params.get(name))
        if value is None:
            raise ApiError(Code.not_found)
        return value

    def path_int(self, name: str, maximum: int = 2**31 - 1) -> int:
        raw = self.request.path_params.get(name, "")
        if not (isinstance(raw, str) and raw.isascii() and raw.isdigit()) or not (
            0 < int(raw) <= maximum
        ):
            raise ApiError(Code.not_found)
        return int(raw)

    @property
    def client_ip(self) -> str:
        return client_ip(self.request, self.services.settings.trusted_proxies)

    @property
    def user_agent(self) -> str:
        return self.request.headers.get("user-agent", "")[:256]


class JsonBody(Response):
    """A JSON response with its headers built directly (Starlette's generic header setup is
    a measurable share of a small request)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        raw = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        for name, value in headers.items():
            raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        self.raw_headers = raw


def client_ip(request: Request, trusted_proxies: Sequence[str]) -> str:
    """The socket peer, or — when the peer is a trusted proxy — the right-most address in
    X-Forwarded-For that is not itself a trusted proxy (auth.md R19)."""
    peer = request.client.host if request.client else "unknown"
    if peer not in trusted_proxies:
        return peer
    forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",")]
    for address in reversed([a for a in forwarded if a]):
        if address not in trusted_proxies:
            return address[:45]
    return peer


_registry: list[Endpoint] = []


def endpoint(
    method: str,
    path: str,
    *,
    body: type | None = None,
    query: type | None = None,
    response: type | None = None,
    status: int = 200,
    errors: Sequence[Code] = (),
    auth: Auth = "none",
    bot_scope: str | None = None,
    summary: str = "",
    tag: str = "",
    content_types: Sequence[str] = ("application/json",),
    max_body: int | None = None,
    response_headers: Sequence[str] = (),
    media_type: str = "application/json",
    allow_banned: bool = False,
    lenient_auth: bool = False,
    body_optional: bool = False,
) -> Callable[[Callable[[Call], Awaitable[Any]]], Endpoint]:
    def wrap(handler: Callable[[Call], Awaitable[Any]]) -> Endpoint:
        declared = Endpoint(
            method=method.upper(),
            path=path,
            handler=handler,
            body=body,
            query=query,
            response=response,
            status=status,
            errors=tuple(errors),
            auth=auth,
            bot_scope=bot_scope,
            summary=summary or (handler.__doc__ or "").strip().split("\n")[0],
            tag=tag or handler.__module__.rsplit(".", 1)[-1],
            content_types=tuple(content_types),
            max_body=max_body,
            response_headers=tuple(response_headers),
            media_type=media_type,
            allow_banned=allow_banned,
            lenient_auth=lenient_auth,
            body_optional=body_optional,
        )
        _registry.append(declared)
        return declared

    return wrap


def strong_etag(body: bytes) -> str:
    """A strong ETag for a representation: a digest of its bytes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(request: Request, etag: str) -> bool:
    """`If-None-Match` (RFC 9110 §13.1.2): `*` or any listed tag, compared weakly."""
    header = ",".join(request.headers.getlist("if-none-match"))
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def conditional(
    request: Request,
    body: bytes,
    etag: str,
    headers: dict[str, str],
    media_type: str = "application/json",
) -> Response:
    """The body, or a 304 when the client already holds this version; both carry the ETag
    and `headers` (Cache-Control and the like)."""
    headers = {"ETag": etag, **headers}
    if etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    if media_type == "application/json":
        return JsonBody(body, 200, headers)
    return Response(body, media_type=media_type, headers=headers)


def problem_response(error: ApiError) -> Response:
    return Response(
        _encoder.encode(error.to_problem()),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=error.headers,
    )
