"""The OpenAPI 3.1 document, generated from the endpoint declarations (platform.md R29).

Never hand-written: each `Endpoint` says its method, path, body, query, response, auth and
error codes, and msgspec turns the structs into JSON Schema 2020-12 components. What the
declarations imply is spelled out here once:

- a body can fail as 400 (not JSON), 413 (too large), 415 (wrong media type) and 422;
- every route can answer 422, because a route without a query struct refuses query parameters;
- a path parameter can answer 404 (a malformed id is a 404, like a missing one);
- an authenticated route (`auth` other than "none") can answer what `server.auth` raises:
  400 (both `Bearer` and `Bot`), 401 for a bad credential (not on lenient routes), 403
  `bot_not_allowed` or `insufficient_scope`, `banned`, and `forbidden` for staff routes;
- an endpoint that declares an `ETag` response header honours `If-None-Match` with a 304.

The output is deterministic (sorted paths, tags and components, no timestamps), so two builds of
the same code give the same bytes and the same ETag.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterable
from typing import Any

import msgspec
import msgspec.inspect as mi

from server.errors import PROBLEM_JSON, Code, Problem
from server.http import Endpoint

REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-z]+))?\}")
_CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "path": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}
# Roles a bearer token needs, listed on `bearerAuth` (OpenAPI 3.1 allows role lists there).
_ROLES: dict[str, list[str]] = {
    "optional": [],
    "user": [],
    "staff": ["moderator", "admin"],
    "admin": ["admin"],
}
_HEADER_SCHEMAS: dict[str, dict[str, Any]] = {
    "retry-after": {"type": "integer", "minimum": 0},
    "x-ratelimit-limit": {"type": "integer", "minimum": 0},
    "x-ratelimit-remaining": {"type": "integer", "minimum": 0},
    "x-ratelimit-reset": {"type": "integer", "minimum": 0},
}
_SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "`Authorization: Bearer <access_token>`: an Ed25519-signed JWT, "
        "15 minutes. Where roles are listed, the token's `role` must be one of them.",
    },
    "botKey": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Authorization: Bot <key>`. The scope an operation requires is listed "
        "in its security requirement; operations without `botKey` refuse bots "
        "(403 `bot_not_allowed`).",
    },
}


def build_document(
    endpoints: Iterable[Endpoint],
    *,
    version: str,
    prefix: str = "/api/v1",
    max_body_bytes: int | None = None,
) -> dict[str, Any]:
    """The whole document. Raises `ValueError` on declarations that cannot be described
    (two endpoints on one method and path, two operations with one id)."""
    endpoints = list(endpoints)
    _check_unique(endpoints, prefix)
    schemas = _Schemas(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        operation = _operation(e, schemas, max_body_bytes)
        paths.setdefault(prefix + _template(e.path), {})[e.method.lower()] = operation
    paths = {path: dict(sorted(paths[path].items())) for path in sorted(paths)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Anilay API",
            "version": version,
            "description": "REST API of Anilay. Errors are RFC 9457 problem details "
            "(`application/problem+json`); the `code` member names the error. IDs are "
            "snowflakes serialized as strings; times are RFC 3339 UTC. Live events use the "
            "Socket.IO gateway, which is not described here.",
        },
        "servers": [{"url": "/"}],
        "tags": _tags(endpoints),
        "paths": paths,
        "components": {
            "schemas": schemas.used(paths),
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


def _template(path: str) -> str:
    """`/anime/{anime_id:int}` (Starlette) → `/anime/{anime_id}` (OpenAPI)."""
    return _PATH_PARAM.sub(r"{\1}", path)


def _check_unique(endpoints: list[Endpoint], prefix: str) -> None:
    routes: set[tuple[str, str]] = set()
    operation_ids: set[str] = set()
    for e in endpoints:
        route = (e.method.upper(), prefix + _template(e.path))
        if route in routes:
            raise ValueError(f"Two endpoints declare {route[0]} {route[1]}")
        if e.operation_id in operation_ids:
            raise ValueError(f"Two endpoints share the operation id {e.operation_id!r}")
        routes.add(route)
        operation_ids.add(e.operation_id)


class _Schemas:
    """Every type the endpoints mention, turned into components in one msgspec pass, so names
    are unique (msgspec qualifies clashing class names) and references always resolve."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        roots: list[Any] = [Problem]
        for e in endpoints:
            roots.extend(t for t in (e.body, e.response, e.query) if t is not None)
        roots = _unique(roots)
        structs = _reachable_structs(roots)
        types = _unique(roots + [s.cls for s in structs])
        refs, components = msgspec.json.schema_components(types, ref_template=REF)
        self._refs = {_key(t): ref for t, ref in zip(types, refs, strict=True)}
        self.components = components
        for struct in structs:
            # Current msgspec writes this itself; R29 requires it whatever the version.
            if struct.forbid_unknown_fields:
                self.component(struct.cls).setdefault("additionalProperties", False)

    def ref(self, t: Any) -> dict[str, Any]:
        return dict(self._refs[_key(t)])

    def component(self, t: Any) -> dict[str, Any]:
        ref = self._refs[_key(t)]["$ref"]
        return self.components[ref.rsplit("/", 1)[1]]

    def used(self, paths: dict[str, Any]) -> dict[str, Any]:
        """The components the paths reference, directly or through other components, sorted.
        (Query structs become parameters, not components.)"""
        names: set[str] = set()
        pending = _refs_in(paths)
        while pending:
            name = pending.pop()
            if name not in names:
                names.add(name)
                pending |= _refs_in(self.components[name])
        return {name: self.components[name] for name in sorted(names)}


