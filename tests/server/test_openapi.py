"""The OpenAPI document and the API reference (platform.md D1, D2, R29, R30)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import msgspec
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

import rest
from server.errors import Code
from server.http import Endpoint
from server.openapi import build_document
from server.schemas import Schema

PREFIX = "/api/v1"
HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def _template(path: str) -> str:
    return re.sub(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}", r"{\1}", path)


def _operations(doc: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def _resolve(doc: dict, ref: str) -> dict:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for key in ref[2:].split("/"):
        node = node[key]
    return node


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


# --- the served document --------------------------------------------------------------------


async def test_document_is_valid_openapi_31(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert doc["openapi"] == "3.1.0"
    validate(doc, cls=OpenAPIV31SpecValidator)
    for ref in _refs(doc):
        _resolve(doc, ref)  # every reference points at something


async def test_operations_are_exactly_the_routers(client, live):
    doc = (await client.get("/openapi.json")).json()
    declared = {(e.method, PREFIX + _template(e.path)) for e in rest.endpoints()}
    mounted = {(method, PREFIX + _template(path)) for method, path in live.app.routes.operations()}
    assert _operations(doc) == declared == mounted
    assert list(doc["paths"]) == sorted(doc["paths"])


async def test_every_declared_code_is_a_documented_response(client):
    doc = (await client.get("/openapi.json")).json()
    for e in rest.endpoints():
        operation = doc["paths"][PREFIX + _template(e.path)][e.method.lower()]
        assert operation["operationId"] == e.operation_id
        for code in e.errors:
            response = operation["responses"][str(code.status)]
            assert code.value in response["x-codes"], (e.operation_id, code)
            schema = response["content"]["application/problem+json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}


async def test_request_bodies_forbid_unknown_fields(client):
    doc = (await client.get("/openapi.json")).json()
    for item in doc["paths"].values():
        for operation in item.values():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                assert _resolve(doc, media["schema"]["$ref"])["additionalProperties"] is False


async def test_served_bytes_are_the_generated_document(client, live):
    response = await client.get("/openapi.json")
    settings = live.settings
    assert live.app.http.state.endpoints == rest.endpoints()
    rebuilt = build_document(
        rest.endpoints(), version=settings.version, max_body_bytes=settings.max_body_bytes
    )
    assert response.content == json.dumps(rebuilt, separators=(",", ":")).encode()
    assert (await client.get("/openapi.json")).content == response.content


async def test_document_caching_and_conditional_requests(client):
    first = await client.get("/openapi.json")
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert first.headers["cache-control"] == "public, max-age=300"
    for header in (etag, f'"nope", {etag}', f"W/{etag}", "*", f'"a",  W/{etag} , "b"'):
        again = await client.get("/openapi.json", headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "public, max-age=300"
    for header in ('"nope"', etag.strip('"'), ""):
        fresh = await client.get("/openapi.json", headers={"If-None-Match": header})
        assert fresh.status_code == 200, header
        assert fresh.content == first.content


# --- the reference page ---------------------------------------------------------------------


async def test_docs_page_is_locked_down_and_its_assets_are_served(client):
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    directives = dict(
        (d.split()[0], d.split()[1:]) for d in (p.strip() for p in csp.split(";")) if d
    )
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"

    html = page.text
    assert not re.search(r"<script(?![^>]*\ssrc=)", html), "inline script"
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html, re.I), "inline style or handler"
    references = re.findall(r'\s(?:src|href|data-spec)="([^"]+)"', html)
    assets = [r for r in references if r.startswith(f"{PREFIX}/docs/assets/")]
    assert {a.rsplit(".", 1)[1] for a in assets} == {"js", "css"}
    for ref in references:
        assert ref.startswith((f"{PREFIX}/", "data:")), f"not served by us: {ref}"
    expected = {"js": "text/javascript", "css": "text/css"}
    for asset in assets:
        response = await client.get(asset.removeprefix(PREFIX))
        assert response.status_code == 200, asset
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type == expected[asset.rsplit(".", 1)[1]], asset
        assert response.headers["x-content-type-options"] == "nosniff"
        cached = await client.get(
            asset.removeprefix(PREFIX), headers={"If-None-Match": response.headers["etag"]}
        )
        assert cached.status_code == 304
    script = (await client.get("/docs/assets/docs.js")).text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink  # Trusted Types would refuse them anyway
    assert "http://" not in script and "https://" not in script  # no CDN, no third party


@pytest.mark.parametrize("name", ["nope.js", "index.html", "docs.py", "DOCS.JS", ".css"])
async def test_unknown_asset_is_a_problem_404(client, name):
    response = await client.get(f"/docs/assets/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "raw",
    [
        "..%2Fdocs.py",
        "..%2F..%2Fserver%2Fsettings.py",
        "%2e%2e%2fdocs.py",
        "..%5Cdocs.py",
        "docs.js%00",
        "%2Fetc%2Fpasswd",
    ],
)
async def test_path_traversal_is_a_404(client, raw):
    response = await client.get(f"/docs/assets/{raw}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


# --- the generator, on declarations made up for the test ------------------------------------
# Endpoints are built with `Endpoint(...)` directly: the `@endpoint` decorator would add them to
# the application's registry.


class Item(Schema):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CreateThing(Schema):
    """A new thing."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    items: Annotated[list[Item], msgspec.Meta(max_length=10)] = []


