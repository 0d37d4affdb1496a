"""The sockets this process serves, indexed by topic and by user.

A connection starts *pending*: events for it are buffered while READY (or the replay of a
resume) is sent, then flushed, and only then does it go *live*. Each connection remembers
the last event id it was given, so nothing is delivered twice at the seam between replay
and live delivery (gateway.md G2, G3).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from server.auth import Identity
from server.events import LoggedEvent
from server.log import parse_log_id

MAX_PENDING = 10_000  # a pending connection that falls this far behind is dropped


@dataclasses.dataclass(eq=False, slots=True)  # thousands per process: no __dict__ each
class Connection:
    sid: str
    eio_sid: str
    namespace: str
    identity: Identity
    session_id: str  # the gateway session (resumable), not the auth session
    topics: set[str]
    device_id: int | None = None
    live: bool = False
    pending: list[LoggedEvent] = dataclasses.field(default_factory=list)
    last_delivered: tuple[int, int] = (0, 0)
    status: str = "online"
    closing: bool = False
    intents: int | None = None  # bots only: the event classes this socket may receive

    @property
    def user_id(self) -> int:
        return self.identity.user_id

    @property
    def auth_session_id(self) -> int | None:
        return self.identity.session_id

    def fresh(self, event: LoggedEvent) -> tuple[int, int] | None:
        """The event's id if this connection has not had it yet, else None."""
        key = parse_log_id(event.id)
        return key if key is not None and key > self.last_delivered else None


class Registry:
    def __init__(self) -> None:
        self.by_sid: dict[str, Connection] = {}
        self.by_topic: defaultdict[str, set[str]] = defaultdict(set)
        self.by_user: defaultdict[int, set[str]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self.by_sid)

    def add(self, connection: Connection) -> None:
        self.by_sid[connection.sid] = connection
        self.by_user[connection.user_id].add(connection.sid)
        for topic in connection.topics:
            self.by_topic[topic].add(connection.sid)

    def remove(self, sid: str) -> Connection | None:
        connection = self.by_sid.pop(sid, None)
        if connection is None:
            return None
        _discard(self.by_user, connection.user_id, sid)
        for topic in connection.topics:
            _discard(self.by_topic, topic, sid)
        return connection

    def subscribe(self, connection: Connection, topic: str) -> None:
        connection.topics.add(topic)
        self.by_topic[topic].add(connection.sid)

    def unsubscribe(self, connection: Connection, topic: str) -> None:
        connection.topics.discard(topic)
        _discard(self.by_topic, topic, connection.sid)

    def recipients(self, topics: tuple[str, ...]) -> list[Connection]:
        """Connections subscribed to any of `topics`, each once, in a stable order."""
        if len(topics) == 1:
            sids = self.by_topic.get(topics[0], ())
            return [self.by_sid[s] for s in sids if s in self.by_sid]
        seen: dict[str, Connection] = {}
        for topic in topics:
            for sid in self.by_topic.get(topic, ()):
                if sid in self.by_sid:
                    seen.setdefault(sid, self.by_sid[sid])
        return list(seen.values())

    def of_user(self, user_id: int) -> list[Connection]:
        return [self.by_sid[s] for s in self.by_user.get(user_id, ()) if s in self.by_sid]


def _discard(index: defaultdict, key, sid: str) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(sid)
        if not members:
            del index[key]
