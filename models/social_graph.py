"""What the users group needs to know about friendships and blocks, which social.md owns.

Profiles (users.md R3), search (R7), privacy (R4) and the USER_UPDATE audience read the social
graph through these functions. Until the social domain exists a user has no friends, blocks
nobody and has no presence; the social domain plugs its real answers in with
`register_social_graph(...)` at import time and nothing here changes.
"""

from __future__ import annotations

from typing import Literal

from server.services import Services

Relationship = Literal["self", "none", "friends", "outgoing_request", "incoming_request"]


class SocialGraph:
    """The questions users.md asks of social.md; this base class answers "nobody, nothing".

    Every method may be called on a hot path (profile views, search, privacy checks), so an
    implementation should answer from an index or a cache.
    """

    async def friend_ids(self, services: Services, user_id: int) -> set[int]:
        """Ids of the users with an accepted friendship with `user_id`."""
        return set()

    async def blocked_ids(self, services: Services, user_id: int) -> set[int]:
        """Ids of the users in a block with `user_id`, in either direction."""
        return set()

    async def is_blocked(self, services: Services, a: int, b: int) -> bool:
        """A block between `a` and `b`, in either direction."""
        return b in await self.blocked_ids(services, a)

    async def relationship(self, services: Services, viewer_id: int, owner_id: int) -> Relationship:
        """social.md F8's status of `owner_id` as `viewer_id` sees it (without `blocked`)."""
        if viewer_id == owner_id:
            return "self"
        return "friends" if owner_id in await self.friend_ids(services, viewer_id) else "none"

    async def friends_count(self, services: Services, user_id: int) -> int:
        return len(await self.friend_ids(services, user_id))

    async def online(self, services: Services, user_id: int) -> bool:
        """Whether `user_id` reads as online to friends (social.md R13; invisible = offline)."""
        return False


_graph: SocialGraph = SocialGraph()


def register_social_graph(graph: SocialGraph) -> SocialGraph:
    """Make `graph` the answer to every question here; returns the one it replaced."""
    global _graph
    previous, _graph = _graph, graph
    return previous


def social_graph() -> SocialGraph:
    return _graph


async def friend_ids(services: Services, user_id: int) -> set[int]:
    return await _graph.friend_ids(services, user_id)


async def blocked_ids(services: Services, user_id: int) -> set[int]:
    return await _graph.blocked_ids(services, user_id)


async def is_blocked(services: Services, a: int, b: int) -> bool:
    return await _graph.is_blocked(services, a, b)
