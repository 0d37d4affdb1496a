"""Users: profiles, search, the caller's account, deletion and export (users.md U1-U12, R1-R10).

Friends and blocks belong to social.md; these tests plug a scripted social graph into
models.social_graph (the same seam the social domain uses), and a scripted bot resolver in
place of API keys, so every rule here is exercised on its own.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from models import privacy, social_graph
from models.auth import accounts
from models.auth.identity import user_state
from models.auth.sessions import session_cache_key
from models.auth.tables import auth_sessions
from models.exports import build_export, data_exports, sweep_exports
from models.oauth.tables import oauth_identities
from models.privacy import user_privacy
from models.user_settings import user_settings
from models.users import deletion as deletion_module
from models.users import get_user, username_reservations, users
from models.users.search import prefix_upper_bound
from server.auth import Identity
from server.events import validate_payload
from tests.factories import (
    PASSWORD,
    Account,
    ban,
    inside_one_window,
    login,
    register,
    set_user,
    unique_name,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROFILE_ONLY = {
    "bio",
    "location",
    "website",
    "created_at",
    "online",
    "badges",
    "theme",
    "level",
    "race",
    "list_summary",
    "friends_count",
    "relationship",
}
CARD = {"id", "username", "display_name", "avatar_url", "frame", "staff_role", "is_private"}
PRIVATE_VALUES = {"email", "settings", "privacy", "email_verified", "loadout"}


# --- fixtures and helpers ---------------------------------------------------------------------


class ScriptedGraph(social_graph.SocialGraph):
    """Friendships and blocks a test declares (social.md fills this seam for real)."""

    def __init__(self) -> None:
        self.friendships: set[frozenset[int]] = set()
        self.blocks: set[tuple[int, int]] = set()
        self.online_users: set[int] = set()

    def befriend(self, a: Account, b: Account) -> None:
        self.friendships.add(frozenset((a.id, b.id)))

    def block(self, blocker: Account, blocked: Account) -> None:
        self.blocks.add((blocker.id, blocked.id))

    async def friend_ids(self, services, user_id):
        return {other for pair in self.friendships if user_id in pair for other in pair} - {user_id}

    async def blocked_ids(self, services, user_id):
        return {b for a, b in self.blocks if a == user_id} | {
            a for a, b in self.blocks if b == user_id
        }

    async def online(self, services, user_id):
        return user_id in self.online_users


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
                banned_until=datetime.fromtimestamp(state.banned_until, UTC)
                if state.banned_until
                else None,
            )
        return await original(credentials, request)

    monkeypatch.setattr(live.services, "resolve_identity", resolve)
    return lambda account, scopes="profile:read": {
        "Authorization": f"Bot test:{account.id}:{scopes}"
    }


@pytest.fixture
def export_dir(live, monkeypatch, tmp_path):
    monkeypatch.setattr(live.services, "settings", live.settings.replace(data_dir=str(tmp_path)))
    return tmp_path


async def make_account(live, username: str | None = None, display_name: str | None = None):
    """An account made through the real registration operation (the HTTP route's per-IP
    limit would stop a test that needs many users)."""
    username = username or unique_name()
    pair = await accounts.do_register(
        live.services,
        username=username,
        email=f"{username.lower()}@example.com",
        password=PASSWORD,
        locale=None,
        client=accounts.ClientInfo("other", None, "tests", "127.0.0.1"),
    )
    if display_name is not None:
        await set_user(
            live.services,
            int(pair.user.id),
            display_name=display_name,
            display_name_lower=display_name.lower(),
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


async def link_identity(live, account, provider="fake"):
    """An OAuth identity row as auth.md's link flow leaves it."""
    await live.services.db.execute(
        oauth_identities.insert().values(
            id=account.id + 1,
            user_id=account.id,
            provider=provider,
            subject=f"subject-{account.id}",
            username="nick",
            email=account.email,
            avatar_url=None,
            created_at=datetime.now(UTC),
            last_login_at=None,
        )
    )


