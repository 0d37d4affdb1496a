"""Every route, called by the wrong caller, is refused the same way (DESIGN "Auth",
auth.md R9, R22): anonymous → 401 where a user is required, banned → 403 `banned` except
the few routes a banned user may use, bot keys → 403 where bots are never allowed or the
scope is missing. Built from the route declarations, so a new route is covered the day it
is added. Refusals happen before any input is read, so the probes send no body."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import rest
from tests.factories import ban, concrete, register, set_user

ENDPOINTS = [e for e in rest.endpoints() if e.tag not in ("docs", "health")]
NEEDS_USER = [e for e in ENDPOINTS if e.auth in ("user", "staff", "admin")]
BANNED_REFUSED = [e for e in ENDPOINTS if e.auth != "none" and not e.allow_banned]
BOT_REFUSED = [e for e in ENDPOINTS if e.auth != "none" and e.bot_scope is None]
BOT_SCOPED = [e for e in ENDPOINTS if e.bot_scope not in (None, "*", "profile:read")]


async def call(http, endpoint, headers):
    return await http.request(endpoint.method, concrete(endpoint.path), headers=headers)


@pytest.fixture
async def probe(live):
    import httpx

    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        yield http


def mismatches(results):
    return [
        f"{e.method} {e.path} → {r.status_code} {r.text[:120]}" for e, r, ok in results if not ok
    ]


async def test_anonymous_callers_get_401(probe):
    results = []
    for endpoint in NEEDS_USER:
        response = await call(probe, endpoint, {})
        results.append(
            (
                endpoint,
                response,
                response.status_code == 401
                and response.headers["content-type"] == "application/problem+json",
            )
        )
    assert mismatches(results) == []


async def test_banned_users_get_403_banned(probe, client, live):
    account = await register(client)
    await ban(live.services, account.id, reason="spam")
    results = []
    for endpoint in BANNED_REFUSED:
        response = await call(probe, endpoint, account.headers)
        body = response.json() if response.status_code == 403 else {}
        results.append(
            (endpoint, response, body.get("code") == "banned" and body.get("ban_reason") == "spam")
        )
    assert mismatches(results) == []


async def bot_key(client, live, scopes: list[str]) -> str:
    account = await register(client)
    await set_user(live.services, account.id, email_verified_at=datetime.now(UTC))
    response = await client.post(
        "/api-keys", headers=account.headers, json={"name": "probe", "scopes": scopes}
    )
    assert response.status_code == 201, response.text
    return response.json()["secret"]


async def test_bot_keys_are_refused_where_bots_never_go(probe, client, live):
    headers = {"Authorization": f"Bot {await bot_key(client, live, ['profile:read'])}"}
    results = []
    for endpoint in BOT_REFUSED:
        await live.services.limiter.reset()  # 120 requests/min per key: not what is tested
        response = await call(probe, endpoint, headers)
        results.append(
            (
                endpoint,
                response,
                response.status_code == 403 and response.json()["code"] == "bot_not_allowed",
            )
        )
    assert mismatches(results) == []


async def test_bot_keys_without_the_scope_are_refused_naming_it(probe, client, live):
    headers = {"Authorization": f"Bot {await bot_key(client, live, ['profile:read'])}"}
    results = []
    for endpoint in BOT_SCOPED:
        await live.services.limiter.reset()
        response = await call(probe, endpoint, headers)
        body = response.json() if response.status_code == 403 else {}
        results.append(
            (
                endpoint,
                response,
                body.get("code") == "insufficient_scope"
                and body.get("required_scope") == endpoint.bot_scope,
            )
        )
    assert mismatches(results) == []


def test_the_matrix_covers_the_identity_routes():
    paths = {e.path for e in NEEDS_USER}
    assert {"/auth/sessions", "/api-keys", "/push/tokens", "/users/me"} <= paths
    assert len(BANNED_REFUSED) > 40 and BOT_REFUSED and BOT_SCOPED
