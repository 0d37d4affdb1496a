"""The API's own description: the OpenAPI 3.1 document and the HTML reference (D1, D2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from server.errors import ApiError, Code
from server.http import Call, Endpoint, conditional, endpoint, strong_etag
from server.openapi import build_document
from server.settings import Settings

ASSETS = Path(__file__).resolve().parent / "docs_assets"
CACHE_CONTROL = "public, max-age=300"
# The page loads only its own script and stylesheet and talks only to this origin. No inline
# code or style anywhere, and the script builds the DOM without HTML strings (Trusted Types).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'"
)
_ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class Blob(NamedTuple):
    body: bytes
    etag: str
    media_type: str


def _blob(body: bytes, media_type: str) -> Blob:
    return Blob(body, strong_etag(body), media_type)


# Read once: served from memory, and a request's `name` is only ever a key of this dict, never a
# file system path.
_PAGE = _blob((ASSETS / "index.html").read_bytes(), "text/html; charset=utf-8")
_ASSETS = {
    path.name: _blob(path.read_bytes(), _ASSET_TYPES[path.suffix])
    for path in sorted(ASSETS.iterdir())
    if path.is_file() and path.suffix in _ASSET_TYPES
}


def encode_document(endpoints: list[Endpoint], settings: Settings) -> Blob:
    """The document for these endpoints, encoded, with its ETag. It depends only on the code
    and these settings, so every process of one release serves the same bytes and ETag."""
    built = build_document(
        endpoints, version=settings.version, max_body_bytes=settings.max_body_bytes
    )
    return _blob(json.dumps(built, separators=(",", ":")).encode(), "application/json")


def document(app: Starlette) -> Blob:
    """The document of the routes this app mounts, built once per app. The composition root
    can call it at startup so a declaration the generator refuses fails the boot, not D1."""
    state = app.state
    blob: Blob | None = getattr(state, "openapi_document", None)
    if blob is None:
        endpoints = getattr(state, "endpoints", None)
        if endpoints is None:
            import rest

            endpoints = rest.endpoints()
        blob = state.openapi_document = encode_document(endpoints, state.services.settings)
    return blob


def _serve(request: Request, blob: Blob, extra: dict[str, str] | None = None) -> Response:
    headers = {"Cache-Control": CACHE_CONTROL, **_SECURITY_HEADERS, **(extra or {})}
    return conditional(request, blob.body, blob.etag, headers, blob.media_type)


@endpoint(
    "GET",
    "/openapi.json",
    tag="docs",
    media_type="application/json",
    response_headers=("Cache-Control", "ETag"),
)
async def openapi_document(call: Call) -> Response:
    """The OpenAPI 3.1 document describing every route.

    Generated from the route declarations; stable between builds of the same release.
    """
    return _serve(call.request, document(call.request.app))


@endpoint(
    "GET",
    "/docs",
    tag="docs",
    media_type="text/html",
    response_headers=("Cache-Control", "Content-Security-Policy", "ETag"),
)
async def docs_page(call: Call) -> Response:
    """The HTML API reference, rendered from the OpenAPI document with local assets only."""
    return _serve(call.request, _PAGE, {"Content-Security-Policy": CSP})


@endpoint(
    "GET",
    "/docs/assets/{name}",
    errors=[Code.not_found],
    tag="docs",
    media_type="text/*",
    response_headers=("Cache-Control", "ETag"),
)
async def docs_asset(call: Call) -> Response:
    """A script or stylesheet of the reference page.

    Served as `text/javascript` or `text/css`; any other name is a 404.
    """
    blob = _ASSETS.get(call.request.path_params["name"])
    if blob is None:
        raise ApiError(Code.not_found, "No such asset")
    return _serve(call.request, blob)


routes = [openapi_document, docs_page, docs_asset]
