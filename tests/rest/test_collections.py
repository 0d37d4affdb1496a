"""Collections (anime.md §3: CL1-CL12, R18-R22, COLLECTION_UPDATE, COLLECTION_PUBLISH)."""

from __future__ import annotations

import asyncio
import itertools
import re
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from models import social_graph
from models.anime.catalog_tables import anime
from models.anime.collections import collection, collection_item, collection_quota
from models.anime.collections.manage import delete_user_collections, slug_base
from models.anime.collections.tables import CREATE_RATE
from models.anime.common import AUDIT_HOOKS, PUBLIC_ACTIVITY_TOPIC
from server.events import validate_payload
from tests.factories import Account, ban, make_staff, register, set_user

SLUG = re.compile(r"^[a-z0-9-]{1,50}-[0-9a-hjkmnp-tv-z]{10}$")
_keys = itertools.count()
SHIKI_IMAGE = "https://shikimori.one/system/animes/original/1.jpg"


# --- helpers ---------------------------------------------------------------------------------


async def add_anime(live, anime_id: int, name: str = "Cowboy Bebop", **values) -> None:
    """A catalog row with every non-null column filled (the catalog group owns the importer)."""
    row = dict(
        id=anime_id,
        name=name,
        russian=values.pop("russian", "Ковбой Бибоп"),
        synonyms=[],
        kind="tv",
        status="released",
        episodes=26,
        episodes_aired=26,
        duration=24,
        year=1998,
        score_x100=878,
        members=1000,
        image_original=f"https://shikimori.one/system/animes/original/{anime_id}.jpg",
        image_preview=f"https://shikimori.one/system/animes/preview/{anime_id}.jpg",
        search_text=name.lower(),
        origin="shikimori",
        locked_fields=[],
        imported_at=datetime.now(UTC),
    )
    row.update(values)
    await live.services.db.execute(anime.insert().values(**row))


async def many(client: httpx.AsyncClient, live, n: int) -> list[Account]:
    """Register n users (the registration limit per IP is lifted between them)."""
    accounts = []
    for _ in range(n):
        await live.services.limiter.clear("5/hour", "register-hour", "127.0.0.1")
        await live.services.limiter.clear("20/day", "register-day", "127.0.0.1")
        accounts.append(await register(client))
    return accounts


async def create(client, account: Account, status: int = 201, **body) -> dict:
    body.setdefault("title", "Mecha of the 90s")
    response = await client.post("/collections", headers=account.headers, json=body)
    assert response.status_code == status, response.text
    return response.json()


async def add_item(client, account: Account, collection_id: str, anime_id: int, **body) -> dict:
    body.setdefault("name", f"Anime {anime_id}")
    response = await client.post(
        f"/collections/{collection_id}/items",
        headers=account.headers,
        json={"anime_id": anime_id, **body},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def positions(live, collection_id: str | int) -> list[tuple[int, int]]:
    rows = await live.services.db.fetch_all(
        sa.select(collection_item.c.anime_id, collection_item.c.position)
        .where(collection_item.c.collection_id == int(collection_id))
        .order_by(collection_item.c.position)
    )
    return [(r["anime_id"], r["position"]) for r in rows]


async def stored(live, collection_id: str | int) -> dict:
    row = await live.services.db.fetch_one(
        sa.select(collection).where(collection.c.id == int(collection_id))
    )
    assert row is not None
    return row


def assert_dense(pairs: list[tuple[int, int]]) -> None:
    """R21: positions are exactly 0..n-1."""
    assert [p for _, p in pairs] == list(range(len(pairs))), pairs


def events_of(events, name: str) -> list:
    found = [e for e in events if e.type == name]
    for event in found:
        validate_payload(event.type, event.data)
    return found


def problem(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    return body


async def bot_headers(client, live, account: Account, scopes: list[str]) -> dict[str, str]:
    await set_user(live.services, account.id, email_verified_at=datetime.now(UTC))
    response = await client.post(
        "/api-keys", headers=account.headers, json={"name": f"bot {next(_keys)}", "scopes": scopes}
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bot {response.json()['secret']}"}


class Blocks(social_graph.SocialGraph):
    def __init__(self) -> None:
        self.pairs: set[frozenset[int]] = set()

    def block(self, a: int, b: int) -> None:
        self.pairs.add(frozenset((a, b)))

    async def blocked_ids(self, services, user_id: int) -> set[int]:
        return {other for pair in self.pairs if user_id in pair for other in pair - {user_id}}


@pytest.fixture
def blocks():
    graph = Blocks()
    previous = social_graph.register_social_graph(graph)
    yield graph
    social_graph.register_social_graph(previous)


@pytest.fixture
def audit():
    rows: list = []

    async def record(services, tx, action) -> None:
        rows.append(action)

    AUDIT_HOOKS.append(record)
    yield rows
    AUDIT_HOOKS.remove(record)


# --- CL2 create ------------------------------------------------------------------------------


async def test_create_is_private_by_default_and_tells_only_the_owner(client, live, capture):
    """CL2: 201 Collection; private unless asked; COLLECTION_UPDATE to the owner only."""
    owner = await register(client)
    async with capture() as seen:
        created = await create(client, owner, title="Mecha of the 90s!", description="Giant robots")
    assert created["visibility"] == "private"
    assert created["title"] == "Mecha of the 90s!" and created["description"] == "Giant robots"
    assert SLUG.match(created["slug"]) and created["slug"].startswith("mecha-of-the-90s-")
    assert created["items"] == [] and created["items_next_cursor"] is None
    assert created["items_count"] == 0 and created["preview"] == []
    assert created["version"] == 1 and created["can_edit"] is True
    assert created["owner"] == {
        "id": str(owner.id),
        "username": owner.username,
        "display_name": None,
        "avatar_url": None,
    }
    events = await seen.events()
    (update,) = events_of(events, "COLLECTION_UPDATE")
    assert update.targets.topics == (f"user:{owner.id}",)
    assert update.data == {"collection_id": created["id"], "version": 1, "action": "create"}
    assert events_of(events, "COLLECTION_PUBLISH") == []


async def test_a_public_collection_is_published_and_an_unlisted_one_never(client, live, capture):
    """COLLECTION_PUBLISH on creation as public; unlisted is never published (R18)."""
    owner = await register(client)
    async with capture() as seen:
        public = await create(client, owner, title="Public", visibility="public")
        await create(client, owner, title="Link only", visibility="unlisted")
    (published,) = events_of(await seen.events(), "COLLECTION_PUBLISH")
    assert published.targets.topics == (PUBLIC_ACTIVITY_TOPIC,)
    assert published.data["collection"]["id"] == public["id"]
    assert published.data["collection"]["visibility"] == "public"


def test_slug_base_transliterates_and_falls_back():
    """Slug: transliterated lower-case title, [a-z0-9-], ≤ 50 chars, `collection` if empty."""
    assert slug_base("Mecha of the 90s") == "mecha-of-the-90s"
    assert slug_base("Лучшее аниме 2024!") == "luchshee-anime-2024"
    assert slug_base("Café  Ëlan") == "cafe-elan"
    assert slug_base("進撃の巨人") == "collection"
    assert slug_base("---") == "collection"
    assert len(slug_base("word " * 40)) <= 50 and not slug_base("word " * 40).endswith("-")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 101}, "title"),
        ({"title": "tab\there"}, "title"),
        ({"title": "ok", "description": "d" * 2001}, "description"),
        ({"title": "ok", "visibility": "secret"}, "visibility"),
        ({"title": "ok", "colour": "red"}, "colour"),
        ({}, "title"),
    ],
)
async def test_create_refuses_bad_fields_naming_them(client, live, body, field):
    """CL2, R20: title 1..100, description ≤ 2000, unknown fields: 422 with the field."""
    owner = await register(client)
    response = await client.post("/collections", headers=owner.headers, json=body)
    problem(response, 422, "validation_failed", field)
    assert await live.services.db.fetch_all(sa.select(collection)) == []


