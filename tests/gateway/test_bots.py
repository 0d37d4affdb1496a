"""The bot namespace (gateway.md "Bots", G11; auth.md R23, R25, R26)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import socketio

from gateway.bots import Intent
from tests.factories import register, set_user
from tests.gateway.conftest import publish
from tests.support.sockets import WS_PATH, Recorder


async def owner_with_key(client, live, scopes: list[str]):
    account = await register(client)
    await set_user(live.services, account.id, email_verified_at=datetime.now(UTC))
    response = await client.post(
        "/api-keys", headers=account.headers, json={"name": "bot", "scopes": scopes}
    )
    assert response.status_code == 201, response.text
    return account, response.json()


async def bot_socket(live, secret: str, intents: int) -> Recorder:
    recorder = Recorder(live.url, "/bots")
    await recorder.connect({"api_key": secret, "intents": intents})
    return recorder


async def refused(live, auth) -> list:
    recorder = Recorder(live.url, "/bots")
    with pytest.raises(Exception):  # noqa: B017 - socketio's ConnectionError
        await recorder.connect(auth)
    await recorder.close()
    return [r["code"] for r in recorder.refused]


async def raw(services, name: str, data: dict, *topics: str) -> None:
    """Append an event of another domain's type as that domain would (schema bypassed on
    purpose: the gateway must filter by class whatever the payload)."""
    from server.events import Event, Targets, utc_now_text
    from server.ids import new_id

    await services.bus.publish(
        [
            Event(
                type=name,
                targets=Targets(topics=tuple(topics)),
                data=data,
                ts=utc_now_text(),
                uid=new_id(),
            )
        ]
    )


async def test_a_bot_gets_ready_with_its_key_and_intents(client, live):
    account, key = await owner_with_key(client, live, ["profile:read"])
    socket = await bot_socket(live, key["secret"], int(Intent.PUBLIC_ACTIVITY))
    (ready,) = await socket.wait_for("READY")
    assert ready["api_key_id"] == key["id"] and ready["intents"] == int(Intent.PUBLIC_ACTIVITY)
    assert ready["user"]["id"] == str(account.id)
    assert ready["servers"] == [] and ready["subscriptions"] == ["public_activity"]
    await socket.close()


async def test_intents_beyond_the_scopes_are_refused(client, live):
    _, key = await owner_with_key(client, live, ["profile:read"])
    assert await refused(live, {"api_key": key["secret"], "intents": int(Intent.PRESENCE)}) == [
        "intent_not_allowed"
    ]
    assert await refused(
        live, {"api_key": key["secret"], "intents": int(Intent.MESSAGE_CONTENT)}
    ) == ["intent_not_allowed"]
    assert await refused(live, {"api_key": key["secret"], "intents": 1 << 9}) == ["auth_failed"]
    assert await refused(live, {"api_key": "anl_nope_nope", "intents": 0}) == ["auth_failed"]
    assert await refused(live, {"token": "x", "intents": 0}) == ["auth_failed"]


async def test_bots_never_receive_direct_messages_envelopes_or_account_events(client, live, graph):
    """G11: only the event classes the intents allow, even on the owner's own topic."""
    account, key = await owner_with_key(client, live, ["presence:read", "servers:read"])
    friend = await register(client)
    graph.befriend(account.id, friend.id)
    socket = await bot_socket(live, key["secret"], int(Intent.PRESENCE | Intent.SERVERS))
    await socket.wait_for("READY")
    topic = f"user:{account.id}"
    await raw(live.services, "MESSAGE_CREATE", {"conversation_id": "5", "content": "hi"}, topic)
    await raw(live.services, "ENVELOPE", {"ciphertext": "..."}, topic)
    await raw(live.services, "NOTIFICATION_CREATE", {"id": "1"}, topic)
    await raw(live.services, "WALLET_UPDATE", {"coins": 5}, topic)
    await publish(live.services, 1, topic)
    from gateway.presence import beat

    await beat(live.services, friend.id, "s", "online", None)
    (presence,) = await socket.wait_for("PRESENCE_UPDATE")
    assert presence["data"]["user_id"] == str(friend.id)
    await asyncio.sleep(0.2)
    assert [name for name, _ in socket.events] == ["READY", "PRESENCE_UPDATE"]
    await socket.close()


async def test_message_content_needs_its_privileged_intent(client, live):
    _, plain_key = await owner_with_key(client, live, ["servers:read"])
    _, content_key = await owner_with_key(client, live, ["servers:read", "messages:content"])
    plain = await bot_socket(live, plain_key["secret"], int(Intent.SERVER_MESSAGES))
    full = await bot_socket(
        live, content_key["secret"], int(Intent.SERVER_MESSAGES | Intent.MESSAGE_CONTENT)
    )
    for socket in (plain, full):
        await socket.wait_for("READY")
    for socket in (plain, full):  # as the servers domain will: channel topics per bot
        live.services.gateway.registry.subscribe(
            live.services.gateway.registry.by_sid[_sid(live, socket)], "channel:9"
        )
    await raw(
        live.services,
        "MESSAGE_CREATE",
        {"channel_id": "9", "content": "secret plans", "author_id": "1"},
        "channel:9",
    )
    (without,) = await plain.wait_for("MESSAGE_CREATE")
    (with_content,) = await full.wait_for("MESSAGE_CREATE")
    assert "content" not in without["data"] and without["data"]["channel_id"] == "9"
    assert with_content["data"]["content"] == "secret plans"
    for socket in (plain, full):
        await socket.close()


