"""Connecting, READY, and who may connect (gateway.md "Connecting", G12; auth.md R2, R9)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.factories import ban, register
from tests.gateway.conftest import publish
from tests.support.sockets import Recorder, connect


async def refused(live, auth) -> list:
    recorder = Recorder(live.url)
    with pytest.raises(Exception):  # noqa: B017 - socketio raises its ConnectionError
        await recorder.connect(auth)
    await recorder.close()
    return recorder.refused


async def test_ready_describes_the_session(client, live):
    account = await register(client)
    socket = await connect(live, account.access_token)
    (ready,) = await socket.wait_for("READY")
    await socket.close()
    assert ready["user"]["id"] == str(account.id) and ready["user"]["role"] == "user"
    assert ready["heartbeat_interval_ms"] == 15000
    assert f"user:{account.id}" in ready["subscriptions"]
    assert "announcements" in ready["subscriptions"]
    assert not any(t.startswith("staff") for t in ready["subscriptions"])
    assert ready["presence"] == []
    assert ready["unread"] == {"notifications": 0, "conversations": {}, "channels": {}}
    assert isinstance(ready["session_id"], str) and "-" in ready["last_event_id"]


@pytest.mark.parametrize(
    "auth", [None, {}, {"token": 42}, {"token": "nonsense"}, {"token": "a.b.c"}]
)
async def test_bad_credentials_are_refused_with_auth_failed(live, auth):
    reasons = await refused(live, auth)
    assert [r["code"] for r in reasons] == ["auth_failed"]


async def test_a_revoked_session_is_refused(client, live):
    account = await register(client)
    await client.post("/auth/logout", headers=account.headers)
    reasons = await refused(live, {"token": account.access_token})
    assert [r["code"] for r in reasons] == ["session_revoked"]


async def test_a_banned_user_is_refused(client, live):
    account = await register(client)
    await ban(live.services, account.id)
    reasons = await refused(live, {"token": account.access_token})
    assert [r["code"] for r in reasons] == ["banned"]


async def test_a_bad_device_id_is_refused(client, live):
    account = await register(client)
    for device_id in (0, 128, "1", True):
        reasons = await refused(live, {"token": account.access_token, "device_id": device_id})
        assert [r["code"] for r in reasons] == ["auth_failed"]


async def test_a_device_session_gets_its_device_topic(client, live):
    account = await register(client)
    socket = await connect(live, account.access_token, device_id=3)
    (ready,) = await socket.wait_for("READY")
    await socket.close()
    assert f"device:{account.id}:3" in ready["subscriptions"]


async def test_staff_sessions_get_staff_topics(client, live):
    from tests.factories import make_staff

    account = await register(client)
    await make_staff(live.services, account.id, "moderator")
    socket = await connect(live, account.access_token)
    (ready,) = await socket.wait_for("READY")
    await socket.close()
    assert {"staff", "staff:support"} <= set(ready["subscriptions"])
    assert "staff:admin" not in ready["subscriptions"]


async def test_logout_disconnects_that_sessions_sockets_within_a_second(client, live):
    """G12: the session's sockets get SESSION_REVOKED and are closed; others stay."""
    account = await register(client)
    from tests.factories import login

    other = await login(client, account)
    doomed = await connect(live, account.access_token)
    survivor = await connect(live, other.access_token)
    await doomed.wait_for("READY")
    await survivor.wait_for("READY")
    started = time.monotonic()
    await client.post("/auth/logout", headers=account.headers)
    await doomed.wait_disconnected(timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert doomed.of("SESSION_REVOKED")[0]["data"]["session_id"] == str(account.session_id)
    assert doomed.of("DISCONNECTING") == [
        {"code": "session_revoked", "message": "This session has ended"}
    ]
    revoked_seen = await survivor.wait_for("SESSION_REVOKED")
    assert revoked_seen[0]["data"]["reason"] == "logout"
    assert not survivor.disconnected.is_set()
    await survivor.close()


async def test_a_ban_disconnects_open_sockets_within_a_second(client, live):
    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    started = time.monotonic()
    await ban(live.services, account.id)
    await socket.wait_disconnected(timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert socket.of("DISCONNECTING")[0]["code"] == "banned"


async def test_a_token_that_expires_while_connected_keeps_the_socket(client, live):
    """G12: authentication happens at connect; expiry later does not drop the socket."""
    account = await register(client)
    short = live.services.keys.issue(
        account.id, account.session_id, "user", now=time.time() - 900 + 1
    )  # expires in about a second
    socket = await connect(live, short)
    await socket.wait_for("READY")
    await asyncio.sleep(1.5)
    await publish(live.services, 7, f"user:{account.id}")
    (event,) = await socket.wait_for("TEST_PROBE")
    assert event["data"] == {"n": 7}
    assert not socket.disconnected.is_set()
    await socket.close()
