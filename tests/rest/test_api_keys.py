"""API keys and bot authentication (auth.md K1–K6, R21–R26, API_KEY_UPDATE, API_KEY_REVOKED)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

import rest
from models import api_keys
from models.api_keys import api_keys as api_keys_table
from server.events import validate_payload
from server.http import Call, Endpoint
from server.secrets import sha256
from tests.conftest import start_live_server, stop_live_server
from tests.factories import Account, ban, register, set_user

KEY_PATTERN = re.compile(r"^anl_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")


# --- helpers ---------------------------------------------------------------------------------


async def verified(client: httpx.AsyncClient, live) -> Account:
    account = await register(client)
    await set_user(live.services, account.id, email_verified_at=datetime.now(UTC))
    return account


async def create_key(
    client: httpx.AsyncClient,
    account: Account,
    name: str = "scrobbler",
    scopes: list[str] | None = None,
    **extra,
) -> dict:
    response = await client.post(
        "/api-keys",
        headers=account.headers,
        json={"name": name, "scopes": scopes or ["profile:read"], **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def next_day(live, account: Account) -> None:
    """Forget today's K2 creations (10 per day), to reach the other limits."""
    await live.services.limiter.clear(api_keys.CREATE_RATE, "api-key-create", str(account.id))


def bot(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bot {secret}"}


async def key_row(live, key_id: str) -> dict:
    row = await live.services.db.fetch_one(
        sa.select(api_keys_table).where(api_keys_table.c.id == int(key_id))
    )
    assert row is not None
    return row


async def set_key(live, key_id: str, **values) -> None:
    """Change a key's row as time would (expiry, end of grace), dropping its cached state."""
    await live.services.db.execute(
        api_keys_table.update().where(api_keys_table.c.id == int(key_id)).values(**values)
    )
    row = await key_row(live, key_id)
    await live.services.cache.delete(api_keys.state_cache_key(row["prefix"]))


def events_of(events, name: str) -> list:
    found = [e for e in events if e.type == name]
    for event in found:
        validate_payload(event.type, event.data)
    return found


# --- K2 create ---------------------------------------------------------------------------------


async def test_create_returns_the_secret_once_and_stores_only_its_hash(client, live):
    """K2, R21: `anl_<prefix>_<secret>`, the secret shown once, SHA-256 stored."""
    owner = await verified(client, live)
    created = await create_key(client, owner, scopes=["list:write", "profile:read"])
    match = KEY_PATTERN.match(created["secret"])
    assert match, created["secret"]
    prefix, secret = match.groups()
    assert created["prefix"] == prefix
    assert created["display"] == f"anl_{prefix}_…"
    assert created["scopes"] == ["profile:read", "list:write"]  # catalog order
    assert created["expires_at"] is None and created["rotated_at"] is None
    assert created["grace_until"] is None and created["last_used_at"] is None
    row = await key_row(live, created["id"])
    assert row["secret_hash"] == sha256(secret)
    assert secret.encode() not in repr(row).encode()
    listed = (await client.get("/api-keys", headers=owner.headers)).json()["items"]
    assert [item["id"] for item in listed] == [created["id"]]
    assert "secret" not in listed[0]
    one = (await client.get(f"/api-keys/{created['id']}", headers=owner.headers)).json()
    assert "secret" not in one and one["prefix"] == prefix


async def test_create_with_expiry(client, live):
    """K2: expires_in_days sets expires_at."""
    owner = await verified(client, live)
    created = await create_key(client, owner, expires_in_days=30)
    expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=29, hours=23) < expires - datetime.now(UTC) <= timedelta(days=30)


