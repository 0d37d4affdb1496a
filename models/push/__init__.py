"""Expo push: device tokens and delivery (auth.md P1–P4, R27–R34).

A device token belongs to one user and to the session that registered it: revoking that
session deletes it (R28), so a signed-out phone receives nothing. Producers never talk to
Expo: inside their transaction they call `request_push`, which emits the internal
PUSH_REQUEST event (topic `internal:push`, which no socket subscribes to). The worker's
`PushFanout` reads the event log, claims one `push_tickets` row per (push, token) *before*
sending — the unique index makes delivery at most once, so a replayed or redelivered request
sends nothing (R31) — gathers messages for up to 500 ms, and hands them to the Expo transport
(server.expo) in requests of at most 100. The receipts sweeper follows up 15 min later (R33).

Push never slows or fails the action that asked for it (R27): the producer only appends an
event; everything that can be slow or fail happens in the worker.

`tables` holds the tables and limits, `tokens` the device tokens (P1-P3), `delivery` the
event, the messages, the transport and P4, `fanout` the worker and the receipts sweeper.
"""

from models.push.delivery import (
    PUSH_REQUEST,
    PushRequest,
    PushRuntime,
    PushTestResult,
    build_message,
    build_transport,
    do_test_push,
    install_transport,
    push_runtime,
    push_status,
    request_push,
)
from models.push.fanout import PushFanout, sweep_receipts
from models.push.tables import RECEIPTS_EVERY_S, push_tickets, push_tokens
from models.push.tokens import (
    PushTokenView,
    check_push_token,
    delete_user_tokens,
    do_register_token,
    do_unregister_token,
    export_push_tokens,
    list_tokens,
    token_preview,
    token_view,
)

__all__ = [
    "PUSH_REQUEST",
    "RECEIPTS_EVERY_S",
    "PushFanout",
    "PushRequest",
    "PushRuntime",
    "PushTestResult",
    "PushTokenView",
    "build_message",
    "build_transport",
    "check_push_token",
    "delete_user_tokens",
    "do_register_token",
    "do_test_push",
    "do_unregister_token",
    "export_push_tokens",
    "install_transport",
    "list_tokens",
    "push_runtime",
    "push_status",
    "push_tickets",
    "push_tokens",
    "request_push",
    "sweep_receipts",
    "token_preview",
    "token_view",
]
