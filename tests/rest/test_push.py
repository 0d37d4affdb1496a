"""Expo push: device tokens and delivery (auth.md P1–P4, R27–R34, PUSH_REQUEST).

Delivery tests run against a local fake Expo server over real HTTP (tests/support/fake_expo):
the live server's push worker is pointed at it through the pluggable transport (R34).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest
import sqlalchemy as sa

from models import push
from models.push import push_tickets, push_tokens, request_push
from server.events import Event, validate_payload
from server.expo import (
    ExpoRejected,
    ExpoTransport,
    ExpoUnavailable,
    LocalTokenBucket,
    RedisTokenBucket,
    parse_retry_after,
)
from tests.factories import Account, login, register, set_user
from tests.support.fake_expo import FakeExpo

TOKEN = "ExponentPushToken[abcdefghijklmnop]"


def token(n: int) -> str:
    return f"ExponentPushToken[device{n:04d}xyz]"


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
async def expo(live):
    """A fake Expo server that the live server's push worker and P4 talk to."""
    fake = await FakeExpo().start()
    runtime = push.push_runtime(live.services)
    saved = (runtime.transport, runtime.rate_exceeded_retry_s, runtime.healthy, runtime.last_error)
    http = httpx.AsyncClient(timeout=5)
    runtime.transport = ExpoTransport(
        http,
        base_url=fake.url,
        access_token="expo-access-token",
        bucket=LocalTokenBucket(rate_per_s=100_000),
        retry_base_s=0.01,
    )
    runtime.rate_exceeded_retry_s = 0.05
    runtime.healthy, runtime.last_error = True, None
    yield fake
    for _ in range(100):  # let the worker finish what this test asked for, here
        await asyncio.sleep(0.02)
        if runtime.queue_depth == 0:
            break
    runtime.transport, runtime.rate_exceeded_retry_s, runtime.healthy, runtime.last_error = saved
    await http.aclose()
    await fake.stop()


async def register_token(
    client: httpx.AsyncClient, account: Account, value: str = TOKEN, **extra
) -> httpx.Response:
    return await client.post(
        "/push/tokens",
        headers=account.headers,
        json={"token": value, "platform": "ios", **extra},
    )


async def tokens_of(live, user_id: int) -> list[dict]:
    return await live.services.db.fetch_all(
        sa.select(push_tokens).where(push_tokens.c.user_id == user_id).order_by(push_tokens.c.id)
    )


async def ask_push(live, user_id: int, count: int = 1, **options) -> list[int]:
    """Producers' side: request pushes inside one transaction, as notifications would."""
    options.setdefault("title", "New reply")
    options.setdefault("body", "Someone answered your comment")
    async with live.services.db.transaction() as tx:
        return [
            await request_push(live.services, tx, user_id, data={"n": n}, **options)
            for n in range(count)
        ]


async def tickets(live) -> list[dict]:
    return await live.services.db.fetch_all(sa.select(push_tickets).order_by(push_tickets.c.id))


async def settle(fake: FakeExpo, quiet_s: float = 0.8) -> None:
    """Wait until the fake has seen no request for `quiet_s` (the batch window is 0.5 s)."""
    seen = -1
    while seen != len(fake.requests):
        seen = len(fake.requests)
        await asyncio.sleep(quiet_s)


# --- P2 register, P1 list, P3 unregister -------------------------------------------------------


async def test_register_creates_then_refreshes_the_token(client, live):
    """P2: 201 PushToken when new, 200 when already known (re-bound); P1 lists it."""
    account = await register(client)
    response = await register_token(client, account, device_name="Pixel", app_version="1.2.0")
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["platform"] == "ios" and created["device_name"] == "Pixel"
    assert created["app_version"] == "1.2.0" and created["this_session"] is True
    assert created["token_preview"] == "ExponentPushToken[abcd…]"
    assert created["last_sent_at"] is None
    again = await register_token(client, account, device_name="Pixel 8")
    assert again.status_code == 200
    assert again.json()["id"] == created["id"] and again.json()["device_name"] == "Pixel 8"
    listed = (await client.get("/push/tokens", headers=account.headers)).json()["items"]
    assert [item["id"] for item in listed] == [created["id"]]
    assert TOKEN not in json.dumps(listed)  # the whole token never goes back out