async def set_privacy(client, account, **values):
    response = await client.patch("/users/me/privacy", json=values, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def check_events(events, expected_types):
    assert [e.type for e in events] == expected_types
    for event in events:
        validate_payload(event.type, event.data)


def field_of(response) -> list[str]:
    return [e["field"] for e in response.json().get("errors", [])]


# --- U1, U2 and the visibility rules (R3) -----------------------------------------------------


async def test_anyone_sees_a_public_profile_without_private_values(client, live):
    """R3 step 4 (public), R5: a Profile for anonymous viewers; never email or settings."""
    owner = await register(client)
    await client.patch(
        "/users/me", json={"display_name": "Owner", "bio": "hi"}, headers=owner.headers
    )
    response = await client.get(f"/users/{owner.id}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == CARD | PROFILE_ONLY
    assert body["id"] == str(owner.id) and body["display_name"] == "Owner"
    assert body["is_private"] is False and body["bio"] == "hi"
    assert body["relationship"] is None and body["online"] is None
    assert body["level"] == 1 and body["race"] is None and body["badges"] == []
    assert body["list_summary"] == {
        "watching": 0,
        "completed": 0,
        "on_hold": 0,
        "dropped": 0,
        "planned": 0,
        "episodes_watched": 0,
    }
    assert not PRIVATE_VALUES & set(body)


async def test_the_visibility_matrix(client, live, graph):
    """R3: self always; deletion_pending and banned → card; private → card for all; friends →
    profile for friends only; anonymous never counts as a friend."""
    owner, friend, other = [await make_account(live) for _ in range(3)]
    graph.befriend(owner, friend)

    async def shape(viewer):
        headers = viewer.headers if viewer else {}
        response = await client.get(f"/users/{owner.id}", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["is_private"]:
            assert set(body) == CARD
            return "card"
        assert set(body) == CARD | PROFILE_ONLY
        return "profile"

    viewers = (None, owner, friend, other)
    assert [await shape(v) for v in viewers] == ["profile"] * 4
    await set_privacy(client, owner, profile_visibility="friends")
    assert [await shape(v) for v in viewers] == ["card", "profile", "profile", "card"]
    await set_privacy(client, owner, profile_visibility="private")
    assert [await shape(v) for v in viewers] == ["card", "profile", "card", "card"]
    await set_privacy(client, owner, profile_visibility="public")
    await set_user(live.services, owner.id, status="deletion_pending")
    assert [await shape(v) for v in viewers] == ["card", "profile", "card", "card"]
    await set_user(live.services, owner.id, status="active")
    await ban(live.services, owner.id)
    assert [await shape(v) for v in (None, friend, other)] == ["card"] * 3
    await set_user(live.services, owner.id, banned_until=datetime.now(UTC) - timedelta(days=1))
    assert [await shape(v) for v in viewers] == ["profile"] * 4


async def test_missing_deleted_blocked_and_malformed_are_one_identical_404(client, live, graph):
    """R3 step 1: nothing tells a blocked viewer from a missing or deleted user."""
    owner, blocker, blocked = [await make_account(live) for _ in range(3)]
    graph.block(blocker, owner)
    graph.block(owner, blocked)
    gone = await make_account(live)
    await set_user(live.services, gone.id, status="deleted")
    answers = [
        await client.get(f"/users/{owner.id}", headers=blocker.headers),
        await client.get(f"/users/{owner.id}", headers=blocked.headers),
        await client.get(f"/users/by-username/{owner.username}", headers=blocker.headers),
        await client.get(f"/users/{gone.id}"),
        await client.get("/users/123456789"),
        await client.get("/users/not-an-id"),
        await client.get("/users/-5"),
        await client.get("/users/by-username/" + "x" * 40),
        await client.get("/users/by-username/nobody_here"),
    ]
    assert {r.status_code for r in answers} == {404}
    assert len({r.content for r in answers}) == 1
    assert answers[0].json()["code"] == "user_not_found"
    # the same viewers who are blocked still see everyone else
    assert (await client.get(f"/users/{gone.id - 0}", headers=owner.headers)).status_code == 404
    assert (await client.get(f"/users/{blocker.id}", headers=blocked.headers)).status_code == 200


async def test_by_username_is_case_insensitive_and_current_names_only(client, live):
    """U2: matched case-insensitively against current usernames only."""
    owner = await register(client, username="CaseName")
    found = await client.get("/users/by-username/casename")
    assert found.status_code == 200 and found.json()["id"] == str(owner.id)
    await client.patch("/users/me", json={"username": "Renamed1"}, headers=owner.headers)
    assert (await client.get("/users/by-username/casename")).status_code == 404
    assert (await client.get("/users/by-username/RENAMED1")).json()["id"] == str(owner.id)


async def test_list_summary_and_online_follow_privacy_and_friendship(client, live, graph):
    """R3: list_summary only when list_visibility admits the viewer; online only for friends;
    relationship null for anonymous viewers."""
    owner, friend, other = [await make_account(live) for _ in range(3)]
    graph.befriend(owner, friend)
    graph.online_users.add(owner.id)
    await set_privacy(client, owner, list_visibility="friends")
    as_friend = (await client.get(f"/users/{owner.id}", headers=friend.headers)).json()
    as_other = (await client.get(f"/users/{owner.id}", headers=other.headers)).json()
    anonymous = (await client.get(f"/users/{owner.id}")).json()
    assert as_friend["list_summary"] is not None and as_friend["online"] is True
    assert as_friend["relationship"] == "friends" and as_friend["friends_count"] == 1
    assert as_other["list_summary"] is None and as_other["online"] is None
    assert as_other["relationship"] == "none"
    assert anonymous["list_summary"] is None and anonymous["relationship"] is None
    mine = (await client.get(f"/users/{owner.id}", headers=owner.headers)).json()
    assert mine["relationship"] == "self" and mine["list_summary"] is not None


async def test_staff_role_is_on_the_card(client, live):
    owner = await make_account(live)
    await set_user(live.services, owner.id, role="moderator")
    await set_privacy(client, owner, profile_visibility="private")
    card = (await client.get(f"/users/{owner.id}")).json()
    assert card["staff_role"] == "moderator" and card["is_private"] is True


async def test_bots_read_profiles_with_profile_read_and_nothing_else(client, live, bot):
    """R8: U1-U4 need `profile:read`; U5-U12 refuse bot keys."""
    owner = await make_account(live)
    headers = bot(owner)
    for path in (f"/users/{owner.id}", f"/users/by-username/{owner.username}", "/users/me"):
        assert (await client.get(path, headers=headers)).status_code == 200, path
    search = await client.get("/users/search", params={"q": owner.username}, headers=headers)
    assert search.status_code == 200
    unscoped = await client.get("/users/me", headers=bot(owner, "list:read"))
    assert unscoped.status_code == 403 and unscoped.json()["code"] == "insufficient_scope"
    refused = [
        await client.patch("/users/me", json={"bio": "x"}, headers=headers),
        await client.patch("/users/me/settings", json={"locale": "en"}, headers=headers),
        await client.patch("/users/me/privacy", json={"searchable": False}, headers=headers),
        await client.post(
            "/users/me/deletion", json={"confirm_username": owner.username}, headers=headers
        ),
        await client.delete("/users/me/deletion", headers=headers),
        await client.post("/users/me/exports", headers=headers),
        await client.get("/users/me/exports/123", headers=headers),
        await client.get("/users/me/exports/123/download", headers=headers),
    ]
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(403, "bot_not_allowed")] * len(
        refused
    )


async def test_banned_callers_get_403_everywhere_here(client, live):
    """DESIGN: banned users get 403 on everything but login, refresh, logout and /auth/me."""
    account = await register(client)
    other = await make_account(live)
    await ban(live.services, account.id)
    calls = [
        await client.get(f"/users/{other.id}", headers=account.headers),
        await client.get("/users/search", params={"q": "ab"}, headers=account.headers),
        await client.get("/users/me", headers=account.headers),
        await client.patch("/users/me", json={"bio": "x"}, headers=account.headers),
        await client.patch("/users/me/settings", json={"locale": "en"}, headers=account.headers),
        await client.patch(
            "/users/me/privacy", json={"dms_from": "nobody"}, headers=account.headers
        ),
        await client.post(
            "/users/me/deletion",
            json={"confirm_username": account.username, "password": PASSWORD},
            headers=account.headers,
        ),
        await client.delete("/users/me/deletion", headers=account.headers),
        await client.post("/users/me/exports", headers=account.headers),
    ]
    assert [(r.status_code, r.json()["code"]) for r in calls] == [(403, "banned")] * len(calls)


async def test_account_routes_need_a_signed_in_caller(client):
    calls = [
        await client.get("/users/me"),
        await client.patch("/users/me", json={"bio": "x"}),
        await client.patch("/users/me/settings", json={"locale": "en"}),
        await client.patch("/users/me/privacy", json={"searchable": True}),
        await client.post("/users/me/deletion", json={"confirm_username": "x"}),
        await client.delete("/users/me/deletion"),
        await client.post("/users/me/exports"),
        await client.get("/users/me/exports/1"),
        await client.get("/users/me/exports/1/download"),
    ]
    assert [r.status_code for r in calls] == [401] * len(calls)
    bad_token = await client.get("/users/1", headers={"Authorization": "Bearer nope"})
    assert bad_token.status_code == 401


# --- U3 search (R7) ---------------------------------------------------------------------------


async def search(client, q, account=None, **params):
    headers = account.headers if account else {}
    response = await client.get("/users/search", params={"q": q, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return [item["username"] for item in response.json()["items"]]


async def test_search_orders_exact_then_prefix_then_display_name_friends_first(client, live, graph):
    """R7: exact username; username prefix; display-name prefix; within a tier friends
    first, then shorter username, then id."""
    viewer = await make_account(live)
    exact = await make_account(live, "mika")
    long_prefix = await make_account(live, "mikalongname")
    short_prefix = await make_account(live, "mikal")
    friend_prefix = await make_account(live, "mikafriendzzzzz")
    by_display = await make_account(live, "zed_one", display_name="Mika Fan")
    by_display_friend = await make_account(live, "zed_two_longer", display_name="mikado")
    await make_account(live, "unrelated", display_name="Not Mika")
    graph.befriend(viewer, friend_prefix)
    graph.befriend(viewer, by_display_friend)
    order = await search(client, "MIKA", viewer)
    assert order == [
        exact.username,
        friend_prefix.username,
        short_prefix.username,
        long_prefix.username,
        by_display_friend.username,
        by_display.username,
    ]
    items = (
        await client.get("/users/search", params={"q": "mika"}, headers=viewer.headers)
    ).json()["items"]
    assert [i["friend"] for i in items] == [False, True, False, False, True, False]
    assert set(items[0]) == CARD | {"friend"}
    anonymous = await search(client, "mika")
    assert anonymous[:4] == [
        exact.username,
        short_prefix.username,
        long_prefix.username,
        friend_prefix.username,
    ]
    assert await search(client, "mika", viewer, limit=2) == order[:2]


async def test_search_leaves_out_the_unsearchable_inactive_banned_and_blocked(client, live, graph):
    """R7 exclusions: searchable=false, status other than active, banned, blocks either way."""
    viewer = await make_account(live)
    visible = await make_account(live, "hide_visible")
    hidden = await make_account(live, "hide_unsearchable")
    pending = await make_account(live, "hide_pending")
    banned = await make_account(live, "hide_banned")
    blocked_by_me = await make_account(live, "hide_blocked1")
    blocks_me = await make_account(live, "hide_blocked2")
    await set_privacy(client, hidden, searchable=False)
    await set_user(live.services, pending.id, status="deletion_pending")
    await ban(live.services, banned.id)
    graph.block(viewer, blocked_by_me)
    graph.block(blocks_me, viewer)
    assert await search(client, "hide_", viewer) == [visible.username]
    assert set(await search(client, "hide_")) == {
        visible.username,
        blocked_by_me.username,
        blocks_me.username,
    }


async def test_search_treats_wildcards_and_backslashes_literally(client, live):
    """R7: `%`, `_` and `\\` in the query match only themselves."""
    await make_account(live, "ab_cd")
    await make_account(live, "abxcd")
    await make_account(live, "percent1", display_name="50% off")
    await make_account(live, "percent2", display_name="500 club")
    await make_account(live, "slash1", display_name="a\\b side")
    await make_account(live, "slash2", display_name="ab side")
    assert await search(client, "ab_") == ["ab_cd"]
    assert await search(client, "50%") == ["percent1"]
    assert await search(client, "a\\b") == ["slash1"]
    assert await search(client, "%%") == []
    assert await search(client, "__") == []


async def test_search_is_a_prefix_match_on_unicode_display_names(client, live):
    await make_account(live, "uni_one", display_name="Ёжик в тумане")
    await make_account(live, "uni_two", display_name="ёлка")
    assert await search(client, "ЁЖ") == ["uni_one"]
    assert sorted(await search(client, " ёл ")) == ["uni_two"]


async def test_each_search_is_logged_and_a_failing_log_does_not_matter(client, live, bot):
    """R7, platform.md R26: one log entry per search; logging never affects the response."""
    from models.users import search as search_module

    entries = []

    async def record(services, **entry):
        entries.append(entry)

    async def explode(services, **entry):
        raise RuntimeError("log store down")

    account = await make_account(live, "logged_one")
    search_module.SEARCH_LOGGERS.extend([explode, record])
    try:
        assert await search(client, "  LOGGED ") == ["logged_one"]
        await client.get("/users/search", params={"q": "zz"}, headers=bot(account))
    finally:
        search_module.SEARCH_LOGGERS.remove(explode)
        search_module.SEARCH_LOGGERS.remove(record)
    assert [(e["query"], e["user_id"], e["via_bot"], e["results"]) for e in entries] == [
        ("logged", None, False, 1),
        ("zz", account.id, True, 0),
    ]
    assert all(e["scope"] == "users" and e["latency_ms"] >= 0 for e in entries)


def test_prefix_upper_bound_is_the_successor_in_code_point_order():
    assert prefix_upper_bound("ab") == "ac"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff") is None
    assert prefix_upper_bound("a\ud7ff") == "a\ue000"


async def test_search_query_bounds(client, live):
    """U3: q is 2..32 code points after trimming; limit 1..25."""
    for q in ("a", "  a  ", "x" * 33, "", "a\x00"):
        response = await client.get("/users/search", params={"q": q})
        assert response.status_code == 422, q
        assert field_of(response) == ["q"]
    assert (await client.get("/users/search", params={"q": "é" * 32})).status_code == 200
    for limit in (0, 26, "x"):
        response = await client.get("/users/search", params={"q": "ab", "limit": limit})
        assert response.status_code == 422 and field_of(response) == ["limit"]
    missing = await client.get("/users/search")
    assert missing.status_code == 422 and field_of(missing) == ["q"]


async def test_search_is_rate_limited_per_ip_and_per_user(client, live):
    """U3: 10/min per IP when anonymous, 30/min per user."""
    await inside_one_window(60)
    anonymous = [
        (await client.get("/users/search", params={"q": "ab"})).status_code for _ in range(11)
    ]
    assert anonymous == [200] * 10 + [429]
    account = await make_account(live)
    signed_in = [
        (await client.get("/users/search", params={"q": "ab"}, headers=account.headers))
        for _ in range(31)
    ]
    assert [r.status_code for r in signed_in] == [200] * 30 + [429]
    assert int(signed_in[-1].headers["retry-after"]) >= 1


async def test_search_card_is_private_per_viewer(client, live, graph):
    viewer, friend_owner, stranger_owner = [await make_account(live) for _ in range(3)]
    await set_user(
        live.services, friend_owner.id, username="priv_friend", username_lower="priv_friend"
    )
    await set_user(
        live.services, stranger_owner.id, username="priv_stranger", username_lower="priv_stranger"
    )
    graph.befriend(viewer, friend_owner)
    await set_privacy(client, friend_owner, profile_visibility="friends")
    await set_privacy(client, stranger_owner, profile_visibility="friends")
    response = await client.get("/users/search", params={"q": "priv_"}, headers=viewer.headers)
    flags = {i["username"]: i["is_private"] for i in response.json()["items"]}
    assert flags == {"priv_friend": False, "priv_stranger": True}


# --- U4 ---------------------------------------------------------------------------------------


async def test_me_has_profile_email_settings_privacy_loadout_and_status(client):
    """U4: one bootstrap call; defaults of user_settings and R4."""
    account = await register(client, locale="en")
    response = await client.get("/users/me", headers=account.headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    me = response.json()
    assert me["profile"]["id"] == str(account.id) and me["profile"]["relationship"] == "self"
    assert me["email"] == account.email and me["email_verified"] is False
    assert me["settings"] == {
        "locale": "en",
        "timezone": "UTC",
        "title_language": "russian",
        "autoplay_next": True,
        "email_prefs": {"friend_activity": False, "product_updates": False},
        "updated_at": None,
    }
    assert me["privacy"] == {
        "profile_visibility": "public",
        "list_visibility": "public",
        "watch_invites_from": "friends",
        "friend_requests_from": "everyone",
        "share_watching": True,
        "searchable": True,
        "dms_from": "friends",
        "updated_at": None,
    }
    assert me["loadout"] == {
        "avatar": {"source": "default", "url": None, "item": None, "custom_url": None},
        "frame": None,
        "theme": None,
        "badges": [None, None, None],
    }
    assert me["status"] == "active"
    assert me["username_change_available_at"] is None and me["deletion_scheduled_at"] is None


# --- U5 profile edits (R1, R2, R6) ------------------------------------------------------------


async def test_editing_profile_fields_answers_like_u4_and_emits_only_for_summary_fields(
    client, live, graph, capture
):
    """U5 → 200 as U4; USER_UPDATE to the user and friends only when the username or display
    name changed (R5); bio, location and website emit nothing."""
    account = await make_account(live)
    friend = await make_account(live)
    graph.befriend(account, friend)
    async with capture() as seen:
        response = await client.patch(
            "/users/me",
            json={
                "display_name": "  New Name  ",
                "bio": "<b>verbatim</b>\n**md**",
                "location": "Tokyo",
                "website": "https://example.com/me?x=1",
            },
            headers=account.headers,
        )
    assert response.status_code == 200, response.text
    profile = response.json()["profile"]
    assert profile["display_name"] == "New Name"
    assert profile["bio"] == "<b>verbatim</b>\n**md**"
    assert profile["location"] == "Tokyo" and profile["website"] == "https://example.com/me?x=1"
    assert "settings" in response.json()
    events = await seen.events()
    check_events(events, ["USER_UPDATE"])
    assert events[0].data == {
        "user": {
            "id": str(account.id),
            "username": account.username,
            "display_name": "New Name",
            "avatar_url": None,
            "frame": None,
        },
        "changed": ["display_name"],
    }
    assert set(events[0].targets.topics) == {f"user:{account.id}", f"user:{friend.id}"}
    async with capture() as quiet:
        again = await client.patch(
            "/users/me", json={"bio": "only bio", "location": None}, headers=account.headers
        )
    assert again.status_code == 200 and again.json()["profile"]["location"] is None
    assert await quiet.events() == []


async def test_a_change_that_alters_nothing_writes_and_emits_nothing(client, live, capture):
    account = await make_account(live)
    await client.patch(
        "/users/me", json={"display_name": "Same", "bio": "b"}, headers=account.headers
    )
    before = await get_user(live.services.db, account.id)
    async with capture() as seen:
        response = await client.patch(
            "/users/me",
            json={"display_name": "Same", "bio": "b", "username": account.username},
            headers=account.headers,
        )
    assert response.status_code == 200
    assert await seen.events() == []
    after = await get_user(live.services.db, account.id)
    assert after["updated_at"] == before["updated_at"]
    assert after["username_changed_at"] is None


async def test_profile_edit_validation_names_the_field(client, live):
    """U5, R2, R6: 422 with the field named; at least one field; unknown fields rejected."""
    account = await make_account(live)
    cases = [
        ({}, "body"),
        ({"nickname": "x"}, "nickname"),
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "x" * 65}, "display_name"),
        ({"display_name": "evil\u202etxt"}, "display_name"),
        ({"display_name": "zero\u200bwidth"}, "display_name"),
        ({"display_name": "iso\u2066late"}, "display_name"),
        ({"display_name": "ctrl\x07"}, "display_name"),
        ({"bio": "x" * 501}, "bio"),
        ({"bio": "nul\x00"}, "bio"),
        ({"location": "x" * 65}, "location"),
        ({"website": "http://example.com"}, "website"),
        ({"website": "https://user:pw@example.com"}, "website"),
        ({"website": "https://example.com@evil.com"}, "website"),
        ({"website": "https://" + "a" * 200 + ".com"}, "website"),
        ({"website": "javascript:alert(1)"}, "website"),
        ({"website": "https://"}, "website"),
        ({"website": "https://exa mple.com"}, "website"),
        ({"website": "https://evil.com\\@good.com"}, "website"),
        ({"username": "ab"}, "username"),
        ({"username": "1234"}, "username"),
        ({"username": "bad-name"}, "username"),
        ({"username": None}, "username"),
        ({"username": "x" * 33}, "username"),
    ]
    for body, field in cases:
        response = await client.patch("/users/me", json=body, headers=account.headers)
        assert response.status_code == 422, (body, response.text)
        assert field in field_of(response), (body, response.json())


async def test_one_answer_names_every_bad_field_and_changes_nothing(client, live):
    account = await make_account(live)
    response = await client.patch(
        "/users/me",
        json={
            "display_name": "bell\x07",
            "bio": "fine",
            "location": "fine too",
            "website": "ftp://x.y",
            "username": "no",
        },
        headers=account.headers,
    )
    assert response.status_code == 422
    assert sorted(field_of(response)) == ["display_name", "username", "website"]
    row = await get_user(live.services.db, account.id)
    assert row["display_name"] is None and row["bio"] is None


async def test_display_names_are_nfc_and_bio_counts_code_points(client, live):
    account = await make_account(live)
    response = await client.patch(
        "/users/me",
        json={"display_name": "Cafe\u0301", "bio": "😀" * 500},
        headers=account.headers,
    )
    assert response.status_code == 200
    profile = response.json()["profile"]
    assert profile["display_name"] == "Café" and len(profile["bio"]) == 500
    cleared = await client.patch(
        "/users/me", json={"display_name": None, "website": None}, headers=account.headers
    )
    assert cleared.json()["profile"]["display_name"] is None
    row = await get_user(live.services.db, account.id)
    assert row["display_name_lower"] is None


async def test_usernames_taken_and_reserved_are_409(client, live):
    """R1: unique case-insensitively; the reserved list and `deleted_*` → username_reserved."""
    account = await make_account(live)
    other = await make_account(live, "TakenName")
    for name, code in (
        ("takenname", "username_taken"),
        ("Admin", "username_reserved"),
        ("me_not", None),
        ("deleted_123", "username_reserved"),
        ("SUPPORT", "username_reserved"),
    ):
        response = await client.patch("/users/me", json={"username": name}, headers=account.headers)
        if code is None:
            assert response.status_code == 200
            await set_user(live.services, account.id, username_changed_at=None)
        else:
            assert (response.status_code, response.json()["code"]) == (409, code), name
    assert (await get_user(live.services.db, other.id))["username"] == "TakenName"


async def test_username_change_cooldown_is_30_days(client, live, capture):
    """R1: one change per 30 days → 409 username_cooldown with available_at."""
    account = await make_account(live)
    async with capture() as seen:
        first = await client.patch(
            "/users/me", json={"username": "First_1"}, headers=account.headers
        )
    assert first.status_code == 200
    available = first.json()["username_change_available_at"]
    assert available is not None
    events = await seen.events()
    check_events(events, ["USER_UPDATE"])
    assert events[0].data["changed"] == ["username"]
    assert events[0].data["user"]["username"] == "First_1"
    second = await client.patch("/users/me", json={"username": "Second_1"}, headers=account.headers)
    assert second.status_code == 409
    assert second.json()["code"] == "username_cooldown"
    assert second.json()["available_at"] == available
    case_only = await client.patch(
        "/users/me", json={"username": "FIRST_1"}, headers=account.headers
    )
    assert case_only.status_code == 409 and case_only.json()["code"] == "username_cooldown"
    await set_user(
        live.services, account.id, username_changed_at=datetime.now(UTC) - timedelta(days=30)
    )
    third = await client.patch("/users/me", json={"username": "Second_1"}, headers=account.headers)
    assert third.status_code == 200


async def test_the_first_change_of_a_generated_username_is_free(client, live):
    """R1: renaming away from an OAuth-generated name does not start the cooldown."""
    account = await make_account(live)
    await set_user(live.services, account.id, username_generated=True)
    first = await client.patch("/users/me", json={"username": "Chosen_1"}, headers=account.headers)
    assert first.status_code == 200
    assert first.json()["username_change_available_at"] is None
    second = await client.patch("/users/me", json={"username": "Chosen_2"}, headers=account.headers)
    assert second.status_code == 200
    third = await client.patch("/users/me", json={"username": "Chosen_3"}, headers=account.headers)
    assert third.status_code == 409 and third.json()["code"] == "username_cooldown"


async def test_the_old_username_is_held_30_days_for_its_owner_only(client, live):
    """R1: after a change only the previous owner may take the old name back."""
    owner = await make_account(live, "HeldName")
    other = await make_account(live)
    assert (
        await client.patch("/users/me", json={"username": "NewName_1"}, headers=owner.headers)
    ).status_code == 200
    hold = await live.services.db.fetch_one(
        sa.select(username_reservations).where(username_reservations.c.username_lower == "heldname")
    )
    assert hold["user_id"] == owner.id
    assert hold["reserved_until"] > datetime.now(UTC) + timedelta(days=29)
    stolen = await client.patch("/users/me", json={"username": "heldname"}, headers=other.headers)
    assert stolen.status_code == 409 and stolen.json()["code"] == "username_reserved"
    await set_user(
        live.services, owner.id, username_changed_at=datetime.now(UTC) - timedelta(days=31)
    )
    back = await client.patch("/users/me", json={"username": "HELDNAME"}, headers=owner.headers)
    assert back.status_code == 200 and back.json()["profile"]["username"] == "HELDNAME"
    holds = await live.services.db.fetch_all(
        sa.select(username_reservations.c.username_lower).where(
            username_reservations.c.user_id == owner.id
        )
    )
    assert {h["username_lower"] for h in holds} == {"newname_1"}


async def test_a_lapsed_hold_frees_the_name(client, live):
    owner = await make_account(live, "LapseName")
    other = await make_account(live)
    await client.patch("/users/me", json={"username": "Lapsed_1"}, headers=owner.headers)
    await live.services.db.execute(
        username_reservations.update()
        .where(username_reservations.c.username_lower == "lapsename")
        .values(reserved_until=datetime.now(UTC) - timedelta(seconds=1))
    )
    taken = await client.patch("/users/me", json={"username": "lapsename"}, headers=other.headers)
    assert taken.status_code == 200


async def test_two_users_claiming_one_name_at_once_one_wins(client, live):
    """R1: concurrent claims of one username → exactly one 200, the other 409."""
    for _ in range(3):
        first, second = await make_account(live), await make_account(live)
        name = unique_name("race")
        responses = await asyncio.gather(
            client.patch("/users/me", json={"username": name}, headers=first.headers),
            client.patch("/users/me", json={"username": name.upper()}, headers=second.headers),
        )
        assert sorted(r.status_code for r in responses) == [200, 409]
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json()["code"] in ("username_taken", "username_reserved")
        owners = await live.services.db.fetch_all(
            sa.select(users.c.id).where(users.c.username_lower == name.lower())
        )
        assert len(owners) == 1


async def test_one_user_changing_username_twice_at_once_changes_it_once(client, live):
    """R1: the cooldown holds under concurrency (a conditional update on the old state)."""
    account = await make_account(live)
    responses = await asyncio.gather(
        client.patch("/users/me", json={"username": "Twice_aa"}, headers=account.headers),
        client.patch("/users/me", json={"username": "Twice_bb"}, headers=account.headers),
    )
    assert sorted(r.status_code for r in responses) == [200, 409]
    holds = await live.services.db.fetch_all(
        sa.select(username_reservations).where(username_reservations.c.user_id == account.id)
    )
    assert len(holds) == 1


async def test_profile_edits_are_limited_to_30_an_hour(client, live):
    account = await make_account(live)
    await inside_one_window(3600)
    codes = [
        (
            await client.patch("/users/me", json={"bio": f"v{i}"}, headers=account.headers)
        ).status_code
        for i in range(31)
    ]
    assert codes == [200] * 30 + [429]


# --- U6, U7 settings and privacy (R4) ---------------------------------------------------------


async def test_settings_change_syncs_other_devices_and_no_op_is_silent(client, live, capture):
    """U6: 200 Settings; USER_SETTINGS_UPDATE to the user only; nothing for a no-op."""
    account = await make_account(live)
    async with capture() as seen:
        response = await client.patch(
            "/users/me/settings",
            json={
                "timezone": "Europe/Moscow",
                "locale": "en",
                "email_prefs": {"friend_activity": True, "product_updates": False},
            },
            headers=account.headers,
        )
    assert response.status_code == 200, response.text
    settings = response.json()
    assert settings["timezone"] == "Europe/Moscow" and settings["locale"] == "en"
    assert settings["email_prefs"] == {"friend_activity": True, "product_updates": False}
    assert settings["title_language"] == "russian" and settings["updated_at"] is not None
    events = await seen.events()
    check_events(events, ["USER_SETTINGS_UPDATE"])
    assert events[0].targets.topics == (f"user:{account.id}",)
    assert events[0].data == {"settings": settings}
    assert (await get_user(live.services.db, account.id))["locale"] == "en"
    async with capture() as quiet:
        same = await client.patch(
            "/users/me/settings", json={"timezone": "Europe/Moscow"}, headers=account.headers
        )
    assert same.status_code == 200 and await quiet.events() == []
    me = (await client.get("/users/me", headers=account.headers)).json()
    assert me["settings"] == settings


async def test_settings_validation_names_the_field(client, live):
    account = await make_account(live)
    cases = [
        ({}, "body"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"locale": "de"}, "locale"),
        ({"title_language": "klingon"}, "title_language"),
        ({"autoplay_next": "yes"}, "autoplay_next"),
        ({"email_prefs": {"friend_activity": True}}, "email_prefs.product_updates"),
        ({"email_prefs": {"friend_activity": True, "product_updates": 1}}, "email_prefs"),
        ({"email_prefs": None}, "email_prefs"),
        ({"theme": "dark"}, "theme"),
    ]
    for body, field in cases:
        response = await client.patch("/users/me/settings", json=body, headers=account.headers)
        assert response.status_code == 422, body
        assert any(f.startswith(field) for f in field_of(response)), (body, response.json())


async def test_privacy_change_emits_and_no_op_is_silent(client, live, capture):
    """U7: 200 Privacy; USER_SETTINGS_UPDATE carries `privacy`."""
    account = await make_account(live)
    async with capture() as seen:
        body = await set_privacy(client, account, dms_from="nobody", searchable=False)
    assert body["dms_from"] == "nobody" and body["searchable"] is False
    assert body["profile_visibility"] == "public" and body["updated_at"] is not None
    events = await seen.events()
    check_events(events, ["USER_SETTINGS_UPDATE"])
    assert events[0].data == {"privacy": body}
    async with capture() as quiet:
        await set_privacy(client, account, dms_from="nobody")
    assert await quiet.events() == []
    for bad, field in (
        ({}, "body"),
        ({"dms_from": "friends_of_friends"}, "dms_from"),
        ({"watch_invites_from": "everyone"}, "watch_invites_from"),
        ({"share_watching": None}, "share_watching"),
        ({"profile_visibility": "hidden"}, "profile_visibility"),
        ({"hide_online": True}, "hide_online"),
    ):
        response = await client.patch("/users/me/privacy", json=bad, headers=account.headers)
        assert response.status_code == 422 and field in field_of(response), bad


async def test_a_privacy_change_applies_to_the_very_next_check(client, live, graph):
    """R4: the write goes through the shared cache before U7 returns — PATCH
    watch_invites_from=nobody, then a friend's invite is refused."""
    owner, friend = await make_account(live), await make_account(live)
    graph.befriend(owner, friend)
    services = live.services
    assert await privacy.allows(services, friend.id, owner.id, privacy.INVITE_TO_WATCH)
    assert await services.cache.get(privacy.cache_key(owner.id)) is not None  # warmed
    await set_privacy(client, owner, watch_invites_from="nobody")
    assert not await privacy.allows(services, friend.id, owner.id, privacy.INVITE_TO_WATCH)
    await set_privacy(client, owner, watch_invites_from="friends")
    assert await privacy.allows(services, friend.id, owner.id, privacy.INVITE_TO_WATCH)


async def test_privacy_allows_follows_r4_for_every_action(client, live, graph):
    """R4: friends = accepted friendship; everyone = signed in (anonymous only for the two
    visibility settings); a block in either direction always denies; the owner always may."""
    owner, friend, stranger, mutual, blocked = [await make_account(live) for _ in range(5)]
    graph.befriend(owner, friend)
    graph.befriend(friend, mutual)
    graph.block(blocked, owner)
    graph.befriend(owner, blocked)
    services = live.services

    async def answers(action):
        return [
            await privacy.allows(services, viewer, owner.id, action)
            for viewer in (None, owner.id, friend.id, stranger.id, mutual.id, blocked.id)
        ]

    # defaults
    assert await answers(privacy.VIEW_PROFILE) == [True, True, True, True, True, False]
    assert await answers(privacy.INVITE_TO_WATCH) == [False, True, True, False, False, False]
    assert await answers(privacy.SEND_FRIEND_REQUEST) == [False, True, True, True, True, False]
    assert await answers(privacy.SEND_DM) == [False, True, True, False, False, False]
    assert await answers(privacy.SEE_WATCHING) == [False, True, True, False, False, False]
    await set_privacy(
        client,
        owner,
        list_visibility="friends",
        friend_requests_from="friends_of_friends",
        dms_from="everyone",
        share_watching=False,
    )
    assert await answers(privacy.VIEW_LIST) == [False, True, True, False, False, False]
    assert await answers(privacy.SEND_FRIEND_REQUEST) == [False, True, False, False, True, False]
    assert await answers(privacy.SEND_DM) == [False, True, True, True, True, False]
    assert await answers(privacy.SEE_WATCHING) == [False, True, False, False, False, False]
    await set_privacy(
        client,
        owner,
        friend_requests_from="nobody",
        dms_from="nobody",
        profile_visibility="private",
    )
    assert await answers(privacy.SEND_FRIEND_REQUEST) == [False, True, False, False, False, False]
    assert await answers(privacy.SEND_DM) == [False, True, False, False, False, False]
    assert await answers(privacy.VIEW_PROFILE) == [False, True, False, False, False, False]
    with pytest.raises(ValueError):
        await privacy.allows(services, friend.id, owner.id, "read_mind")


# --- U8, U9 and the deletion worker (R9) ------------------------------------------------------


async def request_deletion(client, account, password=PASSWORD, confirm=None):
    body = {"confirm_username": confirm or account.username}
    if password is not None:
        body["password"] = password
    return await client.post("/users/me/deletion", json=body, headers=account.headers)


async def test_requesting_deletion_schedules_it_and_ends_other_sessions(client, live, capture):
    """U8, R9: 202 with now + 14 days; every other session revoked (account_deleted); the
    user may go on using this one, is hidden from search and shown as a card."""
    account = await register(client)
    other = await login(client, account)
    async with capture() as seen:
        response = await request_deletion(client, account, confirm=account.username.upper())
    assert response.status_code == 202, response.text
    scheduled = datetime.fromisoformat(response.json()["deletion_scheduled_at"])
    assert timedelta(days=13, hours=23) < scheduled - datetime.now(UTC) <= timedelta(days=14)
    events = await seen.events()
    check_events(events, ["SESSION_REVOKED"])
    assert events[0].data == {"session_id": str(other.session_id), "reason": "account_deleted"}
    assert (await client.get("/users/me", headers=other.headers)).status_code == 401
    me = (await client.get("/users/me", headers=account.headers)).json()
    assert me["status"] == "deletion_pending"
    assert me["deletion_scheduled_at"] == response.json()["deletion_scheduled_at"]
    card = (await client.get(f"/users/{account.id}")).json()
    assert card["is_private"] is True
    assert await search(client, account.username) == []
    again = await request_deletion(client, account)
    assert again.status_code == 409 and again.json()["code"] == "deletion_pending"
    relogin = await client.post(
        "/auth/login", json={"login": account.username, "password": PASSWORD}
    )
    assert relogin.status_code == 200  # the grace period still allows signing in


async def test_deletion_needs_the_password_and_the_username(client, live):
    """U8: 403 wrong_password; 422 on a confirm mismatch; nothing changes."""
    account = await register(client)
    wrong = await request_deletion(client, account, password="not my password")
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    missing = await request_deletion(client, account, password=None)
    assert missing.status_code == 403 and missing.json()["code"] == "wrong_password"
    mismatch = await request_deletion(client, account, confirm="someone_else")
    assert mismatch.status_code == 422 and field_of(mismatch) == ["confirm_username"]
    empty = await client.post("/users/me/deletion", json={}, headers=account.headers)
    assert empty.status_code == 422 and field_of(empty) == ["confirm_username"]
    assert (await get_user(live.services.db, account.id))["status"] == "active"


async def test_without_a_password_deletion_needs_a_recent_sign_in(client, live):
    """U8 via auth.md R13: OAuth-only accounts must have signed in within 10 minutes."""
    account = await register(client)
    await set_user(live.services, account.id, password_hash=None)
    await live.services.db.execute(
        auth_sessions.update()
        .where(auth_sessions.c.id == account.session_id)
        .values(authenticated_at=datetime.now(UTC) - timedelta(minutes=11))
    )
    await live.services.cache.delete(session_cache_key(account.session_id))
    stale = await request_deletion(client, account, password=None)
    assert stale.status_code == 403 and stale.json()["code"] == "reauth_required"
    await live.services.db.execute(
        auth_sessions.update()
        .where(auth_sessions.c.id == account.session_id)
        .values(authenticated_at=datetime.now(UTC))
    )
    await live.services.cache.delete(session_cache_key(account.session_id))
    fresh = await request_deletion(client, account, password=None)
    assert fresh.status_code == 202


async def test_cancelling_restores_the_account(client, live, capture):
    """U9: 204 and `active` again; 409 not_pending when nothing is pending."""
    account = await register(client)
    nothing = await client.delete("/users/me/deletion", headers=account.headers)
    assert nothing.status_code == 409 and nothing.json()["code"] == "not_pending"
    await request_deletion(client, account)
    async with capture() as seen:
        cancelled = await client.delete("/users/me/deletion", headers=account.headers)
    assert cancelled.status_code == 204
    assert await seen.events() == []
    me = (await client.get("/users/me", headers=account.headers)).json()
    assert me["status"] == "active" and me["deletion_scheduled_at"] is None
    assert (await client.get(f"/users/{account.id}")).json()["is_private"] is False
    assert await search(client, account.username) == [account.username]


async def test_the_worker_anonymizes_due_accounts_once(client, live, graph, capture, export_dir):
    """R9: at the scheduled time, one transaction: username deleted_<id>, personal fields and
    owned rows gone, status deleted, USER_DELETE to the friends it had; the old name is held
    for nobody for 90 days; a second run does nothing."""
    account = await register(client, username="GoingAway")
    friend = await make_account(live)
    graph.befriend(account, friend)
    await client.patch(
        "/users/me",
        json={"display_name": "Bye", "bio": "b", "location": "l", "website": "https://a.b"},
        headers=account.headers,
    )
    await set_privacy(client, account, dms_from="nobody")
    await client.patch("/users/me/settings", json={"locale": "en"}, headers=account.headers)
    await link_identity(live, account)
    export = (await client.post("/users/me/exports", headers=account.headers)).json()
    await finish_export(client, live, account, export["id"])
    await request_deletion(client, account)
    not_due = await deletion_module.sweep_deletions(live.services)
    assert not_due == 0
    await set_user(
        live.services, account.id, deletion_scheduled_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    async with capture() as seen:
        assert await deletion_module.anonymize_user(live.services, account.id) is True
    events = await seen.events()
    check_events(events, ["SESSION_REVOKED", "USER_DELETE"])
    assert events[1].data == {"user_id": str(account.id)}
    assert set(events[1].targets.topics) == {f"user:{account.id}", f"user:{friend.id}"}
    row = await get_user(live.services.db, account.id)
    assert row["status"] == "deleted" and row["username"] == f"deleted_{account.id}"
    for column in (
        "display_name",
        "email",
        "password_hash",
        "bio",
        "location",
        "website",
        "custom_avatar_url",
        "email_lower",
        "display_name_lower",
    ):
        assert row[column] is None, column
    db = live.services.db
    for table in (user_settings, user_privacy, oauth_identities):
        assert await db.fetch_all(sa.select(table).where(table.c.user_id == account.id)) == []
    assert (
        await db.fetch_all(sa.select(auth_sessions).where(auth_sessions.c.user_id == account.id))
        == []
    )
    assert (
        await db.fetch_all(sa.select(data_exports).where(data_exports.c.user_id == account.id))
        == []
    )
    assert not list(export_dir.rglob("*.zip"))
    assert (await client.get(f"/users/{account.id}")).status_code == 404
    assert (await client.get("/users/me", headers=account.headers)).status_code == 401
    login_again = await client.post(
        "/auth/login", json={"login": "GoingAway", "password": PASSWORD}
    )
    assert login_again.status_code == 401
    hold = await db.fetch_one(
        sa.select(username_reservations).where(
            username_reservations.c.username_lower == "goingaway"
        )
    )
    assert hold["user_id"] is None
    assert hold["reserved_until"] > datetime.now(UTC) + timedelta(days=89)
    taker = await make_account(live)
    taken = await client.patch("/users/me", json={"username": "GoingAway"}, headers=taker.headers)
    assert taken.status_code == 409 and taken.json()["code"] == "username_reserved"
    async with capture() as rerun:
        assert await deletion_module.anonymize_user(live.services, account.id) is False
        assert await deletion_module.sweep_deletions(live.services) == 0
    assert await rerun.events() == []


async def test_immediate_anonymization_needs_no_grace_period(client, live, capture):
    """admin.md A11 runs R9 at once on an active account; a deleted one is left alone."""
    account = await register(client)
    async with capture() as seen:
        assert await deletion_module.anonymize_user(live.services, account.id, immediate=True)
    check_events(await seen.events(), ["SESSION_REVOKED", "USER_DELETE"])
    assert (await get_user(live.services.db, account.id))["status"] == "deleted"
    assert not await deletion_module.anonymize_user(live.services, account.id, immediate=True)


async def test_a_failing_hook_rolls_the_anonymization_back(client, live):
    """R9: one transaction per user, safely re-runnable after a crash; other groups' hooks run
    inside it."""
    account = await make_account(live, "HookVictim")
    await set_user(
        live.services,
        account.id,
        status="deletion_pending",
        deletion_scheduled_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    calls = []

    async def flaky(services, tx, user_id):
        calls.append(user_id)
        if len(calls) == 1:
            raise RuntimeError("escrow service hiccup")

    deletion_module.DELETION_HOOKS.append(flaky)
    try:
        assert await deletion_module.sweep_deletions(live.services) == 0
        row = await get_user(live.services.db, account.id)
        assert row["status"] == "deletion_pending" and row["username"] == "HookVictim"
        assert await deletion_module.sweep_deletions(live.services) == 1
    finally:
        deletion_module.DELETION_HOOKS.remove(flaky)
    assert calls == [account.id, account.id]
    assert (await get_user(live.services.db, account.id))["status"] == "deleted"


async def test_concurrent_anonymizations_leave_one_winner(client, live, capture):
    account = await make_account(live)
    await set_user(
        live.services,
        account.id,
        status="deletion_pending",
        deletion_scheduled_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    async with capture() as seen:
        results = await asyncio.gather(
            *(deletion_module.anonymize_user(live.services, account.id) for _ in range(3)),
            return_exceptions=True,
        )
    assert results.count(True) == 1, results
    assert [e.type for e in await seen.events()].count("USER_DELETE") == 1


async def test_a_cancelled_deletion_is_not_carried_out(client, live):
    account = await register(client)
    await request_deletion(client, account)
    await client.delete("/users/me/deletion", headers=account.headers)
    await set_user(
        live.services, account.id, deletion_scheduled_at=datetime.now(UTC) - timedelta(days=1)
    )
    assert await deletion_module.sweep_deletions(live.services) == 0
    assert (await get_user(live.services.db, account.id))["status"] == "active"


# --- U10-U12 exports (R10) --------------------------------------------------------------------


async def finish_export(client, live, account, export_id, expect="ready"):
    """Run the export job directly (the worker loop may have claimed it first: then wait)."""
    await build_export(live.services, int(export_id))
    async with asyncio.timeout(10):
        while True:
            status = await client.get(f"/users/me/exports/{export_id}", headers=account.headers)
            if status.json()["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
    assert status.json()["status"] == expect, status.json()
    return status.json()


async def test_export_end_to_end(client, live, export_dir):
    """U10-U12, R10: queue, build, download a ZIP with a manifest and one JSON per exporter."""
    account = await register(client)
    await client.patch("/users/me", json={"bio": "exported bio"}, headers=account.headers)
    await link_identity(live, account)
    started = await client.post("/users/me/exports", headers=account.headers)
    assert started.status_code == 202
    queued = started.json()
    assert queued["status"] == "queued" and set(queued) == {"id", "status", "created_at"}
    ready = await finish_export(client, live, account, queued["id"])
    assert ready["size_bytes"] > 0 and ready["finished_at"] and ready["expires_at"]
    expires = datetime.fromisoformat(ready["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    download = await client.get(
        f"/users/me/exports/{queued['id']}/download", headers=account.headers
    )
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    assert download.headers["cache-control"] == "no-store"
    assert download.headers["content-disposition"] == (
        f'attachment; filename="anilay-export-{queued["id"]}.zip"'
    )
    assert len(download.content) == ready["size_bytes"]
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["user_id"] == str(account.id) and manifest["format_version"] == 1
    assert manifest["created_at"] == queued["created_at"]
    for name in ("account", "profile", "settings", "privacy", "sessions", "oauth_identities"):
        assert f"{name}.json" in manifest["files"]
    assert sorted(archive.namelist()) == sorted(["manifest.json", *manifest["files"]])
    account_json = json.loads(archive.read("account.json"))
    assert account_json["email"] == account.email and account_json["id"] == str(account.id)
    assert json.loads(archive.read("profile.json"))["bio"] == "exported bio"
    assert json.loads(archive.read("privacy.json"))["dms_from"] == "friends"
    sessions = json.loads(archive.read("sessions.json"))
    assert [s["id"] for s in sessions] == [str(account.session_id)]
    identities = json.loads(archive.read("oauth_identities.json"))
    assert [(i["provider"], i["username"]) for i in identities] == [("fake", "nick")]
    raw = b"".join(archive.read(n) for n in archive.namelist())
    assert account.refresh_token.encode() not in raw and b"token_hash" not in raw
    assert b"password_hash" not in raw
    cooldown = await client.post("/users/me/exports", headers=account.headers)
    assert cooldown.status_code == 429 and cooldown.json()["code"] == "export_cooldown"
    assert 86000 < int(cooldown.headers["retry-after"]) <= 86400


async def test_exports_of_others_are_not_found(client, live, export_dir):
    """U11, U12: another user's export is a 404, like a missing or malformed id."""
    owner, other = await make_account(live), await make_account(live)
    export = (await client.post("/users/me/exports", headers=owner.headers)).json()
    await finish_export(client, live, owner, export["id"])
    for path in (f"/users/me/exports/{export['id']}", f"/users/me/exports/{export['id']}/download"):
        response = await client.get(path, headers=other.headers)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    for bad in ("999999999", "abc", "0"):
        assert (
            await client.get(f"/users/me/exports/{bad}", headers=owner.headers)
        ).status_code == 404
        assert (
            await client.get(f"/users/me/exports/{bad}/download", headers=owner.headers)
        ).status_code == 404


async def test_an_export_is_not_downloadable_before_it_is_ready(client, live, export_dir):
    account = await make_account(live)
    export_id = 4242
    await live.services.db.execute(
        data_exports.insert().values(
            id=export_id,
            user_id=account.id,
            status="running",
            created_at=datetime.now(UTC),
            started_at=datetime.now(UTC),
        )
    )
    response = await client.get(f"/users/me/exports/{export_id}/download", headers=account.headers)
    assert response.status_code == 409 and response.json()["code"] == "export_not_ready"
    status = await client.get(f"/users/me/exports/{export_id}", headers=account.headers)
    assert status.json()["status"] == "running" and status.json()["size_bytes"] is None


async def test_exports_expire_after_7_days_and_their_file_goes(client, live, export_dir):
    """R10: past expires_at the export reads as expired (download 404) and the sweeper
    deletes the file."""
    account = await make_account(live)
    export = (await client.post("/users/me/exports", headers=account.headers)).json()
    await finish_export(client, live, account, export["id"])
    assert len(list(export_dir.rglob("*.zip"))) == 1
    await live.services.db.execute(
        data_exports.update()
        .where(data_exports.c.id == int(export["id"]))
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    status = await client.get(f"/users/me/exports/{export['id']}", headers=account.headers)
    assert status.json()["status"] == "expired"
    download = await client.get(
        f"/users/me/exports/{export['id']}/download", headers=account.headers
    )
    assert download.status_code == 404
    assert await sweep_exports(live.services) >= 1
    assert list(export_dir.rglob("*.zip")) == []
    row = await live.services.db.fetch_one(
        sa.select(data_exports).where(data_exports.c.id == int(export["id"]))
    )
    assert row["status"] == "expired" and row["storage_key"] is None


async def test_two_concurrent_export_requests_queue_one(client, live, export_dir):
    """R10: one export queued or running at a time, also under concurrency."""
    account = await make_account(live)
    responses = await asyncio.gather(
        *(client.post("/users/me/exports", headers=account.headers) for _ in range(3))
    )
    assert sorted(r.status_code for r in responses)[0] == 202
    assert [r.status_code for r in responses].count(202) == 1
    # the losers saw it queued (409) or, if the worker already built it, the cooldown (429)
    losers = {r.json()["code"] for r in responses if r.status_code != 202}
    assert losers <= {"export_in_progress", "export_cooldown"}
    rows = await live.services.db.fetch_all(
        sa.select(data_exports).where(data_exports.c.user_id == account.id)
    )
    assert len(rows) == 1


async def test_an_export_in_progress_blocks_another(client, live, export_dir):
    """R10: one export queued or running at a time (409), whatever its age."""
    account = await make_account(live)
    for status in ("queued", "running"):
        await live.services.db.execute(data_exports.delete())
        await live.services.db.execute(
            data_exports.insert().values(
                id=777,
                user_id=account.id,
                status=status,
                created_at=datetime.now(UTC) - timedelta(days=2),
            )
        )
        busy = await client.post("/users/me/exports", headers=account.headers)
        assert busy.status_code == 409 and busy.json()["code"] == "export_in_progress"


async def test_a_failed_export_is_reported_and_does_not_start_the_cooldown(
    client, live, export_dir
):
    from models import exports as exports_module

    account = await make_account(live)

    async def broken(services, user_id):
        raise RuntimeError("anime list unavailable")

    exports_module._exporters["broken_for_test"] = broken
    try:
        export = (await client.post("/users/me/exports", headers=account.headers)).json()
        await finish_export(client, live, account, export["id"], expect="failed")
    finally:
        del exports_module._exporters["broken_for_test"]
    assert list(export_dir.rglob("*")) == [] or not list(export_dir.rglob("*.zip*"))
    download = await client.get(
        f"/users/me/exports/{export['id']}/download", headers=account.headers
    )
    assert download.status_code == 404
    again = await client.post("/users/me/exports", headers=account.headers)
    assert again.status_code == 202


async def test_building_an_export_twice_builds_it_once(client, live, export_dir):
    account = await make_account(live)
    export = (await client.post("/users/me/exports", headers=account.headers)).json()
    results = await asyncio.gather(
        *(build_export(live.services, int(export["id"])) for _ in range(3))
    )
    assert results.count(True) <= 1
    await finish_export(client, live, account, export["id"])
    assert len(list(export_dir.rglob("*.zip"))) == 1
