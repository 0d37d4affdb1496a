"""Registering and signing in (auth.md E1, E2, E7, R3, R4, R5, R9, R10)."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from tests.factories import PASSWORD, ban, inside_one_window, mails_to, register, unique_name

INVALID_CREDENTIALS = {
    "type": "https://anilay.dev/errors/invalid_credentials",
    "title": "Invalid credentials",
    "status": 401,
    "code": "invalid_credentials",
    "detail": "Wrong login or password",
}


async def test_register_signs_in_and_queues_a_verification_mail(client, live):
    username = unique_name("Sakura")
    response = await client.post(
        "/auth/register",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "accept_terms": True,
            "client": "web",
            "device_name": "laptop",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_expires_in"] == 2592000
    assert body["refresh_token"].startswith("rt_")
    assert body["user"]["username"] == username
    assert body["user"]["email_verified"] is False
    assert body["user"]["has_password"] is True
    assert body["user"]["role"] == "user"
    assert isinstance(body["user"]["id"], str) and isinstance(body["session_id"], str)
    assert response.headers["cache-control"] == "no-store"
    mails = await mails_to(live.services, f"{username}@example.com", "verify_email")
    assert len(mails) == 1 and "#token=" in mails[0]["body"]


async def test_usernames_are_unique_case_insensitively(client):
    account = await register(client)
    response = await client.post(
        "/auth/register",
        json={
            "username": account.username.upper(),
            "email": "other@example.com",
            "password": PASSWORD,
            "accept_terms": True,
        },
    )
    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"


async def test_a_taken_email_is_refused(client):
    account = await register(client)
    response = await client.post(
        "/auth/register",
        json={
            "username": unique_name(),
            "email": account.email.upper(),
            "password": PASSWORD,
            "accept_terms": True,
        },
    )
    assert response.status_code == 409
    assert response.json()["code"] == "email_taken"


@pytest.mark.parametrize("username", ["admin", "Support", "deleted_42", "bot"])
async def test_reserved_usernames_are_refused(client, username):
    response = await client.post(
        "/auth/register",
        json={
            "username": username,
            "email": f"{unique_name()}@example.com",
            "password": PASSWORD,
            "accept_terms": True,
        },
    )
    assert response.status_code == 409
    assert response.json()["code"] == "username_reserved"


@pytest.mark.parametrize("username", ["ab", "x" * 33, "has space", "1234", "émile", "a-b"])
async def test_malformed_usernames_are_a_422_on_the_field(client, username):
    response = await client.post(
        "/auth/register",
        json={
            "username": username,
            "email": f"{unique_name()}@example.com",
            "password": PASSWORD,
            "accept_terms": True,
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "username"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "too_short"),
        ("password1", "common"),
        ("x" * 129, "too_long"),
        ("IDENTITY", "contains_identity"),
    ],
)
async def test_weak_passwords_are_refused_with_a_reason(client, password, reason):
    username = unique_name("identity")
    if password == "IDENTITY":
        password = username.upper()
    response = await client.post(
        "/auth/register",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": password,
            "accept_terms": True,
        },
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "weak_password"
    assert body["errors"] == [{"field": "password", "message": reason}]


async def test_the_email_local_part_is_not_a_password(client):
    username = unique_name()
    response = await client.post(
        "/auth/register",
        json={
            "username": username,
            "email": "averylongmailbox@example.com",
            "password": "AveryLongMailbox",
            "accept_terms": True,
        },
    )
    assert response.json()["errors"][0]["message"] == "contains_identity"


async def test_terms_must_be_accepted_and_unknown_fields_are_refused(client):
    base = {
        "username": unique_name(),
        "email": f"{unique_name()}@example.com",
        "password": PASSWORD,
    }
    refused = await client.post("/auth/register", json={**base, "accept_terms": False})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "accept_terms"
    unknown = await client.post(
        "/auth/register", json={**base, "accept_terms": True, "role": "admin"}
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "role"


async def test_registration_closed_is_a_403(client, live):
    settings = live.services.settings
    live.services.settings = settings.replace(registration_open=False)
    try:
        response = await client.post(
            "/auth/register",
            json={
                "username": unique_name(),
                "email": f"{unique_name()}@example.com",
                "password": PASSWORD,
                "accept_terms": True,
            },
        )
    finally:
        live.services.settings = settings
    assert response.status_code == 403
    assert response.json()["code"] == "registration_closed"


async def test_two_concurrent_claims_of_one_username_have_one_winner(client):
    username = unique_name("race")
    responses = await asyncio.gather(
        *(
            client.post(
                "/auth/register",
                json={
                    "username": username,
                    "email": f"{username}{n}@example.com",
                    "password": PASSWORD,
                    "accept_terms": True,
                },
            )
            for n in range(2)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409]


async def test_register_is_rate_limited_per_ip(client):
    await inside_one_window(3600)
    statuses = []
    for _ in range(6):
        response = await client.post(
            "/auth/register",
            json={
                "username": unique_name(),
                "email": f"{unique_name()}@example.com",
                "password": PASSWORD,
                "accept_terms": True,
            },
        )
        statuses.append(response.status_code)
    assert statuses == [201] * 5 + [429]


# --- login -------------------------------------------------------------------------------


async def test_login_by_username_or_email_case_insensitively(client):
    account = await register(client)
    for login in (account.username.upper(), account.email.upper()):
        response = await client.post("/auth/login", json={"login": login, "password": PASSWORD})
        assert response.status_code == 200, response.text
        assert response.json()["user"]["id"] == str(account.id)


async def test_unknown_user_and_wrong_password_are_indistinguishable(client, live):
    """R4a: one body for every failure, and exactly one argon2 verification per path."""
    account = await register(client)
    passwords = live.services.passwords
    bodies = []
    for login, password in [
        (account.username, "wrong password!"),
        ("nobody-at-all", "wrong password!"),
        ("ghost@example.com", PASSWORD),
    ]:
        before = passwords.verifications
        response = await client.post("/auth/login", json={"login": login, "password": password})
        assert passwords.verifications - before == 1
        assert response.status_code == 401
        bodies.append(response.content)
    assert bodies[0] == bodies[1] == bodies[2]
    assert response.json() == INVALID_CREDENTIALS


async def test_unknown_user_and_wrong_password_take_similar_time(client, live):
    """R4a: median latencies differ by less than 20 % (interleaved to share the noise)."""
    account = await register(client)
    unknown, wrong = [], []
    for n in range(24):
        for bucket, login in ((unknown, f"ghost{n}"), (wrong, account.username)):
            await live.services.limiter.reset()
            started = time.perf_counter()
            response = await client.post(
                "/auth/login", json={"login": login, "password": f"nope {n}"}
            )
            bucket.append(time.perf_counter() - started)
            assert response.status_code == 401
    ratio = statistics.median(unknown) / statistics.median(wrong)
    print(f"login timing: unknown/wrong median ratio {ratio:.3f}")
    assert 0.8 < ratio < 1.25


async def test_five_failures_lock_the_ip_and_login_pair_even_for_the_right_password(client):
    account = await register(client)
    for _ in range(5):
        response = await client.post(
            "/auth/login", json={"login": account.username, "password": "wrong password!"}
        )
        assert response.status_code == 401
    locked = await client.post(
        "/auth/login", json={"login": account.username, "password": PASSWORD}
    )
    assert locked.status_code == 429
    assert locked.json()["code"] == "login_locked"
    assert int(locked.headers["retry-after"]) > 0


async def test_a_lock_for_an_unknown_name_looks_like_one_for_a_real_account(client):
    """R4d: counters are keyed by the identifier, so lockouts do not reveal accounts."""
    for _ in range(5):
        await client.post("/auth/login", json={"login": "no-such-user", "password": "nope!"})
    locked = await client.post("/auth/login", json={"login": "no-such-user", "password": "nope!"})
    assert locked.status_code == 429 and locked.json()["code"] == "login_locked"


async def test_a_success_resets_the_failure_count(client):
    account = await register(client)
    for _ in range(4):
        await client.post("/auth/login", json={"login": account.username, "password": "bad!"})
    ok = await client.post("/auth/login", json={"login": account.username, "password": PASSWORD})
    assert ok.status_code == 200
    for _ in range(4):
        again = await client.post(
            "/auth/login", json={"login": account.username, "password": "bad!"}
        )
        assert again.status_code == 401


async def test_the_ip_limit_applies_across_identifiers(client):
    statuses = [
        (await client.post("/auth/login", json={"login": f"name{n}", "password": "x"})).status_code
        for n in range(21)
    ]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429


async def test_twenty_failures_from_anywhere_lock_the_identifier_and_mail_the_owner(client, live):
    account = await register(client)
    for n in range(20):
        # A different "IP" each time: the per-identifier counter spans every address.
        await live.services.limiter.clear("20/10 minutes", "login-ip", "127.0.0.1")
        await live.services.limiter.clear(
            "5/15 minutes", "login-fail-pair", "127.0.0.1", account.username
        )
        await client.post("/auth/login", json={"login": account.username, "password": f"x{n}"})
    await live.services.limiter.clear(
        "5/15 minutes", "login-fail-pair", "127.0.0.1", account.username
    )
    locked = await client.post(
        "/auth/login", json={"login": account.username, "password": PASSWORD}
    )
    assert locked.status_code == 429 and locked.json()["code"] == "login_locked"
    assert 3500 <= int(locked.headers["retry-after"]) <= 3600
    assert len(await mails_to(live.services, account.email, "login_locked")) == 1


async def test_banned_users_can_still_sign_in(client, live):
    account = await register(client)
    await ban(live.services, account.id)
    response = await client.post(
        "/auth/login", json={"login": account.username, "password": PASSWORD}
    )
    assert response.status_code == 200


async def test_an_overlong_password_is_a_422_not_a_hash(client, live):
    before = live.services.passwords.verifications
    response = await client.post("/auth/login", json={"login": "x", "password": "y" * 129})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "password"
    assert live.services.passwords.verifications == before


async def test_the_fifty_first_session_evicts_the_least_recently_used(client, live):
    account = await register(client)
    first = account.session_id
    for _ in range(50):
        await live.services.limiter.reset()
        await client.post("/auth/login", json={"login": account.username, "password": PASSWORD})
    sessions = await client.get(
        "/auth/sessions", headers=(await _fresh(client, live, account)).headers
    )
    ids = [item["id"] for item in sessions.json()["items"]]
    assert len(ids) == 50
    assert str(first) not in ids


async def _fresh(client, live, account):
    from tests.factories import login

    await live.services.limiter.reset()
    return await login(client, account)


# --- username availability ----------------------------------------------------------------


async def test_username_availability_explains_itself(client):
    account = await register(client)
    cases = {
        unique_name("free"): (True, None),
        account.username.upper(): (False, "taken"),
        "admin": (False, "reserved"),
        "a b": (False, "invalid"),
    }
    for username, (available, reason) in cases.items():
        response = await client.get("/auth/username-available", params={"username": username})
        assert response.status_code == 200
        assert response.json() == {"username": username, "available": available, "reason": reason}


async def test_username_availability_needs_its_parameter(client):
    response = await client.get("/auth/username-available")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "username"