def _key(t: Any) -> str:
    if isinstance(t, type):
        return f"{t.__module__}.{t.__qualname__}"
    return repr(t)


def _unique(types: list[Any]) -> list[Any]:
    by_key = {_key(t): t for t in types}
    return [by_key[k] for k in sorted(by_key)]


def _reachable_structs(roots: list[Any]) -> list[mi.StructType]:
    found: dict[str, mi.StructType] = {}
    seen: set[int] = set()

    def walk(node: Any) -> None:
        if isinstance(node, mi.Field):
            node = node.type
        if not isinstance(node, mi.Type) or id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, mi.StructType):
            found.setdefault(_key(node.cls), node)
        for name in node.__struct_fields__:
            value = getattr(node, name)
            for item in value if isinstance(value, tuple) else (value,):
                walk(item)

    for info in mi.multi_type_info(roots):
        walk(info)
    return [found[k] for k in sorted(found)]


def _refs_in(value: Any) -> set[str]:
    out: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                out.add(ref.rsplit("/", 1)[1])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def _tags(endpoints: list[Endpoint]) -> list[dict[str, str]]:
    """One entry per tag, described by the first line of its module's docstring."""
    modules: dict[str, set[str]] = {}
    for e in endpoints:
        modules.setdefault(e.tag, set()).add(e.handler.__module__)
    tags = []
    for tag in sorted(modules):
        entry = {"name": tag}
        for module_name in sorted(modules[tag]):
            module = sys.modules.get(module_name)
            doc = inspect.getdoc(module) if module is not None else None
            if doc:
                entry["description"] = doc.split("\n")[0]
                break
        tags.append(entry)
    return tags


def _operation(e: Endpoint, schemas: _Schemas, max_body_bytes: int | None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": e.operation_id,
        "summary": e.summary or e.operation_id.replace("_", " "),
        "tags": [e.tag],
    }
    doc = inspect.getdoc(e.handler) or ""
    description = doc.partition("\n")[2].strip()
    if description:
        operation["description"] = description
    etag = any(h.lower() == "etag" for h in e.response_headers)
    parameters = _path_parameters(e.path)
    if e.query is not None:
        parameters.extend(_query_parameters(schemas.component(e.query)))
    if etag:
        parameters.append(
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "ETags from an earlier response; a match answers 304.",
                "schema": {"type": "string"},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if e.body is not None:
        limit = e.max_body or max_body_bytes
        body: dict[str, Any] = {
            "required": True,
            "content": {ct: {"schema": schemas.ref(e.body)} for ct in e.content_types},
        }
        if limit:
            body["description"] = f"At most {limit} bytes."
        operation["requestBody"] = body
    responses = {str(_success_status(e)): _success(e, schemas)}
    if etag:
        responses["304"] = {
            "description": "Not modified: `If-None-Match` matched the current `ETag`.",
            "headers": _headers(e.response_headers),
        }
    by_status: dict[int, set[str]] = {}
    for code in _problem_codes(e):
        by_status.setdefault(code.status, set()).add(code.value)
    for status in sorted(by_status):
        codes = sorted(by_status[status])
        response: dict[str, Any] = {
            "description": "Problem: " + ", ".join(f"`{c}`" for c in codes),
            "content": {PROBLEM_JSON: {"schema": schemas.ref(Problem)}},
            "x-codes": codes,
        }
        if status == 429:
            response["headers"] = _headers(["Retry-After"])
        responses[str(status)] = response
    operation["responses"] = dict(sorted(responses.items()))
    security = _security(e)
    if security:
        operation["security"] = security
    return operation


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": dict(_CONVERTER_SCHEMAS.get(converter or "str", {"type": "string"})),
        }
        for name, converter in _PATH_PARAM.findall(path)
    ]


