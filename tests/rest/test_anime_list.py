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
    anime_list_entry,
    anime_list_history,
    anime_list_idempotency,
    anime_list_import,
)
from models.auth import accounts
from models.auth.identity import user_state
from models.exports import exporter_names
from models.users import deletion as deletion_module
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
