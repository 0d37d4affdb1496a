"""List writes: L3 (upsert), L4 (delete) and L5 (+1 episode, the game's hook).

Every write runs in one transaction that also appends its history rows (one per changed
aspect, R9) and queues its events, which leave only after the commit (nothing on a no-op
or a refusal). L3 is a compare-and-swap on `rev` (R10). L5 is a conditional increment —
`episodes = episodes + 1 WHERE status = :seen AND rewatches = :seen AND episodes < B` — so
N racing increments each apply once, clamped at B, and a rewatch completes exactly once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from models.anime.catalog_tables import anime
from models.anime.lists.rules import (
    ASPECTS,
    EntryState,
    apply_put,
    bound,
    milestones,
    source_key,
    state_of,
)
from models.anime.lists.shapes import (
    ANIME_EPISODE_WATCHED,
    ANIME_LIST_MILESTONE,
    ANIME_LIST_UPDATE,
    ANIME_PREFIX,
    AnimeListUpdate,
    Effects,
    EntryResult,
    EpisodeWatched,
    ListEntry,
    ListMilestone,
    anime_columns,
    entry_of,
)
from models.anime.lists.tables import (
    CAS_ATTEMPTS,
    EPISODE_ATTEMPTS,
    REWATCHES_MAX,
    anime_list_entry,
    anime_list_history,
    anime_list_idempotency,
)
from server.db import Transaction
from server.errors import ApiError, Code, FieldError
from server.events import make_event, rfc3339
from server.ids import new_id
from server.services import Services

log = logging.getLogger("anilay.anime_list")

entry_table = anime_list_entry
_e = anime_list_entry.c
_encode = msgspec.json.Encoder().encode


# --- the game's seam -------------------------------------------------------------------------

# game.md attaches here: called inside the L3/L5 transaction, after the list change, with the
# increment (L5 only) and R12's milestones; it returns the Effects the response carries. Its
# failure is logged and never undoes the list change (R11).
GameHook = Callable[
    [Services, Transaction, int, EpisodeWatched | None, list[ListMilestone]],
    Awaitable[Effects | None],
]
_game_hook: GameHook | None = None


def provide_game_hook(hook: GameHook | None) -> GameHook | None:
    """Install the game's hook (one at a time); returns the one it replaced."""
    global _game_hook
    previous, _game_hook = _game_hook, hook
    return previous


async def _run_game_hook(
    services: Services,
    user_id: int,
    episode: EpisodeWatched | None,
    found: list[ListMilestone],
) -> Effects:
    if _game_hook is None or (episode is None and not found):
        return Effects()
    try:
        async with services.db.transaction() as savepoint:
            return await _game_hook(services, savepoint, user_id, episode, found) or Effects()
    except ApiError:
        raise
    except Exception:  # a game bug must not cost the user their list change (R11)
        log.exception("the game hook failed for user %s", user_id)
        return Effects()


# --- reading what a write needs ----------------------------------------------------------------


def anime_not_found() -> ApiError:
    return ApiError(Code.anime_not_found, "This anime is not in the catalog")


def entry_not_found() -> ApiError:
    return ApiError(Code.entry_not_found, "This anime is not in your list")


async def load_anime(services: Services, anime_id: int) -> dict[str, Any]:
    """The catalog row, with ANIME_PREFIX labels (what entry_of wants); 404 if missing."""
    row = await services.db.fetch_one(sa.select(*anime_columns()).where(anime.c.id == anime_id))
    if row is None:
        raise anime_not_found()
    return row


async def _entry_row(services: Services, user_id: int, anime_id: int) -> dict[str, Any] | None:
    return await services.db.fetch_one(
        sa.select(anime_list_entry).where(_e.user_id == user_id, _e.anime_id == anime_id)
    )


def _stale(entry: ListEntry | None, code: Code = Code.stale_entry, detail: str = "") -> ApiError:
    return ApiError(
        code,
        detail or "The entry changed since you read it",
        extra={"entry": msgspec.to_builtins(entry) if entry is not None else None},
    )