@pytest.mark.parametrize(
    "value",
    [
        "ExponentPushToken[short]",
        "ExpoPushToken[has space in it]",
        "ExponentPushToken[abcdefghijkl",
        "FCM:abcdefghijklmnop",
        "ExponentPushToken[" + "a" * 201 + "]",
    ],
)
async def test_register_refuses_what_is_not_an_expo_token(client, live, value):
    """R28: the token must match ^Expo(nent)?PushToken\\[[A-Za-z0-9_-]{8,200}\\]$ (422)."""
    account = await register(client)
    response = await register_token(client, account, value)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_push_token"
    assert response.json()["errors"][0]["field"] == "token"


async def test_register_accepts_both_token_spellings(client, live):
    """R28: ExpoPushToken[...] and ExponentPushToken[...] are both Expo tokens."""
    account = await register(client)
    assert (await register_token(client, account, "ExpoPushToken[abc-DEF_123]")).status_code == 201
    assert (await register_token(client, account, token(1))).status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"token": TOKEN, "platform": "web"}, "platform"),
        ({"token": TOKEN}, "platform"),
        ({"token": TOKEN, "platform": "ios", "device_name": "x" * 65}, "device_name"),
        ({"token": TOKEN, "platform": "ios", "app_version": "1" * 33}, "app_version"),
        ({"token": "x" * 257, "platform": "ios"}, "token"),
        ({"token": TOKEN, "platform": "ios", "user_id": "1"}, "user_id"),
    ],
)
async def test_register_validates_fields(client, live, body, field):
    """P2: 422 naming the field."""
    account = await register(client)
    response = await client.post("/push/tokens", headers=account.headers, json=body)
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_a_token_registered_by_another_user_moves_to_them(client, live):
    """R28: a token exists once; registering one held by another user moves it."""
    seller = await register(client)
    buyer = await register(client)
    first = await register_token(client, seller)
    moved = await register_token(client, buyer)
    assert moved.status_code == 200 and moved.json()["id"] == first.json()["id"]
    assert (await client.get("/push/tokens", headers=seller.headers)).json()["items"] == []
    items = (await client.get("/push/tokens", headers=buyer.headers)).json()["items"]
    assert [item["id"] for item in items] == [first.json()["id"]]
    row = (await tokens_of(live, buyer.id))[0]
    assert row["session_id"] == buyer.session_id


async def test_concurrent_registrations_of_one_token_keep_one_row(client, live):
    """R28 under concurrency: one token, two users at once → one row, owned by one of them."""
    one, two = await register(client), await register(client)
    responses = await asyncio.gather(register_token(client, one), register_token(client, two))
    assert sorted(r.status_code for r in responses) == [200, 201]
    rows = await live.services.db.fetch_all(
        sa.select(push_tokens).where(push_tokens.c.token == TOKEN)
    )
    assert len(rows) == 1 and rows[0]["user_id"] in (one.id, two.id)


async def test_a_21st_token_evicts_the_least_recently_registered(client, live):
    """R28: at most 20 tokens per user; a 21st evicts the least recently registered."""
    account = await register(client)
    ids = []
    for n in range(20):
        response = await register_token(client, account, token(n))
        assert response.status_code == 201
        ids.append(response.json()["id"])
    # Registering token 0 again makes token 1 the least recently registered.
    assert (await register_token(client, account, token(0))).status_code == 200
    assert (await register_token(client, account, token(20))).status_code == 201
    rows = await tokens_of(live, account.id)
    assert len(rows) == 20
    assert token(1) not in [row["token"] for row in rows]
    assert token(0) in [row["token"] for row in rows]
    listed = (await client.get("/push/tokens", headers=account.headers)).json()["items"]
    assert len(listed) == 20 and ids[1] not in [item["id"] for item in listed]


async def test_registering_is_limited_to_30_an_hour(client, live):
    """P2: 429 after 30 registrations in an hour."""
    account = await register(client)
    for _ in range(30):
        assert (await register_token(client, account)).status_code in (200, 201)
    response = await register_token(client, account)
    assert response.status_code == 429 and "retry-after" in response.headers


async def test_unregister_deletes_only_my_token(client, live):
    """P3: 204; another user's token or an unknown one → 404."""
    owner, stranger = await register(client), await register(client)
    token_id = (await register_token(client, owner)).json()["id"]
    response = await client.delete(f"/push/tokens/{token_id}", headers=stranger.headers)
    assert response.status_code == 404
    assert len(await tokens_of(live, owner.id)) == 1
    assert (
        await client.delete(f"/push/tokens/{token_id}", headers=owner.headers)
    ).status_code == 204
    assert (
        await client.delete(f"/push/tokens/{token_id}", headers=owner.headers)
    ).status_code == 404
    assert (await client.delete("/push/tokens/nope", headers=owner.headers)).status_code == 404


