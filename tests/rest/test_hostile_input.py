"""No input reaches a 500 (DESIGN "Errors"; platform issue: "No input can produce a 500").

Every route, built from its declarations, is called by a signed-in admin with a hostile value
in one place at a time — a path parameter, a query field, a body field — the rest of the
request well formed. Hostile means what breaks storage and arithmetic rather than
validation: integers past 64 bits, NUL characters (PostgreSQL text refuses them), lone
surrogates, strings at their length limit in four-byte characters, the wrong JSON type.
Whatever a route answers, it is never a 5xx, and every refusal is problem details. A new
route is covered the day it is added."""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from msgspec import inspect as mi

import rest
from models.auth.sessions import create_session
from tests.factories import PATH_PARAM, concrete, make_staff, register, set_user

ENDPOINTS = [e for e in rest.endpoints() if e.tag not in ("docs", "health")]

BIG_INTS = [2**63, -(2**63) - 1, 2**64, 10**40]
BAD_TEXT = ["\x00", "a\x00b", "\ud800"]
WRONG_TYPES: list[Any] = [[], {}, True, 1.5]
HOSTILE_PATH = ["99999999999999999999999", "-1", "0", "\x00", "😀", "a" * 300]
HOSTILE_QUERY = ["99999999999999999999999", "-99999999999999999999999", "", "\x00", "x" * 3000]


def sample(info: mi.Type) -> Any:
    """A value of the declared type that passes its declared constraints."""
    match info:
        case mi.StructType():
            return {f.encode_name: sample(f.type) for f in info.fields if f.required}
        case mi.IntType() | mi.FloatType():
            low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else 1)
            high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else 10)
            return min(max(low, 1), high)
        case mi.StrType():
            return "a" * max(info.min_length or 0, 1)
        case mi.BoolType():
            return True
        case mi.LiteralType():
            return info.values[0]
        case mi.EnumType():
            return next(iter(info.cls)).value
        case mi.ListType() | mi.SetType() | mi.FrozenSetType() | mi.VarTupleType():
            return [sample(info.item_type) for _ in range(info.min_length or 0)]
        case mi.TupleType():
            return [sample(item) for item in info.item_types]
        case mi.DictType():
            return {}
        case mi.UnionType():
            kinds = [t for t in info.types if not isinstance(t, mi.NoneType)]
            return sample(kinds[0]) if kinds else None
        case mi.DateTimeType():
            return "2026-01-01T00:00:00Z"
        case mi.DateType():
            return "2026-01-01"
        case _:
            return None


def hostile(info: mi.Type) -> list[Any]:
    """Values of the field's own kind that break storage or arithmetic, then wrong types."""
    kinds = info.types if isinstance(info, mi.UnionType) else (info,)
    values: list[Any] = []
    for kind in kinds:
        if isinstance(kind, mi.IntType):
            values += BIG_INTS
        elif isinstance(kind, mi.FloatType):
            values += [1e308, -1e308]
        elif isinstance(kind, mi.StrType):
            longest = kind.max_length or 5000
            values += [*BAD_TEXT, "x" * longest, "𝕏" * longest]
        elif isinstance(kind, mi.ListType | mi.SetType | mi.VarTupleType):
            values += [[value] for value in hostile(kind.item_type)[:6]]
            values.append([sample(kind.item_type)] * min(kind.max_length or 1000, 1000))
        elif isinstance(kind, mi.StructType):
            base = sample(kind)
            for field in kind.fields:
                values += [{**base, field.encode_name: v} for v in hostile(field.type)[:6]]
    return values + WRONG_TYPES


def requests_for(endpoint) -> list[dict[str, Any]]:
    """One request per hostile value, each otherwise well formed."""
    probes: list[dict[str, Any]] = []
    body_info = mi.type_info(endpoint.body) if endpoint.body is not None else None
    base_body = sample(body_info) if body_info is not None else None
    base_query: dict[str, Any] = {}
    query_fields = []
    if endpoint.query is not None:
        query_fields = mi.type_info(endpoint.query).fields
        base_query = {f.encode_name: _text(sample(f.type)) for f in query_fields if f.required}

    def probe(path: str, query: dict[str, Any], body: Any) -> None:
        request: dict[str, Any] = {"url": path, "params": query}
        if body_info is not None:
            # json, not msgspec: it writes a lone surrogate as the escape a hostile client sends
            request["content"] = json.dumps(body).encode() if body is not _RAW else b"{"
            request["headers"] = {"content-type": endpoint.content_types[0]}
        probes.append(request)

    plain = concrete(endpoint.path)
    for name in PATH_PARAM.findall(endpoint.path):
        for value in HOSTILE_PATH:
            probe(concrete(endpoint.path, {name: value}), base_query, base_body)
    for field in query_fields:
        for value in HOSTILE_QUERY:
            probe(plain, {**base_query, field.encode_name: value}, base_body)
    if body_info is not None:
        probe(plain, base_query, _RAW)
        if isinstance(body_info, mi.StructType):
            for field in body_info.fields:
                for value in hostile(field.type):
                    probe(plain, base_query, {**base_body, field.encode_name: value})
        else:
            for value in WRONG_TYPES:
                probe(plain, base_query, value)
    return probes


_RAW = object()  # a body that is not JSON at all


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return value.value
    return value if isinstance(value, list) else str(value)


@pytest.fixture
async def admin(client, live):
    account = await register(client)
    await set_user(live.services, account.id, email_verified_at=datetime.now(UTC))
    await make_staff(live.services, account.id, "admin")
    return account


async def fresh_token(live, user_id: int) -> str:
    """A new session per route: a route that ends sessions must not blind the next one."""
    async with live.services.db.transaction() as tx:
        session, _ = await create_session(
            live.services,
            tx,
            user_id=user_id,
            client="web",
            device_name=None,
            user_agent="hostile-input",
            ip="127.0.0.1",
            auth_method="password",
        )
    return live.services.keys.issue(user_id, session["id"], "admin")


def test_the_generator_reaches_every_kind_of_input():
    """The probes cover path parameters, query fields and body fields of real routes."""
    total = sum(len(requests_for(e)) for e in ENDPOINTS)
    with_body = [e for e in ENDPOINTS if e.body is not None]
    with_query = [e for e in ENDPOINTS if e.query is not None]
    with_path = [e for e in ENDPOINTS if "{" in e.path]
    assert with_body and with_query and with_path
    assert total > 10 * len(ENDPOINTS)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
async def test_no_input_reaches_a_500(probe_client, live, admin, endpoint):
    headers = {"Authorization": f"Bearer {await fresh_token(live, admin.id)}"}
    speaks_json = endpoint.media_type == "application/json"  # else a page (OAuth callbacks)
    failures = []
    for request in requests_for(endpoint):
        await live.services.limiter.reset()  # every probe reaches the route, not a 429
        response = await probe_client.request(
            endpoint.method,
            request["url"],
            params=request["params"],
            content=request.get("content"),
            headers={**headers, **request.get("headers", {})},
        )
        problem = response.headers.get("content-type", "").startswith("application/problem+json")
        if response.status_code >= 500 or (
            response.status_code >= 400 and not problem and speaks_json
        ):
            failures.append(
                f"{response.status_code} {request['url']} {request['params']} "
                f"{(request.get('content') or b'')[:120]!r} → {response.text[:200]}"
            )
    assert not failures, "\n".join(failures[:10])


@pytest.fixture
async def probe_client(live):
    import httpx

    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        yield http
