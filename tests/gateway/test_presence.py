"""Presence, typing and per-socket limits (gateway.md "Presence", "Client → server
events", G6, G7)."""

from __future__ import annotations

import asyncio
import time

from gateway import handlers
from gateway.presence import sweep
from server.presence import PresenceEntry
from tests.factories import register
from tests.support.sockets import connect

WATCHING = {"anime_id": 20, "episode": 3, "position_s": 120.5}


async def pair(client, live, graph):
    alice, bob = await register(client), await register(client)
    graph.befriend(alice.id, bob.id)
    watcher = await connect(live, bob.access_token)
    await watcher.wait_for("READY")
    return alice, bob, watcher


async def test_coming_online_is_told_to_friends_only(client, live, graph):
    alice, _bob, watcher = await pair(client, live, graph)
    stranger = await register(client)
    outsider = await connect(live, stranger.access_token)
    await outsider.wait_for("READY")
    socket = await connect(live, alice.access_token)
    await socket.wait_for("READY")
    assert await socket.emit("heartbeat", {"status": "online", "activity": None}) == {
        "ok": True,
        "counted": True,
    }
    (update,) = await watcher.wait_for("PRESENCE_UPDATE")
    assert update["data"]["user_id"] == str(alice.id)
    assert update["data"]["status"] == "online" and update["data"]["activity"] is None
    await asyncio.sleep(0.1)
    assert outsider.of("PRESENCE_UPDATE") == []
    for s in (socket, watcher, outsider):
        await s.close()


async def test_repeated_beats_and_position_changes_emit_nothing(client, live, graph):
    alice, _bob, watcher = await pair(client, live, graph)
    socket = await connect(live, alice.access_token)
    await socket.wait_for("READY")
    gateway = live.services.gateway
    await socket.emit("heartbeat", {"status": "online", "activity": WATCHING})
    await watcher.wait_for("PRESENCE_UPDATE")
    from gateway.presence import beat

    # Beats inside 5 s are not counted over the socket; drive the same operation directly.
    for position in (130.0, 140.0, 140.0):
        await beat(
            live.services,
            alice.id,
            socket_session(gateway, alice.id),
            "online",
            WATCHING | {"position_s": position},
        )
    await asyncio.sleep(0.2)
    assert len(watcher.of("PRESENCE_UPDATE")) == 1
    await socket.close()
    await watcher.close()


def socket_session(gateway, user_id: int) -> str:
    return gateway.registry.of_user(user_id)[0].session_id


def entry_with(activity, status="online", ttl=45.0) -> PresenceEntry:
    now = time.time()
    return PresenceEntry(
        status=status, activity=activity, activity_at=now, beat_at=now, expires_at=now + ttl
    )


async def test_a_new_activity_and_a_status_change_are_transitions(client, live, graph):
    from gateway.presence import beat

    alice, _bob, watcher = await pair(client, live, graph)
    await beat(live.services, alice.id, "s1", "online", None)
    await beat(live.services, alice.id, "s1", "online", WATCHING)
    await beat(live.services, alice.id, "s1", "online", WATCHING | {"episode": 4})
    await beat(live.services, alice.id, "s1", "dnd", WATCHING | {"episode": 4})
    await beat(live.services, alice.id, "s1", "dnd", None)
    updates = await watcher.wait_for("PRESENCE_UPDATE", 5)
    assert [
        (u["data"]["status"], (u["data"]["activity"] or {}).get("episode")) for u in updates
    ] == [("online", None), ("online", 3), ("online", 4), ("dnd", 4), ("dnd", None)]
    await watcher.close()


async def test_the_most_active_session_wins_and_invisible_looks_offline(client, live, graph):
    from gateway.presence import beat

    alice, _bob, watcher = await pair(client, live, graph)
    await beat(live.services, alice.id, "phone", "invisible", None)
    await asyncio.sleep(0.1)
    assert watcher.of("PRESENCE_UPDATE") == [], "invisible alone reads as offline"
    await beat(live.services, alice.id, "laptop", "idle", None)
    await beat(live.services, alice.id, "tablet", "dnd", None)
    updates = await watcher.wait_for("PRESENCE_UPDATE", 2)
    assert [u["data"]["status"] for u in updates] == ["idle", "dnd"]
    await watcher.close()