def _sid(live, recorder: Recorder) -> str:
    return recorder.client.namespaces["/bots"]


async def test_public_activity_reaches_bots_that_asked_for_it(client, live):
    _, key = await owner_with_key(client, live, ["profile:read"])
    listening = await bot_socket(live, key["secret"], int(Intent.PUBLIC_ACTIVITY))
    deaf = await bot_socket(live, key["secret"], 0)
    for socket in (listening, deaf):
        await socket.wait_for("READY")
    await raw(live.services, "COMMENT_CREATE", {"comment_id": "1"}, "public_activity", "anime:5")
    (comment,) = await listening.wait_for("COMMENT_CREATE")
    assert comment["data"] == {"comment_id": "1"}
    await asyncio.sleep(0.1)
    assert deaf.of("COMMENT_CREATE") == []
    for socket in (listening, deaf):
        await socket.close()


async def test_revoking_the_key_closes_its_bot_sockets(client, live):
    account, key = await owner_with_key(client, live, ["profile:read"])
    socket = await bot_socket(live, key["secret"], 0)
    await socket.wait_for("READY")
    response = await client.delete(f"/api-keys/{key['id']}", headers=account.headers)
    assert response.status_code == 204
    await socket.wait_disconnected(timeout=2)
    assert socket.of("DISCONNECTING")[0]["code"] == "api_key_revoked"


async def test_narrowing_the_scopes_closes_sockets_whose_intents_lost_cover(client, live):
    account, key = await owner_with_key(client, live, ["presence:read", "profile:read"])
    presence = await bot_socket(live, key["secret"], int(Intent.PRESENCE))
    public = await bot_socket(live, key["secret"], int(Intent.PUBLIC_ACTIVITY))
    for socket in (presence, public):
        await socket.wait_for("READY")
    response = await client.patch(
        f"/api-keys/{key['id']}", headers=account.headers, json={"scopes": ["profile:read"]}
    )
    assert response.status_code == 200, response.text
    await presence.wait_disconnected(timeout=2)
    assert presence.of("DISCONNECTING")[0]["code"] == "intent_not_allowed"
    await asyncio.sleep(0.2)
    assert not public.disconnected.is_set()
    await public.close()


@pytest.mark.parametrize(
    "transports", [["websocket"], ["polling", "websocket"]], ids=["websocket", "upgrade"]
)
async def test_a_namespace_joining_a_connection_later_authenticates_from_its_handshake(
    client, live, transports
):
    """Of the handshake's environ the server keeps only the ASGI scope (memory per socket);
    a second namespace on the same connection still authenticates from it, and a connection
    that began long-polling still upgrades to a websocket."""
    account, key = await owner_with_key(client, live, ["profile:read"])
    sio = socketio.AsyncClient(reconnection=False)
    ready = {namespace: asyncio.Event() for namespace in ("/", "/bots")}
    for namespace, seen in ready.items():
        sio.on("READY", lambda data, seen=seen: seen.set(), namespace=namespace)
    await sio.connect(
        live.url,
        socketio_path=WS_PATH,
        namespaces=list(ready),
        auth={"token": account.access_token, "api_key": key["secret"], "intents": 0},
        transports=transports,
        wait_timeout=5,
    )
    try:
        await asyncio.wait_for(asyncio.gather(*(seen.wait() for seen in ready.values())), 5)
        async with asyncio.timeout(5):
            while sio.transport() != "websocket":
                await asyncio.sleep(0.02)
        kept = live.services.gateway.sio.get_environ(sio.get_sid("/bots"), "/bots")
        assert list(kept) == ["asgi.scope"]
    finally:
        await sio.disconnect()


async def test_a_bot_heartbeat_does_not_mark_its_owner_active(client, live, monkeypatch):
    """last_active_at is the person's activity: a bot acting for them is not."""
    from gateway import handlers
    from models.auth.identity import active_cache_key
    from models.users import get_user

    account, key = await owner_with_key(client, live, ["profile:read"])
    socket = await bot_socket(live, key["secret"], 0)
    await socket.wait_for("READY")
    marker = datetime.now(UTC) - timedelta(hours=1)
    await set_user(live.services, account.id, last_active_at=marker)
    await live.services.cache.delete(active_cache_key(account.id))
    monkeypatch.setattr(handlers, "ACTIVE_MARK_EVERY_S", 0.0)
    assert (await socket.emit("heartbeat", {"status": "online"}))["ok"] is True
    assert (await get_user(live.services.db, account.id))["last_active_at"] == marker
    await socket.close()
