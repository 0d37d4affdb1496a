"""The HTTP platform: problem details for every failure, validation that names fields,
limits on bodies, request ids and metrics (DESIGN "Conventions", issue: ids, errors,
validation). Probe endpoints are mounted on the real app stack under a real uvicorn."""

from __future__ import annotations

from typing import Annotated, Literal

import httpx
import msgspec
import pytest

from server.errors import ApiError, Code
from server.http import Call, Endpoint
from server.schemas import Schema
from tests.conftest import base_settings, start_live_server, stop_live_server

PROBLEM = "application/problem+json"


class Item(Schema):
    kind: Literal["a", "b"]
    note: Annotated[str, msgspec.Meta(max_length=8)] | None = None


class Form(Schema):
    title: Annotated[str, msgspec.Meta(min_length=3, max_length=20)]
    count: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    items: Annotated[list[Item], msgspec.Meta(max_length=3)] = []


class Page(Schema):
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50
    tag: list[str] = []


class Echo(msgspec.Struct):
    title: str
    count: int
    items: int


async def create_form(call: Call) -> Echo:
    return Echo(title=call.body.title, count=call.body.count, items=len(call.body.items))


async def list_things(call: Call) -> dict:
    return {"limit": call.query.limit, "tag": call.query.tag}


async def get_thing(call: Call) -> dict:
    return {"id": str(call.path_id("thing_id"))}


async def explode(call: Call) -> None:
    raise RuntimeError("secret internals: password=hunter2")


async def refuse(call: Call) -> None:
    raise ApiError(Code.conflict, "Already done", extra={"state": "closed"})


async def limited(call: Call) -> dict:
    await call.services.limiter.check("3/minute", "probe-wide", call.client_ip)
    await call.services.limiter.check("2/minute", "probe-tight", call.client_ip)
    return {"ok": True}


PROBES = [
    Endpoint("GET", "/probe/limited", limited),
    Endpoint(
        "POST", "/probe/forms", create_form, body=Form, response=Echo, status=201, max_body=4096
    ),
    Endpoint("GET", "/probe/things", list_things, query=Page),
    Endpoint("GET", "/probe/things/{thing_id}", get_thing),
    Endpoint("GET", "/probe/explode", explode),
    Endpoint("POST", "/probe/refuse", refuse),
]


@pytest.fixture(scope="module")
async def probe_url(tmp_path_factory):
    from server.migrate import upgrade_async

    path = tmp_path_factory.mktemp("probe") / "probe.db"
    settings = base_settings(database_url=f"sqlite+aiosqlite:///{path}")
    await upgrade_async(settings.database_url)
    from server.app import create_app

    live = await start_live_server(settings, app=create_app(settings, endpoints=PROBES))
    yield live.url + "/api/v1"
    await stop_live_server(live)


@pytest.fixture
async def http(probe_url):
    async with httpx.AsyncClient(base_url=probe_url, timeout=10) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://anilay.dev/errors/{code}"
    assert body["title"]
    return body


async def test_a_valid_body_is_parsed_and_answered_with_the_declared_status(http):
    response = await http.post("/probe/forms", json={"title": "hello", "items": [{"kind": "a"}]})
    assert response.status_code == 201
    assert response.json() == {"title": "hello", "count": 0, "items": 1}


async def test_unknown_route_is_a_404_problem(http):
    assert_problem(await http.get("/no/such/route"), 404, "not_found")


async def test_unknown_route_outside_the_api_is_a_404_problem(http):
    async with httpx.AsyncClient() as bare:
        response = await bare.get(str(http.base_url).replace("/api/v1", "/favicon.ico"))
    assert_problem(response, 404, "not_found")


async def test_wrong_method_is_a_405_problem_with_allow(http):
    response = await http.delete("/probe/forms")
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


async def post_raw(http, raw: bytes) -> httpx.Response:
    """POST bytes to the form route as JSON, exactly as given."""
    return await http.post(
        "/probe/forms", content=raw, headers={"content-type": "application/json"}
    )


async def test_malformed_json_is_a_400_problem(http):
    assert_problem(await post_raw(http, b'{"title": '), 400, "malformed")


async def test_a_wrong_field_is_a_422_naming_the_field(http):
    response = await http.post("/probe/forms", json={"title": "hello", "count": "many"})
    body = assert_problem(response, 422, "validation_failed")
    assert [e["field"] for e in body["errors"]] == ["count"]


async def test_every_failing_field_is_named_including_nested_ones(http):
    response = await http.post(
        "/probe/forms",
        json={"count": 11, "extra": True, "items": [{"kind": "a"}, {"kind": "z", "note": "x" * 9}]},
    )
    body = assert_problem(response, 422, "validation_failed")
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"title", "count", "extra", "items[1].kind", "items[1].note"}