async def test_push_routes_need_a_user(client, live):
    """P1–P4: no credential → 401."""
    assert (await client.get("/push/tokens")).status_code == 401
    response = await client.post("/push/tokens", json={"token": TOKEN, "platform": "ios"})
    assert response.status_code == 401
    assert (await client.post("/push/test", json={})).status_code == 401


async def test_this_session_marks_the_callers_device(client, live):
    """P1: `this_session` is true only for the token the current session registered."""
    phone = await register(client)
    tablet = await login(client, phone)
    mine = (await register_token(client, phone, token(1))).json()["id"]
    await register_token(client, tablet, token(2))
    items = (await client.get("/push/tokens", headers=phone.headers)).json()["items"]
    assert len(items) == 2
    assert [item["id"] for item in items if item["this_session"]] == [mine]


# --- R28: bound to the session -----------------------------------------------------------------


async def test_logout_deletes_the_sessions_token(client, live):
    """R28, R34: revoking the session that registered a token deletes it; others stay."""
    phone = await register(client)
    tablet = await login(client, phone)
    await register_token(client, phone, token(1))
    await register_token(client, tablet, token(2))
    assert (await client.post("/auth/logout", headers=phone.headers)).status_code == 204
    assert [row["token"] for row in await tokens_of(live, phone.id)] == [token(2)]


async def test_logout_all_deletes_every_sessions_token(client, live):
    """R28: logout-all revokes every session, so every device stops receiving."""
    phone = await register(client)
    tablet = await login(client, phone)
    await register_token(client, phone, token(1))
    await register_token(client, tablet, token(2))
    response = await client.post("/auth/logout-all", headers=phone.headers, json={})
    assert response.status_code == 204
    assert await tokens_of(live, phone.id) == []


async def test_a_re_registration_rebinds_the_token_to_the_new_session(client, live):
    """R28: after logging in again, P2 binds the token to the new session; revoking the old
    one no longer touches it."""
    first = await register(client)
    await register_token(client, first)
    second = await login(client, first)
    await register_token(client, second)
    await client.post("/auth/logout", headers=first.headers)
    assert [row["token"] for row in await tokens_of(live, first.id)] == [TOKEN]


# --- PUSH_REQUEST and fan-out (R29–R32) --------------------------------------------------------


async def test_request_push_emits_an_internal_event_no_socket_sees(client, live, capture, expo):
    """R29: PUSH_REQUEST on the internal topic, with its schema's fields and no token."""
    account = await register(client)
    await register_token(client, account)
    async with capture() as seen:
        [push_id] = await ask_push(live, account.id, title="T" * 150, body="B" * 300, badge=3)
    [event] = [e for e in await seen.events() if e.type == "PUSH_REQUEST"]
    validate_payload(event.type, event.data)
    assert event.targets.topics == ("internal:push",)
    data = event.data
    assert data["push_id"] == str(push_id) and data["user_id"] == str(account.id)
    assert len(data["title"]) == 100 and data["title"].endswith("…")
    assert len(data["body"]) == 240 and data["body"].endswith("…")
    assert data["priority"] == "default" and data["badge"] == 3
    expires = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=4) < expires - datetime.now(UTC) <= timedelta(minutes=5)
    assert "ExponentPushToken" not in json.dumps(data)
    await expo.wait_for(lambda: len(expo.delivered()) == 1)


async def test_request_push_refuses_oversized_data():
    """R29: data is at most 1 KiB of JSON."""

    class Tx:
        def emit(self, *events):
            raise AssertionError("nothing may be emitted")

    with pytest.raises(ValueError):
        await request_push(None, Tx(), 1, "t", "b", data={"x": "y" * 1100})  # type: ignore[arg-type]