async def test_create_needs_a_verified_email(client, live):
    """R24: creating a key needs a verified email (403 email_unverified)."""
    owner = await register(client)
    response = await client.post(
        "/api-keys", headers=owner.headers, json={"name": "x", "scopes": ["profile:read"]}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "email_unverified"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "scopes": ["profile:read", "nope"]}, "scopes[1]"),
        ({"name": "k", "scopes": ["list:read", "list:read"]}, "scopes[1]"),
        ({"name": "k", "scopes": []}, "scopes"),
        ({"name": "k", "scopes": ["profile:read"] * 21}, "scopes"),
        ({"name": "   ", "scopes": ["profile:read"]}, "name"),
        ({"name": "x" * 65, "scopes": ["profile:read"]}, "name"),
        ({"name": "k", "scopes": ["profile:read"], "expires_in_days": 0}, "expires_in_days"),
        ({"name": "k", "scopes": ["profile:read"], "expires_in_days": 366}, "expires_in_days"),
        ({"name": "k", "scopes": ["profile:read"], "extra": 1}, "extra"),
        ({"scopes": ["profile:read"]}, "name"),
    ],
)
async def test_create_validates_every_field(client, live, body, field):
    """K2: 422 naming the field; scopes come from the R23 catalog, distinct, 1..20."""
    owner = await verified(client, live)
    response = await client.post("/api-keys", headers=owner.headers, json=body)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_names_are_unique_per_user_case_insensitively_among_live_keys(client, live):
    """K2, Data: partial unique index (user_id, lower(name)) where revoked_at is null."""
    owner = await verified(client, live)
    other = await verified(client, live)
    first = await create_key(client, owner, name="Scrobbler")
    response = await client.post(
        "/api-keys", headers=owner.headers, json={"name": " scrobbler ", "scopes": ["list:read"]}
    )
    assert response.status_code == 409 and response.json()["code"] == "name_taken"
    await create_key(client, other, name="Scrobbler")  # another user's names are theirs
    assert (
        await client.delete(f"/api-keys/{first['id']}", headers=owner.headers)
    ).status_code == 204
    await create_key(client, owner, name="scrobbler")  # a revoked key frees its name


async def test_the_database_refuses_a_duplicate_live_name_even_without_the_check(client, live):
    """Data: the partial unique index itself holds the name invariant, on both engines."""
    owner = await verified(client, live)
    created = await create_key(client, owner, name="Sync")
    row = await key_row(live, created["id"])
    duplicate = {**row, "id": row["id"] + 1, "prefix": "zzzzzzzz", "slot": (row["slot"] + 1) % 10}
    duplicate["name"] = "SYNC"
    with pytest.raises(Exception) as caught:
        await live.services.db.execute(api_keys_table.insert().values(**duplicate))
    assert api_keys.is_unique_violation(caught.value)
    revoked = {**duplicate, "revoked_at": datetime.now(UTC)}
    await live.services.db.execute(api_keys_table.insert().values(**revoked))


async def test_ten_live_keys_at_most(client, live):
    """R24: 10 non-revoked keys per user → 409 api_key_limit; revoking one frees a place."""
    owner = await verified(client, live)
    keys = [await create_key(client, owner, name=f"k{i}") for i in range(10)]
    response = await client.post(
        "/api-keys", headers=owner.headers, json={"name": "k10", "scopes": ["profile:read"]}
    )
    assert response.status_code == 409 and response.json()["code"] == "api_key_limit"
    await client.delete(f"/api-keys/{keys[3]['id']}", headers=owner.headers)
    await next_day(live, owner)
    await create_key(client, owner, name="k10")