def _query_parameters(component: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(component.get("required", []))
    out = []
    for name, schema in component.get("properties", {}).items():
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if "description" in schema:
            parameter["description"] = schema["description"]
        parameter["schema"] = schema
        if schema.get("type") == "array":  # ?kind=a&kind=b
            parameter["style"] = "form"
            parameter["explode"] = True
        out.append(parameter)
    return out


def _success_status(e: Endpoint) -> int:
    """The declared status, except that a handler annotated `-> None` always answers 204."""
    annotations = inspect.get_annotations(e.handler)
    returns_none = "return" in annotations and annotations["return"] in (None, "None")
    return 204 if e.response is None and returns_none else e.status


def _success(e: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    response: dict[str, Any]
    if e.response is not None:
        response = {
            "description": "Success",
            "content": {"application/json": {"schema": schemas.ref(e.response)}},
        }
    elif _success_status(e) == 204:
        response = {"description": "No content"}
    else:  # the handler returns a raw Response of its declared media type
        response = {"description": "Success", "content": {e.media_type: _raw_media(e.media_type)}}
    if e.response_headers:
        response["headers"] = _headers(e.response_headers)
    return response


def _raw_media(media_type: str) -> dict[str, Any]:
    base = media_type.split(";")[0].strip().lower()
    if base == "application/json" or base.endswith("+json"):
        return {"schema": {"type": "object"}}
    if base.startswith("text/"):
        return {"schema": {"type": "string"}}
    return {}  # binary: any bytes of that media type


def _headers(names: Iterable[str]) -> dict[str, Any]:
    return {
        name: {"schema": dict(_HEADER_SCHEMAS.get(name.lower(), {"type": "string"}))}
        for name in sorted(names, key=str.lower)
    }


def _problem_codes(e: Endpoint) -> set[Code]:
    codes = set(e.errors)
    codes.add(Code.validation_failed)  # bad query, or query parameters on a route without any
    if e.body is not None:
        codes |= {Code.malformed, Code.too_large, Code.unsupported_media_type}
    if _PATH_PARAM.search(e.path):
        codes.add(Code.not_found)
    if e.auth != "none":
        codes |= _auth_codes(e)
    return codes


def _auth_codes(e: Endpoint) -> set[Code]:
    """What `server.auth` (credentials, the resolver, `authorize`) can answer for this route."""
    codes = {Code.bad_request}  # several Authorization headers, or both schemes (auth R22)
    if not e.lenient_auth:  # lenient routes treat a bad credential as anonymous instead
        codes |= {
            Code.unauthorized,
            Code.invalid_token,
            Code.token_expired,
            Code.session_revoked,
            Code.invalid_api_key,
        }
    codes.add(Code.bot_not_allowed if e.bot_scope is None else Code.insufficient_scope)
    if not e.allow_banned:
        codes.add(Code.banned)
    if e.auth in ("staff", "admin"):
        codes.add(Code.forbidden)
    return codes


def _security(e: Endpoint) -> list[dict[str, list[str]]]:
    if e.auth == "none":
        return []
    security: list[dict[str, list[str]]] = [{"bearerAuth": list(_ROLES[e.auth])}]
    if e.bot_scope:
        security.append({"botKey": [e.bot_scope]})
    if e.auth == "optional":
        security.append({})  # anonymous callers are welcome too
    return security