async def test_create_trims_and_accepts_the_limits(client, live):
    """R20: exactly 100 and 2000 characters (code points) are fine; whitespace is trimmed."""
    owner = await register(client)
    created = await create(client, owner, title="  " + "я" * 100 + "  ", description="д" * 2000)
    assert created["title"] == "я" * 100 and len(created["description"]) == 2000


async def test_create_needs_a_user_and_bots_need_the_write_scope(client, live):
    """CL2: 401 anonymous; bots: collections:write (auth.md R23); banned: 403."""
    owner = await register(client)
    problem(await client.post("/collections", json={"title": "x"}), 401, "unauthorized")
    reader = await bot_headers(client, live, owner, ["collections:read"])
    response = await client.post("/collections", headers=reader, json={"title": "x"})
    problem(response, 403, "insufficient_scope")
    writer = await bot_headers(client, live, owner, ["collections:write"])
    response = await client.post("/collections", headers=writer, json={"title": "By bot"})
    assert response.status_code == 201 and response.json()["owner"]["id"] == str(owner.id)
    await ban(live.services, owner.id)
    problem(
        await client.post("/collections", headers=owner.headers, json={"title": "x"}), 403, "banned"
    )


async def test_the_hundredth_collection_races_one_winner(client, live):
    """R20: two concurrent creates at 99 give one 201 and one 409 collection_limit."""
    owner = await register(client)
    await create(client, owner)
    await live.services.db.execute(
        collection_quota.update()
        .where(collection_quota.c.user_id == owner.id)
        .values(collections_count=99)
    )
    responses = await asyncio.gather(
        *[
            client.post("/collections", headers=owner.headers, json={"title": f"t{n}"})
            for n in range(2)
        ]
    )
    assert sorted(r.status_code for r in responses) == [201, 409]
    loser = next(r for r in responses if r.status_code == 409)
    assert loser.json()["code"] == "collection_limit"
    quota = await live.services.db.fetch_val(
        sa.select(collection_quota.c.collections_count).where(
            collection_quota.c.user_id == owner.id
        )
    )
    assert quota == 100
    assert len(await live.services.db.fetch_all(sa.select(collection))) == 2


async def test_deleting_frees_a_quota_unit(client, live):
    """R20: the quota counts live collections only."""
    owner = await register(client)
    first = await create(client, owner)
    await live.services.db.execute(
        collection_quota.update()
        .where(collection_quota.c.user_id == owner.id)
        .values(collections_count=100)
    )
    problem(
        await client.post("/collections", headers=owner.headers, json={"title": "x"}),
        409,
        "collection_limit",
    )
    assert (
        await client.delete(f"/collections/{first['id']}", headers=owner.headers)
    ).status_code == 204
    await create(client, owner, title="Again")


