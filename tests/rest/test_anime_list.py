"""The anime list (anime.md §2: L1-L11, R8-R17; ANIME_LIST_UPDATE, ANIME_LIST_IMPORT_DONE,
and the game's ANIME_EPISODE_WATCHED / ANIME_LIST_MILESTONE), plus users.md R4's
`list_visibility`, which L11 and the profile's `list_summary` enforce.

Anime rows are inserted straight into the catalog table by a small factory (the catalog's
own operations are tested with the catalog). Friendships and blocks come from a scripted
social graph, bot keys from a scripted resolver, as in test_users.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from models import social_graph
from models.anime import lists
from models.anime.catalog_tables import anime
from models.anime.lists import writes as list_writes
from models.anime.lists.rules import normalize_search
from models.anime.lists.shapes import Effects
from models.anime.lists.tables import (
    IMPORT_JOB_KIND,
    IMPORT_RATE,
    anime_list_entry,
    anime_list_history,
    anime_list_idempotency,
    anime_list_import,
)
from models.auth import accounts
from models.auth.identity import user_state
from models.exports import exporter_names
from models.users import deletion as deletion_module
from server import jobs as server_jobs
from server.auth import Identity
from server.events import validate_payload
from server.ids import new_id, snowflake_at
from tests.factories import PASSWORD, Account, ban, set_user, unique_name

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LIST_EVENTS = {"ANIME_LIST_UPDATE", "ANIME_EPISODE_WATCHED", "ANIME_LIST_MILESTONE"}
ENTRY_KEYS = {
    "id",
    "anime_id",
    "status",
    "score",
    "episodes",
    "rewatches",
    "text",
    "started_on",
    "completed_on",
    "rev",
    "created_at",
    "updated_at",
    "anime",
}
COMPACT_KEYS = {
    "id",
    "name",
    "russian",
    "english",
    "image",
    "kind",
    "score",
    "status",
    "episodes",
    "episodes_aired",
    "aired_on",
    "released_on",
    "season",
    "rating",
}
_anime_ids = itertools.count(900_001)


# --- fixtures and factories ------------------------------------------------------------------


async def make_anime(
    live,
    *,
    name: str | None = None,
    episodes: int = 12,
    episodes_aired: int | None = None,
    status: str = "released",
    kind: str = "tv",
    duration: int = 24,
    russian: str | None = None,
    myanimelist_id: int | None = None,
    anime_id: int | None = None,
) -> int:
    """One catalog row with every non-null column filled, as the importer would store it."""
    anime_id = anime_id or next(_anime_ids)
    name = name or f"Title {anime_id}"
    now = datetime.now(UTC)
    await live.services.db.execute(
        anime.insert().values(
            id=anime_id,
            name=name,
            russian=russian,
            english=None,
            japanese=None,
            synonyms=[],
            kind=kind,
            status=status,
            rating="pg_13",
            episodes=episodes,
            episodes_aired=episodes if episodes_aired is None else episodes_aired,
            duration=duration,
            aired_on=date(2020, 4, 1),
            released_on=None,
            year=2020,
            season="spring_2020",
            score_x100=812,
            members=1000,
            image_original=f"/images/{anime_id}.jpg",
            image_preview=None,
            image_x96=None,
            image_x48=None,
            description=None,
            franchise=None,
            next_episode_at=None,
            myanimelist_id=myanimelist_id,
            search_text=normalize_search(" ".join(t for t in (name, russian) if t)),
            origin="shikimori",
            locked_fields=[],
            source_updated_at=now,
            imported_at=now,
        )
    )
    return anime_id


async def make_account(live, username: str | None = None) -> Account:
    """An account through the real registration operation (no per-IP HTTP limit)."""
    username = username or unique_name("lister")
    pair = await accounts.do_register(
        live.services,
        username=username,
        email=f"{username.lower()}@example.com",
        password=PASSWORD,
        locale=None,
        client=accounts.ClientInfo("other", None, "tests", "127.0.0.1"),
    )
    return Account(
        id=int(pair.user.id),
        username=username,
        email=f"{username.lower()}@example.com",
        password=PASSWORD,
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        session_id=int(pair.session_id),
    )


class ScriptedGraph(social_graph.SocialGraph):
    def __init__(self) -> None:
        self.friendships: set[frozenset[int]] = set()
        self.blocks: set[tuple[int, int]] = set()

    def befriend(self, a: Account, b: Account) -> None:
        self.friendships.add(frozenset((a.id, b.id)))

    def block(self, blocker: Account, blocked: Account) -> None:
        self.blocks.add((blocker.id, blocked.id))

    async def friend_ids(self, services, user_id):
        return {o for pair in self.friendships if user_id in pair for o in pair} - {user_id}

    async def blocked_ids(self, services, user_id):
        return {b for a, b in self.blocks if a == user_id} | {
            a for a, b in self.blocks if b == user_id
        }


@pytest.fixture
def graph():
    scripted = ScriptedGraph()
    previous = social_graph.register_social_graph(scripted)
    yield scripted
    social_graph.register_social_graph(previous)


@pytest.fixture
def bot(live, monkeypatch):
    """`bot(account, scopes)` → headers of a bot key acting for `account` (auth.md R22)."""
    original = live.services.resolve_identity

    async def resolve(credentials, request):
        scheme, value = credentials
        if scheme == "bot" and value.startswith("test:"):
            _, owner, scopes = value.split(":", 2)
            state = await user_state(live.services, int(owner))
            return Identity(
                kind="bot",
                user_id=int(owner),
                role=state.role,
                status=state.status,
                api_key_id=1,
                scopes=frozenset(s for s in scopes.split(",") if s),
            )
        return await original(credentials, request)

    monkeypatch.setattr(live.services, "resolve_identity", resolve)
    return lambda account, scopes="": {"Authorization": f"Bot test:{account.id}:{scopes}"}


class RecordingGame:
    """A stand-in for game.md's hook: records what it is told, inside the transaction."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    async def __call__(self, services, tx, user_id, episode, milestones):
        self.calls.append((user_id, episode, list(milestones)))
        if self.fail:
            raise RuntimeError("the game broke")
        if episode is None:
            return None
        return Effects(accrual={"granted": True, "reason": None, "episode": episode.episode})


@pytest.fixture
def game():
    recording = RecordingGame()
    previous = list_writes.provide_game_hook(recording)
    yield recording
    list_writes.provide_game_hook(previous)


async def put(client, account, anime_id, **body):
    return await client.put(f"/anime-list/{anime_id}", json=body, headers=account.headers)


async def watch(client, account, anime_id, body=None, headers=None):
    return await client.post(
        f"/anime-list/{anime_id}/episode",
        json=body,
        headers={**account.headers, **(headers or {})},
    )


async def entry_row(live, account, anime_id):
    return await live.services.db.fetch_one(
        sa.select(anime_list_entry).where(
            anime_list_entry.c.user_id == account.id, anime_list_entry.c.anime_id == anime_id
        )
    )


async def history_rows(live, account, anime_id=None):
    query = sa.select(anime_list_history).where(anime_list_history.c.user_id == account.id)
    if anime_id is not None:
        query = query.where(anime_list_history.c.anime_id == anime_id)
    return await live.services.db.fetch_all(query.order_by(anime_list_history.c.id))


async def seed(live, account, anime_id, **changes):
    """An entry made through the L3 operation itself (no HTTP rate limit)."""
    outcome = await lists.do_put_entry(live.services, account.id, anime_id, changes)
    return outcome.result.entry


def fields(response) -> list[str]:
    return [e["field"] for e in response.json().get("errors", [])]


def of_types(events, types=LIST_EVENTS):
    found = [e for e in events if e.type in types]
    for event in found:
        validate_payload(event.type, event.data)
    return found


def today() -> str:
    return datetime.now(UTC).date().isoformat()


# --- L3: create and update (R8, R9, R16) -----------------------------------------------------


async def test_put_creates_with_defaults_then_updates_only_what_is_sent(client, live, capture):
    """L3: a new entry takes planned/0/0/0/null (201); omitted fields keep their value (200);
    each change has a new rev and emits one ANIME_LIST_UPDATE to the owner only."""
    account = await make_account(live)
    anime_id = await make_anime(live, name="Cowboy Bebop", episodes=26)
    async with capture() as seen:
        created = await put(client, account, anime_id)
        assert created.status_code == 201, created.text
        entry = created.json()["entry"]
        assert set(entry) == ENTRY_KEYS and set(entry["anime"]) == COMPACT_KEYS
        assert (entry["status"], entry["score"], entry["episodes"], entry["rewatches"]) == (
            "planned",
            0,
            0,
            0,
        )
        assert entry["text"] is None and entry["started_on"] is None
        assert entry["anime"]["name"] == "Cowboy Bebop" and entry["anime"]["score"] == 8.12
        assert created.json()["effects"] == {
            "accrual": None,
            "wallet": None,
            "level_up": None,
            "quests": [],
            "achievements": [],
        }
        updated = await put(client, account, anime_id, score=9, text="great")
        assert updated.status_code == 200
        second = updated.json()["entry"]
        assert second["score"] == 9 and second["text"] == "great"
        assert second["status"] == "planned" and second["id"] == entry["id"]
        assert int(second["rev"]) > int(entry["rev"])
    updates = of_types(await seen.events(), {"ANIME_LIST_UPDATE"})
    assert [e.data["action"] for e in updates] == ["upsert", "upsert"]
    assert updates[1].data["rev"] == second["rev"] and updates[1].data["entry"] == second
    assert all(e.targets.topics == (f"user:{account.id}",) for e in updates)