async def test_a_list_over_its_limit_is_named(http):
    response = await http.post("/probe/forms", json={"title": "abc", "items": [{"kind": "a"}] * 4})
    body = assert_problem(response, 422, "validation_failed")
    assert [e["field"] for e in body["errors"]] == ["items"]


async def test_a_bad_field_before_bytes_that_are_not_json_is_still_a_400(http):
    """msgspec stops at the first bad field; the bytes after it are checked all the same."""
    raw = b'{"count": "many", "title": "\\ud800"}'  # a lone surrogate is not JSON text
    assert_problem(await post_raw(http, raw), 400, "malformed")


async def test_text_with_a_nul_character_is_refused_naming_each_field(http):
    """No text column stores NUL (PostgreSQL refuses it), wherever it hides."""
    response = await http.post(
        "/probe/forms",
        json={"title": "ab\x00c", "items": [{"kind": "a", "note": "\x00"}]},
    )
    body = assert_problem(response, 422, "validation_failed")
    assert {e["field"] for e in body["errors"]} == {"title", "items[0].note"}
    body = assert_problem(
        await http.get("/probe/things", params={"tag": "a\x00"}), 422, "validation_failed"
    )
    assert [e["field"] for e in body["errors"]] == ["tag[0]"]
    literal = await http.post("/probe/forms", json={"title": "the \\u0000 escape"})
    assert literal.status_code == 201, "the six characters of an escape are plain text"


async def test_a_nul_in_a_path_is_a_404(http):
    assert_problem(await http.get("/probe/things/%00"), 404, "not_found")
    assert_problem(await http.get("/probe/forms%00"), 404, "not_found")


@pytest.mark.parametrize("payload", [b"[]", b"42", b'"text"', b"null", b"{}"])
async def test_a_body_that_is_not_the_right_object_is_422(http, payload):
    assert_problem(await post_raw(http, payload), 422, "validation_failed")


async def test_a_body_in_the_wrong_media_type_is_415(http):
    response = await http.post(
        "/probe/forms",
        content=b"title=hello",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported_media_type")


async def test_a_body_over_the_limit_is_413_by_declared_length(http):
    response = await http.post("/probe/forms", json={"title": "x" * 5000})
    assert_problem(response, 413, "too_large")


async def test_a_body_over_the_limit_is_413_when_streamed_without_length(http):
    async def chunks():
        yield b'{"title": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    response = await http.post(
        "/probe/forms", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "too_large")


async def test_query_strings_are_coerced_and_validated(http):
    response = await http.get("/probe/things", params=[("limit", "5"), ("tag", "x"), ("tag", "y")])
    assert response.json() == {"limit": 5, "tag": ["x", "y"]}
    body = assert_problem(
        await http.get("/probe/things?limit=0&sort=new"), 422, "validation_failed"
    )
    assert {e["field"] for e in body["errors"]} == {"limit", "sort"}


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "1.5", "99999999999999999999", "１２"])
async def test_a_malformed_id_in_a_path_is_404(http, raw):
    assert_problem(await http.get(f"/probe/things/{raw}"), 404, "not_found")


async def test_a_well_formed_id_reaches_the_handler(http):
    assert (await http.get("/probe/things/123456789")).json() == {"id": "123456789"}


async def test_an_unexpected_error_is_a_500_problem_without_internals(http):
    response = await http.get("/probe/explode")
    body = assert_problem(response, 500, "internal")
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert set(body) == {"type", "title", "status", "code", "detail"}


async def test_domain_errors_carry_extension_members(http):
    body = assert_problem(await http.post("/probe/refuse"), 409, "conflict")
    assert body["state"] == "closed"
    assert body["detail"] == "Already done"


async def test_every_response_carries_a_request_id_and_echoes_a_safe_one(http):
    response = await http.get("/probe/things", headers={"x-request-id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    hostile = await http.get("/probe/things", headers={"x-request-id": "bad <id>"})
    assert hostile.headers["x-request-id"] != "bad <id>"
    assert len(hostile.headers["x-request-id"]) == 32


async def test_metrics_count_requests_by_route_template(http, probe_url):
    await http.get("/probe/things/42")
    async with httpx.AsyncClient() as bare:
        text = (await bare.get(probe_url.replace("/api/v1", "/metrics"))).text
    assert 'route="/api/v1/probe/things/{thing_id}"' in text
    assert 'route="/api/v1/probe/things/42"' not in text


async def test_limited_routes_report_their_tightest_limit(http):
    first = await http.get("/probe/limited")
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert int(first.headers["x-ratelimit-reset"]) > 0
    await http.get("/probe/limited")
    refused = await http.get("/probe/limited")
    assert_problem(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining"] == "0"