async def test_create_is_rate_limited(client, live):
    """CL2: creation has a per-user budget (429 with Retry-After)."""
    owner = await register(client)
    await live.services.limiter.hit(CREATE_RATE, "collection-create", str(owner.id), cost=30)
    response = await client.post("/collections", headers=owner.headers, json={"title": "x"})
    problem(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1


# --- CL3 visibility (R18) ----------------------------------------------------------------------


async def test_private_is_the_owners_alone_and_looks_missing_to_everyone_else(client, live):
    """R18 private: by id or slug, others get exactly the 404 of a missing collection."""
    owner, stranger = await register(client), await register(client)
    private = await create(client, owner, visibility="private")
    for ref in (private["id"], private["slug"]):
        assert (await client.get(f"/collections/{ref}", headers=owner.headers)).status_code == 200
    missing_by_id = (await client.get("/collections/123456789012345")).json()
    missing_by_slug = (await client.get("/collections/nothing-here-0123456789")).json()
    for ref, missing in ((private["id"], missing_by_id), (private["slug"], missing_by_slug)):
        for headers in ({}, stranger.headers):
            response = await client.get(f"/collections/{ref}", headers=headers)
            assert response.status_code == 404
            assert response.json() == missing
            items = await client.get(f"/collections/{ref}/items", headers=headers)
            assert items.status_code == 404 and items.json() == missing


async def test_unlisted_is_readable_by_its_link_only(client, live):
    """R18 unlisted: anyone (anonymous included) by slug; by id 404 for all but the owner."""
    owner, stranger = await register(client), await register(client)
    unlisted = await create(client, owner, visibility="unlisted")
    by_slug = await client.get(f"/collections/{unlisted['slug']}")
    assert by_slug.status_code == 200 and by_slug.json()["id"] == unlisted["id"]
    assert by_slug.json()["can_edit"] is False
    assert (await client.get(f"/collections/{unlisted['slug']}/items")).status_code == 200
    for headers in ({}, stranger.headers):
        assert (
            await client.get(f"/collections/{unlisted['id']}", headers=headers)
        ).status_code == 404
        items = await client.get(f"/collections/{unlisted['id']}/items", headers=headers)
        assert items.status_code == 404
    assert (
        await client.get(f"/collections/{unlisted['id']}", headers=owner.headers)
    ).status_code == 200


async def test_public_is_readable_by_id_and_slug(client, live):
    """R18 public."""
    owner = await register(client)
    public = await create(client, owner, visibility="public", description="x" * 300)
    for ref in (public["id"], public["slug"]):
        response = await client.get(f"/collections/{ref}")
        assert response.status_code == 200
        assert response.json()["description"] == "x" * 300  # the full one on CL3


@pytest.mark.parametrize("ref", ["abc", "99999999999999999999999", "-1", "0", "UPPER-0123456789"])
async def test_malformed_refs_are_404(client, live, ref):
    """Conventions: a malformed path id is answered like an unknown one."""
    problem(await client.get(f"/collections/{ref}"), 404, "not_found")


async def test_a_block_hides_collections_both_ways(client, live, blocks):
    """R18: a collection whose owner is in a block relation with the reader is 404 and
    unlisted for them, whichever side blocked."""
    owner, blocker, blocked = await many(client, live, 3)
    public = await create(client, owner, visibility="public")
    unlisted = await create(client, owner, visibility="unlisted")
    blocks.block(blocker.id, owner.id)
    blocks.block(owner.id, blocked.id)
    for reader in (blocker, blocked):
        for ref in (public["id"], public["slug"], unlisted["slug"]):
            response = await client.get(f"/collections/{ref}", headers=reader.headers)
            assert response.status_code == 404, (reader, ref)
        listed = (await client.get("/collections", headers=reader.headers)).json()["items"]
        assert listed == []
        response = await client.get(f"/users/{owner.id}/collections", headers=reader.headers)
        problem(response, 404, "user_not_found")
        response = await client.patch(
            f"/collections/{public['id']}", headers=reader.headers, json={"title": "x"}
        )
        problem(response, 404, "not_found")
    assert (await client.get(f"/collections/{public['id']}")).status_code == 200


async def test_staff_read_any_collection_and_each_privileged_read_is_audited(client, live, audit):
    """R18: moderators read private and unlisted-by-id collections; each such read writes an
    audit row; reading a public one needs no power and writes none."""
    owner, moderator = await register(client), await register(client)
    await make_staff(live.services, moderator.id, "moderator")
    private = await create(client, owner, visibility="private")
    public = await create(client, owner, visibility="public")
    response = await client.get(f"/collections/{private['id']}", headers=moderator.headers)
    assert response.status_code == 200 and response.json()["can_edit"] is False
    assert (
        await client.get(f"/collections/{private['id']}/items", headers=moderator.headers)
    ).status_code == 200
    assert (
        await client.get(f"/collections/{public['id']}", headers=moderator.headers)
    ).status_code == 200
    assert [(a.action, a.target_id, a.actor_id) for a in audit] == [
        ("collection.read", private["id"], moderator.id),
        ("collection.read", private["id"], moderator.id),
    ]
    assert audit[0].ip == "127.0.0.1"


async def test_a_staff_bot_key_has_no_staff_powers(client, live):
    """Staff powers come with a staff session, never with an API key."""
    owner, moderator = await register(client), await register(client)
    await make_staff(live.services, moderator.id, "moderator")
    private = await create(client, owner)
    headers = await bot_headers(client, live, moderator, ["collections:read", "collections:write"])
    assert (await client.get(f"/collections/{private['id']}", headers=headers)).status_code == 404
    assert (
        await client.delete(f"/collections/{private['id']}", headers=headers)
    ).status_code == 404


async def test_reading_needs_the_read_scope_for_bots(client, live):
    """auth.md R23: collections:read covers own collections, private included."""
    owner = await register(client)
    private = await create(client, owner)
    reader = await bot_headers(client, live, owner, ["collections:read"])
    assert (await client.get(f"/collections/{private['id']}", headers=reader)).status_code == 200
    other = await bot_headers(client, live, owner, ["profile:read"])
    problem(
        await client.get(f"/collections/{private['id']}", headers=other), 403, "insufficient_scope"
    )
    problem(await client.get("/collections", headers=other), 403, "insufficient_scope")


# --- CL1 browse --------------------------------------------------------------------------------


async def test_browse_lists_public_collections_only(client, live):
    """CL1, R18: unlisted and private never appear, for anyone, the owner included."""
    owner = await register(client)
    public = await create(client, owner, visibility="public", description="d" * 300)
    await create(client, owner, visibility="unlisted")
    await create(client, owner, visibility="private")
    for headers in ({}, owner.headers):
        body = (await client.get("/collections", headers=headers)).json()
        assert [c["id"] for c in body["items"]] == [public["id"]]
        assert body["next_cursor"] is None
        assert body["items"][0]["description"] == "d" * 200  # the summary's first 200


async def test_browse_searches_titles_case_insensitively(client, live):
    """CL1 `q`: a title substring, case-insensitive in any script, % and _ literal."""
    owner = await register(client)
    ru = await create(client, owner, title="Лучшие МЕХА девяностых", visibility="public")
    en = await create(client, owner, title="Best Mecha 100%", visibility="public")
    await create(client, owner, title="Hidden mecha", visibility="unlisted")

    async def found(q: str) -> list[str]:
        response = await client.get("/collections", params={"q": q})
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    assert await found("меха") == [ru["id"]]
    assert await found("MECHA") == [en["id"]]
    assert await found("100%") == [en["id"]]
    assert await found("%") == [en["id"]]
    assert await found("_") == []


async def test_browse_filters_by_owner_and_sorts(client, live):
    """CL1: owner_id; sort=updated (default), new, items."""
    alice, bob = await register(client), await register(client)
    first = await create(client, alice, title="First", visibility="public")
    second = await create(client, alice, title="Second", visibility="public")
    third = await create(client, bob, title="Third", visibility="public")
    await add_item(client, alice, first["id"], 1)
    await add_item(client, alice, first["id"], 2)
    await add_item(client, bob, third["id"], 1)

    async def ids(**params) -> list[str]:
        response = await client.get("/collections", params=params)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    assert await ids() == [third["id"], first["id"], second["id"]]  # last edited first
    assert await ids(sort="new") == [third["id"], second["id"], first["id"]]
    assert await ids(sort="items") == [first["id"], third["id"], second["id"]]
    assert await ids(owner_id=str(alice.id)) == [first["id"], second["id"]]
    assert await ids(owner_id="123") == []
    problem(
        await client.get("/collections", params={"owner_id": "me"}),
        422,
        "validation_failed",
        "owner_id",
    )


@pytest.mark.parametrize("sort", ["updated", "new", "items"])
async def test_browse_pages_never_repeat_or_skip(client, live, sort):
    """CL1 cursor: pages cover the list exactly once, in every order."""
    owner = await register(client)
    made = [await create(client, owner, title=f"c{n}", visibility="public") for n in range(7)]
    await live.services.db.execute(  # ties on the sort key break by id
        collection.update().where(collection.c.id == int(made[2]["id"])).values(items_count=3)
    )
    full = (await client.get("/collections", params={"sort": sort, "limit": 50})).json()["items"]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"sort": sort, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/collections", params=params)).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(cursor) <= 200
    assert seen == [c["id"] for c in full] and len(set(seen)) == 7


async def test_a_tampered_or_foreign_cursor_is_422_on_cursor(client, live):
    """Conventions: a tampered cursor gets 422 on `cursor`; so does one of another list."""
    owner = await register(client)
    for n in range(3):
        await create(client, owner, title=f"c{n}", visibility="public")
    cursor = (await client.get("/collections", params={"limit": 1})).json()["next_cursor"]
    body, _, mac = cursor.partition(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B") + "." + mac
    for bad in (flipped, cursor[:-2], "garbage", "a.b", body + "." + mac[::-1]):
        response = await client.get("/collections", params={"cursor": bad})
        problem(response, 422, "validation_failed", "cursor")
    problem(
        await client.get("/collections", params={"cursor": cursor, "sort": "new"}),
        422,
        "validation_failed",
        "cursor",
    )
    response = await client.get(f"/users/{owner.id}/collections", params={"cursor": cursor})
    problem(response, 422, "validation_failed", "cursor")


async def test_browse_validates_its_query(client, live):
    """Unknown query parameters and out-of-range values: 422 naming them."""
    problem(
        await client.get("/collections", params={"limit": 51}), 422, "validation_failed", "limit"
    )
    problem(
        await client.get("/collections", params={"sort": "popular"}),
        422,
        "validation_failed",
        "sort",
    )
    problem(
        await client.get("/collections", params={"q": "x" * 101}), 422, "validation_failed", "q"
    )
    problem(await client.get("/collections", params={"q": "   "}), 422, "validation_failed", "q")
    problem(await client.get("/collections", params={"page": 2}), 422, "validation_failed", "page")


# --- CL4 edit -------------------------------------------------------------------------------


async def test_edit_changes_fields_bumps_the_version_and_tells_the_owner(client, live, capture):
    """CL4: 200 Collection; COLLECTION_UPDATE with the new version."""
    owner = await register(client)
    created = await create(client, owner)
    async with capture() as seen:
        response = await client.patch(
            f"/collections/{created['id']}",
            headers=owner.headers,
            json={"title": "Renamed", "description": None},
        )
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["title"] == "Renamed" and edited["description"] is None
    assert edited["version"] == 2 and edited["slug"] == created["slug"]  # a rename keeps the link
    (update,) = events_of(await seen.events(), "COLLECTION_UPDATE")
    assert update.data == {"collection_id": created["id"], "version": 2, "action": "update"}


async def test_an_edit_that_changes_nothing_writes_and_emits_nothing(client, live, capture):
    """A no-op emits nothing."""
    owner = await register(client)
    created = await create(client, owner, title="Same", visibility="public")
    async with capture() as seen:
        response = await client.patch(
            f"/collections/{created['id']}",
            headers=owner.headers,
            json={"title": " Same ", "visibility": "public"},
        )
        assert response.status_code == 200 and response.json()["version"] == 1
        assert (
            await client.patch(f"/collections/{created['id']}", headers=owner.headers, json={})
        ).status_code == 200
    assert await seen.events() == []


async def test_edit_by_someone_else_is_403_when_public_and_404_otherwise(client, live):
    """CL4: a non-owner gets 403 on a public collection, 404 otherwise."""
    owner, stranger = await register(client), await register(client)
    for visibility, status in (("public", 403), ("unlisted", 404), ("private", 404)):
        made = await create(client, owner, visibility=visibility)
        for method in ("PATCH", "DELETE"):
            response = await client.request(
                method,
                f"/collections/{made['id']}",
                headers=stranger.headers,
                json={"title": "mine"} if method == "PATCH" else None,
            )
            assert response.status_code == status, (visibility, method, response.text)
        assert (await stored(live, made["id"]))["title"] == "Mecha of the 90s"
    problem(await client.patch("/collections/1", json={"title": "x"}), 401, "unauthorized")


async def test_owner_routes_take_the_id_only(client, live):
    """`{id}` routes: a slug there is a 404 like any unknown id."""
    owner = await register(client)
    made = await create(client, owner)
    response = await client.patch(
        f"/collections/{made['slug']}", headers=owner.headers, json={"title": "x"}
    )
    problem(response, 404, "not_found")


async def test_going_private_rotates_the_slug_and_the_old_link_dies_at_once(client, live):
    """R19: visibility changes apply in the request; going private rotates the slug, so a
    link withdrawn once stays dead when the collection is shared again."""
    owner, reader = await register(client), await register(client)
    made = await create(client, owner, visibility="unlisted")
    old = made["slug"]
    assert (await client.get(f"/collections/{old}", headers=reader.headers)).status_code == 200
    private = await client.patch(
        f"/collections/{made['id']}", headers=owner.headers, json={"visibility": "private"}
    )
    assert private.status_code == 200 and private.json()["slug"] != old
    assert (await client.get(f"/collections/{old}", headers=reader.headers)).status_code == 404
    again = await client.patch(
        f"/collections/{made['id']}", headers=owner.headers, json={"visibility": "unlisted"}
    )
    assert again.json()["slug"] == private.json()["slug"]
    assert (await client.get(f"/collections/{old}", headers=reader.headers)).status_code == 404
    assert (
        await client.get(f"/collections/{again.json()['slug']}", headers=reader.headers)
    ).status_code == 200


async def test_publish_happens_the_first_time_only(client, live, capture):
    """COLLECTION_PUBLISH: when a collection first becomes public, never again."""
    owner = await register(client)
    made = await create(client, owner, visibility="unlisted")
    url = f"/collections/{made['id']}"
    async with capture() as seen:
        await client.patch(url, headers=owner.headers, json={"visibility": "public"})
        await client.patch(url, headers=owner.headers, json={"visibility": "private"})
        await client.patch(url, headers=owner.headers, json={"visibility": "public"})
    events = await seen.events()
    (published,) = events_of(events, "COLLECTION_PUBLISH")
    assert published.data["collection"]["id"] == made["id"]
    assert [e.data["version"] for e in events_of(events, "COLLECTION_UPDATE")] == [2, 3, 4]


async def test_concurrent_publishes_publish_once(client, live, capture):
    """COLLECTION_PUBLISH once even when two requests make it public at the same time."""
    owner = await register(client)
    made = await create(client, owner, visibility="private")
    async with capture() as seen:
        await asyncio.gather(
            *[
                client.patch(
                    f"/collections/{made['id']}",
                    headers=owner.headers,
                    json={"visibility": "public", "title": f"t{n}"},
                )
                for n in range(2)
            ]
        )
    assert len(events_of(await seen.events(), "COLLECTION_PUBLISH")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": ""}, "title"),
        ({"description": "x" * 2001}, "description"),
        ({"visibility": "all"}, "visibility"),
        ({"slug": "x"}, "slug"),
    ],
)
async def test_edit_refuses_bad_fields(client, live, body, field):
    owner = await register(client)
    made = await create(client, owner)
    response = await client.patch(f"/collections/{made['id']}", headers=owner.headers, json=body)
    problem(response, 422, "validation_failed", field)


# --- CL5 delete -------------------------------------------------------------------------------


async def test_delete_takes_the_items_and_tells_the_owner(client, live, capture):
    """CL5: 204; the collection and its items are gone; a repeat is 404."""
    owner = await register(client)
    made = await create(client, owner, visibility="public")
    await add_item(client, owner, made["id"], 5)
    async with capture() as seen:
        response = await client.delete(f"/collections/{made['id']}", headers=owner.headers)
    assert response.status_code == 204
    (update,) = events_of(await seen.events(), "COLLECTION_UPDATE")
    assert update.data == {"collection_id": made["id"], "version": 3, "action": "delete"}
    assert await positions(live, made["id"]) == []
    assert (await client.get(f"/collections/{made['id']}")).status_code == 404
    assert (
        await client.delete(f"/collections/{made['id']}", headers=owner.headers)
    ).status_code == 404


async def test_a_moderator_deletes_any_collection_and_it_is_audited(client, live, audit):
    """CL5, R18: moderators may delete; each staff delete writes an audit row."""
    owner, moderator = await register(client), await register(client)
    await make_staff(live.services, moderator.id, "moderator")
    made = await create(client, owner, visibility="private")
    assert (
        await client.delete(f"/collections/{made['id']}", headers=moderator.headers)
    ).status_code == 204
    (action,) = audit
    assert (action.action, action.target_id, action.actor_role) == (
        "collection.delete",
        made["id"],
        "moderator",
    )
    quota = await live.services.db.fetch_val(
        sa.select(collection_quota.c.collections_count).where(
            collection_quota.c.user_id == owner.id
        )
    )
    assert quota == 0


async def test_concurrent_deletes_free_one_quota_unit(client, live):
    """R20: the quota never goes below the live count, whatever races."""
    owner = await register(client)
    made = await create(client, owner)
    await create(client, owner, title="other")
    responses = await asyncio.gather(
        *[client.delete(f"/collections/{made['id']}", headers=owner.headers) for _ in range(3)]
    )
    assert sorted(r.status_code for r in responses) == [204, 404, 404]
    quota = await live.services.db.fetch_val(
        sa.select(collection_quota.c.collections_count).where(
            collection_quota.c.user_id == owner.id
        )
    )
    assert quota == 1


# --- CL6, CL7 items ---------------------------------------------------------------------------


async def test_adding_a_catalog_anime_copies_its_snapshot(client, live, capture):
    """CL7, R22: from the local catalog, client values ignored; in_catalog true."""
    owner = await register(client)
    await add_anime(live, 1, "Cowboy Bebop")
    made = await create(client, owner)
    async with capture() as seen:
        item = await add_item(
            client,
            owner,
            made["id"],
            1,
            name="Wrong",
            image_url="http://evil.example/x.png",
            note=" great ",
        )
    assert item["name"] == "Cowboy Bebop" and item["russian"] == "Ковбой Бибоп"
    assert item["image_url"] == "https://shikimori.one/system/animes/original/1.jpg"
    assert (item["kind"], item["year"], item["note"], item["position"]) == ("tv", 1998, "great", 0)
    assert item["in_catalog"] is True
    (update,) = events_of(await seen.events(), "COLLECTION_UPDATE")
    assert update.data == {"collection_id": made["id"], "version": 2, "action": "item_add"}
    got = (await client.get(f"/collections/{made['id']}", headers=owner.headers)).json()
    assert got["items"] == [item] and got["items_count"] == 1 and got["version"] == 2
    assert got["preview"] == [item["image_url"]]


async def test_an_anime_missing_from_the_catalog_is_a_valid_item(client, live):
    """CL7, R22: name required, image on an allowed https host; the snapshot is returned as
    stored even after the catalog gains the anime."""
    owner = await register(client)
    made = await create(client, owner)
    item = await add_item(
        client, owner, made["id"], 777, name="Obscure OVA", russian="Редкая", image_url=SHIKI_IMAGE
    )
    assert (item["name"], item["russian"], item["image_url"]) == (
        "Obscure OVA",
        "Редкая",
        SHIKI_IMAGE,
    )
    assert (item["kind"], item["year"], item["in_catalog"]) == (None, None, False)
    await add_anime(live, 777, "Official Name")
    (listed,) = (
        await client.get(f"/collections/{made['id']}/items", headers=owner.headers)
    ).json()["items"]
    assert listed["name"] == "Obscure OVA" and listed["in_catalog"] is True


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"name": None}, "name"),
        ({"name": "  "}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"image_url": "http://shikimori.one/a.jpg"}, "image_url"),
        ({"image_url": "https://evil.example/a.jpg"}, "image_url"),
        ({"image_url": "https://shikimori.one.evil.example/a.jpg"}, "image_url"),
        ({"image_url": "https://user@shikimori.one/a.jpg"}, "image_url"),
        ({"image_url": "https://shikimori.one:8443/a.jpg"}, "image_url"),
        ({"image_url": "javascript:alert(1)"}, "image_url"),
        ({"image_url": "https://shikimori.one/" + "a" * 500}, "image_url"),
        ({"note": "n" * 501}, "note"),
        ({"anime_id": 0}, "anime_id"),
        ({"anime_id": "5"}, "anime_id"),
        ({"position": -1}, "position"),
        ({"position": 1}, "position"),
        ({"rating": 5}, "rating"),
    ],
)
async def test_add_refuses_bad_fields(client, live, extra, field):
    """CL7: 422 naming the field; nothing is written."""
    owner = await register(client)
    made = await create(client, owner)
    body = {"anime_id": 9, "name": "Fine", **extra}
    body = {k: v for k, v in body.items() if v is not None}
    response = await client.post(
        f"/collections/{made['id']}/items", headers=owner.headers, json=body
    )
    problem(response, 422, "validation_failed", field)
    assert await positions(live, made["id"]) == []
    assert (await stored(live, made["id"]))["version"] == 1