async def test_an_empty_body_on_an_existing_entry_changes_nothing(client, live, capture):
    """L3: an empty body (or an identical one) is 200 with no new rev, history or event."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    first = (await put(client, account, anime_id, score=7)).json()["entry"]
    before = await history_rows(live, account)
    async with capture() as seen:
        for body in ({}, {"score": 7}):
            again = await put(client, account, anime_id, **body)
            assert again.status_code == 200 and again.json()["entry"]["rev"] == first["rev"]
        bare = await client.put(f"/anime-list/{anime_id}", headers=account.headers)
        assert bare.status_code == 200 and bare.json()["entry"]["rev"] == first["rev"]
    assert of_types(await seen.events()) == []
    assert await history_rows(live, account) == before


async def test_put_validates_every_field_and_writes_nothing(client, live, capture):
    """N1 and R16: out-of-range values are a 422 naming the field; the row, its rev and the
    history stay exactly as they were, and nothing is emitted."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    await put(client, account, anime_id, score=5, episodes=3)
    row = await entry_row(live, account, anime_id)
    history = await history_rows(live, account)
    cases = [
        ({"score": 11}, "score"),
        ({"score": -1}, "score"),
        ({"score": 7.5}, "score"),
        ({"score": None}, "score"),
        ({"episodes": 10_000}, "episodes"),
        ({"episodes": -1}, "episodes"),
        ({"rewatches": 1000}, "rewatches"),
        ({"status": "finished"}, "status"),
        ({"status": None}, "status"),
        ({"text": "x" * 4097}, "text"),
        ({"text": "bell\x07"}, "text"),
        ({"rev": "not-a-rev"}, "rev"),
        ({"favourite": True}, "favourite"),
        ({"score": 8, "episodes": 99999}, "episodes"),
    ]
    async with capture() as seen:
        for body, field in cases:
            response = await put(client, account, anime_id, **body)
            assert response.status_code == 422, (body, response.text)
            assert field in fields(response), (body, response.json())
        malformed = await client.put(
            f"/anime-list/{anime_id}",
            content=b"{nope",
            headers={**account.headers, "Content-Type": "application/json"},
        )
        assert malformed.status_code == 400
    assert of_types(await seen.events()) == []
    assert await entry_row(live, account, anime_id) == row
    assert await history_rows(live, account) == history


async def test_put_on_an_anime_outside_the_catalog_is_404(client, live):
    """L3: 404 `anime_not_found`; a malformed id is answered like an unknown one."""
    account = await make_account(live)
    missing = await put(client, account, 999_999_999)
    assert missing.status_code == 404 and missing.json()["code"] == "anime_not_found"
    for raw in ("abc", "0", "-5", "1e3", "99999999999"):
        response = await client.put(f"/anime-list/{raw}", json={}, headers=account.headers)
        assert response.status_code == 404, raw


async def test_a_stale_rev_is_409_with_the_current_entry(client, live):
    """L3: `rev` given and different from the stored one → 409 `stale_entry` carrying the
    current entry; the matching rev is accepted."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    first = (await put(client, account, anime_id, score=3)).json()["entry"]
    second = (await put(client, account, anime_id, score=4)).json()["entry"]
    stale = await put(client, account, anime_id, score=9, rev=first["rev"])
    assert stale.status_code == 409 and stale.json()["code"] == "stale_entry"
    assert stale.json()["entry"]["rev"] == second["rev"]
    assert stale.json()["entry"]["score"] == 4
    fresh = await put(client, account, anime_id, score=9, rev=second["rev"])
    assert fresh.status_code == 200 and fresh.json()["entry"]["score"] == 9
    other = await make_anime(live)
    gone = await put(client, account, other, rev=second["rev"])
    assert gone.status_code == 409 and gone.json()["entry"] is None


async def test_text_is_kept_verbatim_and_null_or_empty_clears_it(client, live):
    """L3: `text` null clears; an empty note is no note; a note keeps its characters."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    note = "  <b>мой</b> & 'note'\n\tline 2  "
    assert (await put(client, account, anime_id, text=note)).json()["entry"]["text"] == note
    assert (await put(client, account, anime_id, text=None)).json()["entry"]["text"] is None
    await put(client, account, anime_id, text="x" * 4096)
    assert (await put(client, account, anime_id, text="")).json()["entry"]["text"] is None


# --- R8: N2-N8 and the dates -----------------------------------------------------------------


async def test_episodes_over_the_bound_are_clamped_not_refused(client, live):
    """N2: B is the episode count, else the aired count, else 9999; clamping is no error."""
    account = await make_account(live)
    known = await make_anime(live, episodes=12)
    airing = await make_anime(live, episodes=0, episodes_aired=5, status="ongoing")
    unknown = await make_anime(live, episodes=0, episodes_aired=0, status="ongoing")
    assert (await put(client, account, known, episodes=50)).json()["entry"]["episodes"] == 12
    assert (await put(client, account, airing, episodes=50)).json()["entry"]["episodes"] == 5
    unknown_entry = (await put(client, account, unknown, episodes=9999)).json()["entry"]
    assert unknown_entry["episodes"] == 9999 and unknown_entry["status"] == "watching"


async def test_completed_fills_the_episodes_and_dates_the_completion(client, live):
    """N3: status completed with known episodes ⇒ episodes = anime.episodes; completed_on is
    today (UTC), and started_on is set once there are episodes."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=24)
    entry = (await put(client, account, anime_id, status="completed", episodes=3)).json()["entry"]
    assert entry["episodes"] == 24 and entry["status"] == "completed"
    assert entry["completed_on"] == today() and entry["started_on"] == today()
    unknown = await make_anime(live, episodes=0, episodes_aired=0, status="ongoing")
    open_ended = (await put(client, account, unknown, status="completed", episodes=7)).json()
    assert open_ended["entry"]["episodes"] == 7


async def test_rewatching_restarts_the_count_unless_episodes_are_sent(client, live):
    """N4: status set to rewatching without `episodes` ⇒ 0; with them, they are kept;
    re-sending rewatching on a rewatch keeps its progress."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    await put(client, account, anime_id, status="completed")
    entry = (await put(client, account, anime_id, status="rewatching")).json()["entry"]
    assert entry["episodes"] == 0 and entry["status"] == "rewatching"
    await put(client, account, anime_id, episodes=5)
    again = (await put(client, account, anime_id, status="rewatching")).json()["entry"]
    assert again["episodes"] == 5
    other = await make_anime(live, episodes=12)
    await put(client, account, other, status="completed")
    given = (await put(client, account, other, status="rewatching", episodes=4)).json()["entry"]
    assert given["episodes"] == 4


async def test_reaching_the_last_episode_completes_and_counts_a_rewatch(client, live, capture):
    """N5: without `status`, episodes changed to anime.episodes ⇒ completed; from rewatching
    the rewatch is counted once. R12: the completion emits `anime_completed` with its cycle."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    first = (await put(client, account, anime_id, episodes=12)).json()["entry"]
    assert first["status"] == "completed" and first["rewatches"] == 0
    await put(client, account, anime_id, status="rewatching")
    async with capture() as seen:
        done = (await put(client, account, anime_id, episodes=12)).json()["entry"]
    assert done["status"] == "completed" and done["rewatches"] == 1
    milestones = of_types(await seen.events(), {"ANIME_LIST_MILESTONE"})
    assert [(m.data["metric"], m.data["cycle"], m.data["source_key"]) for m in milestones] == [
        ("anime_completed", 1, f"complete:{anime_id}:1")
    ]


async def test_setting_completed_on_a_rewatch_counts_it(client, live):
    """N5's rewatch count also applies when the client ends the rewatch by setting
    `completed` itself, unless it sends `rewatches` too."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    await put(client, account, anime_id, status="rewatching", rewatches=2)
    done = (await put(client, account, anime_id, status="completed")).json()["entry"]
    assert done["rewatches"] == 3 and done["episodes"] == 12
    await put(client, account, anime_id, status="rewatching")
    explicit = (await put(client, account, anime_id, status="completed", rewatches=7)).json()
    assert explicit["entry"]["rewatches"] == 7


async def test_first_episodes_start_watching_and_zero_goes_back_to_planned(client, live):
    """N6: 0 → >0 on planned, on_hold or a new entry ⇒ watching (not on dropped);
    N7: >0 → 0, not rewatching ⇒ planned; N8: a completed entry below the count ⇒ watching."""
    account = await make_account(live)
    titles = [await make_anime(live, episodes=12) for _ in range(5)]
    new = (await put(client, account, titles[0], episodes=2)).json()["entry"]
    assert new["status"] == "watching" and new["started_on"] == today()
    await put(client, account, titles[1], status="on_hold")
    assert (await put(client, account, titles[1], episodes=1)).json()["entry"]["status"] == (
        "watching"
    )
    await put(client, account, titles[2], status="dropped")
    assert (await put(client, account, titles[2], episodes=1)).json()["entry"]["status"] == (
        "dropped"
    )
    back = (await put(client, account, titles[0], episodes=0)).json()["entry"]
    assert back["status"] == "planned"
    await put(client, account, titles[3], status="rewatching", episodes=3)
    kept = (await put(client, account, titles[3], episodes=0)).json()["entry"]
    assert kept["status"] == "rewatching"
    await put(client, account, titles[4], status="completed")
    reopened = (await put(client, account, titles[4], episodes=5)).json()["entry"]
    assert reopened["status"] == "watching" and reopened["episodes"] == 5
    assert reopened["completed_on"] == today()


async def test_sending_status_disables_the_automatic_moves(client, live):
    """N5-N8 apply only when `status` is not in the request."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    held = (await put(client, account, anime_id, status="on_hold", episodes=12)).json()["entry"]
    assert held["status"] == "on_hold" and held["episodes"] == 12


async def test_history_has_one_row_per_changed_aspect(client, live):
    """R9: every change gets a new rev and one history row per changed aspect."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    await put(client, account, anime_id, score=5)
    await put(client, account, anime_id, score=8, text="n", episodes=3)
    rows = await history_rows(live, account)
    assert [r["action"] for r in rows] == ["add", "status", "score", "episodes", "text"]
    assert rows[0]["before"] is None and rows[0]["after"]["score"] == 5
    changes = {r["action"]: (r["before"], r["after"]) for r in rows[1:]}
    assert changes["status"] == ({"status": "planned"}, {"status": "watching"})
    assert changes["score"] == ({"score": 5}, {"score": 8})
    assert changes["episodes"] == ({"episodes": 0}, {"episodes": 3})
    assert changes["text"] == ({"text": None}, {"text": "n"})


