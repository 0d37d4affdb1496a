"""Presence: transitions from heartbeats, disconnects and expiry (gateway.md "Presence").

A user's shown status is the most active of their sessions (online > dnd > idle; an
invisible session counts as absent), the activity that of the most recent heartbeat that
carried one. Only a transition emits PRESENCE_UPDATE, to friends only; a position change
alone, or the same heartbeat again, emits nothing. A disconnect leaves the entry 10 s to be
replaced (a resume or deploy does not flap), expiry removes it after 45 s without a beat.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from models import social_graph
from server.events import event_type, make_event, rfc3339
from server.presence import ENTRY_TTL_S, PresenceEntry
from server.services import Services

RECONNECT_GRACE_S = 10.0
STATUS_RANK = {"online": 3, "dnd": 2, "idle": 1}


class PresenceUpdate(msgspec.Struct):
    user_id: str
    status: str  # online | idle | dnd | offline
    activity: dict[str, Any] | None
    since: str


PRESENCE_UPDATE = event_type("PRESENCE_UPDATE", PresenceUpdate)


class Shown(msgspec.Struct, frozen=True):
    status: str
    activity: dict[str, Any] | None
    since: float


def aggregate(entries: dict[str, PresenceEntry]) -> tuple[str, dict[str, Any] | None]:
    visible = [e for e in entries.values() if e.status in STATUS_RANK]
    if not visible:
        return "offline", None
    status = max(visible, key=lambda e: STATUS_RANK[e.status]).status
    carrying = [e for e in visible if e.activity is not None]
    activity = max(carrying, key=lambda e: e.activity_at or 0).activity if carrying else None
    return status, activity


def _comparable(activity: dict[str, Any] | None) -> tuple | None:
    """What makes an activity a different one: not the playback position."""
    if activity is None:
        return None
    return (activity.get("anime_id"), activity.get("episode"), activity.get("party_id"))


async def shown(services: Services, user_id: int) -> Shown:
    status, activity = aggregate(await services.presence.entries(user_id))
    return Shown(status=status, activity=activity, since=time.time())


async def beat(
    services: Services, user_id: int, session_id: str, status: str, activity: dict[str, Any] | None
) -> None:
    now = time.time()
    previous = await services.presence.get(user_id, session_id)
    activity_at = now if activity is not None else None
    if (
        activity is not None
        and previous is not None
        and previous.activity is not None
        and _comparable(previous.activity) == _comparable(activity)
    ):
        activity_at = previous.activity_at  # the same activity goes on: not "more recent"
    await services.presence.put(
        user_id,
        session_id,
        PresenceEntry(
            status=status,
            activity=activity,
            activity_at=activity_at,
            beat_at=now,
            expires_at=now + ENTRY_TTL_S,
        ),
    )
    # The steady case — the same status and activity again — cannot change what friends
    # see (other sessions' expiry is the sweeper's business): skip the aggregate.
    if (
        previous is not None
        and previous.status == status
        and _comparable(previous.activity) == _comparable(activity)
        and previous.expires_at > now
    ):
        return
    await publish_if_changed(services, user_id)


async def left(services: Services, user_id: int, session_id: str) -> None:
    """A socket closed: keep its entry for the reconnect grace, then let it expire."""
    entry = await services.presence.get(user_id, session_id)
    if entry is not None:
        await services.presence.put(
            user_id,
            session_id,
            msgspec.structs.replace(
                entry, expires_at=min(entry.expires_at, time.time() + RECONNECT_GRACE_S)
            ),
        )


async def sweep(services: Services) -> int:
    """Drop lapsed entries and publish the transitions they cause (run by the worker)."""
    lapsed = await services.presence.expired()
    for user_id in {user_id for user_id, _ in lapsed}:
        await publish_if_changed(services, user_id)
    return len(lapsed)


_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.Decoder(Shown).decode


async def publish_if_changed(services: Services, user_id: int) -> None:
    status, activity = aggregate(await services.presence.entries(user_id))
    raw = await services.presence.last_published(user_id)
    last = _decode(raw) if raw is not None else Shown("offline", None, 0.0)
    if last.status == status and _comparable(last.activity) == _comparable(activity):
        return
    now = time.time()
    await services.presence.set_last_published(
        user_id, None if status == "offline" else _encode(Shown(status, activity, now))
    )
    friends = await social_graph.friend_ids(services, user_id)
    if not friends:
        return
    if activity is not None and not await _shares_watching(services, user_id):
        if last.status == status:
            return  # only the hidden activity changed: friends see no difference
        activity = None
    event = make_event(
        PRESENCE_UPDATE,
        PresenceUpdate(
            user_id=str(user_id), status=status, activity=activity, since=rfc3339_from(now)
        ),
        [f"user:{friend}" for friend in sorted(friends)],
    )
    await services.bus.publish([event])


async def _shares_watching(services: Services, user_id: int) -> bool:
    from models.privacy import get_privacy

    return bool((await get_privacy(services, user_id)).share_watching)


def rfc3339_from(seconds: float) -> str:
    from datetime import UTC, datetime

    return rfc3339(datetime.fromtimestamp(seconds, UTC))


async def online_friends(services: Services, user_id: int) -> list[dict[str, Any]]:
    """READY's `presence`: friends who read as online, with what they share."""
    out = []
    for friend in sorted(await social_graph.friend_ids(services, user_id)):
        status, activity = aggregate(await services.presence.entries(friend))
        if status == "offline":
            continue
        if activity is not None and not await _shares_watching(services, friend):
            activity = None
        out.append({"user_id": str(friend), "status": status, "activity": activity})
    return out


async def _share_watching_turned_off(services: Services, tx, user_id: int, old, new) -> None:
    """users.md R4: turning `share_watching` off tells friends at once (activity: null)."""
    if not old.share_watching or new.share_watching:
        return
    status, activity = aggregate(await services.presence.entries(user_id))
    if status == "offline" or activity is None:
        return
    friends = await social_graph.friend_ids(services, user_id)
    if friends:
        tx.emit(
            make_event(
                PRESENCE_UPDATE,
                PresenceUpdate(
                    user_id=str(user_id),
                    status=status,
                    activity=None,
                    since=rfc3339_from(time.time()),
                ),
                [f"user:{friend}" for friend in sorted(friends)],
            )
        )


def _register_privacy_hook() -> None:
    from models.privacy import PRIVACY_CHANGE_HOOKS

    if _share_watching_turned_off not in PRIVACY_CHANGE_HOOKS:
        PRIVACY_CHANGE_HOOKS.append(_share_watching_turned_off)


_register_privacy_hook()
