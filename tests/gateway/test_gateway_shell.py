"""The gateway is mounted at both Engine.IO paths with its three namespaces, and refuses
connections that carry no valid credential (gateway.md "Connecting")."""

from __future__ import annotations

import pytest
import socketio

from gateway.server import ENGINEIO_PATHS, NAMESPACES


@pytest.mark.parametrize("path", ENGINEIO_PATHS)
@pytest.mark.parametrize("namespace", NAMESPACES)
async def test_a_connection_without_a_valid_token_is_refused_with_a_reason(live, path, namespace):
    client = socketio.AsyncClient(reconnection=False)
    reasons = []
    client.on("connect_error", lambda data: reasons.append(data), namespace=namespace)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            live.url,
            socketio_path=path,
            namespaces=[namespace],
            auth={"token": "not-a-token"},
            transports=["websocket"],
            wait_timeout=5,
        )
    await client.disconnect()
    assert [r["code"] for r in reasons] == ["auth_failed"]


async def test_engineio_polling_handshake_answers_on_both_paths(client, live):
    import httpx

    async with httpx.AsyncClient(base_url=live.url) as http:
        for path in ENGINEIO_PATHS:
            response = await http.get(f"{path}/", params={"EIO": "4", "transport": "polling"})
            assert response.status_code == 200
            assert response.text.startswith("0{")  # the Engine.IO OPEN packet
