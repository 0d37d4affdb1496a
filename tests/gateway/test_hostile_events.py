"""No socket event reaches an internal failure (gateway.md "Limits"; DESIGN "Errors").

Every client event is sent hostile payloads on `/` (the same guarded handlers serve `/bots`):
the wrong JSON type, integers past 64 bits, digit strings longer than Python converts, NUL
and lone-surrogate text, deep nesting. Each gets an ack that is `ok`, or a refusal naming a
client-side reason; never `unavailable` (an exception the handler did not expect, with every
dependency up), and the socket stays open for the next one."""

from __future__ import annotations

import pytest
import socketio

from gateway.handlers import EVENTS_PER_WINDOW
from tests.factories import register
from tests.support.sockets import connect

EVENTS = ["heartbeat", "typing", "subscribe", "unsubscribe", "ack_envelopes", "read"]
BIG = 2**70
LONG_DIGITS = "9" * 5000  # past Python's int-from-string limit (4,300 digits)
NESTED: object = {"x": 1}
for _ in range(60):
    NESTED = {"x": NESTED}

PAYLOADS = [
    None,
    [],
    "text",
    BIG,
    {},
    {"anime_id": BIG},
    {"anime_id": -BIG},
    {"anime_id": LONG_DIGITS},
    {"anime_id": "\x00"},
    {"collection_id": "\x00" * 100},
    {"conversation_id": LONG_DIGITS},
    {"channel_id": BIG},
    {"conversation_id": "1", "channel_id": "2"},
    {"status": "online", "activity": {"anime_id": BIG, "episode": BIG, "position_s": 1e308}},
    {"status": "online", "activity": {"anime_id": 1, "episode": -1, "position_s": -1.0}},
    {"status": "\x00"},
    {"status": "online", "activity": {"anime_id": 1, "episode": 1, "position_s": 0, "x": 1}},
    {
        "status": "online",
        "activity": {"anime_id": 1, "episode": 1, "position_s": 0, "party_id": "\ud800"},
    },
    NESTED,
]
assert len(PAYLOADS) * 2 < EVENTS_PER_WINDOW  # one socket per event stays inside its budget


@pytest.mark.parametrize("event", EVENTS)
async def test_no_event_payload_reaches_an_internal_failure(client, live, event):
    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    failures = []
    try:
        for payload in PAYLOADS:
            try:
                ack = await socket.emit(event, payload, timeout=3)
            except socketio.exceptions.TimeoutError:
                ack = "no ack"
            well_formed = isinstance(ack, dict) and isinstance(ack.get("ok"), bool)
            if not well_formed or (not ack["ok"] and ack["error"]["code"] == "unavailable"):
                failures.append(f"{event} {str(payload)[:80]} → {str(ack)[:160]}")
        assert not socket.disconnected.is_set(), "the socket was closed"
    finally:
        await socket.close()
    assert not failures, "\n".join(failures)


async def test_text_a_handler_could_not_store_is_refused_before_it(client, live):
    """NUL (which no text column stores) and lone surrogates (which are not Unicode) are
    refused for every event, as REST refuses them; numbers are bounded like the catalog's."""
    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    watching = {"anime_id": 1, "episode": 1, "position_s": 0.0}
    try:
        for party_id, message in (("a\x00", "NUL"), ("\ud800", "Unicode")):
            beat = {"status": "online", "activity": {**watching, "party_id": party_id}}
            ack = await socket.emit("heartbeat", beat)
            assert ack["ok"] is False and ack["error"]["code"] == "validation_failed"
            assert message in ack["error"]["message"]
        plain = {"status": "online", "activity": {**watching, "party_id": "the \\u0000 text"}}
        assert (await socket.emit("heartbeat", plain))["ok"] is True
        for field, value in (("anime_id", 2**31), ("episode", -1), ("position_s", 1e9)):
            beat = {"status": "online", "activity": {**watching, field: value}}
            ack = await socket.emit("heartbeat", beat)
            assert ack["error"]["code"] == "validation_failed", (field, ack)
        ack = await socket.emit("subscribe", {"anime_id": 2**31})
        assert ack["error"]["code"] == "validation_failed"
    finally:
        await socket.close()