async def test_a_push_reaches_every_device_of_the_user(client, live, expo):
    """R29, R30: one Expo message per token, with the R29 fields and the access token."""
    account = await register(client)
    await register_token(client, account, token(1))
    await register_token(client, account, token(2))
    [push_id] = await ask_push(live, account.id, channel_id="replies", priority="high", ttl_s=60)
    await expo.wait_for(lambda: len(expo.delivered()) == 2)
    request = expo.sends()[0]
    assert request.headers["authorization"] == "Bearer expo-access-token"
    assert sorted(m["to"] for m in request.body) == [token(1), token(2)]
    message = request.body[0]
    assert message == {
        "to": message["to"],
        "title": "New reply",
        "body": "Someone answered your comment",
        "data": {"n": 0},
        "sound": "default",
        "priority": "high",
        "channelId": "replies",
        "ttl": 60,
    }
    await asyncio.sleep(0.2)
    rows = await tickets(live)
    assert {row["push_id"] for row in rows} == {push_id}
    assert [row["status"] for row in rows] == ["sent", "sent"]
    assert all(row["receipt_id"].startswith("receipt-") for row in rows)
    assert all(row["last_sent_at"] is not None for row in await tokens_of(live, account.id))


async def test_150_pushes_go_out_as_requests_of_100_and_50(client, live, expo):
    """R30, R34: messages gathered across notifications, sent ≤ 100 per request."""
    account = await register(client)
    await register_token(client, account)
    await ask_push(live, account.id, count=150)
    await expo.wait_for(lambda: len(expo.delivered()) == 150)
    await settle(expo)
    assert [len(r.body) for r in expo.sends()] == [100, 50]
    assert len({m["data"]["n"] for m in expo.delivered()}) == 150


async def test_pushes_for_several_users_share_a_batch(client, live, expo):
    """R30: the batch window gathers messages across notifications and users."""
    one, two = await register(client), await register(client)
    await register_token(client, one, token(1))
    await register_token(client, two, token(2))
    await ask_push(live, one.id)
    await ask_push(live, two.id)
    await expo.wait_for(lambda: len(expo.delivered()) == 2)
    await settle(expo)
    assert [len(r.body) for r in expo.sends()] == [2]


async def test_a_replayed_push_request_sends_nothing(client, live, expo, capture):
    """R31: at most once per (push_id, token): redelivering the event sends nothing new."""
    account = await register(client)
    await register_token(client, account)
    async with capture() as seen:
        await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.delivered()) == 1)
    [event] = [e for e in await seen.events() if e.type == "PUSH_REQUEST"]
    replay = Event(
        type=event.type, targets=event.targets, data=event.data, ts=event.ts, uid=event.uid
    )
    await live.services.log.append([replay, replay])
    await settle(expo)
    assert len(expo.delivered()) == 1
    assert len(await tickets(live)) == 1


async def test_an_expired_push_request_is_dropped(client, live, expo):
    """R29: a request past expires_at is not sent."""
    account = await register(client)
    await register_token(client, account)
    await ask_push(live, account.id, expires_in=timedelta(seconds=-1))
    await ask_push(live, account.id, title="fresh")
    await expo.wait_for(lambda: len(expo.delivered()) == 1)
    await settle(expo)
    assert [m["title"] for m in expo.delivered()] == ["fresh"]


async def test_a_user_without_devices_costs_no_request(client, live, expo):
    """R29: no tokens → no message, no ticket."""
    account = await register(client)
    await ask_push(live, account.id)
    other = await register(client)
    await register_token(client, other)
    await ask_push(live, other.id)
    await expo.wait_for(lambda: len(expo.delivered()) == 1)
    await settle(expo)
    assert [m["to"] for m in expo.delivered()] == [TOKEN]


async def test_device_not_registered_in_a_ticket_deletes_the_token(client, live, expo):
    """R32, R34: DeviceNotRegistered in a ticket → the token is deleted at once."""
    account = await register(client)
    await register_token(client, account, token(1))
    await register_token(client, account, token(2))
    expo.ticket_errors[token(1)] = "DeviceNotRegistered"
    await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.sends()) == 1)
    for _ in range(50):
        if len(await tokens_of(live, account.id)) == 1:
            break
        await asyncio.sleep(0.05)
    assert [row["token"] for row in await tokens_of(live, account.id)] == [token(2)]
    statuses = sorted((row["status"], row["error"]) for row in await tickets(live))
    assert statuses == [("error", "DeviceNotRegistered"), ("sent", None)]


async def test_429_then_ok_delivers_once_after_retry_after(client, live, expo):
    """R32, R34: a 429 is retried no sooner than Retry-After; the push arrives once."""
    account = await register(client)
    await register_token(client, account)
    expo.fail_next(429, retry_after="1")
    await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.delivered()) == 1)
    await settle(expo)
    sends = expo.sends(status=None)
    assert [r.status for r in sends] == [429, 200]
    assert sends[1].at - sends[0].at >= 0.95
    assert len(expo.delivered()) == 1
    assert [row["status"] for row in await tickets(live)] == ["sent"]