def _snapshot(state: EntryState) -> dict[str, Any]:
    values = state.aspects()
    values["started_on"] = state.started_on.isoformat() if state.started_on else None
    values["completed_on"] = state.completed_on.isoformat() if state.completed_on else None
    return values


def _history_rows(
    user_id: int,
    anime_id: int,
    before: EntryState | None,
    after: EntryState | None,
    now: datetime,
    action: str | None = None,
) -> list[dict[str, Any]]:
    """One row per changed aspect (R9); a creation is one `add`, a deletion one `delete`, an
    imported row one `import`."""

    def row(kind: str, old: Any, new: Any) -> dict[str, Any]:
        return {
            "id": new_id(),
            "user_id": user_id,
            "anime_id": anime_id,
            "action": kind,
            "before": old,
            "after": new,
            "created_at": now,
        }

    if action is not None:
        return [
            row(
                action,
                _snapshot(before) if before else None,
                _snapshot(after) if after else None,
            )
        ]
    if before is None:
        return [row("add", None, _snapshot(after))] if after else []
    if after is None:
        return [row("delete", _snapshot(before), None)]
    return [
        row(name, {name: getattr(before, name)}, {name: getattr(after, name)})
        for name in ASPECTS
        if getattr(before, name) != getattr(after, name)
    ]


async def _write_history(services: Services, rows: list[dict[str, Any]]) -> None:
    if len(rows) == 1:
        await services.db.execute(anime_list_history.insert().values(**rows[0]))
    else:
        await services.db.execute_many(anime_list_history.insert(), rows)


def _milestone_events(
    user_id: int, anime_id: int, found: list[tuple[str, int]], cause: str
) -> list[ListMilestone]:
    return [
        ListMilestone(
            user_id=str(user_id),
            anime_id=anime_id,
            metric=metric,
            cycle=cycle,
            source_key=source_key(metric, anime_id, cycle),
            cause=cause,
        )
        for metric, cycle in found
    ]


def _emit_change(
    tx: Transaction,
    user_id: int,
    anime_id: int,
    action: str,
    entry: ListEntry,
    found: list[ListMilestone],
    episode: EpisodeWatched | None = None,
) -> None:
    """ANIME_LIST_UPDATE first (game.md's order), then the game's domain events."""
    topics = [f"user:{user_id}"]
    tx.emit(
        make_event(
            ANIME_LIST_UPDATE,
            AnimeListUpdate(anime_id=anime_id, action=action, entry=entry, rev=entry.rev),
            topics,
        )
    )
    if episode is not None:
        tx.emit(make_event(ANIME_EPISODE_WATCHED, episode, topics))
    for milestone in found:
        tx.emit(make_event(ANIME_LIST_MILESTONE, milestone, topics))


# --- L3 ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class PutOutcome:
    result: EntryResult
    created: bool


async def do_put_entry(
    services: Services,
    user_id: int,
    anime_id: int,
    changes: dict[str, Any],
    expected_rev: int | None = None,
) -> PutOutcome:
    """L3: create or update my entry with the fields sent (`changes`, range-checked: N1).

    `expected_rev` (the body's `rev`) must be the stored one, else 409 `stale_entry` with the
    current entry. A lost compare-and-swap is retried CAS_ATTEMPTS times (R10). A change
    that alters nothing answers the entry as it is, with no new rev, history or event.
    """
    db = services.db
    anime_row = await load_anime(services, anime_id)
    total = anime_row[ANIME_PREFIX + "episodes"]
    limit = bound(anime_row, ANIME_PREFIX)
    current: dict[str, Any] | None = None
    for _ in range(CAS_ATTEMPTS + 1):
        now = datetime.now(UTC)
        async with db.transaction() as tx:
            current = await _entry_row(services, user_id, anime_id)
            if current is None:
                if expected_rev is not None:
                    raise _stale(None, detail="The entry does not exist any more")
                after = apply_put(None, changes, total, limit, now.date())
                row = await _insert_entry(services, user_id, anime_id, after, now)
                if row is None:  # a concurrent create won: update that row instead
                    continue
                before = None
            else:
                if expected_rev is not None and current["rev"] != expected_rev:
                    raise _stale(entry_of(current, anime_row, owner=True))
                before = state_of(current)
                after = apply_put(before, changes, total, limit, now.date())
                if after == before:
                    entry = entry_of(current, anime_row, owner=True)
                    return PutOutcome(EntryResult(entry=entry, effects=Effects()), created=False)
                row = await _update_entry(services, current, after, now)
                if row is None:  # lost the compare-and-swap: read again and retry
                    continue
            entry = entry_of(row, anime_row, owner=True)
            await _write_history(services, _history_rows(user_id, anime_id, before, after, now))
            found = _milestone_events(user_id, anime_id, milestones(before, after), "put")
            _emit_change(tx, user_id, anime_id, "upsert", entry, found)
            effects = await _run_game_hook(services, user_id, None, found)
            return PutOutcome(EntryResult(entry=entry, effects=effects), created=before is None)
    current = await _entry_row(services, user_id, anime_id)
    raise _stale(entry_of(current, anime_row, owner=True) if current else None)


