"""Title normalisation for search (anime.md R3).

`normalize_title` is the one function both sides use: the importer builds `search_text`
from it and the search handlers normalise `q` with it, so a query and a title compare
equal exactly when their normalised forms do.

`search_text` holds every normalised title and synonym between `|` separators
(`|shingeki no kyojin|атака титанов|attack on titan|進撃の巨人|`). A normalised title has
only letters, digits and single spaces, so `|` never occurs inside one: a token (which has
no spaces) can never match across two titles, "a title equals q" is
`LIKE '%|q|%'` and "a title starts with q" is `LIKE '%|q%'`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

SEPARATOR = "|"
LIKE_ESCAPE = "\\"


def _is_word_character(char: str) -> bool:
    # Letters and digits, as R3 says; combining marks stay with the letter they modify
    # (NFKC composes most of them, but not in every script, e.g. Devanagari vowel signs).
    return char.isalnum() or unicodedata.category(char)[0] == "M"


def normalize_title(text: str | None) -> str:
    """NFKC, case-fold, `ё` becomes `е` (U+0435), and every run of other characters becomes
    one space."""  # noqa: RUF002
    if not text:
        return ""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    folded = folded.replace("ё", "\u0435")  # Cyrillic small ie
    out: list[str] = []
    pending_space = False
    for char in folded:
        if _is_word_character(char):
            if pending_space and out:
                out.append(" ")
            pending_space = False
            out.append(char)
        else:
            pending_space = True
    return "".join(out)


def query_tokens(q: str) -> tuple[str, list[str]]:
    """The normalised query and its tokens (no tokens: the query has no letter or digit)."""
    normalized = normalize_title(q)
    return normalized, normalized.split()


def build_search_text(titles: Iterable[str | None]) -> str:
    """`|title|title|…|` from the normalised, de-duplicated, non-empty titles, in order."""
    seen: list[str] = []
    for title in titles:
        normalized = normalize_title(title)
        if normalized and normalized not in seen:
            seen.append(normalized)
    return SEPARATOR + SEPARATOR.join(seen) + SEPARATOR if seen else SEPARATOR


def search_titles(row: dict) -> list[str | None]:
    """Every title of an anime row that search covers: the four names and the synonyms."""
    names = [row.get("name"), row.get("russian"), row.get("english"), row.get("japanese")]
    return [*names, *(row.get("synonyms") or [])]


def like_escape(text: str) -> str:
    """Escape LIKE wildcards (normalised text has none, but the pattern must not trust it)."""
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