class Thing(msgspec.Struct):
    id: str
    title: str


class ThingPage(msgspec.Struct):
    items: list[Thing]
    next_cursor: str | None


class ThingQuery(Schema):
    limit: Annotated[int, msgspec.Meta(ge=1, le=100, description="Page size")] = 50
    before: str | None = None
    kind: list[Literal["a", "b"]] = []


class Note(msgspec.Struct):  # not a `Schema`: extra fields are tolerated
    note: str


def _other_item() -> type:
    class Item(Schema):  # same name as the module-level one, different fields
        label: str

    return Item


OtherItem = _other_item()


async def create_thing(call): ...
async def list_things(call): ...
async def delete_thing(call): ...
async def thing_page(call): ...
async def raw_document(call): ...
async def staff_report(call): ...
async def put_note(call) -> None: ...  # returns nothing: 204 whatever the declared status
async def put_other(call): ...
async def beacon(call) -> None: ...


def fake_endpoints() -> list[Endpoint]:
    return [
        Endpoint(
            "POST",
            "/things",
            create_thing,
            body=CreateThing,
            response=Thing,
            status=201,
            auth="user",
            bot_scope="things:write",
            errors=(Code.conflict, Code.rate_limited),
            max_body=2048,
            tag="things",
        ),
        Endpoint("GET", "/things", list_things, query=ThingQuery, response=ThingPage,
                 auth="optional", tag="things"),
        Endpoint("DELETE", "/things/{thing_id}", delete_thing, status=204, auth="admin",
                 tag="things"),
        Endpoint("GET", "/things/{thing_id}/page", thing_page, media_type="text/html",
                 tag="things"),
        Endpoint("GET", "/raw.json", raw_document, response_headers=("ETag",), tag="misc"),
        Endpoint("GET", "/staff/report", staff_report, response=Thing, auth="staff",
                 tag="misc"),
        Endpoint("PUT", "/anime/{anime_id:int}/note", put_note, body=Note, tag="misc"),
        Endpoint("PUT", "/other", put_other, body=OtherItem, tag="misc"),
        Endpoint("POST", "/beacon", beacon, body=Note, auth="optional", lenient_auth=True,
                 allow_banned=True, tag="misc"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fake_doc() -> dict:
    doc = build_document(fake_endpoints(), version="9.9.9", max_body_bytes=4096)
    validate(doc, cls=OpenAPIV31SpecValidator)
    return doc


def _op(doc: dict, method: str, path: str) -> dict:
    return doc["paths"][PREFIX + path][method]


def _body_schema(doc: dict, method: str, path: str) -> dict:
    content = _op(doc, method, path)["requestBody"]["content"]["application/json"]
    return _resolve(doc, content["schema"]["$ref"])


def test_fake_document_is_valid_and_complete(fake_doc):
    assert _operations(fake_doc) == {
        (e.method, PREFIX + _template(e.path)) for e in fake_endpoints()
    }
    assert list(fake_doc["paths"]) == sorted(fake_doc["paths"])
    assert [t["name"] for t in fake_doc["tags"]] == ["misc", "things"]
    for e in fake_endpoints():
        responses = _op(fake_doc, e.method.lower(), _template(e.path))["responses"]
        for code in e.errors:
            assert code.value in responses[str(code.status)]["x-codes"]
    for ref in _refs(fake_doc):
        _resolve(fake_doc, ref)


def test_request_schemas_reject_unknown_fields_with_their_limits(fake_doc):
    create = _body_schema(fake_doc, "post", "/things")
    assert create["additionalProperties"] is False
    assert create["properties"]["title"] == {"type": "string", "minLength": 1, "maxLength": 100}
    assert create["properties"]["items"]["maxItems"] == 10
    item = _resolve(fake_doc, create["properties"]["items"]["items"]["$ref"])
    assert item["additionalProperties"] is False  # nested request structs too
    assert item["properties"]["name"]["maxLength"] == 64
    assert _op(fake_doc, "post", "/things")["requestBody"]["description"] == "At most 2048 bytes."
    assert _op(fake_doc, "put", "/other")["requestBody"]["description"] == "At most 4096 bytes."
    assert "additionalProperties" not in _body_schema(fake_doc, "put", "/anime/{anime_id}/note")
    # Two classes named Item: each body points at its own.
    assert set(_body_schema(fake_doc, "put", "/other")["properties"]) == {"label"}
    assert set(item["properties"]) == {"name"}
    # Response structs are not request schemas: no closing needed.
    assert "additionalProperties" not in fake_doc["components"]["schemas"]["Thing"]


def test_success_responses(fake_doc):
    created = _op(fake_doc, "post", "/things")["responses"]
    assert created["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thing"
    }
    assert "200" not in created and "204" not in created

    deleted = _op(fake_doc, "delete", "/things/{thing_id}")["responses"]
    assert deleted["204"] == {"description": "No content"}
    assert "200" not in deleted

    page = _op(fake_doc, "get", "/things/{thing_id}/page")["responses"]
    assert page["200"]["content"] == {"text/html": {"schema": {"type": "string"}}}
    assert "204" not in page

    note = _op(fake_doc, "put", "/anime/{anime_id}/note")["responses"]
    assert note["204"] == {"description": "No content"}
    assert "200" not in note

    raw = _op(fake_doc, "get", "/raw.json")
    assert raw["responses"]["200"]["content"] == {
        "application/json": {"schema": {"type": "object"}}
    }
    assert "ETag" in raw["responses"]["200"]["headers"]
    assert "304" in raw["responses"]
    assert {"name": "If-None-Match", "in": "header"}.items() <= raw["parameters"][0].items()


def test_problem_responses(fake_doc):
    created = _op(fake_doc, "post", "/things")["responses"]
    assert set(created) == {"201", "400", "401", "403", "409", "413", "415", "422", "429"}
    assert created["400"]["x-codes"] == ["bad_request", "malformed"]
    assert created["401"]["x-codes"] == [
        "invalid_api_key",
        "invalid_token",
        "session_revoked",
        "token_expired",
        "unauthorized",
    ]
    assert created["403"]["x-codes"] == ["banned", "insufficient_scope"]  # open to bots
    assert created["409"]["x-codes"] == ["conflict"]
    assert created["422"]["x-codes"] == ["validation_failed"]
    assert "Retry-After" in created["429"]["headers"]
    for status, response in created.items():
        if status != "201":
            assert response["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
    listed = _op(fake_doc, "get", "/things")["responses"]
    assert listed["403"]["x-codes"] == ["banned", "bot_not_allowed"]
    deleted = _op(fake_doc, "delete", "/things/{thing_id}")["responses"]
    assert deleted["403"]["x-codes"] == ["banned", "bot_not_allowed", "forbidden"]
    assert deleted["404"]["x-codes"] == ["not_found"]
    public = _op(fake_doc, "get", "/raw.json")["responses"]
    assert set(public) == {"200", "304", "422"}  # no auth: no 400/401/403 from credentials
    lenient = _op(fake_doc, "post", "/beacon")["responses"]
    assert "401" not in lenient  # a bad credential makes the caller anonymous
    assert lenient["403"]["x-codes"] == ["bot_not_allowed"]  # banned callers allowed
    assert "204" in lenient


def test_parameters(fake_doc):
    (thing_id,) = _op(fake_doc, "delete", "/things/{thing_id}")["parameters"]
    assert thing_id == {"name": "thing_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}  # fmt: skip
    (anime_id,) = _op(fake_doc, "put", "/anime/{anime_id}/note")["parameters"]
    assert anime_id["schema"]["type"] == "integer"

    query = {p["name"]: p for p in _op(fake_doc, "get", "/things")["parameters"]}
    assert set(query) == {"limit", "before", "kind"}
    assert all(p["in"] == "query" and p["required"] is False for p in query.values())
    assert query["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 50,
        "description": "Page size",
    }
    assert query["limit"]["description"] == "Page size"
    assert query["kind"]["schema"]["items"] == {"enum": ["a", "b"]}
    assert query["kind"]["explode"] is True
    assert "ThingQuery" not in fake_doc["components"]["schemas"]  # parameters, not a component


def test_security_requirements(fake_doc):
    assert _op(fake_doc, "post", "/things")["security"] == [
        {"bearerAuth": []},
        {"botKey": ["things:write"]},
    ]
    assert _op(fake_doc, "get", "/things")["security"] == [{"bearerAuth": []}, {}]
    assert _op(fake_doc, "delete", "/things/{thing_id}")["security"] == [{"bearerAuth": ["admin"]}]
    assert _op(fake_doc, "get", "/staff/report")["security"] == [
        {"bearerAuth": ["moderator", "admin"]}
    ]
    assert "security" not in _op(fake_doc, "get", "/raw.json")
    schemes = fake_doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer",
                                     "bearerFormat": "JWT"}  # fmt: skip
    assert {"type": "apiKey", "in": "header", "name": "Authorization"}.items() <= schemes[
        "botKey"
    ].items()
    assert "Bot <key>" in schemes["botKey"]["description"]


def test_the_same_declarations_give_the_same_bytes():
    def encoded(endpoints: list[Endpoint]) -> bytes:
        return json.dumps(build_document(endpoints, version="1"), separators=(",", ":")).encode()

    forward = encoded(fake_endpoints())
    assert encoded(fake_endpoints()) == forward
    assert encoded(list(reversed(fake_endpoints()))) == forward


def test_request_structs_are_closed_even_if_msgspec_leaves_them_open(monkeypatch):
    original = msgspec.json.schema_components

    def without_additional_properties(*args, **kwargs):
        refs, components = original(*args, **kwargs)
        for schema in components.values():
            schema.pop("additionalProperties", None)
        return refs, components

    monkeypatch.setattr(msgspec.json, "schema_components", without_additional_properties)
    doc = build_document(fake_endpoints(), version="1")
    assert _body_schema(doc, "post", "/things")["additionalProperties"] is False
    assert "additionalProperties" not in _body_schema(doc, "put", "/anime/{anime_id}/note")


def test_ambiguous_declarations_are_refused():
    (first, *_) = fake_endpoints()
    with pytest.raises(ValueError, match="Two endpoints declare POST"):
        build_document([first, Endpoint("POST", "/things", put_note)], version="1")
    with pytest.raises(ValueError, match="operation id"):
        build_document([first, Endpoint("GET", "/elsewhere", create_thing)], version="1")
