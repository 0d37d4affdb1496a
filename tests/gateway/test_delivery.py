"""Delivery: topics, order, resume (gateway.md G1-G5)."""

from __future__ import annotations

import asyncio
import random

from server.log import parse_log_id
from tests.factories import register
from tests.gateway.conftest import publish
from tests.support.sockets import connect


async def test_an_event_reaches_only_sockets_subscribed_to_its_topics(client, live):
    """G1: a user topic reaches that user's sockets only."""
    alice, bob = await register(client), await register(client)
    a = await connect(live, alice.access_token)
    b = await connect(live, bob.access_token)
    await a.wait_for("READY")
    await b.wait_for("READY")
    await publish(live.services, 1, f"user:{alice.id}")
    await publish(live.services, 2, f"user:{bob.id}")
    await publish(live.services, 3, "anime:5")  # nobody subscribed
    await publish(live.services, 4, f"user:{alice.id}", f"user:{bob.id}")
    await a.wait_for("TEST_PROBE", 2)
    await b.wait_for("TEST_PROBE", 2)
    await asyncio.sleep(0.1)
    assert [e["data"]["n"] for e in a.of("TEST_PROBE")] == [1, 4]
    assert [e["data"]["n"] for e in b.of("TEST_PROBE")] == [2, 4]
    await a.close()
    await b.close()


async def test_anime_topics_follow_subscribe_and_unsubscribe(client, live):
    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    assert await socket.emit("subscribe", {"anime_id": 5}) == {"ok": True, "topic": "anime:5"}
    await publish(live.services, 1, "anime:5")
    await socket.wait_for("TEST_PROBE")
    assert await socket.emit("unsubscribe", {"anime_id": 5}) == {"ok": True, "topic": "anime:5"}
    await publish(live.services, 2, "anime:5")
    await publish(live.services, 3, f"user:{account.id}")
    await socket.wait_for("TEST_PROBE", 2)
    assert [e["data"]["n"] for e in socket.of("TEST_PROBE")] == [1, 3]
    await socket.close()


async def test_losing_access_stops_delivery_before_the_next_event(client, live):
    """G1: SUBSCRIPTIONS_CHANGED applies in log order, before later events of the topic."""
    from server.realtime import subscriptions_changed

    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    async with live.services.db.transaction() as tx:
        subscriptions_changed(tx, account.id, add=["conversation:9"])
    await publish(live.services, 1, "conversation:9")
    async with live.services.db.transaction() as tx:
        subscriptions_changed(tx, account.id, remove=["conversation:9"])
    await publish(live.services, 2, "conversation:9")
    await publish(live.services, 3, f"user:{account.id}")
    await socket.wait_for("TEST_PROBE", 2)
    assert [e["data"]["n"] for e in socket.of("TEST_PROBE")] == [1, 3]
    assert not socket.of("SUBSCRIPTIONS_CHANGED"), "internal events never reach sockets"
    await socket.close()


