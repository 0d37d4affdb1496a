"""Sessions, refresh rotation and revocation (auth.md E3-E6, E8, E9, R2, R7, R9, R10)."""

from __future__ import annotations

import asyncio

from tests.factories import ban, login, mails_to, register


async def me(client, account):
    return await client.get("/auth/me", headers=account.headers)


async def test_refresh_rotates_the_token_and_keeps_the_session(client):
    account = await register(client)
    response = await client.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    assert response.status_code == 200
    body = response.json()
    assert body["session_id"] == str(account.session_id)
    assert body["refresh_token"] != account.refresh_token
    assert body["access_token"] != account.access_token
    assert (
        await client.get("/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    ).status_code == 200


async def test_reusing_a_rotated_refresh_token_ends_the_session(client, live, capture):
    """R7: presenting a spent token, at any time, revokes the whole family."""
    account = await register(client)
    first = await client.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    successor = first.json()["refresh_token"]
    async with capture() as seen:
        reused = await client.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    assert reused.status_code == 401
    assert reused.json()["code"] == "refresh_token_reused"
    dead = await client.post("/auth/refresh", json={"refresh_token": successor})
    assert dead.status_code == 401 and dead.json()["code"] == "invalid_refresh_token"
    assert (await me(client, account)).json()["code"] == "session_revoked"
    events = [e for e in await seen.events() if e.type == "SESSION_REVOKED"]
    assert [(e.data, e.targets.topics) for e in events] == [
        (
            {"session_id": str(account.session_id), "reason": "refresh_reuse"},
            (f"user:{account.id}",),
        )
    ]
    assert len(await mails_to(live.services, account.email, "refresh_reuse")) == 1


async def test_two_concurrent_refreshes_with_one_token_end_the_session(client):
    """R7: exactly one conditional update wins; the loser is a reuse."""
    account = await register(client)
    responses = await asyncio.gather(
        *(
            client.post("/auth/refresh", json={"refresh_token": account.refresh_token})
            for _ in range(2)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 401]
    loser = next(r for r in responses if r.status_code == 401)
    assert loser.json()["code"] == "refresh_token_reused"
    winner = next(r for r in responses if r.status_code == 200).json()
    again = await client.post("/auth/refresh", json={"refresh_token": winner["refresh_token"]})
    assert again.status_code == 401


async def test_unknown_or_malformed_refresh_tokens_are_401(client):
    for token in ("rt_" + "A" * 43, "garbage", "rt_"):
        response = await client.post("/auth/refresh", json={"refresh_token": token})
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_refresh_token"
    too_long = await client.post("/auth/refresh", json={"refresh_token": "x" * 129})
    assert too_long.status_code == 422


async def test_logout_stops_the_access_token_at_once(client, capture):
    account = await register(client)
    async with capture() as seen:
        response = await client.post("/auth/logout", headers=account.headers)
    assert response.status_code == 204
    refused = await me(client, account)
    assert refused.status_code == 401 and refused.json()["code"] == "session_revoked"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    refresh = await client.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    assert refresh.status_code == 401
    assert [e.data["reason"] for e in await seen.events()] == ["logout"]


async def test_logout_is_idempotent_and_works_with_only_the_refresh_token(client):
    account = await register(client)
    by_token = await client.post("/auth/logout", json={"refresh_token": account.refresh_token})
    assert by_token.status_code == 204
    assert (await me(client, account)).status_code == 401
    assert (
        await client.post("/auth/logout", json={"refresh_token": "rt_nothing"})
    ).status_code == 204
    assert (await client.post("/auth/logout")).status_code == 204


async def test_logout_all_can_keep_the_current_session(client):
    account = await register(client)
    phone = await login(client, account)
    tablet = await login(client, account)
    response = await client.post(
        "/auth/logout-all", json={"keep_current": True}, headers=phone.headers
    )
    assert response.status_code == 204
    assert (await me(client, phone)).status_code == 200
    assert (await me(client, tablet)).status_code == 401
    assert (await me(client, account)).status_code == 401
    everything = await client.post("/auth/logout-all", headers=phone.headers)
    assert everything.status_code == 204
    assert (await me(client, phone)).status_code == 401


async def test_logout_all_needs_a_bearer(client):
    assert (await client.post("/auth/logout-all")).status_code == 401


async def test_sessions_list_marks_the_current_one(client):
    account = await register(client)
    other = await login(client, account, **{"client": "ios", "device_name": "iPhone"})
    response = await client.get("/auth/sessions", headers=account.headers)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["id"] for item in items] == [str(other.session_id), str(account.session_id)]
    assert [item["current"] for item in items] == [False, True]
    assert items[0]["client"] == "ios" and items[0]["device_name"] == "iPhone"
    assert {
        "browser",
        "os",
        "last_ip",
        "auth_method",
        "created_at",
        "last_used_at",
        "authenticated_at",
    } <= set(items[0])


async def test_revoking_one_session_ends_only_that_one(client):
    account = await register(client)
    other = await login(client, account)
    response = await client.delete(f"/auth/sessions/{other.session_id}", headers=account.headers)
    assert response.status_code == 204
    assert (await me(client, other)).status_code == 401
    assert (await me(client, account)).status_code == 200
    again = await client.delete(f"/auth/sessions/{other.session_id}", headers=account.headers)
    assert again.status_code == 404


async def test_another_users_session_is_a_404_and_stays_alive(client):
    alice = await register(client)
    bob = await register(client)
    response = await client.delete(f"/auth/sessions/{bob.session_id}", headers=alice.headers)
    assert response.status_code == 404
    assert (await me(client, bob)).status_code == 200
    malformed = await client.delete("/auth/sessions/not-an-id", headers=alice.headers)
    assert malformed.status_code == 404


async def test_me_describes_the_account_and_session(client):
    account = await register(client)
    body = (await me(client, account)).json()
    assert body["user"]["id"] == str(account.id)
    assert body["session"]["id"] == str(account.session_id)
    assert body["session"]["auth_method"] == "password"
    assert body["api_key"] is None
    assert body["identities"] == []
    assert body["restrictions"] == {
        "banned": False,
        "banned_until": None,
        "ban_reason": None,
        "muted_until": None,
        "deletion_scheduled_at": None,
    }


async def test_a_ban_applies_on_the_next_request_without_a_new_token(client, live):
    """R2, R9: restrictions come from the database, not the token."""
    account = await register(client)
    await ban(live.services, account.id, reason="spam")
    refused = await client.get("/auth/sessions", headers=account.headers)
    assert refused.status_code == 403
    body = refused.json()
    assert body["code"] == "banned"
    assert body["ban_reason"] == "spam" and body["banned_until"].endswith("Z")
    allowed = await me(client, account)
    assert allowed.status_code == 200
    assert allowed.json()["restrictions"]["banned"] is True
    assert (
        await client.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    ).status_code == 200
    assert (await client.post("/auth/logout", headers=account.headers)).status_code == 204


async def test_requests_without_or_with_a_bad_token_are_401(client):
    assert (await client.get("/auth/me")).status_code == 401
    for header in ("Bearer", "Bearer abc.def.ghi", "Basic dXNlcjpwYXNz", "Token x"):
        response = await client.get("/auth/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["code"] == "invalid_token"


async def test_bearer_and_bot_together_is_a_400(client):
    account = await register(client)
    response = await client.get(
        "/auth/me",
        headers=[
            ("Authorization", f"Bearer {account.access_token}"),
            ("Authorization", "Bot anl_x_y"),
        ],
    )
    assert response.status_code == 400


async def test_last_active_follows_requests_written_once_per_five_minutes(client, live):
    """users.md: last_active_at is the last authenticated request, written at most once per
    5 minutes per user (a burst of requests is one write)."""
    from datetime import UTC, datetime, timedelta

    from models.auth.identity import active_cache_key
    from models.users import get_user
    from tests.factories import set_user

    account = await register(client)
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert (await client.get("/auth/me", headers=account.headers)).status_code == 200
    assert (await get_user(live.services.db, account.id))["last_active_at"] >= before
    marker = datetime.now(UTC) - timedelta(hours=1)
    await set_user(live.services, account.id, last_active_at=marker)
    for _ in range(5):  # inside the window the first request opened: no write
        assert (await client.get("/auth/me", headers=account.headers)).status_code == 200
    assert (await get_user(live.services.db, account.id))["last_active_at"] == marker
    await live.services.cache.delete(active_cache_key(account.id))  # five minutes pass
    before = datetime.now(UTC) - timedelta(seconds=1)
    await asyncio.gather(*(client.get("/auth/me", headers=account.headers) for _ in range(5)))
    assert (await get_user(live.services.db, account.id))["last_active_at"] >= before
