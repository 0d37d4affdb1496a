"""Passwords and email (auth.md E10-E15, R3, R11-R13)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from models.auth.tables import auth_sessions
from tests.factories import PASSWORD, login, mails_to, register, token_in

NEW_PASSWORD = "a whole new passphrase"


async def wait_for_mail(services, address, template, count=1):
    async with asyncio.timeout(5):
        while len(mails := await mails_to(services, address, template)) < count:
            await asyncio.sleep(0.05)
    return mails


async def test_changing_the_password_signs_out_every_other_session(client, live, capture):
    account = await register(client)
    other = await login(client, account)
    async with capture() as seen:
        response = await client.post(
            "/auth/password/change",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=account.headers,
        )
    assert response.status_code == 204
    assert (await client.get("/auth/me", headers=account.headers)).status_code == 200
    assert (await client.get("/auth/me", headers=other.headers)).status_code == 401
    relogin = await client.post(
        "/auth/login", json={"login": account.username, "password": NEW_PASSWORD}
    )
    assert relogin.status_code == 200
    types = [e.type for e in await seen.events()]
    assert types.count("SESSION_REVOKED") == 1 and "ACCOUNT_UPDATE" in types
    assert len(await mails_to(live.services, account.email, "password_changed")) == 1


async def test_a_wrong_current_password_is_403_and_limited(client):
    account = await register(client)
    statuses = []
    for _ in range(6):
        response = await client.post(
            "/auth/password/change",
            json={"current_password": "not it at all", "new_password": NEW_PASSWORD},
            headers=account.headers,
        )
        statuses.append((response.status_code, response.json()["code"]))
    assert statuses[:5] == [(403, "wrong_password")] * 5
    assert statuses[5] == (429, "rate_limited")


async def test_the_new_password_must_differ_and_be_strong(client):
    account = await register(client)
    same = await client.post(
        "/auth/password/change",
        json={"current_password": PASSWORD, "new_password": PASSWORD},
        headers=account.headers,
    )
    assert same.status_code == 422
    assert same.json()["errors"] == [{"field": "new_password", "message": "same as current"}]
    weak = await client.post(
        "/auth/password/change",
        json={"current_password": PASSWORD, "new_password": "qwerty123"},
        headers=account.headers,
    )
    assert weak.status_code == 422 and weak.json()["code"] == "weak_password"
    assert weak.json()["errors"][0]["field"] == "new_password"


async def test_setting_a_first_password_needs_a_recent_sign_in(client, live):
    """R13: an account without a password proves itself by a sign-in in the last 10 min."""
    account = await register(client)
    from tests.factories import set_user

    await set_user(live.services, account.id, password_hash=None)
    await live.services.db.execute(
        auth_sessions.update()
        .where(auth_sessions.c.id == account.session_id)
        .values(authenticated_at=datetime.now(UTC) - timedelta(minutes=11))
    )
    await live.services.cache.delete(f"auth:session:{account.session_id}")
    stale = await client.post(
        "/auth/password/change", json={"new_password": NEW_PASSWORD}, headers=account.headers
    )
    assert stale.status_code == 403 and stale.json()["code"] == "reauth_required"
    await live.services.db.execute(
        auth_sessions.update()
        .where(auth_sessions.c.id == account.session_id)
        .values(authenticated_at=datetime.now(UTC))
    )
    await live.services.cache.delete(f"auth:session:{account.session_id}")
    fresh = await client.post(
        "/auth/password/change", json={"new_password": NEW_PASSWORD}, headers=account.headers
    )
    assert fresh.status_code == 204


async def test_forgot_answers_the_same_for_any_address_and_mails_only_real_ones(client, live):
    account = await register(client)
    known = await client.post("/auth/password/forgot", json={"email": account.email})
    unknown = await client.post("/auth/password/forgot", json={"email": "ghost@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content == b'{"status":"accepted"}'
    await wait_for_mail(live.services, account.email, "reset_password")
    await asyncio.sleep(0.3)  # the job for the unknown address has run by now
    assert await mails_to(live.services, "ghost@example.com") == []


async def test_forgot_sends_at_most_three_mails_an_hour_per_address(client, live):
    account = await register(client)
    for _ in range(5):
        assert (
            await client.post("/auth/password/forgot", json={"email": account.email})
        ).status_code == 202
    await wait_for_mail(live.services, account.email, "reset_password", 3)
    await asyncio.sleep(0.5)
    assert len(await mails_to(live.services, account.email, "reset_password")) == 3


async def test_reset_sets_the_password_and_signs_out_everywhere(client, live):
    account = await register(client)
    await client.post("/auth/password/forgot", json={"email": account.email})
    (mail,) = await wait_for_mail(live.services, account.email, "reset_password")
    token = token_in(mail)
    response = await client.post(
        "/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204
    assert (await client.get("/auth/me", headers=account.headers)).status_code == 401
    assert (
        await client.post("/auth/login", json={"login": account.username, "password": NEW_PASSWORD})
    ).status_code == 200
    reused = await client.post(
        "/auth/password/reset", json={"token": token, "new_password": "yet another one!"}
    )
    assert reused.status_code == 400 and reused.json()["code"] == "invalid_token"


async def test_a_reset_token_is_spent_once_under_a_race(client, live):
    account = await register(client)
    await client.post("/auth/password/forgot", json={"email": account.email})
    (mail,) = await wait_for_mail(live.services, account.email, "reset_password")
    token = token_in(mail)
    responses = await asyncio.gather(
        *(
            client.post(
                "/auth/password/reset", json={"token": token, "new_password": f"{NEW_PASSWORD} {n}"}
            )
            for n in range(2)
        )
    )
    assert sorted(r.status_code for r in responses) == [204, 400]


async def test_a_weak_reset_password_does_not_spend_the_token(client, live):
    account = await register(client)
    await client.post("/auth/password/forgot", json={"email": account.email})
    (mail,) = await wait_for_mail(live.services, account.email, "reset_password")
    weak = await client.post(
        "/auth/password/reset", json={"token": token_in(mail), "new_password": "password"}
    )
    assert weak.status_code == 422
    ok = await client.post(
        "/auth/password/reset", json={"token": token_in(mail), "new_password": NEW_PASSWORD}
    )
    assert ok.status_code == 204


async def test_a_reset_clears_the_lockout(client, live):
    account = await register(client)
    for _ in range(5):
        await client.post("/auth/login", json={"login": account.username, "password": "bad!"})
    await client.post("/auth/password/forgot", json={"email": account.email})
    (mail,) = await wait_for_mail(live.services, account.email, "reset_password")
    await client.post(
        "/auth/password/reset", json={"token": token_in(mail), "new_password": NEW_PASSWORD}
    )
    # The (IP, name) pair lock is 15 minutes and keyed by address; the name-wide one clears.
    await live.services.limiter.reset()
    await live.services.cache.delete(f"login:lock:pair:127.0.0.1:{account.username.lower()}")
    ok = await client.post(
        "/auth/login", json={"login": account.username, "password": NEW_PASSWORD}
    )
    assert ok.status_code == 200


async def test_an_expired_or_unknown_reset_token_is_one_400(client, live):
    from models.auth.tables import email_tokens

    account = await register(client)
    await client.post("/auth/password/forgot", json={"email": account.email})
    (mail,) = await wait_for_mail(live.services, account.email, "reset_password")
    await live.services.db.execute(
        email_tokens.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    expired = await client.post(
        "/auth/password/reset", json={"token": token_in(mail), "new_password": NEW_PASSWORD}
    )
    unknown = await client.post(
        "/auth/password/reset", json={"token": "A" * 43, "new_password": NEW_PASSWORD}
    )
    assert expired.status_code == unknown.status_code == 400
    assert expired.content == unknown.content


async def test_verifying_the_email(client, live, capture):
    account = await register(client)
    (mail,) = await mails_to(live.services, account.email, "verify_email")
    async with capture() as seen:
        response = await client.post("/auth/email/verify", json={"token": token_in(mail)})
    assert response.status_code == 200
    assert response.json() == {"email": account.email, "email_verified": True}
    me = await client.get("/auth/me", headers=account.headers)
    assert me.json()["user"]["email_verified"] is True
    assert [e.type for e in await seen.events()] == ["ACCOUNT_UPDATE"]
    again = await client.post("/auth/email/verify", json={"token": token_in(mail)})
    assert again.status_code == 400


async def test_resend_verification_rules(client, live):
    account = await register(client)
    first = await client.post("/auth/email/verify/resend", headers=account.headers)
    assert first.status_code == 202
    second = await client.post("/auth/email/verify/resend", headers=account.headers)
    assert second.status_code == 429
    mails = await mails_to(live.services, account.email, "verify_email")
    await client.post("/auth/email/verify", json={"token": token_in(mails[-1])})
    await live.services.limiter.reset()
    done = await client.post("/auth/email/verify/resend", headers=account.headers)
    assert done.status_code == 409 and done.json()["code"] == "already_verified"


async def test_a_new_verification_link_voids_the_older_one(client, live):
    account = await register(client)
    await client.post("/auth/email/verify/resend", headers=account.headers)
    old, new = await mails_to(live.services, account.email, "verify_email")
    assert (
        await client.post("/auth/email/verify", json={"token": token_in(old)})
    ).status_code == 400
    assert (
        await client.post("/auth/email/verify", json={"token": token_in(new)})
    ).status_code == 200


async def test_changing_the_email_happens_when_the_new_link_is_opened(client, live):
    account = await register(client)
    response = await client.post(
        "/auth/email/change",
        json={"new_email": "fresh@example.com", "current_password": PASSWORD},
        headers=account.headers,
    )
    assert response.status_code == 202
    assert len(await mails_to(live.services, account.email, "email_change_requested")) == 1
    (link,) = await mails_to(live.services, "fresh@example.com", "change_email")
    me = (await client.get("/auth/me", headers=account.headers)).json()
    assert me["user"]["email"] == account.email  # not yet
    verified = await client.post("/auth/email/verify", json={"token": token_in(link)})
    assert verified.json() == {"email": "fresh@example.com", "email_verified": True}


async def test_email_change_answers_the_same_when_the_address_is_taken(client, live):
    """R4c: 202 either way; no link goes to an address that belongs to someone else."""
    account = await register(client)
    other = await register(client)
    response = await client.post(
        "/auth/email/change",
        json={"new_email": other.email, "current_password": PASSWORD},
        headers=account.headers,
    )
    assert response.status_code == 202
    assert await mails_to(live.services, other.email, "change_email") == []


async def test_email_change_taken_in_the_meantime_is_409_at_verify(client, live):
    account = await register(client)
    await client.post(
        "/auth/email/change",
        json={"new_email": "contested@example.com", "current_password": PASSWORD},
        headers=account.headers,
    )
    (link,) = await mails_to(live.services, "contested@example.com", "change_email")
    await register(client, email="contested@example.com")
    response = await client.post("/auth/email/verify", json={"token": token_in(link)})
    assert response.status_code == 409 and response.json()["code"] == "email_taken"


async def test_email_change_needs_the_password_and_a_new_address(client):
    account = await register(client)
    wrong = await client.post(
        "/auth/email/change",
        json={"new_email": "x@example.com", "current_password": "nope nope"},
        headers=account.headers,
    )
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    same = await client.post(
        "/auth/email/change",
        json={"new_email": account.email.upper(), "current_password": PASSWORD},
        headers=account.headers,
    )
    assert same.status_code == 422 and same.json()["errors"][0]["field"] == "new_email"
    bad = await client.post(
        "/auth/email/change", json={"new_email": "not-an-address"}, headers=account.headers
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "new_email"
