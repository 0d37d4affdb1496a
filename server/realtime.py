"""The contract between REST and the gateway for access changes (gateway.md "Topics").

A REST handler that changes who may see a topic emits SUBSCRIPTIONS_CHANGED in its
transaction; the gateway applies it, in log order, before any later event of that topic,
so a user who lost access receives nothing more from it. GATEWAY_DISCONNECT closes a
user's sockets (a ban takes effect within a second, G12). Neither reaches a client.
"""

from __future__ import annotations

import msgspec

from server.db import Transaction
from server.events import event_type, make_event

INTERNAL_TOPIC = "internal:gateway"
# Public activity (new comments, public collections, changelog entries), for bots with the
# PUBLIC_ACTIVITY intent: producers add it to those events' targets.
PUBLIC_ACTIVITY_TOPIC = "public_activity"


class SubscriptionsChanged(msgspec.Struct):
    user_id: str
    add: list[str] = []
    remove: list[str] = []


class GatewayDisconnect(msgspec.Struct):
    user_id: str
    code: str
    message: str


SUBSCRIPTIONS_CHANGED = event_type("SUBSCRIPTIONS_CHANGED", SubscriptionsChanged)
GATEWAY_DISCONNECT = event_type("GATEWAY_DISCONNECT", GatewayDisconnect)
INTERNAL_EVENTS = frozenset({SUBSCRIPTIONS_CHANGED, GATEWAY_DISCONNECT, "PUSH_REQUEST"})


def subscriptions_changed(
    tx: Transaction, user_id: int, *, add: list[str] = (), remove: list[str] = ()
) -> None:
    tx.emit(
        make_event(
            SUBSCRIPTIONS_CHANGED,
            SubscriptionsChanged(user_id=str(user_id), add=list(add), remove=list(remove)),
            [INTERNAL_TOPIC],
        )
    )


def disconnect_user(tx: Transaction, user_id: int, code: str, message: str) -> None:
    tx.emit(
        make_event(
            GATEWAY_DISCONNECT,
            GatewayDisconnect(user_id=str(user_id), code=code, message=message),
            [INTERNAL_TOPIC],
        )
    )
