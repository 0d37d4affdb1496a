"""Delivery: one task per process tails the event log and hands each event, in log order,
to the local sockets subscribed to one of its topics (gateway.md "Dispatch", "Delivery
across processes").

Durable events never go through python-socketio's pub/sub: every process reads the log
itself, so losing a process loses only its connections. An event is encoded once and the
same Engine.IO packet is queued on each recipient.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from gateway.bots import bot_payload, uncovered_intents
from gateway.connections import MAX_PENDING, Connection, Registry
from server.events import LoggedEvent
from server.realtime import GATEWAY_DISCONNECT, INTERNAL_EVENTS, SUBSCRIPTIONS_CHANGED
from server.redis_client import REDIS_DOWN_ERRORS
from server.services import Services

log = logging.getLogger("anilay.gateway")

READ_BATCH = 500
# Slow consumers (gateway.md): more than this many packets or bytes waiting → disconnected.
MAX_QUEUED_PACKETS = 1_000
MAX_QUEUED_BYTES = 1024 * 1024
BYTES_CHECKED_FROM = 64  # below this many queued packets the byte count cannot be over
BLOCK_MS = 1000
RECENT_UIDS = 20_000  # drop the rare duplicate an at-least-once append can make
YIELD_EVERY = 32  # events between yields to the sockets' writer tasks


class Dispatcher:
    def __init__(self, services: Services, sio: socketio.AsyncServer, registry: Registry) -> None:
        self.services = services
        self.sio = sio
        self.registry = registry
        self.position = "0-0"
        self.started = asyncio.Event()
        self._recent: OrderedDict[int, None] = OrderedDict()
        self.delivered = 0

    async def run(self) -> None:
        """Tail the log from where it stands now, forever."""
        self.position = await self.services.log.last_id()
        self.started.set()
        backoff = 0.1
        while True:
            try:
                batch = await self.services.log.read_after(self.position, READ_BATCH, BLOCK_MS)
                backoff = 0.1
            except REDIS_DOWN_ERRORS as error:
                log.warning("event log unreachable, retrying: %s", error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for index, event in enumerate(batch, 1):
                self.position = event.id
                try:
                    await self.dispatch(event)
                except Exception:  # one bad event must not stop delivery of the rest
                    log.exception("dispatch of %s %s failed", event.type, event.id)
                # Queuing a packet never yields. Let the sockets' writers drain now and
                # then, or a burst would push healthy clients past the slow-consumer bound;
                # not after every event, which wakes every writer once per event.
                if index % YIELD_EVERY == 0:
                    await asyncio.sleep(0)

    async def dispatch(self, event: LoggedEvent) -> None:
        if event.uid in self._recent:
            return
        self._recent[event.uid] = None
        if len(self._recent) > RECENT_UIDS:
            self._recent.popitem(last=False)
        if event.type in INTERNAL_EVENTS:
            await self._internal(event)
            return
        recipients = self.registry.recipients(event.targets.topics)
        if recipients:
            await self.deliver(event, recipients)
        if event.type == "SESSION_REVOKED":
            await self._close_auth_session(event, recipients)
        elif event.type in ("API_KEY_REVOKED", "API_KEY_UPDATE"):
            await self._recheck_bots(event)

    async def deliver(self, event: LoggedEvent, recipients: list[Connection]) -> None:
        packets: dict[tuple[str, int | None], Any] = {}
        for connection in recipients:
            if connection.closing:
                continue
            if not connection.live:
                if len(connection.pending) >= MAX_PENDING:
                    await self.close(connection, "slow_consumer", "Too far behind")
                    continue
                connection.pending.append(event)
                continue
            key = connection.fresh(event)
            if key is None:
                continue
            variant = (connection.namespace, connection.intents)
            if variant not in packets:
                payload = payload_for(connection, event)
                packets[variant] = (
                    None
                    if payload is None
                    else self.encode_raw(event.type, payload, connection.namespace)
                )
            encoded = packets[variant]
            connection.last_delivered = key
            if encoded is None:
                continue  # a bot whose intents exclude this event class
            if self.backed_up(connection):
                await self.close(connection, "slow_consumer", "Too many undelivered events")
                continue
            await self.send(connection, encoded)
            self.delivered += 1

    def encode_raw(self, name: str, payload: Any, namespace: str) -> list:
        pkt = self.sio.packet_class(sio_packet.EVENT, namespace=namespace, data=[name, payload])
        encoded = pkt.encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, part) for part in encoded]

    def backed_up(self, connection: Connection) -> bool:
        """Whether the socket's outbound queue is past the bound (python-engineio's queue is
        unbounded: without this a stalled client would grow our memory without limit, G8)."""
        socket = self.sio.eio.sockets.get(connection.eio_sid)
        if socket is None:
            return False
        queued = socket.queue.qsize()
        if queued > MAX_QUEUED_PACKETS:
            return True
        if queued < BYTES_CHECKED_FROM:
            return False
        waiting = getattr(socket.queue, "_queue", ())
        size = sum(
            len(p.data) if isinstance(p.data, (str, bytes)) else 0
            for p in list(waiting)
            if p is not None
        )
        return size > MAX_QUEUED_BYTES

    async def send(self, connection: Connection, packets: list) -> None:
        for part in packets:
            await self.sio._send_eio_packet(connection.eio_sid, part)

    async def emit_one(self, connection: Connection, name: str, payload: Any) -> None:
        await self.send(connection, self.encode_raw(name, payload, connection.namespace))

    async def deliver_one(self, connection: Connection, event: LoggedEvent) -> bool:
        """Deliver to one connection outside the tailer (replay, flush); False if nothing
        was sent (a repeat, or a class the connection may not see)."""
        key = connection.fresh(event)
        if key is None:
            return False
        connection.last_delivered = key
        payload = payload_for(connection, event)
        if payload is None:
            return False
        await self.send(connection, self.encode_raw(event.type, payload, connection.namespace))
        return True

    async def go_live(self, connection: Connection) -> None:
        """Flush what arrived while READY or the replay was sent, then deliver live."""
        while connection.pending:
            waiting, connection.pending = connection.pending, []
            for event in waiting:
                if not connection.closing:
                    await self.deliver_one(connection, event)
        connection.live = True  # no await between the last check and this line

    async def close(self, connection: Connection, code: str, message: str) -> None:
        if connection.closing:
            return
        connection.closing = True
        try:
            await self.emit_one(connection, "DISCONNECTING", {"code": code, "message": message})
        finally:
            await self.sio.disconnect(
                connection.sid, namespace=connection.namespace, ignore_queue=True
            )

    async def _close_auth_session(self, event: LoggedEvent, told: list[Connection]) -> None:
        """Close the sockets of the revoked session: they are among those the event went
        to (its `user:{id}` topic), so no index by auth session is kept per socket."""
        session_id = int(event.data["session_id"])
        for connection in told:
            if connection.auth_session_id == session_id:
                await self.close(connection, "session_revoked", "This session has ended")

    async def _recheck_bots(self, event: LoggedEvent) -> None:
        """auth.md R25, R26: a revoked key's bot sockets close; narrowed scopes close the
        sockets whose intents they no longer cover."""
        if event.type == "API_KEY_REVOKED":
            key_id, scopes = int(event.data["key_id"]), None
        else:
            key_id, scopes = int(event.data["key"]["id"]), frozenset(event.data["key"]["scopes"])
        for connection in list(self.registry.by_sid.values()):
            if connection.identity.api_key_id != key_id or connection.intents is None:
                continue
            if scopes is None:
                await self.close(connection, "api_key_revoked", "The API key was revoked")
            elif uncovered_intents(connection.intents, scopes):
                await self.close(
                    connection,
                    "intent_not_allowed",
                    "The key's scopes no longer cover these intents",
                )

    async def _internal(self, event: LoggedEvent) -> None:
        if event.type == GATEWAY_DISCONNECT:
            for connection in self.registry.of_user(int(event.data["user_id"])):
                await self.close(connection, event.data["code"], event.data["message"])
        elif event.type == SUBSCRIPTIONS_CHANGED:
            for connection in self.registry.of_user(int(event.data["user_id"])):
                for topic in event.data.get("remove", []):
                    self.registry.unsubscribe(connection, topic)
                    await self.sio.leave_room(connection.sid, topic, connection.namespace)
                for topic in event.data.get("add", []):
                    self.registry.subscribe(connection, topic)
                    await self.sio.enter_room(connection.sid, topic, connection.namespace)


def payload_for(connection: Connection, event: LoggedEvent) -> dict[str, Any] | None:
    if connection.intents is not None:
        return bot_payload(event, connection.intents)
    return {"id": event.id, "ts": event.ts, "data": event.data}


def _drop_queue(socket) -> None:
    waiting = getattr(socket.queue, "_queue", None)
    if waiting is not None:
        waiting.clear()