async def test_an_expired_key_does_not_hold_a_place(client, live, capture):
    """R25, R24: keys past expires_at behave as revoked, also for the limit and names."""
    owner = await verified(client, live)
    keys = [await create_key(client, owner, name=f"k{i}") for i in range(10)]
    await set_key(live, keys[0]["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    listed = (await client.get("/api-keys", headers=owner.headers)).json()["items"]
    assert keys[0]["id"] not in [item["id"] for item in listed]
    await next_day(live, owner)
    async with capture() as seen:
        await create_key(client, owner, name="k0")
    revoked = events_of(await seen.events(), "API_KEY_REVOKED")
    assert [e.data for e in revoked] == [{"key_id": keys[0]["id"], "reason": "expired"}]


async def test_two_concurrent_creations_at_the_limit_make_one_key(client, live):
    """R24 under concurrency: with 9 keys, two simultaneous K2 → exactly one 201."""
    owner = await verified(client, live)
    for i in range(9):
        await create_key(client, owner, name=f"k{i}")
    await next_day(live, owner)
    responses = await asyncio.gather(
        *(
            client.post(
                "/api-keys",
                headers=owner.headers,
                json={"name": f"race{i}", "scopes": ["profile:read"]},
            )
            for i in range(2)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409]
    assert [r.json()["code"] for r in responses if r.status_code == 409] == ["api_key_limit"]
    count = await live.services.db.fetch_val(
        sa.select(sa.func.count())
        .select_from(api_keys_table)
        .where(api_keys_table.c.user_id == owner.id, api_keys_table.c.revoked_at.is_(None))
    )
    assert count == 10


async def test_two_concurrent_creations_with_one_name_make_one_key(client, live):
    """K2 under concurrency: the same name twice at once → one 201, one 409 name_taken."""
    owner = await verified(client, live)
    responses = await asyncio.gather(
        *(
            client.post(
                "/api-keys",
                headers=owner.headers,
                json={"name": "Twin", "scopes": ["profile:read"]},
            )
            for _ in range(2)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409]
    assert [r.json()["code"] for r in responses if r.status_code == 409] == ["name_taken"]


async def test_ten_creations_per_day(client, live):
    """K2: 429 after 10 creations in a day (revoking does not give creations back)."""
    owner = await verified(client, live)
    for i in range(10):
        created = await create_key(client, owner, name=f"k{i}")
        await client.delete(f"/api-keys/{created['id']}", headers=owner.headers)
    response = await client.post(
        "/api-keys", headers=owner.headers, json={"name": "more", "scopes": ["profile:read"]}
    )
    assert response.status_code == 429 and "retry-after" in response.headers


# --- K1, K3: reading; other users' keys ------------------------------------------------------


async def test_list_is_newest_first_and_hides_revoked_keys(client, live):
    """K1: non-revoked keys, newest first."""
    owner = await verified(client, live)
    first = await create_key(client, owner, name="a")
    second = await create_key(client, owner, name="b")
    third = await create_key(client, owner, name="c")
    await client.delete(f"/api-keys/{second['id']}", headers=owner.headers)
    listed = (await client.get("/api-keys", headers=owner.headers)).json()["items"]
    assert [item["id"] for item in listed] == [third["id"], first["id"]]


async def test_other_users_keys_are_not_found(client, live):
    """K1–K6: another user's key is a 404 on every route, and nothing changes."""
    owner = await verified(client, live)
    stranger = await verified(client, live)
    key = await create_key(client, owner)
    path = f"/api-keys/{key['id']}"
    calls = [
        client.get(path, headers=stranger.headers),
        client.patch(path, headers=stranger.headers, json={"name": "mine"}),
        client.post(f"{path}/rotate", headers=stranger.headers, json={}),
        client.delete(path, headers=stranger.headers),
    ]
    for response in await asyncio.gather(*calls):
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
    listed = (await client.get("/api-keys", headers=stranger.headers)).json()["items"]
    assert listed == []
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 200
    row = await key_row(live, key["id"])
    assert row["name"] == "scrobbler" and row["revoked_at"] is None


async def test_missing_and_malformed_key_ids_are_not_found(client, live):
    """K3: unknown or malformed ids → 404."""
    owner = await verified(client, live)
    for path in ("/api-keys/123456789", "/api-keys/abc", "/api-keys/-1"):
        response = await client.get(path, headers=owner.headers)
        assert response.status_code == 404


async def test_key_routes_need_a_user(client, live):
    """K1–K6: no credential → 401."""
    assert (await client.get("/api-keys")).status_code == 401
    response = await client.post("/api-keys", json={"name": "x", "scopes": ["profile:read"]})
    assert response.status_code == 401


async def test_banned_users_cannot_manage_keys(client, live):
    """R9: a banned user's bearer gets 403 banned on K1."""
    owner = await verified(client, live)
    await ban(live.services, owner.id)
    response = await client.get("/api-keys", headers=owner.headers)
    assert response.status_code == 403 and response.json()["code"] == "banned"


# --- R22: using a key --------------------------------------------------------------------------


async def test_a_key_acts_as_its_owner_on_me(client, live):
    """E6, R22: a Bot key sees its owner, `session` null and `api_key` set."""
    owner = await verified(client, live)
    key = await create_key(client, owner, name="Bot one", scopes=["list:read", "profile:read"])
    response = await client.get("/auth/me", headers=bot(key["secret"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["id"] == str(owner.id)
    assert body["session"] is None
    assert body["api_key"] == {
        "id": key["id"],
        "name": "Bot one",
        "scopes": ["profile:read", "list:read"],
    }
    row = await key_row(live, key["id"])
    assert row["last_used_at"] is not None and row["last_used_ip"] == "127.0.0.1"


async def test_last_used_is_written_at_most_once_a_minute(client, live):
    """R24: last_used_at / last_used_ip at most once per minute per key."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    await client.get("/auth/me", headers=bot(key["secret"]))
    marker = datetime(2030, 1, 1, tzinfo=UTC)
    await live.services.db.execute(
        api_keys_table.update()
        .where(api_keys_table.c.id == int(key["id"]))
        .values(last_used_at=marker)
    )
    await client.get("/auth/me", headers=bot(key["secret"]))
    assert (await key_row(live, key["id"]))["last_used_at"] == marker


async def test_every_bad_key_gets_one_and_the_same_401(client, live):
    """R22: unknown, revoked, expired, wrong secret, malformed → 401 invalid_api_key, one body."""
    owner = await verified(client, live)
    good = await create_key(client, owner, name="good")
    revoked = await create_key(client, owner, name="revoked")
    expired = await create_key(client, owner, name="expired")
    await client.get("/auth/me", headers=bot(revoked["secret"]))  # warm the cache first
    await client.delete(f"/api-keys/{revoked['id']}", headers=owner.headers)
    await set_key(live, expired["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    prefix = good["prefix"]
    wrong_secret = f"anl_{prefix}_" + "A" * 43
    unknown = "anl_zzzzzzzz_" + "A" * 43
    candidates = [
        wrong_secret,
        unknown,
        revoked["secret"],
        expired["secret"],
        "anl_short",
        good["secret"][:-1],
    ]
    bodies = set()
    for secret in candidates:
        response = await client.get("/auth/me", headers=bot(secret))
        assert response.status_code == 401, (secret, response.text)
        bodies.add(response.content)
    assert len(bodies) == 1
    assert b"invalid_api_key" in bodies.pop()


async def test_bearer_and_bot_together_are_a_bad_request(client, live):
    """R22: both schemes in one request → 400."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    response = await client.get(
        "/auth/me",
        headers=[
            ("Authorization", f"Bearer {owner.access_token}"),
            ("Authorization", f"Bot {key['secret']}"),
        ],
    )
    assert response.status_code == 400


async def test_bots_are_refused_on_every_key_and_push_route(client, live):
    """K1–K6, P1–P4, R23: never for bots, whatever the scopes → 403 bot_not_allowed."""
    owner = await verified(client, live)
    key = await create_key(client, owner, scopes=list(api_keys.SCOPES))
    headers = bot(key["secret"])
    path = f"/api-keys/{key['id']}"
    calls = [
        client.get("/api-keys", headers=headers),
        client.post("/api-keys", headers=headers, json={"name": "x", "scopes": ["profile:read"]}),
        client.get(path, headers=headers),
        client.patch(path, headers=headers, json={"name": "y"}),
        client.post(f"{path}/rotate", headers=headers, json={}),
        client.delete(path, headers=headers),
        client.get("/push/tokens", headers=headers),
        client.post(
            "/push/tokens",
            headers=headers,
            json={"token": "ExponentPushToken[abcdefghijkl]", "platform": "ios"},
        ),
        client.delete("/push/tokens/123", headers=headers),
        client.post("/push/test", headers=headers, json={}),
        client.post("/auth/logout-all", headers=headers, json={}),
        client.get("/auth/sessions", headers=headers),
    ]
    for response in await asyncio.gather(*calls):
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "bot_not_allowed"
    assert (await key_row(live, key["id"]))["revoked_at"] is None


async def test_a_key_has_its_own_request_bucket(client, live):
    """R24: 120 requests/min per key; the 121st is 429, the owner's bearer still works."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    headers = bot(key["secret"])
    statuses = [
        r.status_code
        for r in await asyncio.gather(
            *(client.get("/auth/me", headers=headers) for _ in range(120))
        )
    ]
    assert statuses == [200] * 120
    response = await client.get("/auth/me", headers=headers)
    assert response.status_code == 429 and "retry-after" in response.headers
    assert (await client.get("/auth/me", headers=owner.headers)).status_code == 200


async def test_a_deleted_owners_keys_stop_working(client, live, capture):
    """R22: owner deleted → 401 at once; its keys are revoked (API_KEY_REVOKED owner_deleted)."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 200
    await set_user(live.services, owner.id, status="deleted")
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 401
    async with capture() as seen, live.services.db.transaction() as tx:
        assert await api_keys.do_revoke_user_keys(live.services, tx, owner.id) == 1
    events = events_of(await seen.events(), "API_KEY_REVOKED")
    assert [(e.data, e.targets.topics) for e in events] == [
        ({"key_id": key["id"], "reason": "owner_deleted"}, (f"user:{owner.id}",))
    ]
    assert (await key_row(live, key["id"]))["revoked_at"] is not None


# --- scopes through the endpoint authorizer (R22, R23) ---------------------------------------


async def _list_probe(call: Call) -> dict:
    return {"user_id": str(call.user.user_id)}


SCOPED_PROBE = Endpoint("GET", "/probe/my-list", _list_probe, auth="user", bot_scope="list:read")


@pytest.fixture
async def scoped(backend, live):
    """The real API plus one route that needs `list:read`, on its own live server."""
    from server.app import create_app

    app = create_app(backend, endpoints=[*rest.endpoints(), SCOPED_PROBE])
    server = await start_live_server(backend, app=app)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=10) as http:
        http.services = server.services  # type: ignore[attr-defined]  (its own cache)
        yield http
    await stop_live_server(server)


async def test_a_missing_scope_is_403_naming_the_scope(scoped, live):
    """R22: missing scope → 403 insufficient_scope with `required_scope`; with it → 200."""
    owner = await verified(scoped, live)
    narrow = await create_key(scoped, owner, name="narrow", scopes=["profile:read"])
    wide = await create_key(scoped, owner, name="wide", scopes=["list:read"])
    response = await scoped.get("/probe/my-list", headers=bot(narrow["secret"]))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert response.json()["required_scope"] == "list:read"
    response = await scoped.get("/probe/my-list", headers=bot(wide["secret"]))
    assert response.status_code == 200 and response.json() == {"user_id": str(owner.id)}
    assert (await scoped.get("/probe/my-list", headers=owner.headers)).status_code == 200


async def test_narrowing_scopes_applies_on_the_next_request(scoped, live):
    """K4, R25: new scopes apply at once (the cached key state is written through)."""
    owner = await verified(scoped, live)
    key = await create_key(scoped, owner, scopes=["list:read", "profile:read"])
    assert (await scoped.get("/probe/my-list", headers=bot(key["secret"]))).status_code == 200
    response = await scoped.patch(
        f"/api-keys/{key['id']}", headers=owner.headers, json={"scopes": ["profile:read"]}
    )
    assert response.status_code == 200
    assert (await scoped.get("/probe/my-list", headers=bot(key["secret"]))).status_code == 403
    response = await scoped.patch(
        f"/api-keys/{key['id']}", headers=owner.headers, json={"scopes": ["list:read"]}
    )
    assert (await scoped.get("/probe/my-list", headers=bot(key["secret"]))).status_code == 200


async def test_a_banned_owners_key_is_403_banned(scoped, live):
    """R9, R22: owner banned → 403 banned with the ban; E6 still answers, showing it."""
    owner = await verified(scoped, live)
    key = await create_key(scoped, owner, scopes=["list:read"])
    assert (await scoped.get("/probe/my-list", headers=bot(key["secret"]))).status_code == 200
    await ban(scoped.services, owner.id, reason="spam")
    response = await scoped.get("/probe/my-list", headers=bot(key["secret"]))
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "banned" and response.json()["ban_reason"] == "spam"
    me = await scoped.get("/auth/me", headers=bot(key["secret"]))
    assert me.status_code == 200 and me.json()["restrictions"]["banned"] is True


# --- K4 update ---------------------------------------------------------------------------------


async def test_update_renames_and_emits_api_key_update(client, live, capture):
    """K4: rename and/or scopes → 200 ApiKey and API_KEY_UPDATE to the owner, no secret."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    async with capture() as seen:
        response = await client.patch(
            f"/api-keys/{key['id']}",
            headers=owner.headers,
            json={"name": "Renamed", "scopes": ["game:read", "profile:read"]},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Renamed" and body["scopes"] == ["profile:read", "game:read"]
    assert "secret" not in body
    events = events_of(await seen.events(), "API_KEY_UPDATE")
    assert len(events) == 1
    assert events[0].targets.topics == (f"user:{owner.id}",)
    assert events[0].data["key"] == body
    assert key["secret"].split("_", 2)[2] not in repr(events[0].data)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"name": ""}, "name"),
        ({"scopes": ["admin"]}, "scopes[0]"),
        ({"scopes": []}, "scopes"),
        ({"name": "ok", "color": "red"}, "color"),
    ],
)
async def test_update_validates(client, live, body, field):
    """K4: at least one field, same limits as K2."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    response = await client.patch(f"/api-keys/{key['id']}", headers=owner.headers, json=body)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_update_refuses_a_taken_name(client, live):
    """K4: renaming onto another live key's name → 409 name_taken; its own name is fine."""
    owner = await verified(client, live)
    await create_key(client, owner, name="alpha")
    beta = await create_key(client, owner, name="beta")
    path = f"/api-keys/{beta['id']}"
    response = await client.patch(path, headers=owner.headers, json={"name": "ALPHA"})
    assert response.status_code == 409 and response.json()["code"] == "name_taken"
    response = await client.patch(path, headers=owner.headers, json={"name": "Beta"})
    assert response.status_code == 200 and response.json()["name"] == "Beta"


# --- K5 rotate, K6 revoke (R25) ----------------------------------------------------------------


async def test_rotation_without_grace_ends_the_old_secret_now(client, live, capture):
    """K5, R25: new secret, same prefix; the old one is 401 at once; API_KEY_REVOKED rotated."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 200
    async with capture() as seen:
        response = await client.post(f"/api-keys/{key['id']}/rotate", headers=owner.headers)
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["prefix"] == key["prefix"] and rotated["secret"] != key["secret"]
    assert KEY_PATTERN.match(rotated["secret"])
    assert rotated["rotated_at"] is not None and rotated["grace_until"] is None
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 401
    assert (await client.get("/auth/me", headers=bot(rotated["secret"]))).status_code == 200
    events = events_of(await seen.events(), "API_KEY_REVOKED")
    assert [e.data for e in events] == [{"key_id": key["id"], "reason": "rotated"}]


async def test_rotation_with_grace_keeps_both_secrets_until_it_ends(client, live, capture):
    """R25: during grace both secrets work; after it the old one is 401 and the sweeper
    emits API_KEY_REVOKED rotated."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    response = await client.post(
        f"/api-keys/{key['id']}/rotate", headers=owner.headers, json={"grace_seconds": 3600}
    )
    rotated = response.json()
    grace_until = datetime.fromisoformat(rotated["grace_until"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < grace_until - datetime.now(UTC) <= timedelta(hours=1)
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 200
    assert (await client.get("/auth/me", headers=bot(rotated["secret"]))).status_code == 200
    # Time passes: the grace is over. The old secret is refused even before the sweeper runs.
    await set_key(live, key["id"], prev_valid_until=datetime.now(UTC) - timedelta(seconds=1))
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 401
    async with capture() as seen:
        await api_keys.sweep_api_keys(live.services)
    events = events_of(await seen.events(), "API_KEY_REVOKED")
    assert [e.data for e in events] == [{"key_id": key["id"], "reason": "rotated"}]
    assert (await key_row(live, key["id"]))["prev_secret_hash"] is None
    assert (await client.get("/auth/me", headers=bot(rotated["secret"]))).status_code == 200


async def test_rotating_again_drops_the_previous_secret_immediately(client, live):
    """R25: a second rotation ends the first secret's grace at once."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    path = f"/api-keys/{key['id']}/rotate"
    second = (await client.post(path, headers=owner.headers, json={"grace_seconds": 600})).json()
    third = (await client.post(path, headers=owner.headers, json={"grace_seconds": 600})).json()
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 401
    assert (await client.get("/auth/me", headers=bot(second["secret"]))).status_code == 200
    assert (await client.get("/auth/me", headers=bot(third["secret"]))).status_code == 200
    fourth = (await client.post(path, headers=owner.headers, json={"grace_seconds": 0})).json()
    for old in (key, second, third):
        assert (await client.get("/auth/me", headers=bot(old["secret"]))).status_code == 401
    assert (await client.get("/auth/me", headers=bot(fourth["secret"]))).status_code == 200


async def test_concurrent_rotations_with_grace_both_hand_out_working_secrets(client, live):
    """R25 under concurrency: two K5 at once each answer a secret that works (the later
    one keeps the earlier as its previous secret); the original is dropped."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    path = f"/api-keys/{key['id']}/rotate"
    responses = await asyncio.gather(
        *(client.post(path, headers=owner.headers, json={"grace_seconds": 600}) for _ in range(2))
    )
    assert [r.status_code for r in responses] == [200, 200]
    for response in responses:
        secret = response.json()["secret"]
        assert (await client.get("/auth/me", headers=bot(secret))).status_code == 200
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 401


async def test_rotate_validates_grace_and_is_limited_per_key(client, live):
    """K5: grace_seconds 0..86400; 10 rotations per hour per key."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    path = f"/api-keys/{key['id']}/rotate"
    for grace in (-1, 86401, "10"):
        response = await client.post(path, headers=owner.headers, json={"grace_seconds": grace})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "grace_seconds"
    for _ in range(10):
        assert (await client.post(path, headers=owner.headers)).status_code == 200
    response = await client.post(path, headers=owner.headers)
    assert response.status_code == 429


async def test_revoke_is_immediate_and_emits_api_key_revoked(client, live, capture):
    """K6, R25: after 204 the key is 401 (its cached state written through)."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 200
    async with capture() as seen:
        response = await client.delete(f"/api-keys/{key['id']}", headers=owner.headers)
    assert response.status_code == 204
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 401
    events = events_of(await seen.events(), "API_KEY_REVOKED")
    assert [(e.data, e.targets.topics) for e in events] == [
        ({"key_id": key["id"], "reason": "revoked"}, (f"user:{owner.id}",))
    ]
    again = await client.delete(f"/api-keys/{key['id']}", headers=owner.headers)
    assert again.status_code == 404
    assert (await client.get(f"/api-keys/{key['id']}", headers=owner.headers)).status_code == 404


async def test_revoke_applies_on_every_worker(backend, client, live):
    """R25: K6 on one REST worker → 401 on another at once (the shared cache, scale-out)."""
    if backend.redis_url is None:
        pytest.skip("one process when embedded: there is no other worker")
    other = await start_live_server(backend)
    try:
        owner = await verified(client, live)
        key = await create_key(client, owner)
        async with httpx.AsyncClient(base_url=other.url + "/api/v1", timeout=10) as second:
            assert (await second.get("/auth/me", headers=bot(key["secret"]))).status_code == 200
            await client.delete(f"/api-keys/{key['id']}", headers=owner.headers)
            assert (await second.get("/auth/me", headers=bot(key["secret"]))).status_code == 401
    finally:
        await stop_live_server(other)


async def test_revoke_and_use_concurrently_never_leave_a_working_key(client, live):
    """R25 under concurrency: requests racing K6 may pass, but none after it returns."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    headers = bot(key["secret"])
    await asyncio.gather(
        client.delete(f"/api-keys/{key['id']}", headers=owner.headers),
        *(client.get("/auth/me", headers=headers) for _ in range(10)),
    )
    for _ in range(3):
        assert (await client.get("/auth/me", headers=headers)).status_code == 401


async def test_the_sweeper_revokes_expired_keys(client, live, capture):
    """R25: keys past expires_at are marked revoked by the sweeper, with API_KEY_REVOKED expired."""
    owner = await verified(client, live)
    key = await create_key(client, owner, expires_in_days=1)
    keep = await create_key(client, owner, name="keep", expires_in_days=1)
    await set_key(live, key["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    async with capture() as seen:
        await api_keys.sweep_api_keys(live.services)
    events = events_of(await seen.events(), "API_KEY_REVOKED")
    assert [e.data for e in events] == [{"key_id": key["id"], "reason": "expired"}]
    assert (await key_row(live, key["id"]))["revoked_at"] is not None
    assert (await key_row(live, keep["id"]))["revoked_at"] is None
    async with capture() as seen:
        await api_keys.sweep_api_keys(live.services)
    assert events_of(await seen.events(), "API_KEY_REVOKED") == []


# --- account deletion and export (users.md R9, R10) ------------------------------------------


async def test_requesting_deletion_revokes_every_key(client, live, capture):
    """users.md R9, auth.md R22: U8 revokes all keys at once, one API_KEY_REVOKED each."""
    owner = await verified(client, live)
    first = await create_key(client, owner, name="one")
    second = await create_key(client, owner, name="two")
    assert (await client.get("/auth/me", headers=bot(first["secret"]))).status_code == 200
    async with capture() as seen:
        response = await client.post(
            "/users/me/deletion",
            headers=owner.headers,
            json={"confirm_username": owner.username, "password": owner.password},
        )
    assert response.status_code == 202, response.text
    events = events_of(await seen.events(), "API_KEY_REVOKED")
    assert sorted(e.data["key_id"] for e in events) == sorted([first["id"], second["id"]])
    assert {e.data["reason"] for e in events} == {"owner_deleted"}
    for key in (first, second):
        assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 401


async def test_anonymization_deletes_the_keys(client, live, capture):
    """users.md R9: the deletion worker deletes API keys (an admin's immediate deletion
    revokes live ones first, with their event)."""
    from models.users.deletion import anonymize_user

    owner = await verified(client, live)
    key = await create_key(client, owner)
    async with capture() as seen:
        assert await anonymize_user(live.services, owner.id, immediate=True)
    events = events_of(await seen.events(), "API_KEY_REVOKED")
    assert [e.data for e in events] == [{"key_id": key["id"], "reason": "owner_deleted"}]
    count = await live.services.db.fetch_val(
        sa.select(sa.func.count())
        .select_from(api_keys_table)
        .where(api_keys_table.c.user_id == owner.id)
    )
    assert count == 0
    assert (await client.get("/auth/me", headers=bot(key["secret"]))).status_code == 401


async def test_the_export_holds_key_metadata_only(client, live):
    """users.md R10: API keys (metadata only) — no secret, no hash."""
    owner = await verified(client, live)
    key = await create_key(client, owner)
    revoked = await create_key(client, owner, name="old")
    await client.delete(f"/api-keys/{revoked['id']}", headers=owner.headers)
    exported = await api_keys.export_api_keys(live.services, owner.id)
    assert [item["id"] for item in exported] == [key["id"], revoked["id"]]
    assert exported[1]["revoked_at"] is not None
    text = repr(exported)
    assert key["secret"] not in text and "hash" not in text