async def _insert_entry(
    services: Services, user_id: int, anime_id: int, state: EntryState, now: datetime
) -> dict[str, Any] | None:
    """Insert a new entry; None when one already exists (UNIQUE (user_id, anime_id))."""
    db = services.db
    return await db.fetch_one(
        db.insert(anime_list_entry)
        .values(
            id=new_id(),
            user_id=user_id,
            anime_id=anime_id,
            rev=new_id(),
            created_at=now,
            updated_at=now,
            **_columns(state),
        )
        .on_conflict_do_nothing(index_elements=["user_id", "anime_id"])
        .returning(anime_list_entry)
    )


async def _update_entry(
    services: Services, current: dict[str, Any], state: EntryState, now: datetime
) -> dict[str, Any] | None:
    """The compare-and-swap on `rev` (R10); None when someone else changed the row first."""
    return await services.db.fetch_one(
        anime_list_entry.update()
        .where(_e.id == current["id"], _e.rev == current["rev"])
        .values(rev=new_id(), updated_at=now, **_columns(state))
        .returning(anime_list_entry)
    )


def _columns(state: EntryState) -> dict[str, Any]:
    return dataclasses.asdict(state)


# --- L4 ----------------------------------------------------------------------------------------


async def do_delete_entry(services: Services, user_id: int, anime_id: int) -> None:
    """L4: remove my entry; 404 `entry_not_found`. Game state is not reversed (R17)."""
    db = services.db
    now = datetime.now(UTC)
    async with db.transaction() as tx:
        row = await db.fetch_one(
            anime_list_entry.delete()
            .where(_e.user_id == user_id, _e.anime_id == anime_id)
            .returning(anime_list_entry)
        )
        if row is None:
            raise entry_not_found()
        await _write_history(services, _history_rows(user_id, anime_id, state_of(row), None, now))
        tx.emit(
            make_event(
                ANIME_LIST_UPDATE,
                AnimeListUpdate(anime_id=anime_id, action="delete", entry=None, rev=str(new_id())),
                [f"user:{user_id}"],
            )
        )


# --- L5 ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class EpisodeOutcome:
    status: int  # 201 when the increment created the entry, else 200
    body: bytes  # the encoded EntryResult (what an Idempotency-Key repeat gets back)
    replayed: bool = False


class _Replay(Exception):
    """A concurrent request with the same Idempotency-Key committed first."""