async def test_5xx_is_retried_with_backoff_then_given_up(client, live, expo):
    """R32: 5xx → up to 5 retries; then the messages are lost (at most once) and later
    pushes still go out (R27: the worker is never stuck)."""
    account = await register(client)
    await register_token(client, account)
    expo.fail_next(500, times=6)
    await ask_push(live, account.id, title="lost")
    await expo.wait_for(lambda: len(expo.sends(status=None)) == 6)
    await settle(expo)
    assert [r.status for r in expo.sends(status=None)] == [500] * 6
    assert [(r["status"], r["error"]) for r in await tickets(live)] == [("error", "Unavailable")]
    assert push.push_status(live.services)["last_error"]
    await ask_push(live, account.id, title="later")
    await expo.wait_for(lambda: len(expo.delivered()) == 1)
    assert expo.delivered()[0]["title"] == "later"


async def test_message_rate_exceeded_is_retried_once(client, live, expo):
    """R32: MessageRateExceeded → that message alone is retried once (after 2 s; shortened
    here), and not again."""
    account = await register(client)
    await register_token(client, account, token(1))
    await register_token(client, account, token(2))
    expo.ticket_errors_once[token(1)] = "MessageRateExceeded"
    await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.sends()) == 2)
    await settle(expo)
    assert [sorted(m["to"] for m in r.body) for r in expo.sends()] == [
        [token(1), token(2)],
        [token(1)],
    ]
    assert [row["status"] for row in await tickets(live)] == ["sent", "sent"]
    expo.reset()
    expo.ticket_errors[token(1)] = "MessageRateExceeded"
    await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.sends()) == 2)
    await settle(expo)
    assert len(expo.sends()) == 2
    assert len(await tokens_of(live, account.id)) == 2  # never deleted for a rate error


async def test_invalid_credentials_flag_push_unhealthy_and_keep_tokens(client, live, expo):
    """R32: InvalidCredentials → push unhealthy (health details), tokens kept; a later
    successful request makes it healthy again."""
    account = await register(client)
    await register_token(client, account)
    expo.ticket_errors[TOKEN] = "InvalidCredentials"
    await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.sends()) == 1)
    await settle(expo, 0.3)
    status = push.push_status(live.services)
    assert status["status"] == "unhealthy" and status["last_error"] == "InvalidCredentials"
    assert len(await tokens_of(live, account.id)) == 1
    expo.ticket_errors.clear()
    await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.sends()) == 2)
    await settle(expo, 0.3)
    assert push.push_status(live.services)["status"] == "ok"


async def test_push_never_slows_the_producer(client, live, expo):
    """R27: with Expo failing, asking for a push still commits at once."""
    account = await register(client)
    await register_token(client, account)
    expo.fail_next(500, times=100)
    started = time.monotonic()
    await ask_push(live, account.id, count=5)
    assert time.monotonic() - started < 0.5
    await expo.wait_for(lambda: len(expo.sends(status=None)) >= 1)
    expo.failures.clear()


# --- receipts (R33) ----------------------------------------------------------------------------


async def _age_tickets(live, by: timedelta) -> None:
    """Time passes: the tickets (and the registrations before them) are `by` old."""
    now = datetime.now(UTC)
    await live.services.db.execute(push_tickets.update().values(created_at=now - by))
    await live.services.db.execute(
        push_tokens.update().values(last_registered_at=now - by - timedelta(minutes=1))
    )


async def test_device_not_registered_in_a_receipt_deletes_the_token(client, live, expo):
    """R33, R34: receipts of tickets older than 15 min; DeviceNotRegistered deletes the token."""
    account = await register(client)
    await register_token(client, account, token(1))
    await register_token(client, account, token(2))
    await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.delivered()) == 2)
    await settle(expo, 0.3)
    await push.sweep_receipts(live.services)
    assert expo.receipt_requests() == []  # too young to ask about
    expo.receipt_errors[token(1)] = "DeviceNotRegistered"
    await _age_tickets(live, timedelta(minutes=16))
    await push.sweep_receipts(live.services)
    [request] = expo.receipt_requests()
    assert len(request.body["ids"]) == 2
    assert [row["token"] for row in await tokens_of(live, account.id)] == [token(2)]
    checked = sorted((row["status"], row["error"]) for row in await tickets(live))
    assert checked == [("error", "DeviceNotRegistered"), ("sent", None)]
    await push.sweep_receipts(live.services)
    assert len(expo.receipt_requests()) == 1  # each ticket is checked once