async def test_events_arrive_in_log_order_with_increasing_ids(client, live):
    """G2."""
    account = await register(client)
    socket = await connect(live, account.access_token)
    await socket.wait_for("READY")
    for n in range(200):
        await publish(live.services, n, f"user:{account.id}")
    events = await socket.wait_for("TEST_PROBE", 200)
    assert [e["data"]["n"] for e in events] == list(range(200))
    ids = [parse_log_id(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 200
    await socket.close()


async def resume(live, account, session_id: str, last_event_id: str):
    return await connect(
        live,
        account.access_token,
        resume={"session_id": session_id, "last_event_id": last_event_id},
    )


async def test_resume_replays_exactly_what_was_missed(client, live):
    """G3: replay in order, then RESUMED, then live; no gap, no duplicate."""
    account = await register(client)
    topic = f"user:{account.id}"
    first = await connect(live, account.access_token)
    (ready,) = await first.wait_for("READY")
    await publish(live.services, 1, topic)
    (seen,) = await first.wait_for("TEST_PROBE")
    await first.close()
    for n in (2, 3, 4):
        await publish(live.services, n, topic)
    second = await resume(live, account, ready["session_id"], seen["id"])
    (resumed,) = await second.wait_for("RESUMED")
    assert resumed == {"session_id": ready["session_id"], "replayed": 3}
    await publish(live.services, 5, topic)
    await second.wait_for("TEST_PROBE", 4)
    names = [name for name, _ in second.events]
    assert names.index("RESUMED") == 3 and "READY" not in names
    assert [e["data"]["n"] for e in second.of("TEST_PROBE")] == [2, 3, 4, 5]
    await second.close()


async def test_resume_keeps_the_anime_topics_of_the_session(client, live):
    account = await register(client)
    first = await connect(live, account.access_token)
    (ready,) = await first.wait_for("READY")
    await first.emit("subscribe", {"anime_id": 77})
    await first.close()
    await publish(live.services, 1, "anime:77")
    second = await resume(live, account, ready["session_id"], ready["last_event_id"])
    await second.wait_for("RESUMED")
    assert [e["data"]["n"] for e in second.of("TEST_PROBE")] == [1]
    await second.close()


async def test_resume_with_another_users_session_reveals_nothing(client, live):
    """G5: refused exactly like an unknown session: INVALID_SESSION, then a fresh READY."""
    alice, mallory = await register(client), await register(client)
    a = await connect(live, alice.access_token)
    (ready,) = await a.wait_for("READY")
    await publish(live.services, 1, f"user:{alice.id}")
    await a.wait_for("TEST_PROBE")
    await a.close()
    stolen = await resume(live, mallory, ready["session_id"], ready["last_event_id"])
    unknown = await resume(live, mallory, "x" * 24, ready["last_event_id"])
    for socket in (stolen, unknown):
        await socket.wait_for("READY")
        assert [name for name, _ in socket.events] == ["INVALID_SESSION", "READY"]
        assert socket.of("INVALID_SESSION") == [{"resumable": False}]
        assert socket.of("READY")[0]["session_id"] != ready["session_id"]
        await socket.close()


async def test_resume_older_than_the_log_is_refused_not_partial(client, live):
    """G4: if any missed event was trimmed, no replay at all."""
    account = await register(client)
    topic = f"user:{account.id}"
    first = await connect(live, account.access_token)
    (ready,) = await first.wait_for("READY")
    await first.close()
    log = live.services.log
    saved = log.maxlen
    try:
        log.maxlen = 5
        for n in range(400):  # far past the bound (Redis trims by whole nodes of 100)
            await publish(live.services, n, topic)
        if hasattr(log, "client"):
            await log.client.xtrim(log.key, maxlen=5, approximate=False)
    finally:
        log.maxlen = saved
    second = await resume(live, account, ready["session_id"], ready["last_event_id"])
    await second.wait_for("READY")
    assert [name for name, _ in second.events][:2] == ["INVALID_SESSION", "READY"]
    assert second.of("TEST_PROBE") == []
    await second.close()


async def test_random_drops_while_events_stream_lose_and_repeat_nothing(client, live):
    """G3, randomized: a client disconnects at random points while events stream; after
    each resume, everything received is exactly the published events, in order."""
    account = await register(client)
    topic = f"user:{account.id}"
    rng = random.Random(20261128)
    published: list[int] = []
    received: list[int] = []
    socket = await connect(live, account.access_token)
    (ready,) = await socket.wait_for("READY")
    session_id, last_id = ready["session_id"], ready["last_event_id"]

    async def producer() -> None:
        for n in range(300):
            await publish(live.services, n, topic)
            published.append(n)
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random() * 0.01)

    streaming = asyncio.create_task(producer())
    for _ in range(6):
        await asyncio.sleep(rng.random() * 0.15)
        events = socket.of("TEST_PROBE")
        await socket.close()
        received.extend(e["data"]["n"] for e in events)
        if events:
            last_id = events[-1]["id"]
        socket = await resume(live, account, session_id, last_id)
        await socket.wait_for("RESUMED")
    await streaming
    await socket.wait_for("TEST_PROBE", len(published) - len(received), timeout=10)
    received.extend(e["data"]["n"] for e in socket.of("TEST_PROBE"))
    await socket.close()
    assert received == published