async def test_subdomains_of_allowed_hosts_are_fine(client, live):
    owner = await register(client)
    made = await create(client, owner)
    url = "https://desu.shikimori.one/uploads/poster/animes/5/a.jpeg"
    assert (await add_item(client, owner, made["id"], 5, image_url=url))["image_url"] == url


async def test_an_anime_appears_once_per_collection(client, live):
    """R21: a duplicate is 409 already_in_collection."""
    owner = await register(client)
    made = await create(client, owner)
    await add_item(client, owner, made["id"], 3)
    response = await client.post(
        f"/collections/{made['id']}/items",
        headers=owner.headers,
        json={"anime_id": 3, "name": "again"},
    )
    problem(response, 409, "already_in_collection")
    assert await positions(live, made["id"]) == [(3, 0)]
    assert (await stored(live, made["id"]))["items_count"] == 1


async def test_concurrent_adds_of_one_anime_give_one_item(client, live):
    """R21: the primary key keeps one, whatever races."""
    owner = await register(client)
    made = await create(client, owner)
    responses = await asyncio.gather(
        *[
            client.post(
                f"/collections/{made['id']}/items",
                headers=owner.headers,
                json={"anime_id": 3, "name": "x"},
            )
            for _ in range(3)
        ]
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409]
    assert await positions(live, made["id"]) == [(3, 0)]
    assert (await stored(live, made["id"]))["items_count"] == 1


