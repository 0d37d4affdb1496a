"""anime.md R8: how a list write becomes an entry (N1-N8), as pure functions of the entry
before, the fields the request sent and the anime. L3 uses them strictly, imports leniently
(L8); L5's increment is the same rules written as one conditional UPDATE (writes.py)."""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from typing import Any

from models.anime.catalog.text import normalize_title
from models.anime.lists.tables import EPISODES_MAX, REWATCHES_MAX
from server.errors import validation_error

ASPECTS = ("status", "score", "episodes", "rewatches", "text")

# Characters a note may not hold: C0 controls other than tab and line breaks, DEL, lone
# surrogates and the two XML non-characters, so every note survives the MAL XML export.
_FORBIDDEN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


@dataclasses.dataclass(frozen=True)
class EntryState:
    """The values of an entry that list writes change."""

    status: str
    score: int
    episodes: int
    rewatches: int
    text: str | None
    started_on: date | None
    completed_on: date | None

    def aspects(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ASPECTS}


NEW_ENTRY = EntryState("planned", 0, 0, 0, None, None, None)


def state_of(row: dict[str, Any]) -> EntryState:
    return EntryState(
        status=row["status"],
        score=row["score"],
        episodes=row["episodes"],
        rewatches=row["rewatches"],
        text=row["text"],
        started_on=row["started_on"],
        completed_on=row["completed_on"],
    )


def bound(anime_row: dict[str, Any], prefix: str = "") -> int:
    """N2's B: the episode count if known, else the aired count if known, else 9999."""
    total = anime_row[prefix + "episodes"]
    aired = anime_row[prefix + "episodes_aired"]
    if total > 0:
        return min(total, EPISODES_MAX)
    if aired > 0:
        return min(aired, EPISODES_MAX)
    return EPISODES_MAX


def check_text(text: str | None) -> str | None:
    """A note as stored: an empty one is no note; forbidden characters are a 422."""
    if text is None or text == "":
        return None
    if _FORBIDDEN_TEXT.search(text):
        raise validation_error("text", "Control characters are not allowed")
    return text


def clean_text(text: str) -> str:
    """An imported note, leniently: forbidden characters dropped."""
    return _FORBIDDEN_TEXT.sub("", text)


def apply_put(
    previous: EntryState | None,
    changes: dict[str, Any],
    total: int,
    limit: int,
    today: date,
) -> EntryState:
    """L3: the entry after `changes` (a subset of ASPECTS, already range-checked: N1).

    `total` is `anime.episodes` (0 = unknown), `limit` is B. In order: N2 clamps episodes;
    with `status` sent, N3 fills a completed entry and N4 restarts a rewatch; without it,
    the first of N5-N8 that applies moves the status. Two readings of the spec, stated:
    "status set to X" means a change to X (re-sending `rewatching` keeps the progress), and
    ending a rewatch by setting `completed` counts the rewatch just as N5 does, unless the
    request sets `rewatches` itself.
    """
    base = previous or NEW_ENTRY
    before_status = previous.status if previous else None
    before_episodes = base.episodes
    status = changes.get("status", base.status)
    episodes = min(changes.get("episodes", base.episodes), limit)  # N2
    rewatches = changes.get("rewatches", base.rewatches)
    bump_rewatch = False
    if "status" in changes:
        if status == "rewatching" and before_status != "rewatching" and "episodes" not in changes:
            episodes = 0  # N4
        if status == "completed" and before_status == "rewatching":
            bump_rewatch = "rewatches" not in changes
    elif total > 0 and episodes == total and episodes != before_episodes:  # N5
        if status != "completed":
            bump_rewatch = status == "rewatching" and "rewatches" not in changes
            status = "completed"
    elif before_episodes == 0 and episodes > 0 and before_status in (None, "planned", "on_hold"):
        status = "watching"  # N6
    elif previous is not None and before_episodes > 0 and episodes == 0:
        if before_status != "rewatching":
            status = "planned"  # N7
    elif before_status == "completed" and total > 0 and episodes < total:
        status = "watching"  # N8
    if status == "completed" and total > 0:
        episodes = min(total, limit)  # N3, and R9's invariant for a completed entry
    if bump_rewatch:
        rewatches = min(rewatches + 1, REWATCHES_MAX)
    return _dated(
        EntryState(
            status=status,
            score=changes.get("score", base.score),
            episodes=episodes,
            rewatches=rewatches,
            text=changes.get("text", base.text),
            started_on=base.started_on,
            completed_on=base.completed_on,
        ),
        before_status,
        today,
    )


def _dated(state: EntryState, before_status: str | None, today: date) -> EntryState:
    """`started_on` once the entry is first watching or has episodes; `completed_on`
    whenever the status becomes completed."""
    started_on, completed_on = state.started_on, state.completed_on
    if started_on is None and (state.status == "watching" or state.episodes > 0):
        started_on = today
    if state.status == "completed" and before_status != "completed":
        completed_on = today
    return dataclasses.replace(state, started_on=started_on, completed_on=completed_on)


def apply_import(values: dict[str, Any], total: int, limit: int) -> EntryState:
    """An imported row (status always given, values already made lenient): N2 and N3; the
    dates are the file's."""
    episodes = min(values["episodes"], limit)
    if values["status"] == "completed" and total > 0:
        episodes = min(total, limit)
    return EntryState(
        status=values["status"],
        score=values["score"],
        episodes=episodes,
        rewatches=values["rewatches"],
        text=values["text"],
        started_on=values["started_on"],
        completed_on=values["completed_on"],
    )


def milestones(previous: EntryState | None, after: EntryState) -> list[tuple[str, int]]:
    """R12's game domain events a change causes, as (metric, cycle). A completion's cycle is
    c = rewatches + (1 if the status was rewatching), taken before the change."""
    before_status = previous.status if previous else None
    found: list[tuple[str, int]] = []
    if after.status == "completed" and before_status != "completed":
        base = previous or NEW_ENTRY
        found.append(("anime_completed", base.rewatches + (before_status == "rewatching")))
    if after.status == "dropped" and before_status != "dropped":
        found.append(("anime_dropped", 0))
    if after.score > 0 and (previous is None or previous.score == 0):
        found.append(("list_scored", 0))
    return found


def source_key(metric: str, anime_id: int, cycle: int) -> str:
    """game.md's dedupe key of a list metric."""
    if metric == "anime_completed":
        return f"complete:{anime_id}:{cycle}"
    if metric == "anime_dropped":
        return f"drop:{anime_id}"
    return f"score:{anime_id}"


# --- R3's title search, for L1's `q` ---------------------------------------------------------


def normalize_search(text: str) -> str:
    """anime.md R3's normalisation, the catalog's own: `anime.search_text` is built with it,
    so each token of a normalised query is a plain substring test."""
    return normalize_title(text)
