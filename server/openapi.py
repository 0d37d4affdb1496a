"""The OpenAPI 3.1 document, generated from the endpoint declarations (platform.md R29).

Never hand-written: each `Endpoint` says its method, path, body, query, response, auth and
error codes, and msgspec turns the structs into JSON Schema 2020-12 components.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from server.errors import Code, Problem
from server.http import Endpoint

REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}")

_AUTH_ERRORS = {
    "none": (),
    "optional": (Code.unauthorized,),
    "user": (Code.unauthorized, Code.forbidden),
    "staff": (Code.unauthorized, Code.forbidden),
    "admin": (Code.unauthorized, Code.forbidden),
}


def build_document(endpoints: list[Endpoint], *, version: str, prefix: str = "/api/v1") -> dict:
    structs: set[type] = {Problem}
    for e in endpoints:
        structs.update(t for t in (e.body, e.response) if t is not None)
    (_, components) = msgspec.json.schema_components(
        sorted(structs, key=lambda t: t.__name__), ref_template=REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        path = prefix + _PATH_PARAM.sub(r"{\1}", e.path)
        paths.setdefault(path, {})[e.method.lower()] = _operation(e)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Anilay API",
            "version": version,
            "description": "REST API of Anilay. Live events use the Socket.IO gateway "
            "(not described here; see the gateway protocol).",
        },
        "servers": [{"url": "/"}],
        "paths": {path: paths[path] for path in sorted(paths)},
        "components": {
            "schemas": {name: components[name] for name in sorted(components)},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "botKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`Bot <key>`; the required scope is listed per operation.",
                },
            },
        },
    }


def _operation(e: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": e.operation_id,
        "summary": e.summary or e.operation_id.replace("_", " "),
        "tags": [e.tag],
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(e.path)
    ]
    if e.query is not None:
        parameters.extend(_query_parameters(e.query))
    if parameters:
        operation["parameters"] = parameters
    if e.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                ct: {"schema": {"$ref": REF.format(name=e.body.__name__)}} for ct in e.content_types
            },
        }
    responses: dict[str, Any] = {}
    if e.status == 204 or e.response is None:
        responses[str(e.status if e.response is None and e.status != 200 else 204)] = {
            "description": "No content"
        }
    else:
        responses[str(e.status)] = {
            "description": "Success",
            "content": {
                "application/json": {"schema": {"$ref": REF.format(name=e.response.__name__)}}
            },
        }
    codes = set(e.errors) | set(_AUTH_ERRORS[e.auth])
    if e.body is not None or e.query is not None:
        codes |= {Code.validation_failed}
    if e.body is not None:
        codes |= {Code.malformed, Code.too_large, Code.unsupported_media_type}
    if _PATH_PARAM.search(e.path):
        codes.add(Code.not_found)
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(code.status, []).append(code.value)
    for status in sorted(by_status):
        responses[str(status)] = {
            "description": "Problem: " + ", ".join(sorted(by_status[status])),
            "content": {
                "application/problem+json": {"schema": {"$ref": REF.format(name="Problem")}}
            },
            "x-codes": sorted(by_status[status]),
        }
    operation["responses"] = responses
    security: list[dict[str, list[str]]] = []
    if e.auth != "none":
        security.append({"bearerAuth": []})
        if e.bot_scope:
            security.append({"botKey": [e.bot_scope]})
        if e.auth == "optional":
            security.append({})
    if security:
        operation["security"] = security
    return operation


def _query_parameters(schema: type[msgspec.Struct]) -> list[dict[str, Any]]:
    (_, components) = msgspec.json.schema_components([schema], ref_template=REF)
    properties = components[schema.__name__].get("properties", {})
    required = set(components[schema.__name__].get("required", []))
    out = []
    for name, prop in properties.items():
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if prop.get("type") == "array":
            parameter["explode"] = True
        out.append(parameter)
    return out
