"""Gateway test helpers: a test event type, publishing, and a scripted social graph."""

from __future__ import annotations

import msgspec
import pytest

from models import social_graph
from server.events import event_type, make_event


class Probe(msgspec.Struct):
    n: int


PROBE = event_type("TEST_PROBE", Probe)


async def publish(services, n: int, *topics: str):
    """Append one TEST_PROBE event for `topics` (as a committed REST write would)."""
    await services.bus.publish([make_event(PROBE, Probe(n=n), list(topics))])


class ScriptedGraph(social_graph.SocialGraph):
    def __init__(self) -> None:
        self.friends: dict[int, set[int]] = {}

    def befriend(self, a: int, b: int) -> None:
        self.friends.setdefault(a, set()).add(b)
        self.friends.setdefault(b, set()).add(a)

    async def friend_ids(self, services, user_id: int) -> set[int]:
        return set(self.friends.get(user_id, set()))


@pytest.fixture
def graph():
    scripted = ScriptedGraph()
    previous = social_graph.register_social_graph(scripted)
    yield scripted
    social_graph.register_social_graph(previous)
