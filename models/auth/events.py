"""Events of the auth group (auth.md "Events"). Payloads never hold tokens or hashes."""

from __future__ import annotations

import msgspec

from server.events import event_type


class SessionInfo(msgspec.Struct):
    """An E8 session item (without `current`)."""

    id: str
    client: str
    device_name: str | None
    browser: str | None
    os: str | None
    last_ip: str
    auth_method: str
    created_at: str
    last_used_at: str
    authenticated_at: str


class SessionRevoked(msgspec.Struct):
    session_id: str
    reason: str


class SessionCreate(msgspec.Struct):
    session: SessionInfo


class AccountUpdate(msgspec.Struct):
    email: str | None
    email_verified: bool
    has_password: bool
    identities: list[str]


SESSION_REVOKED = event_type("SESSION_REVOKED", SessionRevoked)
SESSION_CREATE = event_type("SESSION_CREATE", SessionCreate)
ACCOUNT_UPDATE = event_type("ACCOUNT_UPDATE", AccountUpdate)