async def do_increment_episode(
    services: Services,
    user_id: int,
    anime_id: int,
    expected_episodes: int | None = None,
    idempotency_key: str | None = None,
) -> EpisodeOutcome:
    """L5: +1 episode, creating the entry (watching, 1) when there is none.

    Refused with 409 `not_aired` (an announced title with nothing aired), `episode_limit` (at
    B, or completed) and `stale_episodes` (`expected_episodes` differs). Each accepted
    increment emits exactly one ANIME_EPISODE_WATCHED for the game and calls its hook in
    the same transaction. With an Idempotency-Key, a repeat answers the first response.
    """
    fingerprint = f"episode:{anime_id}:{expected_episodes}"
    if idempotency_key is not None:
        replay = await _stored_response(services, user_id, idempotency_key, fingerprint)
        if replay is not None:
            return replay
    try:
        return await _increment(
            services, user_id, anime_id, expected_episodes, idempotency_key, fingerprint
        )
    except _Replay:
        replay = await _stored_response(services, user_id, idempotency_key or "", fingerprint)
        if replay is None:  # the first request's transaction left nothing: it failed
            raise ApiError(Code.conflict, "A request with this Idempotency-Key failed") from None
        return replay


async def _stored_response(
    services: Services, user_id: int, key: str, fingerprint: str
) -> EpisodeOutcome | None:
    row = await services.db.fetch_one(
        sa.select(anime_list_idempotency).where(
            anime_list_idempotency.c.user_id == user_id, anime_list_idempotency.c.key == key
        )
    )
    if row is None or row["status"] is None:
        return None
    if row["request"] != _digest(fingerprint):
        raise ApiError(
            Code.validation_failed,
            "This Idempotency-Key was used for a different request",
            errors=[FieldError("Idempotency-Key", "Used earlier for a different request")],
        )
    return EpisodeOutcome(status=row["status"], body=row["body"].encode(), replayed=True)


def _digest(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode()).hexdigest()


async def _claim_key(services: Services, user_id: int, key: str, fingerprint: str) -> None:
    """Take the key inside the increment's transaction: a concurrent twin waits on the row
    and, once this commits, finds it taken and replays our answer instead of incrementing."""
    db = services.db
    claimed = await db.fetch_one(
        db.insert(anime_list_idempotency)
        .values(
            user_id=user_id,
            key=key,
            request=_digest(fingerprint),
            status=None,
            body=None,
            created_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["user_id", "key"])
        .returning(anime_list_idempotency.c.key)
    )
    if claimed is None:
        raise _Replay()


