"""The password policy (auth.md R3): length after NFKC, not common, not the identity."""

from __future__ import annotations

import functools
from pathlib import Path

from server.errors import ApiError, Code, FieldError
from server.passwords import MAX_LENGTH, MIN_LENGTH, normalize_password

COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")


@functools.cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def password_weakness(password: str, *, username: str | None, email: str | None) -> str | None:
    """The reason a password is refused, or None."""
    text = normalize_password(password)
    if len(text) < MIN_LENGTH:
        return "too_short"
    if len(text) > MAX_LENGTH:
        return "too_long"
    lowered = text.lower()
    if lowered in common_passwords():
        return "common"
    identity = {value.lower() for value in (username, email) if value}
    if email and "@" in email:
        identity.add(email.split("@", 1)[0].lower())
    if lowered in identity:
        return "contains_identity"
    return None


def check_password(
    password: str, *, username: str | None, email: str | None, field: str = "password"
) -> None:
    reason = password_weakness(password, username=username, email=email)
    if reason is not None:
        raise ApiError(
            Code.weak_password,
            f"Choose a stronger password ({reason})",
            errors=[FieldError(field, reason)],
            extra={"reason": reason},
        )
