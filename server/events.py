"""Events: the envelope every state change travels in, and the registry of their schemas.

A domain declares each event type once with `event_type("NAME", PayloadStruct)`; building an
event validates its payload against that schema, so a malformed event never reaches the log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from server.ids import new_id


class Targets(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who receives an event: gateway topics (`user:1`, `anime:5`, `staff`, ...)."""

    topics: tuple[str, ...]


class Event(msgspec.Struct, frozen=True):
    """An event as it is published; the log assigns `id` when it is appended.

    `uid` is a snowflake minted at creation: it survives retries (outbox, reconnects), so
    consumers can drop the rare duplicate that an at-least-once append can produce.
    """

    type: str
    targets: Targets
    data: dict[str, Any]
    ts: str
    uid: int


class LoggedEvent(msgspec.Struct, frozen=True):
    """An event read back from the log, with its log id (`<ms>-<seq>`, increasing)."""

    id: str
    type: str
    targets: Targets
    data: dict[str, Any]
    ts: str
    uid: int


_schemas: dict[str, type[msgspec.Struct]] = {}


def event_type(name: str, payload: type[msgspec.Struct]) -> str:
    """Declare an event type and its payload schema (once per name, at import time)."""
    if not name.isupper() or " " in name:
        raise ValueError(f"event types are UPPER_SNAKE: {name!r}")
    existing = _schemas.get(name)
    if existing is not None and existing is not payload:
        raise ValueError(f"event type {name} already declared with {existing.__name__}")
    _schemas[name] = payload
    return name


def event_schemas() -> dict[str, type[msgspec.Struct]]:
    return dict(_schemas)


def make_event(name: str, payload: msgspec.Struct, topics: list[str] | tuple[str, ...]) -> Event:
    """Build an event, checking the payload against the declared schema of `name`."""
    schema = _schemas.get(name)
    if schema is None:
        raise KeyError(f"undeclared event type {name}")
    if not isinstance(payload, schema):
        raise TypeError(f"{name} takes {schema.__name__}, got {type(payload).__name__}")
    if not topics:
        raise ValueError(f"{name} has no targets")
    return Event(
        type=name,
        targets=Targets(topics=tuple(topics)),
        data=msgspec.to_builtins(payload),
        ts=utc_now_text(),
        uid=new_id(),
    )


def validate_payload(name: str, data: dict[str, Any]) -> msgspec.Struct:
    """Check a logged payload against its schema (tests use this on every captured event)."""
    return msgspec.convert(data, _schemas[name], strict=True)


def utc_now_text() -> str:
    return rfc3339(datetime.now(UTC))


def rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: the one time format on the wire."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


encode_event = msgspec.msgpack.Encoder().encode
_decode_event = msgspec.msgpack.Decoder(Event).decode


def decode_event(blob: bytes) -> Event:
    return _decode_event(blob)