async def test_a_token_registered_again_after_the_push_survives_its_receipt(client, live, expo):
    """R33: DeviceNotRegistered about an old push does not delete a token the device has
    registered again since."""
    account = await register(client)
    await register_token(client, account)
    await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.delivered()) == 1)
    await settle(expo, 0.3)
    await _age_tickets(live, timedelta(minutes=16))
    await register_token(client, account)
    expo.receipt_errors[TOKEN] = "DeviceNotRegistered"
    await push.sweep_receipts(live.services)
    assert len(await tokens_of(live, account.id)) == 1


async def test_tickets_without_receipt_are_dropped_after_a_day(client, live, expo):
    """R33: no receipt yet → asked again next time; still none after 24 h → dropped;
    every ticket goes after 2 days."""
    account = await register(client)
    await register_token(client, account)
    await ask_push(live, account.id)
    await expo.wait_for(lambda: len(expo.delivered()) == 1)
    await settle(expo, 0.3)
    expo.receipts_pending.update(expo.issued)
    await _age_tickets(live, timedelta(minutes=20))
    await push.sweep_receipts(live.services)
    assert len(await tickets(live)) == 1
    await _age_tickets(live, timedelta(hours=25))
    await push.sweep_receipts(live.services)
    assert await tickets(live) == []
    assert len(await tokens_of(live, account.id)) == 1


async def test_receipts_are_asked_in_chunks_of_300(client, live, expo):
    """R33: at most 300 ids per getReceipts request."""
    account = await register(client)
    await register_token(client, account)
    await ask_push(live, account.id, count=301)
    await expo.wait_for(lambda: len(expo.delivered()) == 301)
    await settle(expo, 0.3)
    await _age_tickets(live, timedelta(minutes=16))
    await push.sweep_receipts(live.services)
    assert [len(r.body["ids"]) for r in expo.receipt_requests()] == [300, 1]


# --- P4 test push ------------------------------------------------------------------------------


async def test_test_push_reports_per_device(client, live, expo):
    """P4: sent now through the same transport; DeviceNotRegistered → removed."""
    account = await register(client, locale="en")
    good = (await register_token(client, account, token(1))).json()["id"]
    dead = (await register_token(client, account, token(2))).json()["id"]
    expo.ticket_errors[token(2)] = "DeviceNotRegistered"
    response = await client.post("/push/test", headers=account.headers, json={})
    assert response.status_code == 200, response.text
    results = {item["token_id"]: item for item in response.json()["results"]}
    assert results[good] == {"token_id": good, "status": "ok", "error": None, "removed": False}
    assert results[dead] == {
        "token_id": dead,
        "status": "error",
        "error": "DeviceNotRegistered",
        "removed": True,
    }
    [request] = expo.sends()
    assert {m["channelId"] for m in request.body} == {"system"}
    assert "push works" in request.body[0]["body"]
    assert [row["token"] for row in await tokens_of(live, account.id)] == [token(1)]


async def test_test_push_speaks_the_users_language(client, live, expo):
    """P4: the fixed text is in the user's locale."""
    account = await register(client, locale="ru")
    await register_token(client, account)
    response = await client.post("/push/test", headers=account.headers)
    assert response.status_code == 200
    assert "Тестовое" in expo.sends()[0].body[0]["body"]


async def test_test_push_to_one_device(client, live, expo):
    """P4: `token_id` picks one of mine; someone else's or a malformed one → 404."""
    account, stranger = await register(client), await register(client)
    mine = (await register_token(client, account, token(1))).json()["id"]
    await register_token(client, account, token(2))
    theirs = (await register_token(client, stranger, token(3))).json()["id"]
    response = await client.post("/push/test", headers=account.headers, json={"token_id": mine})
    assert [item["token_id"] for item in response.json()["results"]] == [mine]
    for other in (theirs, "123", "x"):
        response = await client.post(
            "/push/test", headers=account.headers, json={"token_id": other}
        )
        assert response.status_code == 404, other
    assert [m["to"] for m in expo.delivered()] == [token(1)]