async def test_put_emits_the_game_milestones_of_r12(client, live, capture, game):
    """R12: L3 emits `anime_dropped` and `list_scored` (keys `drop:{anime}`, `score:{anime}`)
    and tells the game's hook in the same transaction; `effects.accrual` stays null."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    async with capture() as seen:
        response = await put(client, account, anime_id, status="dropped", score=4)
        await put(client, account, anime_id, score=6)
    assert response.json()["effects"]["accrual"] is None
    events = of_types(await seen.events())
    milestones = [e.data for e in events if e.type == "ANIME_LIST_MILESTONE"]
    assert [(m["metric"], m["source_key"], m["cause"]) for m in milestones] == [
        ("anime_dropped", f"drop:{anime_id}", "put"),
        ("list_scored", f"score:{anime_id}", "put"),
    ]
    assert not [e for e in events if e.type == "ANIME_EPISODE_WATCHED"]
    assert len(game.calls) == 1 and game.calls[0][1] is None
    assert [m.metric for m in game.calls[0][2]] == ["anime_dropped", "list_scored"]


# --- R9: concurrent upserts -----------------------------------------------------------------


async def test_two_concurrent_creates_make_one_row_one_201_and_one_200(client, live):
    """R9: one entry per (user, anime); concurrent L3 creates give one 201 and one 200."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    responses = await asyncio.gather(
        put(client, account, anime_id, score=3), put(client, account, anime_id, text="t")
    )
    assert sorted(r.status_code for r in responses) == [200, 201]
    row = await entry_row(live, account, anime_id)
    assert row["score"] == 3 and row["text"] == "t"
    count = await live.services.db.fetch_val(
        sa.select(sa.func.count()).where(anime_list_entry.c.user_id == account.id)
    )
    assert count == 1


async def test_concurrent_updates_lose_no_change_and_log_each_one(client, live):
    """R10: writes compare-and-swap on rev and retry; concurrent edits of different fields
    all land, and each successful change has its own rev and history row."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    await seed(live, account, anime_id)
    responses = await asyncio.gather(
        put(client, account, anime_id, score=9),
        put(client, account, anime_id, text="note"),
        put(client, account, anime_id, rewatches=2),
    )
    assert [r.status_code for r in responses] == [200, 200, 200]
    row = await entry_row(live, account, anime_id)
    assert (row["score"], row["text"], row["rewatches"]) == (9, "note", 2)
    revs = {r.json()["entry"]["rev"] for r in responses}
    assert len(revs) == 3 and str(row["rev"]) in revs
    actions = [r["action"] for r in await history_rows(live, account)]
    assert sorted(actions) == ["add", "rewatches", "score", "text"]


async def test_a_storm_of_writes_ends_consistent_or_409(client, live):
    """R10: past 3 lost swaps a write is 409 `stale_entry`, never a half-applied or lost
    change: the final score is one of the accepted ones and history counts accepted writes."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    await seed(live, account, anime_id)
    responses = await asyncio.gather(
        *(put(client, account, anime_id, score=s) for s in range(1, 11))
    )
    assert {r.status_code for r in responses} <= {200, 409}
    accepted = [r.json()["entry"] for r in responses if r.status_code == 200]
    assert accepted
    row = await entry_row(live, account, anime_id)
    last = max(accepted, key=lambda e: int(e["rev"]))
    assert row["score"] == last["score"] and str(row["rev"]) == last["rev"]
    scores = [r for r in await history_rows(live, account) if r["action"] == "score"]
    assert len(scores) == len(accepted)


# --- L5: +1 episode, the game's hook (R9-R12) -------------------------------------------------


async def test_the_first_episode_creates_the_entry_as_watching(client, live, capture, game):
    """L5 rule 1: no entry → created with episodes 1, status watching (201); then +1 (200).
    Each accepted increment emits one ANIME_LIST_UPDATE (action episode) and exactly one
    ANIME_EPISODE_WATCHED to the user's topic, and calls the game's hook whose effects the
    response carries."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    async with capture() as seen:
        first = await watch(client, account, anime_id)
        second = await watch(client, account, anime_id)
    assert first.status_code == 201, first.text
    entry = first.json()["entry"]
    assert (entry["episodes"], entry["status"], entry["started_on"]) == (1, "watching", today())
    assert second.status_code == 200 and second.json()["entry"]["episodes"] == 2
    assert second.json()["effects"]["accrual"] == {"granted": True, "reason": None, "episode": 2}
    events = of_types(await seen.events())
    assert [e.type for e in events] == ["ANIME_LIST_UPDATE", "ANIME_EPISODE_WATCHED"] * 2
    watched = [e.data for e in events if e.type == "ANIME_EPISODE_WATCHED"]
    assert [(w["episode"], w["cycle"], w["previous_status"]) for w in watched] == [
        (1, 0, None),
        (2, 0, "watching"),
    ]
    assert all(e.targets.topics == (f"user:{account.id}",) for e in events)
    assert events[2].data["action"] == "episode"
    assert events[2].data["entry"] == second.json()["entry"]
    assert [call[1].episode for call in game.calls] == [1, 2]
    actions = [r["action"] for r in await history_rows(live, account)]
    assert actions == ["add", "episodes"]


async def test_increment_moves_paused_entries_to_watching_and_keeps_a_rewatch(client, live):
    """L5 rule 3: planned, on_hold or dropped becomes watching; rewatching stays rewatching
    until its last episode, which completes it and counts the rewatch (N5)."""
    account = await make_account(live)
    for status in ("planned", "on_hold", "dropped"):
        anime_id = await make_anime(live, episodes=12)
        await seed(live, account, anime_id, status=status)
        moved = (await watch(client, account, anime_id)).json()["entry"]
        assert (moved["status"], moved["episodes"]) == ("watching", 1), status
    anime_id = await make_anime(live, episodes=3)
    await seed(live, account, anime_id, status="rewatching", episodes=1, rewatches=4)
    middle = (await watch(client, account, anime_id)).json()["entry"]
    assert (middle["status"], middle["episodes"], middle["rewatches"]) == ("rewatching", 2, 4)
    last = (await watch(client, account, anime_id)).json()["entry"]
    assert (last["status"], last["episodes"], last["rewatches"]) == ("completed", 3, 5)
    assert last["completed_on"] == today()
    actions = [r["action"] for r in await history_rows(live, account, anime_id)]
    assert actions[-3:] == ["status", "episodes", "rewatches"]


async def test_the_last_episode_completes_and_tells_the_game_the_cycle(client, live, capture):
    """N5 through L5, R12: completing emits `anime_completed` with c = rewatches (+1 for a
    rewatch) and the ANIME_EPISODE_WATCHED says `completed`; a one-episode title completes on
    its first increment."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=2)
    await watch(client, account, anime_id)
    async with capture() as seen:
        done = (await watch(client, account, anime_id)).json()["entry"]
    assert done["status"] == "completed" and done["completed_on"] == today()
    events = of_types(await seen.events())
    assert [e.type for e in events] == [
        "ANIME_LIST_UPDATE",
        "ANIME_EPISODE_WATCHED",
        "ANIME_LIST_MILESTONE",
    ]
    assert events[1].data["completed"] is True and events[1].data["cycle"] == 0
    assert events[2].data["source_key"] == f"complete:{anime_id}:0"
    assert events[2].data["cause"] == "episode"
    movie = await make_anime(live, episodes=1, kind="movie")
    single = await watch(client, account, movie)
    assert single.status_code == 201 and single.json()["entry"]["status"] == "completed"


async def test_no_increment_past_the_bound_or_on_a_completed_entry(client, live, capture):
    """L5: 409 `episode_limit` at B (the aired count when the total is unknown) and on a
    completed entry; the problem carries the entry, and nothing is written or emitted."""
    account = await make_account(live)
    airing = await make_anime(live, episodes=0, episodes_aired=2, status="ongoing")
    done = await make_anime(live, episodes=12)
    await seed(live, account, airing, episodes=2)
    await seed(live, account, done, status="completed")
    rows = [await entry_row(live, account, a) for a in (airing, done)]
    async with capture() as seen:
        for anime_id in (airing, done):
            refused = await watch(client, account, anime_id)
            assert refused.status_code == 409 and refused.json()["code"] == "episode_limit"
            assert refused.json()["entry"]["anime_id"] == anime_id
    assert of_types(await seen.events()) == []
    assert [await entry_row(live, account, a) for a in (airing, done)] == rows


async def test_an_announced_title_with_nothing_aired_is_not_aired(client, live):
    """L5: 409 `not_aired` for an anons title with episodes_aired = 0; no entry is made."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12, episodes_aired=0, status="anons")
    refused = await watch(client, account, anime_id)
    assert refused.status_code == 409 and refused.json()["code"] == "not_aired"
    assert await entry_row(live, account, anime_id) is None
    unknown = await watch(client, account, 999_999_998)
    assert unknown.status_code == 404 and unknown.json()["code"] == "anime_not_found"


async def test_expected_episodes_makes_the_increment_conditional(client, live):
    """L5: `expected_episodes` different from the stored count → 409 `stale_episodes` with the
    current entry; equal → applied. A bad value is a 422 naming it."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    absent = await watch(client, account, anime_id, {"expected_episodes": 3})
    assert absent.status_code == 409 and absent.json()["code"] == "stale_episodes"
    assert absent.json()["entry"] is None
    assert (await watch(client, account, anime_id, {"expected_episodes": 0})).status_code == 201
    stale = await watch(client, account, anime_id, {"expected_episodes": 0})
    assert stale.status_code == 409 and stale.json()["entry"]["episodes"] == 1
    ok = await watch(client, account, anime_id, {"expected_episodes": 1})
    assert ok.status_code == 200 and ok.json()["entry"]["episodes"] == 2
    for body, field in (
        ({"expected_episodes": -1}, "expected_episodes"),
        ({"expected_episodes": 10_000}, "expected_episodes"),
        ({"expected_episodes": "2"}, "expected_episodes"),
        ({"episodes": 2}, "episodes"),
    ):
        response = await watch(client, account, anime_id, body)
        assert response.status_code == 422 and field in fields(response), body