async def test_adding_at_a_position_shifts_the_rest(client, live):
    """CL7 `position` 0..items_count; default append; positions stay 0..n-1."""
    owner = await register(client)
    made = await create(client, owner)
    for anime_id in (1, 2, 3):
        await add_item(client, owner, made["id"], anime_id)
    await add_item(client, owner, made["id"], 4, position=1)
    await add_item(client, owner, made["id"], 5, position=0)
    await add_item(client, owner, made["id"], 6, position=5)
    assert await positions(live, made["id"]) == [(5, 0), (1, 1), (4, 2), (2, 3), (3, 4), (6, 5)]


async def test_the_five_hundredth_item_races_one_winner(client, live):
    """R20: two concurrent adds at 499 give one 201 and one 409 collection_full."""
    owner = await register(client)
    made = await create(client, owner)
    now = datetime.now(UTC)
    for start in range(0, 499, 100):
        await live.services.db.execute(
            collection_item.insert().values(
                [
                    dict(
                        collection_id=int(made["id"]),
                        anime_id=10_000 + n,
                        name=f"a{n}",
                        position=n,
                        added_at=now,
                    )
                    for n in range(start, min(start + 100, 499))
                ]
            )
        )
    await live.services.db.execute(
        collection.update().where(collection.c.id == int(made["id"])).values(items_count=499)
    )
    responses = await asyncio.gather(
        *[
            client.post(
                f"/collections/{made['id']}/items",
                headers=owner.headers,
                json={"anime_id": n, "name": "x"},
            )
            for n in (1, 2)
        ]
    )
    assert sorted(r.status_code for r in responses) == [201, 409]
    assert next(r for r in responses if r.status_code == 409).json()["code"] == "collection_full"
    assert (await stored(live, made["id"]))["items_count"] == 500
    assert_dense(await positions(live, made["id"]))


