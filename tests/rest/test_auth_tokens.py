"""Access tokens, signing keys and the JWKS (auth.md R1, R18, E22)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.tokens import ACCESS_TTL_S, LEEWAY_S
from tests.factories import register


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def test_access_tokens_are_eddsa_with_the_documented_claims(client, live):
    account = await register(client)
    header = jwt.get_unverified_header(account.access_token)
    assert header["alg"] == "EdDSA" and header["typ"] == "at+jwt"
    assert header["kid"] == live.services.keys.active_kid
    claims = claims_of(account.access_token)
    assert claims["sub"] == str(account.id) and claims["sid"] == str(account.session_id)
    assert claims["aud"] == "anilay" and claims["iss"] == live.settings.issuer
    assert claims["exp"] - claims["iat"] == ACCESS_TTL_S
    assert claims["role"] == "user" and claims["jti"]


async def test_a_token_verifies_against_the_published_jwks(client):
    account = await register(client)
    keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    kid = jwt.get_unverified_header(account.access_token)["kid"]
    jwk = next(k for k in keys if k["kid"] == kid)
    public = jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(jwk))
    jwt.decode(account.access_token, public, algorithms=["EdDSA"], audience="anilay")


async def test_jwks_has_no_private_members_and_is_at_the_site_root_too(client, live):
    import httpx

    api = await client.get("/.well-known/jwks.json")
    async with httpx.AsyncClient(base_url=live.url) as root:
        site = await root.get("/.well-known/jwks.json")
    assert api.status_code == site.status_code == 200
    assert api.json() == site.json()
    for key in api.json()["keys"]:
        assert set(key) == {"kty", "crv", "x", "kid", "use", "alg"}
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == (
            "OKP",
            "Ed25519",
            "EdDSA",
            "sig",
        )
    assert "public" in api.headers["cache-control"]
    cached = await client.get(
        "/.well-known/jwks.json", headers={"If-None-Match": api.headers["etag"]}
    )
    assert cached.status_code == 304


@pytest.mark.parametrize("algorithm", ["none", "HS256"])
async def test_tokens_with_another_algorithm_are_refused(client, live, algorithm):
    account = await register(client)
    claims = claims_of(account.access_token)
    kid = live.services.keys.active_kid
    if algorithm == "none":
        forged = f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(claims)}."
    else:  # signed with the public key as an HMAC secret: the classic confusion attack
        jwk = next(k for k in live.services.keys.jwks()["keys"] if k["kid"] == kid)
        forged = jwt.encode(claims, jwk["x"], algorithm="HS256", headers={"kid": kid})
    response = await client.get("/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and response.json()["code"] == "invalid_token"


async def test_a_token_signed_by_an_unknown_key_is_refused(client, live):
    account = await register(client)
    stranger = Ed25519PrivateKey.generate()
    forged = jwt.encode(
        claims_of(account.access_token),
        stranger,
        algorithm="EdDSA",
        headers={"kid": live.services.keys.active_kid},
    )
    response = await client.get("/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and response.json()["code"] == "invalid_token"


async def test_an_expired_token_says_so_and_the_leeway_is_30_seconds(client, live):
    account = await register(client)
    keys = live.services.keys
    past = time.time() - ACCESS_TTL_S
    within = keys.issue(account.id, account.session_id, "user", now=past - LEEWAY_S + 5)
    beyond = keys.issue(account.id, account.session_id, "user", now=past - LEEWAY_S - 5)
    ok = await client.get("/auth/me", headers={"Authorization": f"Bearer {within}"})
    assert ok.status_code == 200
    expired = await client.get("/auth/me", headers={"Authorization": f"Bearer {beyond}"})
    assert expired.status_code == 401
    assert expired.json()["code"] == "token_expired"
    assert expired.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_token_for_someone_elses_session_is_refused(client, live):
    alice = await register(client)
    bob = await register(client)
    crossed = live.services.keys.issue(alice.id, bob.session_id, "user")
    response = await client.get("/auth/me", headers={"Authorization": f"Bearer {crossed}"})
    assert response.status_code == 401 and response.json()["code"] == "session_revoked"


async def test_the_role_comes_from_the_database_not_the_claim(client, live):
    account = await register(client)
    forged_role = live.services.keys.issue(account.id, account.session_id, "admin")
    me = await client.get("/auth/me", headers={"Authorization": f"Bearer {forged_role}"})
    assert me.json()["user"]["role"] == "user"


async def test_scheduled_rotation_keeps_old_tokens_valid_until_retired(client, live):
    """R18: next (published) → active after 1 h, previous retiring; retired 20 min later."""
    keys = live.services.keys
    account = await register(client)
    old_kid = keys.active_kid
    now = datetime.now(UTC)
    await keys.rotate_step(now + timedelta(days=30))  # creates `next`
    published = {k["kid"] for k in keys.jwks()["keys"]}
    assert old_kid in published and len(published) == 2
    assert keys.active_kid == old_kid
    await keys.rotate_step(now + timedelta(days=30, hours=2))  # promotes it
    assert keys.active_kid != old_kid
    still = await client.get("/auth/me", headers=account.headers)
    assert still.status_code == 200, "a token of the retiring key keeps working"
    fresh = await client.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    assert jwt.get_unverified_header(fresh.json()["access_token"])["kid"] == keys.active_kid
    await keys.rotate_step(now + timedelta(days=30, hours=2, minutes=21))  # retires the old one
    assert old_kid not in {k["kid"] for k in keys.jwks()["keys"]}
    gone = await client.get("/auth/me", headers=account.headers)
    assert gone.status_code == 401


async def test_a_token_checked_before_still_expires_on_time(client, live):
    """Verified tokens are remembered by the process; the memory never outlives `exp`."""
    account = await register(client)
    issued = time.time() - ACCESS_TTL_S - LEEWAY_S + 2  # usable for 1-2 s more
    token = live.services.keys.issue(account.id, account.session_id, "user", now=issued)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/auth/me", headers=headers)).status_code == 200
    await asyncio.sleep(2.1)
    expired = await client.get("/auth/me", headers=headers)
    assert expired.status_code == 401 and expired.json()["code"] == "token_expired"


async def test_the_memory_of_checked_tokens_is_bounded(client, live, monkeypatch):
    from server import tokens

    account = await register(client)
    keys = live.services.keys
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_SIZE", 3)
    issued = [keys.issue(account.id, account.session_id, "user") for _ in range(5)]
    for token in issued:
        assert keys.verify(token).user_id == account.id
    assert len(keys._verified) == 3


async def test_a_remembered_token_changed_in_any_part_is_refused(client, live):
    account = await register(client)
    assert (await client.get("/auth/me", headers=account.headers)).status_code == 200
    header, payload, signature = account.access_token.split(".")
    other = {**claims_of(account.access_token), "sid": "1"}
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for forged in (f"{header}.{_b64(other)}.{signature}", f"{header}.{payload}.{flipped}"):
        response = await client.get("/auth/me", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401 and response.json()["code"] == "invalid_token"


async def test_emergency_rotation_kills_every_access_token_but_not_refresh(client, live):
    account = await register(client)
    assert (await client.get("/auth/me", headers=account.headers)).status_code == 200
    await live.services.keys.emergency_rotate()
    dead = await client.get("/auth/me", headers=account.headers)
    assert dead.status_code == 401 and dead.json()["code"] == "invalid_token"
    refreshed = await client.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    assert refreshed.status_code == 200
    assert len(live.services.keys.jwks()["keys"]) == 1
