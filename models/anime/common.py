"""What collections and comments share (anime.md §3, §4): opaque signed cursors, the staff
audit hook, text checks, and the topic public events go to.

Opaque cursors (anime.md Conventions): a list in any order but time returns `next_cursor`,
which holds the sort key and id of the last item. It is signed with an HMAC derived from the
deployment's key-encryption key, so every process of one deployment accepts the cursors of the
others, and a cursor that was edited, cut short or minted for another list is a 422 on
`cursor` instead of a silently different page.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import sqlalchemy as sa

from server.db import Transaction
from server.errors import ApiError, Code, FieldError
from server.secrets import b64url, b64url_decode
from server.services import Services
from server.tokens import load_key_encryption_key

# Bots with the PUBLIC_ACTIVITY intent (gateway.md "Bots") receive the events sent here.
PUBLIC_ACTIVITY_TOPIC = "public_activity"

CURSOR_MAX = 200
_CURSOR_VERSION = 1
_MAC_BYTES = 12
_cursor_keys: dict[tuple[str | None, str], bytes] = {}


def _cursor_key(services: Services) -> bytes:
    settings = services.settings
    source = (settings.key_encryption_key, settings.key_encryption_key_file)
    key = _cursor_keys.get(source)
    if key is None:
        kek = load_key_encryption_key(*source)
        key = _cursor_keys[source] = hmac.new(kek, b"anilay/anime/cursor/v1", "sha256").digest()
    return key


def encode_cursor(services: Services, scope: str, *values: int) -> str:
    """A signed cursor over `values` (sort key, id, ...) valid only for lists of `scope`."""
    body = b64url(msgspec.json.encode([_CURSOR_VERSION, scope, *values]))
    mac = hmac.new(_cursor_key(services), body.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    cursor = f"{body}.{b64url(mac)}"
    assert len(cursor) <= CURSOR_MAX, cursor
    return cursor


def decode_cursor(services: Services, cursor: str, scope: str, count: int) -> list[int]:
    """The `count` integers a cursor of `scope` holds; 422 on `cursor` for anything else."""
    try:
        body, _, mac = cursor.partition(".")
        expected = hmac.new(_cursor_key(services), body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(b64url_decode(mac), expected[:_MAC_BYTES]):
            raise ValueError("bad signature")
        version, found_scope, *values = msgspec.json.decode(b64url_decode(body))
    except (ValueError, TypeError, msgspec.DecodeError):
        raise bad_cursor() from None
    if (
        version != _CURSOR_VERSION
        or found_scope != scope
        or len(values) != count
        or not all(type(v) is int and -(2**63) <= v < 2**63 for v in values)
    ):
        raise bad_cursor()
    return values


def bad_cursor() -> ApiError:
    return ApiError(
        Code.validation_failed,
        "This cursor is not valid for this list; start again without it",
        errors=[FieldError("cursor", "Invalid or tampered cursor")],
    )


def keyset_after(key: sa.ColumnElement, id_column: sa.ColumnElement, last_key: Any, last_id: int):
    """Rows after (last_key, last_id) in `key DESC, id DESC` order."""
    return sa.or_(key < last_key, sa.and_(key == last_key, id_column < last_id))


# --- text -----------------------------------------------------------------------------------


def clean_text(
    value: str,
    field: str,
    *,
    maximum: int,
    minimum: int = 0,
    multiline: bool = False,
    max_line_breaks: int | None = None,
) -> str:
    """NFC, CRLF → LF, trimmed, length in code points, no control characters (a single-line
    field allows none; a multi-line one allows `\\n` and `\\t`). 422 naming `field`."""
    text = unicodedata.normalize("NFC", value.replace("\r\n", "\n")).strip()
    if not minimum <= len(text) <= maximum:
        raise _field(field, f"{minimum}-{maximum} characters after trimming")
    allowed = ("\n", "\t") if multiline else ()
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in text):
        raise _field(field, "control characters are not allowed")
    if max_line_breaks is not None and text.count("\n") > max_line_breaks:
        raise _field(field, f"at most {max_line_breaks} line breaks")
    return text


def _field(field: str, message: str) -> ApiError:
    return ApiError(
        Code.validation_failed, f"{field}: {message}", errors=[FieldError(field, message)]
    )


_LIKE_SPECIAL = re.compile(r"([\\%_])")


def like_contains(needle: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching `needle` anywhere."""
    return "%" + _LIKE_SPECIAL.sub(r"\\\1", needle) + "%"


def search_form(text: str) -> str:
    """The case-folded form titles are stored and searched in (both engines compare it
    byte-wise, so Cyrillic matches case-insensitively on SQLite too)."""
    return unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")  # noqa: RUF001


# --- staff audit (admin.md "audit.record") ----------------------------------------------------


class StaffAction(msgspec.Struct, frozen=True):
    """One staff action taken outside admin routes: a read of a non-public collection, a
    moderator's delete. admin.md's `audit.record` registers itself in AUDIT_HOOKS and writes
    one audit row per action, in the transaction of the action."""

    actor_id: int
    actor_role: str
    action: str  # collection.read, collection.delete, comment.remove
    target_type: str
    target_id: str
    ip: str | None = None
    user_agent: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


AuditHook = Callable[[Services, Transaction, StaffAction], Awaitable[None]]
AUDIT_HOOKS: list[AuditHook] = []


async def record_staff_action(services: Services, tx: Transaction, action: StaffAction) -> None:
    for hook in AUDIT_HOOKS:
        await hook(services, tx, action)


class Origin(msgspec.Struct, frozen=True):
    """Where a request came from, for audit rows (auth.md R19)."""

    ip: str | None = None
    user_agent: str | None = None