async def test_concurrent_adds_of_different_anime_keep_positions_dense(client, live):
    """R21: the version compare-and-swap serialises item mutations per collection."""
    owner = await register(client)
    made = await create(client, owner)
    await add_item(client, owner, made["id"], 100)
    responses = await asyncio.gather(
        *[
            client.post(
                f"/collections/{made['id']}/items",
                headers=owner.headers,
                json={"anime_id": n, "name": "x", "position": 0},
            )
            for n in range(1, 5)
        ]
    )
    assert all(r.status_code in (201, 409) for r in responses), [r.text for r in responses]
    added = sum(r.status_code == 201 for r in responses)
    assert added >= 1
    pairs = await positions(live, made["id"])
    assert_dense(pairs)
    row = await stored(live, made["id"])
    assert row["items_count"] == len(pairs) == added + 1
    assert row["version"] == 2 + added


async def test_items_page_by_position(client, live):
    """CL6: items by position with a cursor; a tampered cursor is 422."""
    owner = await register(client)
    made = await create(client, owner, visibility="public")
    for anime_id in range(1, 8):
        await add_item(client, owner, made["id"], anime_id)
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/collections/{made['slug']}/items", params=params)).json()
        seen += [(i["anime_id"], i["position"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [(n, n - 1) for n in range(1, 8)]
    page = (await client.get(f"/collections/{made['id']}/items", params={"limit": 2})).json()
    other = await create(client, owner, visibility="public")
    response = await client.get(
        f"/collections/{other['id']}/items", params={"cursor": page["next_cursor"]}
    )
    problem(response, 422, "validation_failed", "cursor")
    problem(
        await client.get(f"/collections/{made['id']}/items", params={"limit": 101}),
        422,
        "validation_failed",
        "limit",
    )


async def test_the_collection_embeds_its_first_hundred_items(client, live):
    """CL3: the first 100 items and a cursor for the rest."""
    owner = await register(client)
    made = await create(client, owner)
    now = datetime.now(UTC)
    await live.services.db.execute(
        collection_item.insert().values(
            [
                dict(
                    collection_id=int(made["id"]),
                    anime_id=n + 1,
                    name=f"a{n}",
                    position=n,
                    added_at=now,
                )
                for n in range(101)
            ]
        )
    )
    await live.services.db.execute(
        collection.update().where(collection.c.id == int(made["id"])).values(items_count=101)
    )
    got = (await client.get(f"/collections/{made['id']}", headers=owner.headers)).json()
    assert len(got["items"]) == 100 and got["items"][-1]["position"] == 99
    rest = (
        await client.get(
            f"/collections/{made['id']}/items",
            headers=owner.headers,
            params={"cursor": got["items_next_cursor"]},
        )
    ).json()
    assert [i["position"] for i in rest["items"]] == [100] and rest["next_cursor"] is None


async def test_item_routes_are_the_owners(client, live):
    """CL7-CL10: 403 on someone else's public collection, 404 otherwise, 401 anonymous."""
    owner, stranger = await register(client), await register(client)
    public = await create(client, owner, visibility="public")
    private = await create(client, owner)
    for made in (public, private):
        await add_item(client, owner, made["id"], 1)
    for made, status in ((public, 403), (private, 404)):
        base = f"/collections/{made['id']}/items"
        calls = [
            client.post(base, headers=stranger.headers, json={"anime_id": 2, "name": "x"}),
            client.patch(f"{base}/1", headers=stranger.headers, json={"note": "mine"}),
            client.delete(f"{base}/1", headers=stranger.headers),
            client.put(f"{base}/order", headers=stranger.headers, json={"anime_ids": [1]}),
            client.post(f"/collections/{made['id']}/slug", headers=stranger.headers),
        ]
        for response in await asyncio.gather(*calls):
            assert response.status_code == status, response.text
    problem(
        await client.post(f"/collections/{public['id']}/items", json={"anime_id": 2}),
        401,
        "unauthorized",
    )
    assert await positions(live, public["id"]) == [(1, 0)]


# --- CL8, CL9 ----------------------------------------------------------------------------------


async def test_moving_an_item_shifts_the_others(client, live, capture):
    """CL8: positions stay 0..n-1 after moves either way."""
    owner = await register(client)
    made = await create(client, owner)
    for anime_id in (1, 2, 3, 4):
        await add_item(client, owner, made["id"], anime_id)
    base = f"/collections/{made['id']}/items"
    async with capture() as seen:
        moved = await client.patch(f"{base}/4", headers=owner.headers, json={"position": 0})
    assert moved.status_code == 200 and moved.json()["position"] == 0
    assert [e.data["action"] for e in events_of(await seen.events(), "COLLECTION_UPDATE")] == [
        "item_update"
    ]
    assert await positions(live, made["id"]) == [(4, 0), (1, 1), (2, 2), (3, 3)]
    await client.patch(f"{base}/1", headers=owner.headers, json={"position": 3, "note": "last"})
    assert await positions(live, made["id"]) == [(4, 0), (2, 1), (3, 2), (1, 3)]
    edited = await client.patch(f"{base}/1", headers=owner.headers, json={"note": None})
    assert edited.json()["note"] is None and edited.json()["position"] == 3


async def test_item_edit_bad_paths(client, live, capture):
    """CL8: 422 position out of range; 404 unknown item or malformed anime id; no-op emits
    nothing."""
    owner = await register(client)
    made = await create(client, owner)
    await add_item(client, owner, made["id"], 1, note="n")
    base = f"/collections/{made['id']}/items"
    problem(
        await client.patch(f"{base}/1", headers=owner.headers, json={"position": 1}),
        422,
        "validation_failed",
        "position",
    )
    problem(
        await client.patch(f"{base}/1", headers=owner.headers, json={"note": "x" * 501}),
        422,
        "validation_failed",
        "note",
    )
    problem(
        await client.patch(f"{base}/2", headers=owner.headers, json={"note": "x"}), 404, "not_found"
    )
    problem(
        await client.patch(f"{base}/abc", headers=owner.headers, json={"note": "x"}),
        404,
        "not_found",
    )
    async with capture() as seen:
        same = await client.patch(
            f"{base}/1", headers=owner.headers, json={"note": "n", "position": 0}
        )
    assert same.status_code == 200 and await seen.events() == []
    assert (await stored(live, made["id"]))["version"] == 2


async def test_removing_an_item_closes_the_gap(client, live):
    """CL9: 204; positions close the gap; items_count follows; unknown item 404."""
    owner = await register(client)
    made = await create(client, owner)
    for anime_id in (1, 2, 3):
        await add_item(client, owner, made["id"], anime_id)
    assert (
        await client.delete(f"/collections/{made['id']}/items/2", headers=owner.headers)
    ).status_code == 204
    assert await positions(live, made["id"]) == [(1, 0), (3, 1)]
    assert (await stored(live, made["id"]))["items_count"] == 2
    problem(
        await client.delete(f"/collections/{made['id']}/items/2", headers=owner.headers),
        404,
        "not_found",
    )


async def test_mixed_concurrent_item_mutations_keep_positions_dense(client, live):
    """R21: adds, moves and removes racing on one collection leave positions 0..n-1 and
    items_count equal to the rows."""
    owner = await register(client)
    made = await create(client, owner)
    for anime_id in range(1, 7):
        await add_item(client, owner, made["id"], anime_id)
    base = f"/collections/{made['id']}/items"
    responses = await asyncio.gather(
        client.post(base, headers=owner.headers, json={"anime_id": 50, "name": "x", "position": 2}),
        client.patch(f"{base}/6", headers=owner.headers, json={"position": 0}),
        client.delete(f"{base}/3", headers=owner.headers),
        client.patch(f"{base}/1", headers=owner.headers, json={"position": 4}),
    )
    assert all(r.status_code in (200, 201, 204, 409) for r in responses), [
        r.text for r in responses
    ]
    pairs = await positions(live, made["id"])
    assert_dense(pairs)
    assert (await stored(live, made["id"]))["items_count"] == len(pairs)


# --- CL10 reorder ---------------------------------------------------------------------------


async def test_reorder_sets_every_position_at_once(client, live, capture):
    """CL10: 204; exactly the given order."""
    owner = await register(client)
    made = await create(client, owner)
    for anime_id in (1, 2, 3):
        await add_item(client, owner, made["id"], anime_id)
    async with capture() as seen:
        response = await client.put(
            f"/collections/{made['id']}/items/order",
            headers=owner.headers,
            json={"anime_ids": [3, 1, 2], "version": 4},
        )
    assert response.status_code == 204, response.text
    assert await positions(live, made["id"]) == [(3, 0), (1, 1), (2, 2)]
    (update,) = events_of(await seen.events(), "COLLECTION_UPDATE")
    assert update.data["action"] == "reorder" and update.data["version"] == 5


@pytest.mark.parametrize("order", [[1, 2], [1, 2, 3, 4], [1, 1, 2], [1, 2, 2, 3], [3, 2, 9], []])
async def test_reorder_must_list_exactly_the_current_items(client, live, order):
    """CL10: anything but each current item once is 409 order_mismatch, and changes nothing."""
    owner = await register(client)
    made = await create(client, owner)
    for anime_id in (1, 2, 3):
        await add_item(client, owner, made["id"], anime_id)
    response = await client.put(
        f"/collections/{made['id']}/items/order", headers=owner.headers, json={"anime_ids": order}
    )
    problem(response, 409, "order_mismatch")
    assert await positions(live, made["id"]) == [(1, 0), (2, 1), (3, 2)]


async def test_reorder_with_a_stale_version_is_refused(client, live):
    """R21: CL10 with a stale version gets 409, even when the item set matches."""
    owner = await register(client)
    made = await create(client, owner)
    for anime_id in (1, 2):
        await add_item(client, owner, made["id"], anime_id)
    response = await client.put(
        f"/collections/{made['id']}/items/order",
        headers=owner.headers,
        json={"anime_ids": [2, 1], "version": 2},
    )
    problem(response, 409, "order_mismatch")
    assert await positions(live, made["id"]) == [(1, 0), (2, 1)]


async def test_reorder_to_the_same_order_is_a_no_op(client, live, capture):
    owner = await register(client)
    made = await create(client, owner)
    for anime_id in (1, 2):
        await add_item(client, owner, made["id"], anime_id)
    async with capture() as seen:
        response = await client.put(
            f"/collections/{made['id']}/items/order",
            headers=owner.headers,
            json={"anime_ids": [1, 2]},
        )
    assert response.status_code == 204 and await seen.events() == []


async def test_reorder_racing_an_add_never_mixes_them(client, live):
    """R21: a reorder and an add at once: the reorder either lands whole (before the add) or
    is refused (its item set is stale); positions stay dense."""
    owner = await register(client)
    made = await create(client, owner)
    for anime_id in (1, 2, 3):
        await add_item(client, owner, made["id"], anime_id)
    reorder, add = await asyncio.gather(
        client.put(
            f"/collections/{made['id']}/items/order",
            headers=owner.headers,
            json={"anime_ids": [3, 2, 1]},
        ),
        client.post(
            f"/collections/{made['id']}/items",
            headers=owner.headers,
            json={"anime_id": 4, "name": "x"},
        ),
    )
    assert add.status_code == 201
    pairs = await positions(live, made["id"])
    assert_dense(pairs)
    if reorder.status_code == 204:
        assert [a for a, _ in pairs if a != 4] == [3, 2, 1]
    else:
        assert reorder.json()["code"] == "order_mismatch"
        assert [a for a, _ in pairs] == [1, 2, 3, 4]


async def test_reorder_validates_its_body(client, live):
    owner = await register(client)
    made = await create(client, owner)
    url = f"/collections/{made['id']}/items/order"
    problem(
        await client.put(url, headers=owner.headers, json={"anime_ids": ["a"]}),
        422,
        "validation_failed",
        "anime_ids[0]",
    )
    problem(
        await client.put(url, headers=owner.headers, json={"anime_ids": list(range(1, 502))}),
        422,
        "validation_failed",
        "anime_ids",
    )
    problem(
        await client.put(url, headers=owner.headers, json={}), 422, "validation_failed", "anime_ids"
    )


# --- CL11, CL12 -------------------------------------------------------------------------------


async def test_a_users_collections_show_others_the_public_ones(client, live):
    """CL11: the owner sees all three visibilities; others and anonymous only public ones."""
    owner, other = await register(client), await register(client)
    public = await create(client, owner, visibility="public")
    unlisted = await create(client, owner, visibility="unlisted")
    private = await create(client, owner, visibility="private")
    mine = (await client.get(f"/users/{owner.id}/collections", headers=owner.headers)).json()
    assert [c["id"] for c in mine["items"]] == [private["id"], unlisted["id"], public["id"]]
    for headers in ({}, other.headers):
        theirs = (await client.get(f"/users/{owner.id}/collections", headers=headers)).json()
        assert [c["id"] for c in theirs["items"]] == [public["id"]]
    problem(await client.get("/users/123456/collections"), 404, "user_not_found")
    problem(await client.get("/users/abc/collections"), 404, "user_not_found")
    page = (
        await client.get(
            f"/users/{owner.id}/collections", headers=owner.headers, params={"limit": 2}
        )
    ).json()
    rest = (
        await client.get(
            f"/users/{owner.id}/collections",
            headers=owner.headers,
            params={"cursor": page["next_cursor"]},
        )
    ).json()
    assert [c["id"] for c in page["items"] + rest["items"]] == [
        private["id"],
        unlisted["id"],
        public["id"],
    ]


async def test_rotating_the_slug_kills_the_old_link(client, live, capture):
    """CL12, R19: 200 {slug}; the old slug is 404 at once, no redirect."""
    owner = await register(client)
    made = await create(client, owner, visibility="unlisted")
    async with capture() as seen:
        response = await client.post(f"/collections/{made['id']}/slug", headers=owner.headers)
    assert response.status_code == 200
    slug = response.json()["slug"]
    assert SLUG.match(slug) and slug != made["slug"]
    assert (await client.get(f"/collections/{made['slug']}")).status_code == 404
    assert (await client.get(f"/collections/{slug}")).status_code == 200
    (update,) = events_of(await seen.events(), "COLLECTION_UPDATE")
    assert update.data["action"] == "slug"


# --- account deletion -----------------------------------------------------------------------


async def test_account_deletion_takes_the_users_collections(client, live):
    """users.md R9: the deletion hook removes the user's collections, items and quota."""
    owner, other = await register(client), await register(client)
    made = await create(client, owner, visibility="public")
    await add_item(client, owner, made["id"], 1)
    kept = await create(client, other)
    async with live.services.db.transaction() as tx:
        await delete_user_collections(live.services, tx, owner.id)
    ids = [r["id"] for r in await live.services.db.fetch_all(sa.select(collection.c.id))]
    assert ids == [int(kept["id"])]
    assert await positions(live, made["id"]) == []
