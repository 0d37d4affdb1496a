"""Which topics a socket may see at connect (gateway.md "Topics").

Every domain that owns a kind of topic (conversations, servers, channels) registers a
provider; the gateway asks all of them at connect and on resume, so access is checked
when a subscription is made. Later changes arrive as SUBSCRIPTIONS_CHANGED events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from server.auth import Identity
from server.services import Services

TopicProvider = Callable[[Services, Identity], Awaitable[set[str]]]
TOPIC_PROVIDERS: list[TopicProvider] = []
# Bots (the owner's servers and parties, by intent): (services, identity, intents) → topics.
BotTopicProvider = Callable[[Services, Identity, int], Awaitable[set[str]]]
BOT_TOPIC_PROVIDERS: list[BotTopicProvider] = []
MAX_ANIME_TOPICS = 20


async def base_topics(services: Services, identity: Identity) -> set[str]:
    topics = {f"user:{identity.user_id}", "announcements"}
    if identity.role == "admin":
        topics |= {"staff", "staff:support", "staff:admin"}
    elif identity.role == "moderator":
        topics |= {"staff", "staff:support"}
    return topics


TOPIC_PROVIDERS.append(base_topics)


async def topics_for(
    services: Services, identity: Identity, device_id: int | None = None
) -> set[str]:
    topics: set[str] = set()
    for provider in TOPIC_PROVIDERS:
        topics |= await provider(services, identity)
    if device_id is not None:
        topics.add(f"device:{identity.user_id}:{device_id}")
    return topics