async def test_concurrent_increments_each_apply_once(client, live, capture, game):
    """R10: N concurrent L5 calls each apply once: +N, no increment lost or doubled; the one
    that created the entry is the only 201, and there is one ANIME_EPISODE_WATCHED each,
    numbered 1..N."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=24)
    async with capture() as seen:
        responses = await asyncio.gather(*(watch(client, account, anime_id) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert sorted(r.json()["entry"]["episodes"] for r in responses) == list(range(1, 11))
    assert (await entry_row(live, account, anime_id))["episodes"] == 10
    watched = [e for e in of_types(await seen.events()) if e.type == "ANIME_EPISODE_WATCHED"]
    assert sorted(e.data["episode"] for e in watched) == list(range(1, 11))
    assert sorted(call[1].episode for call in game.calls) == list(range(1, 11))
    history = await history_rows(live, account, anime_id)
    assert [r["action"] for r in history].count("episodes") == 9


async def test_concurrent_increments_stop_exactly_at_the_bound(client, live):
    """R10: +N clamped at B: from 8 of 12, ten racing increments give four successes, the last
    of which completes the entry, and six `episode_limit`."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    await seed(live, account, anime_id, episodes=8)
    responses = await asyncio.gather(*(watch(client, account, anime_id) for _ in range(10)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 4 + [409] * 6
    assert all(r.json()["code"] == "episode_limit" for r in responses if r.status_code == 409)
    row = await entry_row(live, account, anime_id)
    assert (row["episodes"], row["status"]) == (12, "completed")


async def test_a_racing_rewatch_completes_and_counts_exactly_once(client, live, capture):
    """R9: a rewatching entry reaching its last episode becomes completed and increments
    rewatches exactly once, even when increments race; one `anime_completed` is emitted."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    await seed(live, account, anime_id, status="rewatching", episodes=11, rewatches=1)
    async with capture() as seen:
        responses = await asyncio.gather(*(watch(client, account, anime_id) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [200] + [409] * 4
    row = await entry_row(live, account, anime_id)
    assert (row["status"], row["episodes"], row["rewatches"]) == ("completed", 12, 2)
    milestones = [e for e in of_types(await seen.events()) if e.type == "ANIME_LIST_MILESTONE"]
    assert [m.data["source_key"] for m in milestones] == [f"complete:{anime_id}:2"]


async def test_the_same_expected_episodes_lets_exactly_one_through(client, live):
    """R10: with the same `expected_episodes`, exactly one succeeds; the rest get 409
    `stale_episodes`."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=24)
    await seed(live, account, anime_id, episodes=5)
    responses = await asyncio.gather(
        *(watch(client, account, anime_id, {"expected_episodes": 5}) for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 5
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"stale_episodes"}
    assert (await entry_row(live, account, anime_id))["episodes"] == 6


async def test_increments_and_edits_racing_keep_both(client, live):
    """R10: an L3 edit racing L5 increments is retried, never lost, and the increments all
    land."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=24)
    await seed(live, account, anime_id, episodes=1)
    responses = await asyncio.gather(
        *(watch(client, account, anime_id) for _ in range(4)),
        put(client, account, anime_id, score=7),
    )
    assert [r.status_code for r in responses] == [200] * 5
    row = await entry_row(live, account, anime_id)
    assert (row["episodes"], row["score"]) == (5, 7)


async def test_an_idempotency_key_replays_the_first_answer(client, live, capture):
    """R10: with the same Idempotency-Key a repeat returns the first response and changes
    nothing; the same key for another request is a 422 naming the header."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    key = {"Idempotency-Key": "watch-ep-1"}
    first = await watch(client, account, anime_id, headers=key)
    async with capture() as seen:
        again = await watch(client, account, anime_id, headers=key)
    assert again.status_code == first.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert of_types(await seen.events()) == []
    assert (await entry_row(live, account, anime_id))["episodes"] == 1
    other = await make_anime(live)
    misuse = await watch(client, account, other, headers=key)
    assert misuse.status_code == 422 and fields(misuse) == ["Idempotency-Key"]
    for bad in ("", "x" * 256, "tab\tkey"):
        response = await watch(client, account, anime_id, headers={"Idempotency-Key": bad})
        assert response.status_code == 422 and fields(response) == ["Idempotency-Key"], bad
    stranger = await make_account(live)
    separate = await watch(client, stranger, anime_id, headers=key)
    assert separate.status_code == 201


async def test_concurrent_requests_with_one_key_increment_once(client, live):
    """R10: racing repeats of one Idempotency-Key apply once and all answer alike."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    await seed(live, account, anime_id, episodes=2)
    key = {"Idempotency-Key": "same-key"}
    responses = await asyncio.gather(
        *(watch(client, account, anime_id, headers=key) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [200] * 5
    assert {r.json()["entry"]["episodes"] for r in responses} == {3}
    assert (await entry_row(live, account, anime_id))["episodes"] == 3


async def test_a_failing_game_never_costs_the_list_change(client, live, game):
    """R11: the game's refusal or failure never fails or rolls back the list change."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    game.fail = True
    response = await watch(client, account, anime_id)
    assert response.status_code == 201 and response.json()["effects"]["accrual"] is None
    assert (await entry_row(live, account, anime_id))["episodes"] == 1
    assert len(game.calls) == 1


# --- L1, L2, L4 --------------------------------------------------------------------------------


async def _walk(client, account, path, **params):
    """Every page of a list, following next_cursor with the parameter the order uses."""
    items, seen_pages = [], 0
    cursor_param = "cursor" if params.get("order") in ("title", "score", "episodes") else "before"
    if "after" in params:
        cursor_param = "after"
    while True:
        response = await client.get(path, params=params, headers=account.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        seen_pages += 1
        assert seen_pages < 50
        if body["next_cursor"] is None:
            return items
        assert len(body["next_cursor"]) <= 200
        params = {**params, cursor_param: body["next_cursor"]}


async def test_my_list_orders_and_pages_without_repeats(client, live):
    """L1: `updated` (rev desc, default), `added` (id desc), `title`, `score`, `episodes`;
    pages of `limit` never repeat or skip an entry, ties broken deterministically."""
    account = await make_account(live)
    names = ["beta", "Alpha", "delta", "Gamma", "epsilon"]
    ids = [await make_anime(live, name=n, episodes=30) for n in names]
    for position, anime_id in enumerate(ids):
        await seed(live, account, anime_id, score=[5, 9, 5, 0, 7][position], episodes=position)
    await seed(live, account, ids[0], text="touched last")
    by = {}
    for order in ("updated", "added", "title", "score", "episodes"):
        items = await _walk(client, account, "/anime-list", order=order, limit=2)
        by[order] = [item["anime_id"] for item in items]
        assert sorted(by[order]) == sorted(ids), order
    assert by["updated"][0] == ids[0]
    assert by["added"] == list(reversed(ids))
    assert by["title"] == [ids[1], ids[0], ids[2], ids[4], ids[3]]
    assert [dict(zip(ids, [5, 9, 5, 0, 7], strict=True))[i] for i in by["score"]] == [
        9,
        7,
        5,
        5,
        0,
    ]
    assert by["episodes"] == list(reversed(ids))
    default = (await client.get("/anime-list", headers=account.headers)).json()
    assert [i["anime_id"] for i in default["items"]] == by["updated"]
    assert default["next_cursor"] is None and default["items"][0]["text"] == "touched last"


async def test_after_walks_forward_through_changes_since_a_rev(client, live):
    """L1: `after` a rev returns what changed since, oldest change first: a client syncs."""
    account = await make_account(live)
    ids = [await make_anime(live) for _ in range(4)]
    revs = [(await seed(live, account, a)).rev for a in ids]
    await seed(live, account, ids[0], score=3)
    changed = await _walk(client, account, "/anime-list", order="updated", after=revs[1], limit=1)
    assert [i["anime_id"] for i in changed] == [ids[2], ids[3], ids[0]]


async def test_my_list_filters_by_status_kind_and_title(client, live):
    """L1: `status` and `kind` comma lists and `q` over every title (R3 normalisation)."""
    account = await make_account(live)
    titan = await make_anime(live, name="Shingeki no Kyojin", russian="Атака титанов")
    movie = await make_anime(live, name="Kimi no Na wa", kind="movie", episodes=1)
    other = await make_anime(live, name="Mushishi")
    await seed(live, account, titan, status="watching")
    await seed(live, account, movie, status="completed")
    await seed(live, account, other, status="dropped")

    async def ids(**params):
        response = await client.get("/anime-list", params=params, headers=account.headers)
        assert response.status_code == 200, response.text
        return {item["anime_id"] for item in response.json()["items"]}

    assert await ids(status="watching,dropped") == {titan, other}
    assert await ids(kind="movie") == {movie}
    assert await ids(q="атака  ТИТАНОВ!") == {titan}
    assert await ids(q="shingeki kyojin") == {titan}
    assert await ids(q="no na", status="completed") == {movie}
    assert await ids(q="zzz") == set()


async def test_my_list_rejects_bad_parameters_naming_them(client, live):
    """L1: unknown values, mixed cursors, a tampered or foreign cursor and unknown
    parameters are 422 naming the parameter."""
    account = await make_account(live)
    ids = [await make_anime(live) for _ in range(3)]
    for anime_id in ids:
        await seed(live, account, anime_id, score=anime_id % 10)
    page = (
        await client.get(
            "/anime-list", params={"order": "score", "limit": 1}, headers=account.headers
        )
    ).json()
    cursor = page["next_cursor"]
    body, _, mac = cursor.partition(".")
    cases = [
        ({"status": "finished"}, "status"),
        ({"kind": "book"}, "kind"),
        ({"order": "random"}, "order"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"q": ""}, "q"),
        ({"q": "x" * 101}, "q"),
        ({"before": "abc"}, "before"),
        ({"order": "title", "before": "123"}, "before"),
        ({"order": "updated", "cursor": cursor}, "cursor"),
        ({"order": "title", "cursor": cursor}, "cursor"),
        ({"order": "score", "cursor": body + "x." + mac}, "cursor"),
        ({"order": "score", "cursor": body + "." + mac[::-1]}, "cursor"),
        ({"order": "score", "cursor": "garbage"}, "cursor"),
        ({"before": "1", "after": "2"}, "after"),
        ({"sort": "score"}, "sort"),
    ]
    for params, field in cases:
        response = await client.get("/anime-list", params=params, headers=account.headers)
        assert response.status_code == 422, (params, response.text)
        assert field in fields(response), (params, response.json())
    follow = await client.get(
        "/anime-list", params={"order": "score", "cursor": cursor}, headers=account.headers
    )
    assert follow.status_code == 200


async def test_one_entry_is_mine_only(client, live):
    """L2 and R15: my entry; someone else's, a missing one and a malformed id are 404."""
    owner, other = await make_account(live), await make_account(live)
    anime_id = await make_anime(live)
    await seed(live, owner, anime_id, score=8, text="private")
    mine = await client.get(f"/anime-list/{anime_id}", headers=owner.headers)
    assert mine.status_code == 200 and mine.json()["text"] == "private"
    assert set(mine.json()) == ENTRY_KEYS
    theirs = await client.get(f"/anime-list/{anime_id}", headers=other.headers)
    assert theirs.status_code == 404 and theirs.json()["code"] == "entry_not_found"
    for path in ("/anime-list/0", "/anime-list/x1", "/anime-list/123456789012"):
        assert (await client.get(path, headers=owner.headers)).status_code == 404


async def test_delete_removes_logs_and_emits_once(client, live, capture):
    """L4: 204 with a `delete` history row and ANIME_LIST_UPDATE (entry null); a second delete
    and someone else's entry are 404 `entry_not_found` and emit nothing."""
    owner, other = await make_account(live), await make_account(live)
    anime_id = await make_anime(live)
    await seed(live, owner, anime_id, score=6)
    async with capture() as seen:
        assert (
            await client.delete(f"/anime-list/{anime_id}", headers=other.headers)
        ).status_code == 404
        gone = await client.delete(f"/anime-list/{anime_id}", headers=owner.headers)
        again = await client.delete(f"/anime-list/{anime_id}", headers=owner.headers)
    assert gone.status_code == 204 and again.status_code == 404
    assert again.json()["code"] == "entry_not_found"
    events = of_types(await seen.events())
    assert [(e.type, e.data["action"], e.data["entry"]) for e in events] == [
        ("ANIME_LIST_UPDATE", "delete", None)
    ]
    assert await entry_row(live, owner, anime_id) is None
    last = (await history_rows(live, owner))[-1]
    assert last["action"] == "delete" and last["before"]["score"] == 6 and last["after"] is None


async def test_re_adding_after_delete_starts_fresh(client, live):
    """R17: deleting reverses nothing in the game; the entry itself starts over."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    await watch(client, account, anime_id)
    await client.delete(f"/anime-list/{anime_id}", headers=account.headers)
    again = await watch(client, account, anime_id)
    assert again.status_code == 201 and again.json()["entry"]["episodes"] == 1


# --- L6, L7 ------------------------------------------------------------------------------------


async def test_stats_count_time_and_scores(client, live):
    """L6: episodes_watched = Σ(episodes + rewatches × anime.episodes), minutes × duration,
    days with 1 decimal, mean of scored entries with 2 decimals, histogram and kinds."""
    account = await make_account(live)
    tv = await make_anime(live, episodes=12, duration=24)
    movie = await make_anime(live, episodes=1, duration=110, kind="movie")
    ova = await make_anime(live, episodes=6, duration=30, kind="ova")
    await seed(live, account, tv, episodes=5, rewatches=2, score=7)
    await seed(live, account, movie, status="completed", score=10)
    await seed(live, account, ova, status="planned")
    stats = (await client.get("/anime-list/stats", headers=account.headers)).json()
    assert stats["total"] == 3
    assert stats["statuses"] == {
        "planned": 1,
        "watching": 1,
        "rewatching": 0,
        "completed": 1,
        "on_hold": 0,
        "dropped": 0,
    }
    assert stats["episodes_watched"] == 5 + 2 * 12 + 1
    assert stats["minutes_watched"] == (5 + 24) * 24 + 110
    assert stats["days_watched"] == round(((5 + 24) * 24 + 110) / 1440, 1)
    assert stats["mean_score"] == 8.5 and stats["scored"] == 2
    assert stats["score_histogram"]["7"] == 1 and stats["score_histogram"]["10"] == 1
    assert sum(stats["score_histogram"].values()) == 2 and len(stats["score_histogram"]) == 10
    assert stats["kinds"]["tv"] == 1 and stats["kinds"]["movie"] == 1 and stats["kinds"]["ova"] == 1
    empty = await client.get("/anime-list/stats", headers=(await make_account(live)).headers)
    assert empty.json()["mean_score"] is None and empty.json()["total"] == 0


async def test_history_pages_newest_first_and_filters_by_anime(client, live):
    """L7: `{id, anime:{id, name, russian}, action, before, after, created_at}`, newest first,
    by anime, paged with before; a bad `before` or `anime_id` is 422."""
    account = await make_account(live)
    first = await make_anime(live, name="First", russian="Первый")
    second = await make_anime(live, name="Second")
    await seed(live, account, first, score=1)
    await seed(live, account, second)
    await seed(live, account, first, score=2)
    items = await _walk(client, account, "/anime-list/history", limit=1)
    assert [i["action"] for i in items] == ["score", "add", "add"]
    assert items[0]["anime"] == {"id": first, "name": "First", "russian": "Первый"}
    assert items[0]["before"] == {"score": 1} and items[0]["after"] == {"score": 2}
    only = await client.get(
        "/anime-list/history", params={"anime_id": second}, headers=account.headers
    )
    assert [i["anime"]["id"] for i in only.json()["items"]] == [second]
    for params, field in (({"before": "x"}, "before"), ({"anime_id": "abc"}, "anime_id")):
        bad = await client.get("/anime-list/history", params=params, headers=account.headers)
        assert bad.status_code == 422 and field in fields(bad)
    stranger = await make_account(live)
    assert (await client.get("/anime-list/history", headers=stranger.headers)).json()["items"] == []


# --- authentication, bots, bans, rate limits ---------------------------------------------------


async def test_every_list_route_needs_a_signed_in_user(client, live):
    """L1-L10 are `user` routes: 401 without credentials, and with a bad token."""
    anime_id = await make_anime(live)
    routes = [
        ("GET", "/anime-list"),
        ("GET", "/anime-list/stats"),
        ("GET", "/anime-list/history"),
        ("GET", "/anime-list/export?format=mal_xml"),
        ("GET", f"/anime-list/import/{new_id()}"),
        ("GET", f"/anime-list/{anime_id}"),
        ("PUT", f"/anime-list/{anime_id}"),
        ("DELETE", f"/anime-list/{anime_id}"),
        ("POST", f"/anime-list/{anime_id}/episode"),
    ]
    for method, path in routes:
        assert (await client.request(method, path)).status_code == 401, path
        bad = await client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401, path
    anonymous = await client.post(
        "/anime-list/import?format=mal_xml", content=b"<x/>", headers={"Content-Type": "text/xml"}
    )
    assert anonymous.status_code == 401


async def test_bots_need_list_read_to_read_and_list_write_to_write(client, live, bot):
    """auth.md R22, R23: `list:read` reads, `list:write` changes the list and episode
    progress; a missing scope is 403 `insufficient_scope` naming it."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    reads = [
        "/anime-list",
        "/anime-list/stats",
        "/anime-list/history",
        "/anime-list/export?format=shikimori_json",
        f"/users/{account.id}/anime-list",
    ]
    none = bot(account, "profile:read")
    reader = bot(account, "list:read")
    writer = bot(account, "list:write")
    for path in reads:
        refused = await client.get(path, headers=none)
        assert refused.status_code == 403 and refused.json()["required_scope"] == "list:read"
        assert (await client.get(path, headers=reader)).status_code == 200, path
    for method, path in (
        ("PUT", f"/anime-list/{anime_id}"),
        ("POST", f"/anime-list/{anime_id}/episode"),
        ("DELETE", f"/anime-list/{anime_id}"),
    ):
        refused = await client.request(method, path, headers=reader)
        assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope"
        assert refused.json()["required_scope"] == "list:write"
    assert (await client.put(f"/anime-list/{anime_id}", headers=writer)).status_code == 201
    assert (await client.post(f"/anime-list/{anime_id}/episode", headers=writer)).status_code == 200
    refused_import = await client.post(
        "/anime-list/import?format=shikimori_json",
        content=b"[]",
        headers={**reader, "Content-Type": "application/json"},
    )
    assert refused_import.status_code == 403


async def test_banned_users_get_403(client, live):
    """DESIGN: a banned user gets 403 on every list route."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    await ban(live.services, account.id)
    for method, path in (
        ("GET", "/anime-list"),
        ("PUT", f"/anime-list/{anime_id}"),
        ("POST", f"/anime-list/{anime_id}/episode"),
    ):
        response = await client.request(method, path, headers=account.headers)
        assert response.status_code == 403 and response.json()["code"] == "banned", path


async def test_sixty_writes_a_minute_across_l3_to_l5(client, live):
    """L3: 60 writes/min across L3-L5 per user; the 61st is 429 with Retry-After, and another
    user is not affected."""
    account, other = await make_account(live), await make_account(live)
    anime_id = await make_anime(live, episodes=9999)
    for index in range(60):
        if index % 3 == 0:
            response = await put(client, account, anime_id, score=index % 11)
        elif index % 3 == 1:
            response = await watch(client, account, anime_id)
        else:
            response = await client.delete(f"/anime-list/{anime_id}", headers=account.headers)
        assert response.status_code in (200, 201, 204, 404), response.text
    limited = await watch(client, account, anime_id)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert (await watch(client, other, anime_id)).status_code == 201


# --- L11 and list_visibility (users.md R4, R3's list_summary) ---------------------------------


async def set_list_visibility(client, account, value):
    response = await client.patch(
        "/users/me/privacy", json={"list_visibility": value}, headers=account.headers
    )
    assert response.status_code == 200, response.text


async def test_list_visibility_decides_who_reads_a_list(client, live, graph):
    """L11, R15, users.md R4: public → anyone, anonymous included; friends → friends only;
    private → the owner only; a block either way → 404 even when public; never 403, and the
    404 is the same body as for a missing user."""
    owner, friend, stranger, blocked = [await make_account(live) for _ in range(4)]
    graph.befriend(owner, friend)
    graph.block(owner, blocked)
    anime_id = await make_anime(live)
    await seed(live, owner, anime_id, score=9, text="secret note")
    path = f"/users/{owner.id}/anime-list"

    async def status_for(viewer):
        headers = viewer.headers if viewer else {}
        return (await client.get(path, headers=headers)).status_code

    matrix = {
        "public": (200, 200, 200, 404, 200),
        "friends": (200, 404, 404, 404, 200),
        "private": (404, 404, 404, 404, 200),
    }
    for visibility, expected in matrix.items():
        await set_list_visibility(client, owner, visibility)
        got = tuple(
            [await status_for(v) for v in (friend, stranger, None, blocked)]
            + [await status_for(owner)]
        )
        assert got == expected, visibility
    hidden = await client.get(path, headers=stranger.headers)
    missing = await client.get(f"/users/{new_id()}/anime-list", headers=stranger.headers)
    assert hidden.json() == missing.json() and hidden.json()["code"] == "user_not_found"
    assert (await client.get("/users/abc/anime-list")).status_code == 404


async def test_another_users_list_never_shows_the_note(client, live):
    """L11: the L1 shape without `text`, with L1's filters and orders."""
    owner, viewer = await make_account(live), await make_account(live)
    first = await make_anime(live, name="Aaa")
    second = await make_anime(live, name="Bbb")
    await seed(live, owner, first, text="mine only", status="watching")
    await seed(live, owner, second, status="completed")
    response = await client.get(f"/users/{owner.id}/anime-list", headers=viewer.headers)
    items = response.json()["items"]
    assert len(items) == 2 and all("text" not in item for item in items)
    assert set(items[0]) == ENTRY_KEYS - {"text"}
    filtered = await client.get(
        f"/users/{owner.id}/anime-list",
        params={"status": "completed", "order": "title"},
    )
    assert [i["anime_id"] for i in filtered.json()["items"]] == [second]
    bad = await client.get(f"/users/{owner.id}/anime-list", params={"order": "x"})
    assert bad.status_code == 422 and fields(bad) == ["order"]


async def test_deleted_pending_and_banned_owners_have_no_visible_list(client, live):
    """L11 follows users.md R3: a deleted, deletion-pending or banned user's list is 404."""
    viewer = await make_account(live)
    for change in (
        {"status": "deleted"},
        {"status": "deletion_pending"},
        {"banned_until": datetime.now(UTC) + timedelta(days=1)},
    ):
        owner = await make_account(live)
        await set_user(live.services, owner.id, **change)
        response = await client.get(f"/users/{owner.id}/anime-list", headers=viewer.headers)
        assert response.status_code == 404, change


async def test_the_profile_list_summary_counts_the_list(client, live, graph):
    """users.md R3: `list_summary` comes from the list (a rewatch counts as watching) and is
    null unless list_visibility admits the viewer."""
    owner, stranger = await make_account(live), await make_account(live)
    titles = [await make_anime(live, episodes=10) for _ in range(5)]
    await seed(live, owner, titles[0], episodes=3)
    await seed(live, owner, titles[1], status="completed")
    await seed(live, owner, titles[2], status="rewatching", episodes=2, rewatches=1)
    await seed(live, owner, titles[3], status="dropped")
    await seed(live, owner, titles[4])
    summary = (await client.get(f"/users/{owner.id}", headers=stranger.headers)).json()
    assert summary["list_summary"] == {
        "watching": 2,
        "completed": 1,
        "on_hold": 0,
        "dropped": 1,
        "planned": 1,
        "episodes_watched": 3 + 10 + 2 + 10,
    }
    await set_list_visibility(client, owner, "private")
    hidden = (await client.get(f"/users/{owner.id}", headers=stranger.headers)).json()
    assert hidden["list_summary"] is None
    mine = (await client.get(f"/users/{owner.id}", headers=owner.headers)).json()
    assert mine["list_summary"]["completed"] == 1


# --- L8-L10: import and export ---------------------------------------------------------------


def mal_file(*animes: dict, prolog: str = "") -> bytes:
    """A MAL export with one <anime> per dict (tags as given)."""
    parts = [f'<?xml version="1.0" encoding="UTF-8" ?>\n{prolog}<myanimelist>\n']
    parts.append("<myinfo><user_name>someone</user_name><user_export_type>1</user_export_type>")
    parts.append("</myinfo>\n")
    for values in animes:
        parts.append("<anime>")
        for tag, value in values.items():
            parts.append(f"<{tag}>{value}</{tag}>")
        parts.append("</anime>\n")
    parts.append("</myanimelist>\n")
    return "".join(parts).encode()


def mal_anime(anime_id, status="Watching", episodes=0, score=0, **extra):
    return {
        "series_animedb_id": anime_id,
        "series_title": "<![CDATA[whatever]]>",
        "my_watched_episodes": episodes,
        "my_start_date": "0000-00-00",
        "my_finish_date": "0000-00-00",
        "my_score": score,
        "my_status": status,
        "my_times_watched": 0,
        "my_rewatching": 0,
        **extra,
    }


async def start_import(client, account, data: bytes, fmt="mal_xml", mode=None, **headers):
    content_type = headers.pop("content_type", None) or (
        "application/xml" if fmt == "mal_xml" else "application/json"
    )
    params = {"format": fmt, **({"mode": mode} if mode else {})}
    return await client.post(
        "/anime-list/import",
        params=params,
        content=data,
        headers={**account.headers, "Content-Type": content_type, **headers},
    )


async def finished(client, account, job_id, timeout=15.0) -> dict:
    """L9, polled until the job is done or failed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(f"/anime-list/import/{job_id}", headers=account.headers)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["state"] in ("done", "failed"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)


async def run_import(client, account, data, fmt="mal_xml", mode=None, **headers) -> dict:
    response = await start_import(client, account, data, fmt, mode, **headers)
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    assert job["state"] == "queued" and job["added"] == 0
    return await finished(client, account, job["id"])


async def test_a_mal_export_imports_with_per_row_problems(client, live, capture, game):
    """L8: MAL ids map through `myanimelist_id`, else the same id; statuses by name or number,
    `my_rewatching=1` → rewatching; bad rows are reported by ref and reason, never abort the
    job; ANIME_LIST_IMPORT_DONE follows; no list or game events are emitted (R12)."""
    account = await make_account(live)
    mapped = await make_anime(live, episodes=26, myanimelist_id=1)
    direct = await make_anime(live, episodes=12)
    rewatched = await make_anime(live, episodes=12)
    scored = await make_anime(live, episodes=12)
    duplicated = await make_anime(live, episodes=12)
    data = mal_file(
        mal_anime(1, "Completed", 26, 9, my_finish_date="2021-03-04"),
        mal_anime(direct, "1", 3, 7, my_start_date="2020-05-00"),
        mal_anime(rewatched, "Completed", 4, my_rewatching=1, my_times_watched=2),
        mal_anime(scored, "Plan to Watch", score=11, my_comments="<![CDATA[a <b> note]]>"),
        mal_anime(duplicated, "Dropped", 2),
        mal_anime(duplicated, "On-Hold", 5),
        mal_anime(424242, "Watching"),
        mal_anime(direct + 1_000_000, "Finished"),
        {"series_title": "no id"},
    )
    async with capture() as seen:
        job = await run_import(client, account, data)
    assert job["state"] == "done" and job["format"] == "mal_xml" and job["mode"] == "add_only"
    assert (job["total"], job["added"], job["updated"], job["skipped"]) == (9, 5, 0, 4)
    problems = {(p["ref"], p["reason"]) for p in job["problems"]}
    assert problems == {
        (str(scored), "score_out_of_range"),
        (str(duplicated), "duplicate"),
        ("424242", "not_in_catalog"),
        (str(direct + 1_000_000), "invalid_status"),
        ("row 9", "missing_id"),
    }
    rows = {a: await entry_row(live, account, a) for a in (mapped, direct, rewatched, scored)}
    assert (rows[mapped]["status"], rows[mapped]["episodes"], rows[mapped]["score"]) == (
        "completed",
        26,
        9,
    )
    assert rows[mapped]["completed_on"] == date(2021, 3, 4)
    assert rows[direct]["status"] == "watching" and rows[direct]["started_on"] == date(2020, 5, 1)
    assert (rows[rewatched]["status"], rows[rewatched]["rewatches"]) == ("rewatching", 2)
    assert rows[scored]["score"] == 0 and rows[scored]["text"] == "a <b> note"
    assert (await entry_row(live, account, duplicated))["status"] == "on_hold"
    events = await seen.events()
    assert of_types(events) == [] and game.calls == []
    done = of_types(events, {"ANIME_LIST_IMPORT_DONE"})
    assert len(done) == 1 and done[0].data["job"] == job
    assert done[0].targets.topics == (f"user:{account.id}",)
    history = await history_rows(live, account)
    assert {r["action"] for r in history} == {"import"} and len(history) == 5


async def test_a_shikimori_list_imports_in_both_shapes(client, live):
    """L8: an array like `/api/users/:id/anime_rates` (nested anime) or v2 `user_rates`
    (`target_id`, `target_type`); manga rows are skipped as `not_anime`."""
    account = await make_account(live)
    nested = await make_anime(live, episodes=24)
    flat = await make_anime(live, episodes=12)
    lenient = await make_anime(live, episodes=12)
    rates = [
        {
            "id": 1,
            "score": 8,
            "status": "watching",
            "episodes": 30,
            "rewatches": 0,
            "text": None,
            "anime": {"id": nested, "name": "x"},
            "manga": None,
        },
        {
            "id": 2,
            "target_id": flat,
            "target_type": "Anime",
            "score": 0,
            "status": "completed",
            "episodes": 2,
            "rewatches": 1,
            "text": "t",
        },
        {"id": 3, "target_id": 5, "target_type": "Manga", "status": "completed"},
        {"id": 4, "anime": None, "manga": {"id": 7}, "status": "planned"},
        "not an object",
        {
            "target_id": lenient,
            "status": "on_hold",
            "episodes": -3,
            "rewatches": "many",
            "text": "x" * 5000 + "\x00",
            "started_on": "yesterday",
        },
    ]
    job = await run_import(client, account, json.dumps(rates).encode(), "shikimori_json")
    assert (job["added"], job["skipped"]) == (3, 3)
    assert {(p["ref"], p["reason"]) for p in job["problems"]} == {
        ("row 3", "not_anime"),
        ("row 4", "not_anime"),
        ("row 5", "not_an_object"),
        (str(lenient), "invalid_episodes"),
        (str(lenient), "invalid_rewatches"),
        (str(lenient), "text_truncated"),
        (str(lenient), "invalid_date"),
    }
    forgiven = await entry_row(live, account, lenient)
    assert (forgiven["episodes"], forgiven["rewatches"], len(forgiven["text"])) == (0, 0, 4096)
    assert "\x00" not in forgiven["text"] and forgiven["started_on"] is None
    first = await entry_row(live, account, nested)
    assert (first["episodes"], first["score"]) == (24, 8)
    second = await entry_row(live, account, flat)
    assert (second["status"], second["episodes"], second["rewatches"]) == ("completed", 12, 1)


async def test_add_only_keeps_my_entries_and_overwrite_replaces_them(client, live):
    """L8 modes: add_only skips anime already in the list; overwrite replaces them (an
    identical row is skipped, not rewritten)."""
    account = await make_account(live)
    kept = await make_anime(live, episodes=12)
    same = await make_anime(live, episodes=12)
    await seed(live, account, kept, score=3)
    await seed(live, account, same, status="dropped")
    data = mal_file(mal_anime(kept, "Watching", 4, 9), mal_anime(same, "Dropped"))
    job = await run_import(client, account, data)
    assert (job["added"], job["updated"], job["skipped"]) == (0, 0, 2)
    assert (await entry_row(live, account, kept))["score"] == 3
    rev = (await entry_row(live, account, same))["rev"]
    job = await run_import(client, account, data, mode="overwrite")
    assert (job["added"], job["updated"], job["skipped"]) == (0, 1, 1)
    replaced = await entry_row(live, account, kept)
    assert (replaced["score"], replaced["episodes"], replaced["status"]) == (9, 4, "watching")
    assert (await entry_row(live, account, same))["rev"] == rev


async def test_overwriting_from_a_file_without_dates_keeps_mine(client, live):
    """L8 overwrite: Shikimori's rates carry no dates, so an imported row keeps the dates the
    entry has; the file's values replace everything else."""
    account = await make_account(live)
    anime_id = await make_anime(live, episodes=12)
    await seed(live, account, anime_id, status="completed")
    rates = [{"target_id": anime_id, "target_type": "Anime", "status": "completed", "score": 7}]
    job = await run_import(
        client, account, json.dumps(rates).encode(), "shikimori_json", mode="overwrite"
    )
    assert job["updated"] == 1
    row = await entry_row(live, account, anime_id)
    assert row["score"] == 7 and row["completed_on"] == datetime.now(UTC).date()
    assert row["started_on"] == datetime.now(UTC).date()


async def test_gzipped_files_are_accepted(client, live):
    """L8: `Content-Encoding: gzip` or `Content-Type: application/gzip` (MAL's .xml.gz)."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    data = gzip.compress(mal_file(mal_anime(anime_id, "Watching", 2)))
    job = await run_import(client, account, data, content_type="application/gzip")
    assert job["added"] == 1
    other = await make_account(live)
    job = await run_import(
        client, other, data, content_type="application/xml", **{"Content-Encoding": "gzip"}
    )
    assert job["added"] == 1


async def test_xml_with_a_doctype_or_entities_is_refused_never_expanded(client, live):
    """L8: XML with a DOCTYPE or entity declaration is 422 with the line, and nothing is
    fetched or expanded (billion laughs, external entities); malformed files name the line."""
    account = await make_account(live)

    async def attempt(*args, **kwargs):
        await live.services.limiter.clear(IMPORT_RATE, "anime-list-import", str(account.id))
        return await start_import(client, account, *args, **kwargs)

    laughs = '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>\n'
    external = '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    anime_id = await make_anime(live)
    for prolog in (laughs, external, '<!DOCTYPE myanimelist SYSTEM "http://127.0.0.1/x.dtd">\n'):
        data = mal_file(mal_anime(anime_id, my_comments="&lol2;"), prolog=prolog)
        response = await attempt(data)
        assert response.status_code == 422, response.text
        assert "Line 2" in response.json()["detail"] and fields(response) == ["body"]
    broken = await attempt(b"<myanimelist>\n<anime>\n</myanimelist>")
    assert broken.status_code == 422 and "Line 3" in broken.json()["detail"]
    wrong_root = await attempt(b"<html></html>")
    assert wrong_root.status_code == 422
    bad_json = await attempt(b'[\n{"a": 1},\n{nope}]', "shikimori_json")
    assert bad_json.status_code == 422 and "Line 3" in bad_json.json()["detail"]
    not_list = await attempt(b'{"a": 1}', "shikimori_json")
    assert not_list.status_code == 422
    bad_gzip = await attempt(b"\x1f\x8bnot gzip at all")
    assert bad_gzip.status_code == 422
    empty = await attempt(b"")
    assert empty.status_code == 422
    assert (
        await live.services.db.fetch_val(sa.select(sa.func.count()).select_from(anime_list_import))
        == 0
    )


async def test_import_limits_are_413(client, live):
    """L8: over 5 MiB sent, over 25 MiB decompressed (a gzip bomb) or over 20 000 entries →
    413 `too_large`, decided without inflating past the cap."""
    account = await make_account(live)
    huge = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    assert (await start_import(client, account, huge, "shikimori_json")).status_code == 413
    bomb = gzip.compress(b"[" + b" " * (26 * 1024 * 1024) + b"]", compresslevel=9)
    assert len(bomb) < 5 * 1024 * 1024
    response = await start_import(
        client, account, bomb, "shikimori_json", content_type="application/gzip"
    )
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    many = json.dumps([{"target_id": 1, "status": "planned"}] * 20_001).encode()
    assert (await start_import(client, account, many, "shikimori_json")).status_code == 413
    many_xml = mal_file(*[{"series_animedb_id": 1}] * 20_001)
    assert (await start_import(client, account, many_xml)).status_code == 413


async def test_import_checks_its_parameters_and_media_type(client, live):
    """L8: `format` is required and `mode` one of two (422 naming them); other media types
    are 415."""
    account = await make_account(live)
    for params, field in (
        ({}, "format"),
        ({"format": "csv"}, "format"),
        ({"format": "mal_xml", "mode": "merge"}, "mode"),
    ):
        response = await client.post(
            "/anime-list/import",
            params=params,
            content=b"<myanimelist/>",
            headers={**account.headers, "Content-Type": "application/xml"},
        )
        assert response.status_code == 422 and field in fields(response), params
    wrong = await start_import(client, account, b"a,b", content_type="text/csv")
    assert wrong.status_code == 415


async def test_one_import_at_a_time(client, live, monkeypatch):
    """L8: 409 `import_in_progress` while one is queued or running; of concurrent starts,
    one is queued (partial unique index) and the others are 409."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    data = mal_file(mal_anime(anime_id))
    release = asyncio.Event()

    async def held(services, payload):  # the worker may not finish the job before we look
        await release.wait()
        await lists.transfer.run_import(services, payload)

    monkeypatch.setitem(server_jobs._handlers, IMPORT_JOB_KIND, held)
    results = await asyncio.gather(
        *(
            lists.do_start_import(
                live.services, account.id, "mal_xml", "add_only", data, "application/xml", ""
            )
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    started = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(started) == 1 and len(refused) == 2, results
    assert all(getattr(r, "code", None) == "import_in_progress" for r in refused), refused
    busy = await start_import(client, account, data)
    assert busy.status_code == 409 and busy.json()["code"] == "import_in_progress"
    release.set()
    assert (await finished(client, account, started[0].job.id))["state"] == "done"
    again = await start_import(client, account, data)
    assert again.status_code == 202
    await finished(client, account, again.json()["job"]["id"])


async def test_an_import_job_is_the_owners_alone(client, live):
    """L9, R15: another user's job id, an unknown one and a malformed one are 404."""
    owner, other = await make_account(live), await make_account(live)
    anime_id = await make_anime(live)
    job = await run_import(client, owner, mal_file(mal_anime(anime_id)))
    assert (
        await client.get(f"/anime-list/import/{job['id']}", headers=other.headers)
    ).status_code == 404
    for job_id in (str(new_id()), "abc", "0"):
        response = await client.get(f"/anime-list/import/{job_id}", headers=owner.headers)
        assert response.status_code == 404


async def test_imports_are_limited_to_five_an_hour(client, live):
    """L8: 5 imports per hour per user; the 6th is 429."""
    account = await make_account(live)
    for _ in range(5):
        assert (await start_import(client, account, b"<nope")).status_code == 422
    limited = await start_import(client, account, b"<nope")
    assert limited.status_code == 429 and "retry-after" in limited.headers


async def test_a_crashed_import_ends_failed_with_its_batches_kept(client, live, capture):
    """R13: a job that died mid-way is re-run by the queue and reported `failed`, with the
    batches it applied kept and counted."""
    account = await make_account(live)
    titles = [await make_anime(live) for _ in range(3)]
    now = datetime.now(UTC)
    import_id = new_id()
    await live.services.db.execute(
        anime_list_import.insert().values(
            id=import_id,
            user_id=account.id,
            format="mal_xml",
            mode="add_only",
            state="running",
            total=3,
            added=1,
            updated=0,
            skipped=0,
            problems=[],
            entries=[],
            applied=1,
            created_at=now,
            finished_at=None,
        )
    )
    await seed(live, account, titles[0])
    async with capture() as seen:
        await lists.transfer.run_import(live.services, {"import_id": str(import_id)})
    job = (await client.get(f"/anime-list/import/{import_id}", headers=account.headers)).json()
    assert job["state"] == "failed" and job["finished_at"] is not None
    assert (job["added"], job["skipped"]) == (1, 2)
    assert {"ref": "job", "reason": "interrupted"} in job["problems"]
    assert await entry_row(live, account, titles[0]) is not None
    assert len(of_types(await seen.events(), {"ANIME_LIST_IMPORT_DONE"})) == 1
    await lists.transfer.run_import(live.services, {"import_id": str(import_id)})
    assert len(of_types(await seen.events(), {"ANIME_LIST_IMPORT_DONE"})) == 1


async def test_large_imports_apply_in_batches_and_cap_problems(client, live):
    """R13: 500 entries per transaction; the job's `problems` keep at most 100."""
    account = await make_account(live)
    titles = [await make_anime(live) for _ in range(3)]
    rows = [{"target_id": t, "target_type": "Anime", "status": "planned"} for t in titles]
    rows += [{"target_id": 10_000_000 + i, "status": "planned"} for i in range(1200)]
    job = await run_import(client, account, json.dumps(rows).encode(), "shikimori_json")
    assert (job["total"], job["added"], job["skipped"]) == (1203, 3, 1200)
    assert len(job["problems"]) == 100
    stored = await live.services.db.fetch_one(
        sa.select(anime_list_import).where(anime_list_import.c.id == int(job["id"]))
    )
    assert stored["entries"] is None and stored["applied"] == 1203


async def test_export_then_import_reproduces_the_list_in_both_formats(client, live):
    """R14: exporting and importing that file in overwrite mode into an empty list
    reproduces status, score, episodes, rewatches, text and dates, for both formats."""
    owner = await make_account(live)
    titles = [await make_anime(live, episodes=12, myanimelist_id=None) for _ in range(6)]
    mapped = await make_anime(live, episodes=24, myanimelist_id=777_001)
    await seed(live, owner, titles[0], episodes=5, score=8, text="<&>\"' ё\n\tline")
    await seed(live, owner, titles[1], status="completed", score=10)
    await seed(live, owner, titles[2], status="rewatching", episodes=3, rewatches=2)
    await seed(live, owner, titles[3], status="on_hold", episodes=1)
    await seed(live, owner, titles[4], status="dropped", text="meh")
    await seed(live, owner, titles[5])
    await seed(live, owner, mapped, status="completed")
    await live.services.db.execute(
        anime_list_entry.update()
        .where(anime_list_entry.c.user_id == owner.id, anime_list_entry.c.anime_id == titles[0])
        .values(started_on=date(2019, 1, 2), completed_on=date(2019, 2, 3))
    )

    def essence(rows):
        return sorted(
            (
                r["anime_id"],
                r["status"],
                r["score"],
                r["episodes"],
                r["rewatches"],
                r["text"],
                r["started_on"],
                r["completed_on"],
            )
            for r in rows
        )

    original = essence(
        await live.services.db.fetch_all(
            sa.select(anime_list_entry).where(anime_list_entry.c.user_id == owner.id)
        )
    )
    for fmt in ("mal_xml", "shikimori_json"):
        exported = await client.get(
            "/anime-list/export", params={"format": fmt}, headers=owner.headers
        )
        assert exported.status_code == 200
        disposition = exported.headers["content-disposition"]
        assert disposition.startswith("attachment;") and str(owner.id) in disposition
        fresh = await make_account(live)
        job = await run_import(client, fresh, exported.content, fmt, mode="overwrite")
        assert job["state"] == "done" and job["added"] == 7 and job["problems"] == [], job
        copied = essence(
            await live.services.db.fetch_all(
                sa.select(anime_list_entry).where(anime_list_entry.c.user_id == fresh.id)
            )
        )
        assert copied == original, fmt


async def test_the_mal_export_has_myinfo_and_every_field(client, live):
    """L10: `<myinfo>` (user_name, user_export_type 1, counts per status) and one `<anime>`
    per entry with the L8 fields plus series_title, series_type, series_episodes and
    update_on_import 0; the Shikimori export is an `anime_rates` array."""
    account = await make_account(live)
    movie = await make_anime(live, name="Film & Co", episodes=1, kind="movie", myanimelist_id=55)
    series = await make_anime(live, episodes=12)
    await seed(live, account, movie, status="completed", score=6)
    await seed(live, account, series, status="rewatching", episodes=2)
    response = await client.get(
        "/anime-list/export", params={"format": "mal_xml"}, headers=account.headers
    )
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    info = root.find("myinfo")
    assert info.findtext("user_name") == account.username
    assert info.findtext("user_export_type") == "1"
    assert info.findtext("user_total_anime") == "2"
    assert info.findtext("user_total_completed") == "2"
    animes = {a.findtext("series_title"): a for a in root.findall("anime")}
    film = animes["Film & Co"]
    assert film.findtext("series_animedb_id") == "55" and film.findtext("series_type") == "Movie"
    assert film.findtext("series_episodes") == "1" and film.findtext("my_score") == "6"
    assert film.findtext("update_on_import") == "0"
    assert film.findtext("my_finish_date") == today()
    rewatch = animes[f"Title {series}"]
    assert rewatch.findtext("my_rewatching") == "1" and rewatch.findtext("my_status") == "Completed"
    rates = (
        await client.get(
            "/anime-list/export", params={"format": "shikimori_json"}, headers=account.headers
        )
    ).json()
    assert {r["anime"]["id"] for r in rates} == {movie, series}
    assert all(r["manga"] is None and "rewatches" in r for r in rates)
    bad = await client.get("/anime-list/export", params={"format": "csv"}, headers=account.headers)
    assert bad.status_code == 422 and fields(bad) == ["format"]


async def test_exports_are_limited_to_ten_an_hour(client, live):
    """L10: 10 exports per hour per user; the 11th is 429."""
    account = await make_account(live)
    for _ in range(10):
        ok = await client.get(
            "/anime-list/export", params={"format": "mal_xml"}, headers=account.headers
        )
        assert ok.status_code == 200
    limited = await client.get(
        "/anime-list/export", params={"format": "mal_xml"}, headers=account.headers
    )
    assert limited.status_code == 429


# --- retention, account export and deletion ----------------------------------------------------


async def test_history_and_idempotency_keys_expire(client, live):
    """Data: history is pruned after 365 days; stored L5 answers after 24 hours."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    now = datetime.now(UTC)
    old = snowflake_at(now - timedelta(days=366))
    await live.services.db.execute(
        anime_list_history.insert().values(
            id=old,
            user_id=account.id,
            anime_id=anime_id,
            action="add",
            before=None,
            after={},
            created_at=now - timedelta(days=366),
        )
    )
    await watch(client, account, anime_id, headers={"Idempotency-Key": "k1"})
    await live.services.db.execute(
        anime_list_idempotency.insert().values(
            user_id=account.id,
            key="old",
            request="x",
            status=200,
            body="{}",
            created_at=now - timedelta(hours=25),
        )
    )
    removed = await lists.sweep_anime_lists(live.services)
    assert removed == 2
    assert [r["id"] for r in await history_rows(live, account)] != [old]
    assert old not in [r["id"] for r in await history_rows(live, account)]
    keys = await live.services.db.fetch_all(sa.select(anime_list_idempotency.c.key))
    assert [k["key"] for k in keys] == ["k1"]


async def test_the_account_export_holds_the_list_and_deletion_forgets_it(client, live):
    """users.md R10: the data export has `anime_list.json` (entries with notes, history);
    R9: anonymizing an account deletes its list, history and imports."""
    account = await make_account(live)
    anime_id = await make_anime(live)
    await seed(live, account, anime_id, text="n")
    assert "anime_list" in exporter_names()
    exported = await lists.export_for_account(live.services, account.id)
    assert exported["entries"][0]["text"] == "n" and exported["history"][0]["action"] == "add"
    await set_user(
        live.services,
        account.id,
        status="deletion_pending",
        deletion_scheduled_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert await deletion_module.anonymize_user(live.services, account.id) is True
    assert await entry_row(live, account, anime_id) is None
    assert await history_rows(live, account) == []
