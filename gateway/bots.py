"""The bot namespace's rules (gateway.md "Bots", auth.md R23, R26; G11).

A bot connects with an API key and an intents bitmask; the key's scopes bound the intents.
It acts as its owner, but sees only the event classes its intents name: never direct
messages, envelopes, notifications or account events, and no message content without the
privileged MESSAGE_CONTENT intent.
"""

from __future__ import annotations

import enum
from typing import Any

from server.events import LoggedEvent
from server.realtime import PUBLIC_ACTIVITY_TOPIC


class Intent(enum.IntFlag):
    SERVERS = 1 << 0
    SERVER_MESSAGES = 1 << 1
    MESSAGE_CONTENT = 1 << 2
    REACTIONS = 1 << 3
    PRESENCE = 1 << 4
    PUBLIC_ACTIVITY = 1 << 5
    PARTIES = 1 << 6


ALL_INTENTS = int(max(Intent)) * 2 - 1
SCOPE_OF_INTENT = {
    Intent.SERVERS: "servers:read",
    Intent.SERVER_MESSAGES: "servers:read",
    Intent.REACTIONS: "servers:read",
    Intent.MESSAGE_CONTENT: "messages:content",
    Intent.PRESENCE: "presence:read",
    Intent.PARTIES: "parties:read",
}
CONTENT_FIELDS = ("content", "embeds", "attachments")


def uncovered_intents(intents: int, scopes: frozenset[str]) -> list[str]:
    """Names of the requested intents the key's scopes do not cover."""
    return [
        intent.name or ""
        for intent in Intent
        if intents & intent and SCOPE_OF_INTENT.get(intent) not in (None, *scopes)
    ]


def required_intent(event: LoggedEvent) -> Intent | None:
    """The intent an event class needs, or None when bots never receive it."""
    name, data = event.type, event.data
    if name == "PRESENCE_UPDATE":
        return Intent.PRESENCE
    if (
        name.startswith(("SERVER_", "ROLE_", "CHANNEL_", "INVITE_"))
        or name == "PERMISSIONS_CHANGED"
    ):
        return Intent.SERVERS
    in_channel = isinstance(data, dict) and data.get("channel_id") is not None
    if name.startswith("MESSAGE_") and in_channel:
        return Intent.SERVER_MESSAGES
    if name.startswith("REACTION_") and in_channel:
        return Intent.REACTIONS
    if name.startswith("PARTY_"):
        return Intent.PARTIES
    if name in ("COMMENT_CREATE", "COLLECTION_PUBLISH", "CHANGELOG_PUBLISH"):
        return Intent.PUBLIC_ACTIVITY
    return None  # DMs, envelopes, notifications, wallet, sessions, account: never


def bot_payload(event: LoggedEvent, intents: int) -> dict[str, Any] | None:
    """What a bot with `intents` may see of `event`, or None for nothing at all."""
    needed = required_intent(event)
    if needed is None or not intents & needed:
        return None
    data = event.data
    if needed is Intent.SERVER_MESSAGES and not intents & Intent.MESSAGE_CONTENT:
        data = {key: value for key, value in data.items() if key not in CONTENT_FIELDS}
    return {"id": event.id, "ts": event.ts, "data": data}


def bot_topics(owner_id: int, intents: int) -> set[str]:
    topics: set[str] = set()
    if intents & Intent.PRESENCE:
        topics.add(f"user:{owner_id}")  # the owner's friends' presence arrives here
    if intents & Intent.PUBLIC_ACTIVITY:
        topics.add(PUBLIC_ACTIVITY_TOPIC)
    return topics
