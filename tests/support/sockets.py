"""A Socket.IO test client that records every event it receives, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

WS_PATH = "/api/v1/ws"


class Recorder:
    def __init__(self, url: str, namespace: str = "/") -> None:
        self.url = url
        self.namespace = namespace
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.refused: list[Any] = []
        self.disconnected = asyncio.Event()
        self._changed = asyncio.Condition()

        async def anything(event: str, data: Any = None) -> None:
            async with self._changed:
                self.events.append((event, data))
                self._changed.notify_all()

        async def on_disconnect(reason: Any = None) -> None:
            self.disconnected.set()
            async with self._changed:
                self._changed.notify_all()

        self.client.on("*", anything, namespace=namespace)
        self.client.on("connect_error", lambda data: self.refused.append(data), namespace=namespace)
        self.client.on("disconnect", on_disconnect, namespace=namespace)

    async def connect(self, auth: dict[str, Any], transport: str = "websocket") -> Recorder:
        await self.client.connect(
            self.url,
            socketio_path=WS_PATH,
            namespaces=[self.namespace],
            auth=auth,
            transports=[transport],
            wait_timeout=5,
        )
        return self

    async def close(self) -> None:
        await self.client.disconnect()

    async def drop(self) -> None:
        """Lose the connection abruptly, as a network failure would (no clean close)."""
        eio = self.client.eio
        if eio.ws is not None:
            await eio.ws.close()
        await eio._reset() if hasattr(eio, "_reset") else None
        await self.client.disconnect()

    async def emit(self, event: str, data: Any = None, timeout: float = 5) -> Any:
        return await self.client.call(event, data, namespace=self.namespace, timeout=timeout)

    def of(self, event_type: str) -> list[Any]:
        return [data for name, data in self.events if name == event_type]

    async def wait_for(self, event_type: str, count: int = 1, timeout: float = 5) -> list[Any]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.of(event_type)) >= count)
        return self.of(event_type)

    async def wait_disconnected(self, timeout: float = 5) -> None:
        await asyncio.wait_for(self.disconnected.wait(), timeout)


async def connect(live, token: str, namespace: str = "/", **auth: Any) -> Recorder:
    recorder = Recorder(live.url, namespace)
    await recorder.connect({"token": token, **auth})
    return recorder
