"""Usernames for accounts made from a provider profile (auth.md R16, users.md R1)."""

from __future__ import annotations

import re
import secrets
import unicodedata

from models.users import check_display_name, username_claimable, username_problem
from server.errors import ApiError
from server.services import Services

# Russian first (most Anilay users sign in with Cyrillic nicknames): U+0430..U+044F in
# alphabet order, then ё and the Ukrainian letters.
# fmt: off
_CYRILLIC_LATIN = (
    "a", "b", "v", "g", "d", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o", "p",
    "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "yu", "ya",
)
# fmt: on
_TRANSLIT = {chr(0x430 + i): latin for i, latin in enumerate(_CYRILLIC_LATIN)} | {
    "\u0451": "e",
    "\u0456": "i",
    "\u0457": "yi",
    "\u0454": "ye",
    "\u0491": "g",
}


def username_from_nickname(nickname: str | None) -> str:
    """A provider nickname turned into username characters (`[A-Za-z0-9_]`, ≤ 32); may come
    out empty, too short or without a letter."""
    if not nickname:
        return ""
    out = []
    for char in nickname:
        latin = _TRANSLIT.get(char.lower())
        if latin is None:
            out.append(char)
        else:
            out.append(latin.capitalize() if char.isupper() else latin)
    text = unicodedata.normalize("NFKD", "".join(out)).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9_]+", "_", text)
    text = re.sub(r"_+", "_", text).strip("_")
    return text[:32].rstrip("_")


async def pick_username(services: Services, nickname: str | None) -> str:
    """The sanitized nickname if free, else it (or `user`) with a `_NNNN` suffix (R16)."""
    base = username_from_nickname(nickname)
    if username_problem(base) is None and await username_claimable(services.db, base):
        return base
    stem = base[:27].rstrip("_")
    if not any(c.isalpha() for c in stem) or username_problem(f"{stem}_0000") is not None:
        stem = "user"
    for _ in range(20):
        candidate = f"{stem}_{secrets.randbelow(10_000):04d}"
        if await username_claimable(services.db, candidate):
            return candidate
    return f"user_{secrets.token_hex(6)}"


def display_name_from(nickname: str | None) -> str | None:
    if not nickname:
        return None
    try:
        return check_display_name(nickname[:64])
    except ApiError:
        return None
