"""The API's own description: the OpenAPI 3.1 document and the HTML reference (D1, D2)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from starlette.responses import FileResponse, HTMLResponse, Response

from server.errors import ApiError, Code
from server.http import Call, endpoint

ASSETS = Path(__file__).resolve().parent / "docs_assets"
_document_cache: dict[int, tuple[bytes, str]] = {}


def _document(call: Call) -> tuple[bytes, str]:
    """Built once per process from the mounted routes, so it always matches the router."""
    key = id(call.services)
    cached = _document_cache.get(key)
    if cached is None:
        import rest
        from server.openapi import build_document

        document = build_document(rest.endpoints(), version=call.services.settings.version)
        body = json.dumps(document, separators=(",", ":"), sort_keys=False).encode()
        cached = _document_cache[key] = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return cached


@endpoint("GET", "/openapi.json", tag="docs")
async def openapi_document(call: Call) -> Response:
    """The OpenAPI 3.1 document describing every route."""
    body, etag = _document(call)
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if call.request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@endpoint("GET", "/docs", tag="docs")
async def docs_page(call: Call) -> Response:
    """The HTML API reference, rendered from the OpenAPI document with local assets only."""
    html = (ASSETS / "index.html").read_text()
    return HTMLResponse(
        html, headers={"Content-Security-Policy": CSP, "Cache-Control": "public, max-age=300"}
    )


@endpoint("GET", "/docs/assets/{name}", errors=[Code.not_found], tag="docs")
async def docs_asset(call: Call) -> Response:
    """A script or stylesheet of the reference page."""
    name = call.request.path_params["name"]
    allowed = {path.name: path for path in ASSETS.iterdir() if path.suffix in (".js", ".css")}
    if name not in allowed:
        raise ApiError(Code.not_found)
    return FileResponse(
        allowed[name],
        headers={"Cache-Control": "public, max-age=3600", "Content-Security-Policy": CSP},
    )


routes = [openapi_document, docs_page, docs_asset]
