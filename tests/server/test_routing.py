"""The API route table: literal paths beat parameterised ones, parameterised ones keep their
declaration order, a path served with other methods is a 405 naming them, HEAD rides on GET,
and a table that would be ambiguous is refused at startup."""

from __future__ import annotations

import pytest

from server.errors import ApiError
from server.http import Call, Endpoint
from server.routing import RouteTable


def _endpoint(method: str, path: str) -> Endpoint:
    async def handler(call: Call) -> None:
        return None

    handler.__name__ = f"{method.lower()}_{path.strip('/').replace('/', '_')}"
    return Endpoint(method, path, handler)


TABLE = RouteTable(
    [
        _endpoint("GET", "/anime/{anime_id}"),
        _endpoint("GET", "/anime/random"),
        _endpoint("DELETE", "/anime/{anime_id}"),
        _endpoint("GET", "/anime/{anime_id}/comments"),
        _endpoint("POST", "/anime/{anime_id:int}/rate"),
        _endpoint("GET", "/health"),
        _endpoint("POST", "/users/{user_id}/follow"),
        _endpoint("GET", "/users/{name}"),
    ]
)


def _match(method: str, path: str) -> tuple[str, dict]:
    endpoint, params, template = TABLE.match(path, method)
    assert endpoint.path == template
    return f"{endpoint.method} {template}", params


def test_a_literal_path_wins_over_a_parameter_declared_before_it():
    assert _match("GET", "/anime/random") == ("GET /anime/random", {})
    assert _match("GET", "/anime/42") == ("GET /anime/{anime_id}", {"anime_id": "42"})


def test_a_parameterised_path_serves_the_methods_the_literal_does_not():
    assert _match("DELETE", "/anime/random") == ("DELETE /anime/{anime_id}", {"anime_id": "random"})


def test_convertors_apply_and_refuse():
    assert _match("POST", "/anime/7/rate") == ("POST /anime/{anime_id:int}/rate", {"anime_id": 7})
    with pytest.raises(ApiError) as refused:
        TABLE.match("/anime/seven/rate", "POST")
    assert refused.value.status == 404


def test_a_parameter_never_spans_segments():
    with pytest.raises(ApiError) as refused:
        TABLE.match("/anime/1/2", "GET")
    assert refused.value.status == 404


def test_head_is_served_by_get():
    assert _match("HEAD", "/health") == ("GET /health", {})


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/health", "GET, HEAD"),
        ("PUT", "/anime/42", "DELETE, GET, HEAD"),
        ("GET", "/anime/42/rate", "POST"),
    ],
)
def test_a_path_with_other_methods_is_a_405_naming_them(method, path, allow):
    with pytest.raises(ApiError) as refused:
        TABLE.match(path, method)
    assert refused.value.status == 405
    assert refused.value.headers["Allow"] == allow


@pytest.mark.parametrize(
    "path", ["", "/", "/nothing", "/health/", "/anime", "//anime/1", "/ANIME/1"]
)
def test_unknown_paths_are_404(path):
    with pytest.raises(ApiError) as refused:
        TABLE.match(path, "GET")
    assert refused.value.status == 404


def test_declaration_order_decides_between_parameterised_paths():
    assert _match("GET", "/users/follow") == ("GET /users/{name}", {"name": "follow"})
    assert _match("POST", "/users/9/follow")[0] == "POST /users/{user_id}/follow"


def test_operations_lists_every_method_and_template():
    assert ("DELETE", "/anime/{anime_id}") in TABLE.operations()
    assert len(TABLE.operations()) == 8


@pytest.mark.parametrize(
    "endpoints",
    [
        [_endpoint("GET", "/a"), _endpoint("GET", "/a")],
        [_endpoint("GET", "/a/{x}"), _endpoint("GET", "/a/{x}")],
        [_endpoint("GET", "/{x}/a")],
    ],
)
def test_an_ambiguous_table_is_refused(endpoints):
    with pytest.raises(ValueError):
        RouteTable(endpoints)