async def test_test_push_without_devices_is_a_conflict(client, live, expo):
    """P4: 409 no_push_tokens."""
    account = await register(client)
    response = await client.post("/push/test", headers=account.headers, json={})
    assert response.status_code == 409 and response.json()["code"] == "no_push_tokens"


async def test_test_push_is_503_when_expo_keeps_failing(client, live, expo):
    """P4: 503 push_unavailable after the retries fail."""
    account = await register(client)
    await register_token(client, account)
    expo.fail_next(500, times=6)
    response = await client.post("/push/test", headers=account.headers, json={})
    assert response.status_code == 503 and response.json()["code"] == "push_unavailable"
    assert len(expo.sends(status=None)) == 6


async def test_test_push_is_limited_to_5_an_hour(client, live, expo):
    """P4: 429 after 5 test pushes in an hour."""
    account = await register(client)
    await register_token(client, account)
    for _ in range(5):
        assert (await client.post("/push/test", headers=account.headers)).status_code == 200
    response = await client.post("/push/test", headers=account.headers)
    assert response.status_code == 429


async def test_test_push_refuses_banned_users(client, live, expo):
    """R9: a banned user gets 403 banned on P4."""
    from tests.factories import ban

    account = await register(client)
    await register_token(client, account)
    await ban(live.services, account.id)
    response = await client.post("/push/test", headers=account.headers)
    assert response.status_code == 403 and response.json()["code"] == "banned"
    assert expo.requests == []


# --- the transport (server.expo) ---------------------------------------------------------------


async def test_the_transport_backs_off_1_2_4_8_16_seconds_and_honours_retry_after():
    """R32: up to 5 retries, exponential backoff with jitter; Retry-After is a floor."""
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    fake = await FakeExpo().start()
    try:
        async with httpx.AsyncClient() as http:
            transport = ExpoTransport(http, base_url=fake.url, sleep=no_sleep)
            fake.fail_next(503, times=6)
            with pytest.raises(ExpoUnavailable):
                await transport.send([{"to": TOKEN, "body": "x"}])
            assert len(waits) == 5
            for wait, nominal in zip(waits, (1, 2, 4, 8, 16), strict=True):
                assert 0.8 * nominal <= wait <= 1.2 * nominal
            waits.clear()
            fake.fail_next(429, retry_after="30")
            [ticket] = await transport.send([{"to": TOKEN, "body": "x"}])
            assert ticket.status == "ok" and len(waits) == 1 and waits[0] >= 30
            waits.clear()
            fake.fail_next(400)
            with pytest.raises(ExpoRejected):
                await transport.send([{"to": TOKEN, "body": "x"}])
            assert waits == []  # other 4xx: no retry
    finally:
        await fake.stop()


async def test_the_transport_survives_a_dead_server():
    """R32: network errors are retried like 5xx, then reported as unavailable."""
    async with httpx.AsyncClient() as http:
        transport = ExpoTransport(http, base_url="http://127.0.0.1:9", retry_base_s=0.001)
        with pytest.raises(ExpoUnavailable):
            await transport.send([{"to": TOKEN, "body": "x"}])


async def test_the_transport_splits_at_100_messages():
    """R30: requests of at most 100 messages, tickets in order."""
    fake = await FakeExpo().start()
    try:
        async with httpx.AsyncClient() as http:
            transport = ExpoTransport(http, base_url=fake.url)
            fake.ticket_errors[token(150)] = "MessageTooBig"
            tickets_ = await transport.send([{"to": token(n)} for n in range(250)])
            assert [len(r.body) for r in fake.sends()] == [100, 100, 50]
            assert [t.error for t in tickets_].index("MessageTooBig") == 150
            assert "authorization" not in fake.sends()[0].headers  # no token configured
    finally:
        await fake.stop()


def test_retry_after_reads_seconds_and_dates():
    """R32: Retry-After as delta-seconds or an HTTP date."""
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 25 <= parse_retry_after(later) <= 31


def test_a_message_is_cut_to_4096_bytes_with_an_ellipsis():
    """R29: each message's JSON stays ≤ 4096 bytes; the body is cut with "…"."""
    message = push.build_message(
        TOKEN, title="t", body="é" * 5000, data={}, channel_id="c", priority="default"
    )
    size = len(msgspec.json.encode(message))
    assert size <= 4096 and size > 4000
    assert message["body"].endswith("…")
    short = push.build_message(
        TOKEN, title="t", body="hi", data={}, channel_id="c", priority="high"
    )
    assert short["body"] == "hi"