async def _anime_and_entry(
    services: Services, user_id: int, anime_id: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The catalog row and my entry in one round trip (the hot path's first read)."""
    row = await services.db.fetch_one(
        sa.select(anime_list_entry, *anime_columns())
        .select_from(
            anime.outerjoin(
                anime_list_entry, sa.and_(_e.anime_id == anime.c.id, _e.user_id == user_id)
            )
        )
        .where(anime.c.id == anime_id)
    )
    if row is None:
        raise anime_not_found()
    return row, (row if row["id"] is not None else None)


async def _increment(
    services: Services,
    user_id: int,
    anime_id: int,
    expected: int | None,
    key: str | None,
    fingerprint: str,
) -> EpisodeOutcome:
    db = services.db
    now = datetime.now(UTC)
    async with db.transaction() as tx:
        if key is not None:
            await _claim_key(services, user_id, key, fingerprint)
        for _ in range(EPISODE_ATTEMPTS):
            anime_row, current = await _anime_and_entry(services, user_id, anime_id)
            if (
                anime_row[ANIME_PREFIX + "status"] == "anons"
                and anime_row[ANIME_PREFIX + "episodes_aired"] == 0
            ):
                raise ApiError(Code.not_aired, "No episode of this anime has aired yet")
            total = anime_row[ANIME_PREFIX + "episodes"]
            limit = bound(anime_row, ANIME_PREFIX)
            if current is None:
                if expected is not None and expected != 0:
                    raise _stale(None, Code.stale_episodes, "You have not watched any episode")
                after = EntryState(
                    status="completed" if total == 1 else "watching",
                    score=0,
                    episodes=1,
                    rewatches=0,
                    text=None,
                    started_on=now.date(),
                    completed_on=now.date() if total == 1 else None,
                )
                row = await _insert_entry(services, user_id, anime_id, after, now)
                if row is None:  # a concurrent first increment created it: increment that
                    continue
                before = None
            else:
                _check_can_increment(current, anime_row, limit, expected)
                row = await _increment_row(services, current, total, limit, expected, now)
                if row is None:  # the status moved under us, or a bound was reached: re-read
                    continue
                after = state_of(row)
                # The row as it was: the UPDATE's conditions pinned status and rewatches.
                before = dataclasses.replace(
                    after,
                    status=current["status"],
                    rewatches=current["rewatches"],
                    episodes=row["episodes"] - 1,
                )
            entry = entry_of(row, anime_row, owner=True)
            previous_status = before.status if before else None
            cycle = (before.rewatches + (before.status == "rewatching")) if before else 0
            episode = EpisodeWatched(
                user_id=str(user_id),
                anime_id=anime_id,
                episode=row["episodes"],
                cycle=cycle,
                previous_status=previous_status,
                status=row["status"],
                rewatches=row["rewatches"],
                completed=row["status"] == "completed",
                rev=str(row["rev"]),
                at=rfc3339(now),
            )
            await _write_history(services, _history_rows(user_id, anime_id, before, after, now))
            found = _milestone_events(user_id, anime_id, milestones(before, after), "episode")
            _emit_change(tx, user_id, anime_id, "episode", entry, found, episode)
            effects = await _run_game_hook(services, user_id, episode, found)
            status = 201 if before is None else 200
            body = _encode(EntryResult(entry=entry, effects=effects))
            if key is not None:
                await db.execute(
                    anime_list_idempotency.update()
                    .where(
                        anime_list_idempotency.c.user_id == user_id,
                        anime_list_idempotency.c.key == key,
                    )
                    .values(status=status, body=body.decode())
                )
            return EpisodeOutcome(status=status, body=body)
    anime_row, current = await _anime_and_entry(services, user_id, anime_id)
    raise _stale(entry_of(current, anime_row, owner=True) if current else None)


def _check_can_increment(
    current: dict[str, Any], anime_row: dict[str, Any], limit: int, expected: int | None
) -> None:
    def refuse(code: Code, detail: str) -> ApiError:
        return _stale(entry_of(current, anime_row, owner=True), code, detail)

    if current["status"] == "completed":
        raise refuse(Code.episode_limit, "Completed: set the status to rewatching to watch again")
    if current["episodes"] >= limit:
        raise refuse(Code.episode_limit, "Every known episode is already watched")
    if expected is not None and current["episodes"] != expected:
        raise refuse(Code.stale_episodes, "Your episode count changed since you read it")


async def _increment_row(
    services: Services,
    current: dict[str, Any],
    total: int,
    limit: int,
    expected: int | None,
    now: datetime,
) -> dict[str, Any] | None:
    """N2, N5 and N6 (with L5's rule 3) as one conditional UPDATE; None when the row no
    longer has the status, rewatches or room it was read with."""
    seen = current["status"]
    today = sa.literal(now.date(), sa.Date)
    ongoing = "watching" if seen in ("planned", "on_hold", "dropped") else seen
    if total > 0:
        reaching = _e.episodes + 1 >= total
        status: Any = sa.case((reaching, "completed"), else_=ongoing)
        completed_on: Any = sa.case((reaching, today), else_=_e.completed_on)
        rewatches: Any = _e.rewatches
        if seen == "rewatching":
            rewatches = sa.case(
                (sa.and_(reaching, _e.rewatches < REWATCHES_MAX), _e.rewatches + 1),
                else_=_e.rewatches,
            )
    else:
        status, completed_on, rewatches = ongoing, _e.completed_on, _e.rewatches
    conditions = [
        _e.id == current["id"],
        _e.status == seen,
        _e.rewatches == current["rewatches"],
        _e.episodes < limit,
    ]
    if expected is not None:
        conditions.append(_e.episodes == expected)
    return await services.db.fetch_one(
        anime_list_entry.update()
        .where(*conditions)
        .values(
            episodes=_e.episodes + 1,
            status=status,
            rewatches=rewatches,
            started_on=sa.func.coalesce(_e.started_on, today),
            completed_on=completed_on,
            rev=new_id(),
            updated_at=now,
        )
        .returning(anime_list_entry)
    )
