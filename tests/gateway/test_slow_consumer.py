"""A slow consumer is cut off, and nobody else waits for it (gateway.md G8)."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.factories import register
from tests.gateway.conftest import publish
from tests.support.sockets import connect


async def stalled_polling_socket(live, token: str) -> str:
    """Open a long-polling Engine.IO session, join `/`, then never poll again."""
    async with httpx.AsyncClient(base_url=live.url) as http:
        opened = await http.get("/api/v1/ws/", params={"EIO": "4", "transport": "polling"})
        handshake = json.loads(opened.text[1:])
        sid = handshake["sid"]
        joined = await http.post(
            "/api/v1/ws/",
            params={"EIO": "4", "transport": "polling", "sid": sid},
            content="40" + json.dumps({"token": token}),
        )
        assert joined.status_code == 200
        first = await http.get(
            "/api/v1/ws/", params={"EIO": "4", "transport": "polling", "sid": sid}
        )
        assert "40" in first.text
    return sid


async def test_a_stalled_client_is_disconnected_and_others_keep_up(client, live):
    stalled, healthy = await register(client), await register(client)
    await stalled_polling_socket(live, stalled.access_token)
    async with asyncio.timeout(5):
        while not live.services.gateway.registry.of_user(stalled.id):
            await asyncio.sleep(0.02)
    watcher = await connect(live, healthy.access_token)
    await watcher.wait_for("READY")
    for n in range(1_100):
        await publish(live.services, n, f"user:{stalled.id}", f"user:{healthy.id}")
    events = await watcher.wait_for("TEST_PROBE", 1_100, timeout=20)
    assert [e["data"]["n"] for e in events] == list(range(1_100))
    async with asyncio.timeout(5):
        while live.services.gateway.registry.of_user(stalled.id):
            await asyncio.sleep(0.02)
    await watcher.close()