def test_the_local_bucket_holds_500_messages_a_second():
    """R30: the token bucket caps sending at 500 messages/s."""
    now = [0.0]
    bucket = LocalTokenBucket(500, clock=lambda: now[0])
    assert [bucket.reserve(100) for _ in range(5)] == [0, 0, 0, 0, 0]
    assert bucket.reserve(100) == pytest.approx(0.2)
    now[0] = 1.2
    assert bucket.reserve(100) == 0


async def test_the_redis_bucket_is_shared_between_processes(live):
    """R30: in scale-out the bucket lives in Redis, so two senders share 500/s."""
    if live.services.redis is None:
        pytest.skip("embedded: one process, the in-process bucket")
    key = "anilay:push:bucket:test"
    await live.services.redis.delete(key)
    one = RedisTokenBucket(live.services.redis, rate_per_s=100, key=key)
    two = RedisTokenBucket(live.services.redis, rate_per_s=100, key=key)
    started = time.monotonic()
    await one.acquire(100)
    await two.acquire(20)  # the first took the whole burst: this one waits ~0.2 s
    assert time.monotonic() - started >= 0.15
    await live.services.redis.delete(key)


async def test_the_bucket_falls_back_to_the_process_when_redis_is_down(live):
    """R30: the bucket falls back to the process when Redis is unreachable."""
    import redis.asyncio as aioredis

    dead = aioredis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    bucket = RedisTokenBucket(dead, rate_per_s=500)
    await bucket.acquire(10)
    await dead.aclose()


async def test_health_reports_push(live):
    """platform.md H3 `push`: status, queue depth, last success and error."""
    status = push.push_status(live.services)
    assert set(status) == {"status", "queue_depth", "last_success_at", "last_error"}


async def test_owner_of_a_token_can_be_removed_from_users(client, live):
    """Deleting an account through its sessions leaves no push token (R28)."""
    account = await register(client)
    await register_token(client, account)
    await set_user(live.services, account.id, status="deleted")
    from models.auth.sessions import active_session_ids, revoke_sessions

    async with live.services.db.transaction() as tx:
        ids = await active_session_ids(live.services, account.id)
        await revoke_sessions(live.services, tx, account.id, ids, "account_deleted")
    assert await tokens_of(live, account.id) == []


async def test_deletion_request_leaves_only_the_current_devices_token(client, live):
    """users.md R9: U8 revokes every other session, and with them their devices' tokens."""
    phone = await register(client)
    tablet = await login(client, phone)
    await register_token(client, phone, token(1))
    await register_token(client, tablet, token(2))
    response = await client.post(
        "/users/me/deletion",
        headers=phone.headers,
        json={"confirm_username": phone.username, "password": phone.password},
    )
    assert response.status_code == 202, response.text
    assert [row["token"] for row in await tokens_of(live, phone.id)] == [token(1)]


async def test_anonymization_deletes_every_token(client, live):
    """users.md R9: the deletion worker deletes the account's push tokens."""
    from models.users.deletion import anonymize_user

    account = await register(client)
    await register_token(client, account)
    assert await anonymize_user(live.services, account.id, immediate=True)
    assert await tokens_of(live, account.id) == []


async def test_the_export_masks_tokens(client, live):
    """users.md R10: push tokens (masked)."""
    account = await register(client)
    await register_token(client, account, device_name="Pixel")
    exported = await push.export_push_tokens(live.services, account.id)
    assert len(exported) == 1 and exported[0]["device_name"] == "Pixel"
    assert exported[0]["token_preview"] == "ExponentPushToken[abcd…]"
    assert TOKEN not in repr(exported)


async def test_push_requests_never_reach_a_socket(client, live, expo):
    """R29: PUSH_REQUEST is internal: no socket receives it, not even staff's."""
    from tests.factories import make_staff
    from tests.gateway.conftest import publish
    from tests.support.sockets import connect

    account = await register(client)
    await make_staff(live.services, account.id)
    await register_token(client, account)
    socket = await connect(live, account.access_token)
    try:
        await socket.wait_for("READY")
        await ask_push(live, account.id)
        await expo.wait_for(lambda: len(expo.delivered()) == 1)
        await publish(live.services, 1, f"user:{account.id}")  # a later event does arrive
        await socket.wait_for("TEST_PROBE")
        assert socket.of("PUSH_REQUEST") == []
    finally:
        await socket.close()