async def test_presence_expires_45_seconds_after_the_last_beat_without_a_disconnect(
    client, live, graph
):
    """G6: a crashed gateway's sessions lapse on their own."""
    alice, _bob, watcher = await pair(client, live, graph)
    await live.services.presence.put(alice.id, "crashed", entry_with(None, ttl=45.0))
    from gateway.presence import publish_if_changed

    await publish_if_changed(live.services, alice.id)
    await watcher.wait_for("PRESENCE_UPDATE")
    await live.services.presence.put(alice.id, "crashed", entry_with(None, ttl=-0.01))
    await sweep(live.services)
    updates = await watcher.wait_for("PRESENCE_UPDATE", 2)
    assert updates[-1]["data"]["status"] == "offline"
    await watcher.close()


async def test_a_quick_reconnect_does_not_flap(client, live, graph):
    alice, _bob, watcher = await pair(client, live, graph)
    first = await connect(live, alice.access_token)
    (ready,) = await first.wait_for("READY")
    await first.emit("heartbeat", {"status": "online"})
    await watcher.wait_for("PRESENCE_UPDATE")
    await first.close()
    second = await connect(
        live,
        alice.access_token,
        resume={"session_id": ready["session_id"], "last_event_id": ready["last_event_id"]},
    )
    await second.wait_for("RESUMED")
    await second.emit("heartbeat", {"status": "online"})
    await sweep(live.services)
    await asyncio.sleep(0.2)
    assert len(watcher.of("PRESENCE_UPDATE")) == 1
    await second.close()
    await watcher.close()


async def test_ready_lists_online_friends(client, live, graph):
    from gateway.presence import beat

    alice, bob, watcher = await pair(client, live, graph)
    await beat(live.services, bob.id, "s", "idle", WATCHING)
    socket = await connect(live, alice.access_token)
    (ready,) = await socket.wait_for("READY")
    assert ready["presence"] == [{"user_id": str(bob.id), "status": "idle", "activity": WATCHING}]
    await socket.close()
    await watcher.close()


async def test_heartbeats_inside_five_seconds_are_not_counted(client, live):
    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    assert (await socket.emit("heartbeat", {"status": "online"}))["counted"] is True
    assert (await socket.emit("heartbeat", {"status": "idle"}))["counted"] is False
    await socket.close()


async def test_bad_heartbeats_are_refused_by_ack(client, live):
    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    for payload in (
        {"status": "away"},
        {"status": "online", "activity": {"anime_id": "x"}},
        "online",
        None,
        {"status": "online", "extra": 1},
    ):
        answer = await socket.emit("heartbeat", payload)
        assert answer["ok"] is False and answer["error"]["code"] == "validation_failed"
    await socket.close()


# --- typing -------------------------------------------------------------------------------


async def test_typing_reaches_the_other_members_once_per_three_seconds(client, live):
    """Typing on a generic topic: a check decides access; extra ones are acked, not sent."""
    from server.errors import ApiError, Code
    from server.realtime import subscriptions_changed

    alice, bob = await register(client), await register(client)
    members = {alice.id, bob.id}

    async def check(services, connection, field, target_id):
        if connection.user_id not in members:
            raise ApiError(Code.not_found, "No such conversation")
        return f"conversation:{target_id}"

    handlers.TYPING_CHECKS["conversation_id"] = check
    try:
        a = await connect(live, alice.access_token)
        b = await connect(live, bob.access_token)
        a2 = await connect(live, alice.access_token)
        for s in (a, b, a2):
            await s.wait_for("READY")
        async with live.services.db.transaction() as tx:
            for user in (alice.id, bob.id):
                subscriptions_changed(tx, user, add=["conversation:5"])
        await asyncio.sleep(0.2)
        assert await a.emit("typing", {"conversation_id": "5"}) == {"ok": True, "forwarded": True}
        assert await a.emit("typing", {"conversation_id": "5"}) == {"ok": True, "forwarded": False}
        (typing,) = await b.wait_for("TYPING_START")
        assert typing["user_id"] == str(alice.id) and typing["conversation_id"] == "5"
        assert "id" not in typing, "volatile: no event id"
        await asyncio.sleep(0.1)
        assert a.of("TYPING_START") == [] and a2.of("TYPING_START") == []
        outsider = await register(client)
        o = await connect(live, outsider.access_token)
        await o.wait_for("READY")
        refused = await o.emit("typing", {"conversation_id": "5"})
        assert refused["ok"] is False and refused["error"]["code"] == "not_found"
        for s in (a, b, a2, o):
            await s.close()
    finally:
        handlers.TYPING_CHECKS.pop("conversation_id", None)


# --- limits -------------------------------------------------------------------------------


async def test_unknown_events_and_oversized_payloads_are_refused(client, live):
    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    unknown = await socket.emit("launch_missiles", {})
    assert unknown["ok"] is False and unknown["error"]["code"] == "unknown_event"
    big = await socket.emit("subscribe", {"anime_id": 1, "pad": "x" * 17_000})
    assert big["error"]["code"] == "payload_too_large"
    await socket.close()


async def test_at_most_twenty_anime_topics(client, live):
    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    for anime_id in range(1, 21):
        assert (await socket.emit("subscribe", {"anime_id": anime_id}))["ok"] is True
    refused = await socket.emit("subscribe", {"anime_id": 21})
    assert refused["ok"] is False and refused["error"]["code"] == "conflict"
    await socket.close()


async def test_a_flooding_socket_is_told_then_closed_without_slowing_others(client, live):
    """G7: over 120 events / 60 s → rate_limited acks; three refusals → disconnected."""
    flooder, calm = await register(client), await register(client)
    f = await connect(live, flooder.access_token)
    c = await connect(live, calm.access_token)
    await f.wait_for("READY")
    await c.wait_for("READY")
    answers = [await f.emit("unsubscribe", {"anime_id": 1}) for _ in range(122)]
    assert all(a["ok"] for a in answers[:120])
    assert answers[120]["error"]["code"] == "rate_limited"
    await f.emit("unsubscribe", {"anime_id": 1})  # the third refusal
    await f.wait_disconnected()
    assert f.of("DISCONNECTING")[0]["code"] == "rate_limited"
    started = time.monotonic()
    assert (await c.emit("subscribe", {"anime_id": 3}))["ok"] is True
    assert time.monotonic() - started < 0.5
    await c.close()


async def test_turning_share_watching_off_hides_the_activity_at_once(client, live, graph):
    """users.md R4: friends get PRESENCE_UPDATE with activity null right away."""
    from gateway.presence import beat

    alice, _bob, watcher = await pair(client, live, graph)
    await beat(live.services, alice.id, "s", "online", WATCHING)
    (shown,) = await watcher.wait_for("PRESENCE_UPDATE")
    assert shown["data"]["activity"]["anime_id"] == 20
    response = await client.patch(
        "/users/me/privacy", json={"share_watching": False}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    updates = await watcher.wait_for("PRESENCE_UPDATE", 2)
    assert updates[-1]["data"]["activity"] is None
    assert updates[-1]["data"]["status"] == "online"
    await watcher.close()


async def test_a_heartbeat_keeps_last_active_current_once_per_window(client, live, monkeypatch):
    """users.md: last_active_at follows gateway heartbeats too, so a user who only watches
    with the app open is not reported inactive; a socket asks at most once per 5 minutes."""
    from datetime import UTC, datetime, timedelta

    from models.auth.identity import active_cache_key
    from models.users import get_user
    from tests.factories import set_user

    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    marker = datetime.now(UTC) - timedelta(hours=1)
    await set_user(live.services, account.id, last_active_at=marker)
    await live.services.cache.delete(active_cache_key(account.id))  # the shared window passed
    assert (await socket.emit("heartbeat", {"status": "online"}))["counted"] is True
    last_active = (await get_user(live.services.db, account.id))["last_active_at"]
    assert last_active == marker, "this socket's own window (from its connect) has not passed"
    monkeypatch.setattr(handlers, "HEARTBEAT_COUNTED_EVERY_S", 0.0)
    monkeypatch.setattr(handlers, "ACTIVE_MARK_EVERY_S", 0.0)
    assert (await socket.emit("heartbeat", {"status": "online"}))["counted"] is True
    assert (await get_user(live.services.db, account.id))["last_active_at"] > marker
    await socket.close()
