"""The anime catalog over HTTP (anime.md CT1–CT13, R1–R5), on both engines, against the
shipped demo catalog."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from models.anime import importer
from models.anime.catalog import bump_version
from models.anime.catalog_tables import anime
from server.cache import InProcessCache

BROWSE_CACHE = "public, max-age=300, stale-while-revalidate=600"
DETAIL_CACHE = "public, max-age=3600, stale-while-revalidate=86400"
STATS_CACHE = "public, max-age=600"
REFERENCE_CACHE = "public, max-age=86400"
AOT = 16498
ATTACK_ON_TITAN_SEASONS = [16498, 25777, 35760, 38524, 40028, 48583, 51535]
BAD_AUTHORIZATION = [
    "Bearer not-a-token",
    "Bearer eyJhbGciOiJFZERTQSJ9.e30.AAAA",
    "Bot not-a-key",
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "garbage",
]


@pytest.fixture
async def demo(live):
    """The shipped demo catalog, loaded the way `anilay seed` loads it."""
    report = await importer.load_demo_catalog(live.services.db, cache=live.services.cache)
    assert report.malformed == 0, report.problems
    return report


def ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def assert_field_error(response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_failed"
    assert field in [error["field"] for error in body["errors"]], body


async def catalog_keys(live) -> list[str]:
    cache = live.services.cache
    if isinstance(cache, InProcessCache):
        return [key for key in cache._entries if key.startswith("catalog:v")]
    return [
        key.decode().removeprefix("anilay:cache:")
        async for key in live.services.redis.scan_iter(match="anilay:cache:catalog:v*")
    ]


async def reimport(live, record: dict) -> importer.ImportReport:
    return await importer.import_records(
        live.services.db, [("test", record)], cache=live.services.cache
    )


async def walk(client, query: str, limit: int = 7) -> list[list[int]]:
    """Every page of a CT1 query, in order."""
    pages, page = [], 1
    while True:
        response = await client.get(f"/anime?{query}&limit={limit}&page={page}")
        body = response.json()
        assert response.status_code == 200 and body["page"] == page, response.text
        pages.append([item["id"] for item in body["items"]])
        if not body["has_more"]:
            return pages
        page += 1


# --- CT1 browse ------------------------------------------------------------------------------


async def test_browse_defaults_to_ranked_pages_of_twenty(client, demo):
    """CT1: `{items, page, has_more}`, 20 per page, ranked (score desc, ties by id), rx hidden."""
    response = await client.get("/anime")
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"items", "page", "has_more"}
    assert body["page"] == 1 and body["has_more"] is True and len(body["items"]) == 20
    scores = [(-item["score"], item["id"]) for item in body["items"]]
    assert scores == sorted(scores)
    assert body["items"][0]["id"] == 52991  # Sousou no Frieren, 9.30
    assert set(body["items"][0]) == {
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


async def test_compact_shape_carries_shikimori_fields(client, demo):
    """AnimeCompact: score with two decimals, dates, season by calendar quarter, images."""
    item = (await client.get(f"/anime?ids={AOT}")).json()["items"][0]
    assert item == {
        "id": AOT,
        "name": "Shingeki no Kyojin",
        "russian": "Атака титанов",
        "english": "Attack on Titan",
        "image": {
            "original": "https://shikimori.one/system/animes/original/16498.jpg",
            "preview": "https://shikimori.one/system/animes/preview/16498.jpg",
            "x96": "https://shikimori.one/system/animes/x96/16498.jpg",
            "x48": "https://shikimori.one/system/animes/x48/16498.jpg",
        },
        "kind": "tv",
        "score": 8.55,
        "status": "released",
        "episodes": 25,
        "episodes_aired": 25,
        "aired_on": "2013-04-07",
        "released_on": "2013-09-29",
        "season": "spring_2013",
        "rating": "r",
    }


def _year(item: dict) -> int:
    return int(item["aired_on"][:4]) if item["aired_on"] else 0


@pytest.mark.parametrize(
    ("query", "check"),
    [
        ("kind=movie", lambda a: a["kind"] == "movie"),
        ("kind=movie,ova", lambda a: a["kind"] in ("movie", "ova")),
        ("kind=!tv", lambda a: a["kind"] != "tv"),
        ("kind=tv,!tv_special", lambda a: a["kind"] == "tv"),
        ("status=ongoing", lambda a: a["status"] == "ongoing"),
        ("status=!released", lambda a: a["status"] in ("anons", "ongoing")),
        ("rating=g,pg", lambda a: a["rating"] in ("g", "pg")),
        ("rating=!r,!pg_13", lambda a: a["rating"] not in ("r", "pg_13")),
        ("season=spring_2013", lambda a: a["season"] == "spring_2013"),
        ("season=2013", lambda a: _year(a) == 2013),
        ("season=2011_2012", lambda a: _year(a) in (2011, 2012)),
        ("season=199x", lambda a: 1990 <= _year(a) <= 1999),
        ("season=199x,2016", lambda a: 1990 <= _year(a) <= 1999 or _year(a) == 2016),
        (
            "season=!199x&kind=movie",
            lambda a: not 1990 <= _year(a) <= 1999 and a["kind"] == "movie",
        ),
        ("year_from=2020", lambda a: _year(a) >= 2020),
        ("year_from=2000&year_to=2005", lambda a: 2000 <= _year(a) <= 2005),
        ("year_from=2016&year_to=2016", lambda a: _year(a) == 2016),
        ("score=9", lambda a: a["score"] >= 9.0),
        ("score=9.05", lambda a: a["score"] >= 9.05),
        ("score=0", lambda a: True),
    ],
)
async def test_browse_filters(client, demo, query, check):
    """CT1 filters, ANDed; `!value` excludes; season values are ORed: exactly the titles
    that satisfy them, on every page."""
    found = []
    for page in (1, 2):
        found += (await client.get(f"/anime?{query}&limit=50&page={page}")).json()["items"]
    everything = []
    for page in (1, 2):
        everything += (await client.get(f"/anime?limit=50&page={page}")).json()["items"]
    assert found, f"{query} should match something in the demo catalog"
    assert sorted(a["id"] for a in found) == sorted(a["id"] for a in everything if check(a))


async def test_season_include_and_exclude_contradict_to_nothing(client, demo):
    """A title cannot be both in fall 2022 and outside 2022: 200 with no items (R4)."""
    response = await client.get("/anime?season=fall_2022,!2022")
    assert response.status_code == 200 and response.json()["items"] == []


async def test_censored_hides_rx_until_turned_off(client, demo):
    """`censored` defaults to true and hides rx; false shows it."""
    assert 368 not in ids(await client.get("/anime?ids=368,1"))
    assert ids(await client.get("/anime?rating=rx")) == []
    assert ids(await client.get("/anime?rating=rx&censored=false")) == [368]
    assert ids(await client.get("/anime?ids=368&censored=0")) == [368]


async def test_genre_includes_are_anded_and_excludes_remove(client, demo):
    """`genre`: every included id must be present; any excluded id removes the title."""
    action_shounen = ids(await client.get("/anime?genre=1,27&limit=50"))
    detail = [(await client.get(f"/anime/{i}")).json() for i in action_shounen]
    assert action_shounen and all({1, 27} <= {g["id"] for g in d["genres"]} for d in detail), (
        "every title has both genres"
    )
    action = set(ids(await client.get("/anime?genre=1&limit=50&page=1"))) | set(
        ids(await client.get("/anime?genre=1&limit=50&page=2"))
    )
    no_shounen = ids(await client.get("/anime?genre=1,!27&limit=50"))
    assert set(no_shounen) == action - set(
        ids(await client.get("/anime?genre=1,27&limit=50&page=1"))
    ) - set(ids(await client.get("/anime?genre=1,27&limit=50&page=2")))
    assert ids(await client.get("/anime?genre=999999")) == []


async def test_studio_ids_are_ored(client, demo):
    """`studio`: titles of any of the studios."""
    mappa = set(ids(await client.get("/anime?studio=569&limit=50")))
    wit = set(ids(await client.get("/anime?studio=858&limit=50")))
    both = set(ids(await client.get("/anime?studio=858,569&limit=50")))
    assert 40028 in mappa and AOT in wit and both == mappa | wit


async def test_ids_filter_returns_exactly_those(client, demo):
    """`ids` restricts to those titles; unknown ids are simply absent."""
    assert sorted(ids(await client.get("/anime?ids=1,5,30,999999"))) == [1, 5, 30]


async def test_empty_result_is_200(client, demo):
    """R4: an empty result is 200 with `items: []`, never 404."""
    response = await client.get("/anime?q=zzzzqqqq")
    assert response.status_code == 200
    assert response.json() == {"items": [], "page": 1, "has_more": False}


@pytest.mark.parametrize(
    ("order", "key"),
    [
        ("ranked", lambda a: (-a["score"], a["id"])),
        ("name", lambda a: (a["name"].lower(), a["id"])),
        ("episodes", lambda a: (-a["episodes"], a["id"])),
        ("aired_on", lambda a: (a["aired_on"] is None, _negated_date(a["aired_on"]), a["id"])),
    ],
)
async def test_orders_are_deterministic_and_pages_never_repeat(client, demo, order, key):
    """R5: ties by id; walking every page visits every title once, in the order's sequence."""
    pages = await walk(client, f"order={order}&censored=false", limit=7)
    walked = [i for page in pages for i in page]
    assert len(walked) == len(set(walked)) == len(demo_ids())
    everything = []
    for page in range(1, 3):
        everything += (
            await client.get(f"/anime?order={order}&censored=false&limit=50&page={page}")
        ).json()["items"]
    assert [a["id"] for a in sorted(everything, key=key)] == walked


async def test_popularity_orders_by_members(client, demo, live):
    """`order=popularity`: members desc (the sum of rates_statuses_stats), ties by id."""
    walked = [i for page in await walk(client, "order=popularity&censored=false") for i in page]
    rows = await live.services.db.fetch_all(sa.select(anime.c.id, anime.c.members))
    members = {row["id"]: row["members"] for row in rows}
    assert walked == sorted(members, key=lambda i: (-members[i], i))
    assert members[AOT] == 410000


async def test_ranked_puts_unrated_last(client, demo):
    """`ranked`: score desc with unrated (0) titles last."""
    walked = [i for page in await walk(client, "order=ranked&censored=false", 50) for i in page]
    unrated = {52807, 59978, 57555, 52139}
    assert set(walked[-len(unrated) :]) == unrated


async def test_random_order_is_fresh_and_never_cached(client, demo):
    """R5: `order=random` ignores page, says has_more false and is no-store."""
    response = await client.get("/anime?order=random&limit=10&page=7&kind=movie")
    body = response.json()
    assert response.headers["cache-control"] == "no-store"
    assert body["page"] == 1 and body["has_more"] is False
    assert len(body["items"]) == 10 and len({a["id"] for a in body["items"]}) == 10
    assert all(a["kind"] == "movie" for a in body["items"])
    draws = {tuple(ids(await client.get("/anime?order=random&limit=5"))) for _ in range(8)}
    assert len(draws) > 1


async def test_q_defaults_to_relevance_and_respects_an_explicit_order(client, demo):
    """CT1 `q`: relevance unless an order is given."""
    assert ids(await client.get("/anime?q=naruto")) == [20, 1735, 34566]
    assert ids(await client.get("/anime?q=naruto&order=name")) == [34566, 20, 1735]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("kind=bogus", "kind"),
        ("kind=tv,", "kind"),
        ("kind=!", "kind"),
        ("status=finished", "status"),
        ("rating=nc17", "rating"),
        ("season=spring-2024", "season"),
        ("season=autumn_2024", "season"),
        ("season=2024_2020", "season"),
        ("season=1800", "season"),
        ("season=20x", "season"),
        ("season=", "season"),
        ("genre=abc", "genre"),
        ("genre=1,,2", "genre"),
        ("genre=" + ",".join(str(i) for i in range(1, 22)), "genre"),
        ("studio=!5", "studio"),
        ("studio=" + ",".join(str(i) for i in range(1, 12)), "studio"),
        ("ids=x", "ids"),
        ("ids=0", "ids"),
        ("ids=99999999999", "ids"),
        ("ids=" + ",".join(str(i) for i in range(1, 52)), "ids"),
        ("score=11", "score"),
        ("score=10.01", "score"),
        ("score=8.555", "score"),
        ("score=-1", "score"),
        ("score=abc", "score"),
        ("year_from=1900", "year_from"),
        ("year_to=2101", "year_to"),
        ("year_from=2010&year_to=2000", "year_from"),
        ("page=0", "page"),
        ("page=501", "page"),
        ("limit=0", "limit"),
        ("limit=51", "limit"),
        ("page=201&limit=50", "page"),
        ("order=bogus", "order"),
        ("censored=maybe", "censored"),
        ("q=", "q"),
        ("q=" + "a" * 101, "q"),
        ("unknown=1", "unknown"),
    ],
)
async def test_browse_validation_names_the_parameter(client, demo, query, field):
    """R4: a bad value is a 422 naming the parameter."""
    assert_field_error(await client.get(f"/anime?{query}"), field)


async def test_page_times_limit_may_reach_ten_thousand(client, demo):
    """R4: page × limit ≤ 10 000 is allowed (200 with no items this deep)."""
    response = await client.get("/anime?page=200&limit=50")
    assert response.status_code == 200 and response.json()["items"] == []


# --- CT2 search (R3) -------------------------------------------------------------------------


@pytest.mark.parametrize("q", ["атака титанов", "shingeki", "進撃", "Attack on Titan"])
async def test_search_examples_find_shingeki_no_kyojin(client, demo, q):
    """R3: the spec's four examples all find Shingeki no Kyojin, first."""
    found = ids(await client.get("/anime/search", params={"q": q}))
    assert found[0] == AOT


async def test_search_normalises_case_punctuation_width_and_yo(client, demo):
    """R3: NFKC, case-fold, yo → ye, runs of other characters → one space."""
    assert ids(await client.get("/anime/search", params={"q": "УНЕСЕННЫЕ призраками"}))[0] == 199
    assert ids(await client.get("/anime/search", params={"q": "steins gate"}))[0] == 9253
    assert ids(await client.get("/anime/search", params={"q": "STEINS;;GATE!"}))[0] == 9253
    assert ids(await client.get("/anime/search", params={"q": "ＳＴＥＩＮＳ"}))[0] == 9253
    assert ids(await client.get("/anime/search", params={"q": "madoka★magica"})) == [9756]
    assert ids(await client.get("/anime/search", params={"q": "  code   geass  r2 "}))[0] == 2904


async def test_search_needs_every_token(client, demo):
    """R3: every token is a substring of the titles; tokens may come from any title."""
    assert sorted(ids(await client.get("/anime/search", params={"q": "kyojin final"}))) == [
        40028,
        48583,
        51535,
    ]
    assert sorted(ids(await client.get("/anime/search", params={"q": "kyojin титанов 3"}))) == [
        35760,
        38524,
    ]
    assert ids(await client.get("/anime/search", params={"q": "kyojin zzz"})) == []


async def test_search_tiers_exact_then_prefix_then_rest(client, demo):
    """R3: a title equal to q, then titles starting with q, then the rest; members desc."""
    assert ids(await client.get("/anime/search", params={"q": "Naruto"})) == [20, 1735, 34566]
    shingeki = ids(await client.get("/anime/search", params={"q": "shingeki", "limit": 20}))
    assert sorted(shingeki) == sorted(ATTACK_ON_TITAN_SEASONS)
    assert shingeki[0] == AOT  # all tier 1: the most members first


async def test_search_shape_and_limit(client, demo):
    """CT2 items: `{id, name, russian, english, japanese, image:{x96}, kind, year, score}`."""
    response = await client.get("/anime/search", params={"q": "kyojin", "limit": 3})
    body = response.json()
    assert len(body["items"]) == 3
    assert body["items"][0] == {
        "id": AOT,
        "name": "Shingeki no Kyojin",
        "russian": "Атака титанов",
        "english": "Attack on Titan",
        "japanese": "進撃の巨人",
        "image": {"x96": "https://shikimori.one/system/animes/x96/16498.jpg"},
        "kind": "tv",
        "year": 2013,
        "score": 8.55,
    }
    assert len(ids(await client.get("/anime/search", params={"q": "a"}))) == 10


async def test_search_hides_rx(client, demo):
    """CT2 has no `censored` switch: rx titles stay out of autocomplete."""
    assert ids(await client.get("/anime/search", params={"q": "bible black"})) == []


async def test_search_like_wildcards_are_plain_characters(client, demo):
    """`%` and `_` are not wildcards (they normalise to spaces); no 500 for odd input."""
    for q in ["%", "_", "100%", "a_b", "\\", "'; DROP TABLE anime; --", "\x00"]:
        response = await client.get("/anime/search", params={"q": q})
        assert response.status_code in (200, 422), (q, response.status_code)
    # No letters or digits: no tokens, so every title matches, most members first.
    found = ids(await client.get("/anime/search", params={"q": "%%%", "limit": 5}))
    assert found == ids(await client.get("/anime?order=popularity&limit=5"))
    assert ids(await client.get("/anime?q=!!!&limit=5")) == found


async def test_search_is_served_by_the_trigram_index_on_postgresql(live, demo):
    """R3/Data: on PostgreSQL, `LIKE '%token%'` on search_text can use the pg_trgm GIN index
    (SQLite scans with LIKE … ESCAPE)."""
    db = live.services.db
    query = "SELECT id FROM anime WHERE search_text LIKE :pattern ESCAPE '!'"
    pattern = {"pattern": "%kyojin%"}
    if db.dialect != "postgresql":
        assert await db.fetch_all("EXPLAIN QUERY PLAN " + query, pattern)
        return
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        plan = await db.fetch_all("EXPLAIN " + query, pattern)
    assert "ix_anime_search_text" in " ".join(str(row) for row in plan)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "a" * 101}, "q"),
        ({"q": "a", "limit": 0}, "limit"),
        ({"q": "a", "limit": 21}, "limit"),
        ({"q": "a", "page": 2}, "page"),
    ],
)
async def test_search_validation(client, demo, params, field):
    """CT2: q 1..100 (required), limit 1..20; anything else is a 422 naming it."""
    assert_field_error(await client.get("/anime/search", params=params), field)


async def test_search_rate_limit_is_sixty_a_minute_per_ip(client, demo):
    """CT2: 60/min per IP; the 61st gets 429 with Retry-After."""
    statuses = [
        (await client.get("/anime/search", params={"q": f"a{i % 3}"})).status_code
        for i in range(60)
    ]
    assert statuses == [200] * 60
    refused = await client.get("/anime/search", params={"q": "a"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


# --- CT3 detail ------------------------------------------------------------------------------


async def test_detail_has_every_field(client, demo):
    """CT3: AnimeDetail, with BBCode stripped from the description."""
    response = await client.get(f"/anime/{AOT}")
    body = response.json()
    assert response.status_code == 200
    assert body["japanese"] == "進撃の巨人"
    assert body["synonyms"] == ["AoT", "SnK"]
    assert body["duration"] == 24 and body["members"] == 410000
    assert body["franchise"] == "shingeki_no_kyojin" and body["myanimelist_id"] == AOT
    assert body["next_episode_at"] is None
    assert body["description"].startswith("Больше ста лет") and "[" not in body["description"]
    assert "Эрен Йегер" in body["description"] and "титанов" in body["description"]
    assert [g["name"] for g in body["genres"]] == sorted(g["name"] for g in body["genres"])
    assert {"id": 38, "name": "Military", "russian": "Военное", "kind": "theme"} in body["genres"]
    assert body["studios"] == [
        {
            "id": 858,
            "name": "Wit Studio",
            "image": "https://shikimori.one/system/studios/original/858.png",
        }
    ]
    assert body["updated_at"] == "2025-06-02T07:00:00Z"
    assert "user_rate" not in body


@pytest.mark.parametrize("raw", ["999999", "abc", "0", "-5", "1.5", "99999999999", "１２", "1e3"])
async def test_unknown_or_malformed_id_is_anime_not_found(client, demo, raw):
    """CT3: 404 `anime_not_found`, for a malformed id too (no fetch-through, R7)."""
    response = await client.get(f"/anime/{raw}")
    assert response.status_code == 404
    assert response.json()["code"] == "anime_not_found"


@pytest.mark.parametrize(
    "sub", ["related", "similar", "franchise", "screenshots", "videos", "stats"]
)
async def test_subresources_of_an_unknown_anime_are_404(client, demo, sub):
    """CT4–CT9: 404 for an unknown anime, also when asked twice (the 404 is cached too)."""
    for _ in range(2):
        response = await client.get(f"/anime/999999/{sub}")
        assert response.status_code == 404 and response.json()["code"] == "anime_not_found"
    assert (await client.get(f"/anime/x/{sub}")).status_code == 404


async def test_detail_takes_no_query(client, demo):
    """Unknown query parameters get 422 with the field named."""
    assert_field_error(await client.get(f"/anime/{AOT}?fields=all"), "fields")


# --- CT4–CT8 ----------------------------------------------------------------------------------


async def test_related_lists_local_targets_by_relation_then_airing(client, demo):
    """CT4: `{relation, anime}`, only targets present locally, by relation then aired_on."""
    body = (await client.get("/anime/25777/related")).json()
    assert [(i["relation"], i["anime"]["id"]) for i in body["items"]] == [
        ("prequel", 16498),
        ("sequel", 35760),
    ]
    # Gintama' → Gintama (local) and Gintama': Enchousen (15417, not imported).
    assert [
        (i["relation"], i["anime"]["id"])
        for i in (await client.get("/anime/9969/related")).json()["items"]
    ] == [("prequel", 918)]
    # Shikimori's manga relations (anime: null) are skipped on import.
    assert [
        i["anime"]["id"] for i in (await client.get(f"/anime/{AOT}/related")).json()["items"]
    ] == [25777]


async def test_related_order_with_several_relations(client, demo):
    """CT4 ordering across relation kinds: alphabetical relation, then airing date."""
    body = (await client.get("/anime/21/related")).json()
    assert [(i["relation"], i["anime"]["id"]) for i in body["items"]] == [
        ("character", 813),
        ("character", 52139),  # no aired_on: after the dated titles of the same relation
    ]


async def test_similar_in_rank_order(client, demo):
    """CT5: similar titles in the imported rank order; none → []."""
    assert ids(await client.get(f"/anime/{AOT}/similar")) == [38000, 40748, 37521, 22319, 1535]
    assert ids(await client.get("/anime/6/similar")) == []


async def test_franchise_in_airing_order(client, demo):
    """CT6: every title of the franchise, aired_on ascending; no franchise → itself."""
    assert ids(await client.get("/anime/47778/franchise")) == [38000, 40456, 47778, 51019]
    assert ids(await client.get("/anime/48583/franchise")) == ATTACK_ON_TITAN_SEASONS
    assert ids(await client.get("/anime/199/franchise")) == [199]


async def test_screenshots_and_videos(client, demo, live):
    """CT7/CT8: imported sub-resources in order; unknown video kinds become `other`."""
    assert (await client.get(f"/anime/{AOT}/screenshots")).json() == {"items": []}
    await reimport(
        live,
        {
            "id": AOT,
            "updated_at": "2025-07-01T00:00:00Z",
            "screenshots": [
                {"original": "/system/screenshots/original/a.jpg", "preview": "/p/a.jpg"},
                {"original": "https://cdn.example/b.jpg", "preview": None},
            ],
            "videos": [
                {
                    "id": 20,
                    "url": "https://youtu.be/xyz",
                    "image_url": "//img.youtube.com/vi/xyz/hqdefault.jpg",
                    "player_url": "https://youtube.com/embed/xyz",
                    "name": "PV 1",
                    "kind": "pv",
                    "hosting": "youtube",
                },
                {"id": 7, "url": "https://example.com/op", "kind": "op_ed_clip", "name": None},
            ],
        },
    )
    shots = (await client.get(f"/anime/{AOT}/screenshots")).json()["items"]
    assert shots == [
        {
            "original": "https://shikimori.one/system/screenshots/original/a.jpg",
            "preview": "https://shikimori.one/p/a.jpg",
        },
        {"original": "https://cdn.example/b.jpg", "preview": None},
    ]
    videos = (await client.get(f"/anime/{AOT}/videos")).json()["items"]
    assert videos == [
        {
            "id": 7,
            "name": None,
            "kind": "other",
            "url": "https://example.com/op",
            "player_url": None,
            "image_url": None,
            "hosting": None,
        },
        {
            "id": 20,
            "name": "PV 1",
            "kind": "pv",
            "url": "https://youtu.be/xyz",
            "player_url": "https://youtube.com/embed/xyz",
            "image_url": "https://img.youtube.com/vi/xyz/hqdefault.jpg",
            "hosting": "youtube",
        },
    ]


# --- CT9–CT12 ---------------------------------------------------------------------------------


async def test_stats_without_list_entries(client, demo):
    """CT9: statuses and scores from this platform's lists; mean null below 5 scores."""
    body = (await client.get(f"/anime/{AOT}/stats")).json()
    assert body["anime_id"] == AOT and body["members"] == 0
    assert body["statuses"] == {
        "planned": 0,
        "watching": 0,
        "rewatching": 0,
        "completed": 0,
        "on_hold": 0,
        "dropped": 0,
    }
    assert body["scores"] == {str(n): 0 for n in range(1, 11)}
    assert body["mean_score"] is None and body["updated_at"].endswith("Z")


async def test_stats_count_this_platforms_list_entries(client, demo, live):
    """CT9: counts by status and score from anime_list_entry; mean from 5 scored entries."""
    from server.db import metadata
    from server.ids import new_id

    entries = metadata.tables.get("anime_list_entry")
    if entries is None:
        pytest.skip("the list domain is not installed")
    now = datetime.now(UTC)
    rows = [
        ("completed", 10),
        ("completed", 9),
        ("completed", 8),
        ("watching", 7),
        ("dropped", 0),
        ("planned", 0),
    ]

    async def add(anime_id: int, status: str, score: int) -> None:
        await live.services.db.execute(
            entries.insert().values(
                id=new_id(),
                user_id=new_id(),
                anime_id=anime_id,
                status=status,
                score=score,
                episodes=0,
                rewatches=0,
                rev=new_id(),
                created_at=now,
                updated_at=now,
            )
        )

    for status, score in rows:
        await add(AOT, status, score)
    await add(25777, "completed", 10)  # another title: not counted
    body = (await client.get(f"/anime/{AOT}/stats")).json()
    assert body["members"] == 6
    assert body["statuses"] == {
        "planned": 1,
        "watching": 1,
        "rewatching": 0,
        "completed": 3,
        "on_hold": 0,
        "dropped": 1,
    }
    assert body["scores"] == {**{str(n): 0 for n in range(1, 11)}, "7": 1, "8": 1, "9": 1, "10": 1}
    assert body["mean_score"] is None  # 4 scored entries
    await add(AOT, "on_hold", 6)
    cached = (await client.get(f"/anime/{AOT}/stats")).json()
    assert cached == body  # CT9 is cached for 10 minutes, whatever the catalog version
    await live.services.cache.delete(f"catalog:live:stats?{AOT}")
    fresh = (await client.get(f"/anime/{AOT}/stats")).json()
    assert fresh["members"] == 7 and fresh["mean_score"] == 8.0


async def test_genres_by_name(client, demo):
    """CT10: every genre, theme and demographic, by name."""
    items = (await client.get("/anime/genres")).json()["items"]
    assert len(items) == 30
    assert [g["name"] for g in items] == sorted(g["name"] for g in items)
    assert {g["kind"] for g in items} == {"genre", "theme", "demographic"}
    assert {"id": 27, "name": "Shounen", "russian": "Сёнен", "kind": "demographic"} in items


async def test_studios_with_titles_by_name_and_prefix(client, demo, live):
    """CT11: studios with at least one title, by name; q is a case-insensitive prefix."""
    await live.services.db.execute(
        sa.text("INSERT INTO studio (id, name, image) VALUES (99999, 'Aaa No Titles', NULL)")
    )
    body = (await client.get("/anime/studios?limit=100")).json()
    names = [s["name"] for s in body["items"]]
    assert "Aaa No Titles" not in names
    assert names == sorted(names, key=str.lower) and body["has_more"] is False
    assert [s["name"] for s in (await client.get("/anime/studios?q=ma")).json()["items"]] == [
        "Madhouse",
        "MAPPA",
    ]
    first = (await client.get("/anime/studios?limit=5")).json()
    second = (await client.get("/anime/studios?limit=5&page=2")).json()
    assert first["has_more"] is True and not {s["id"] for s in first["items"]} & {
        s["id"] for s in second["items"]
    }
    assert_field_error(await client.get("/anime/studios?limit=101"), "limit")
    assert_field_error(await client.get("/anime/studios?q=" + "a" * 51), "q")


async def test_calendar_lists_the_coming_week(client, demo):
    """CT12: anons and ongoing titles with an episode in [now - 1 h, now + days], soonest
    first; the demo's ongoing titles always have one in the coming week."""
    items = (await client.get("/anime/calendar")).json()["items"]
    assert {i["anime"]["id"] for i in items} == {21, 235, 966, 8687, 52807, 59978}
    times = [i["next_episode_at"] for i in items]
    assert times == sorted(times)
    one_piece = next(i for i in items if i["anime"]["id"] == 21)
    assert one_piece["next_episode"] == one_piece["anime"]["episodes_aired"] + 1 == 1131
    now = datetime.now(UTC)
    for item in items:
        when = datetime.fromisoformat(item["next_episode_at"])
        assert now - timedelta(hours=1) <= when <= now + timedelta(days=7)
    tomorrow = (await client.get("/anime/calendar?days=1")).json()["items"]
    assert all(
        datetime.fromisoformat(i["next_episode_at"]) <= now + timedelta(days=1) for i in tomorrow
    )
    assert_field_error(await client.get("/anime/calendar?days=0"), "days")
    assert_field_error(await client.get("/anime/calendar?days=15"), "days")


async def test_calendar_window_and_statuses(client, demo, live):
    """CT12: an episode up to an hour late still shows; older ones and released titles don't."""
    now = datetime.now(UTC)

    def stamp(delta: timedelta) -> str:
        return (now + delta).isoformat()

    for anime_id, status, delta in [
        (1, "ongoing", timedelta(minutes=-30)),
        (6, "ongoing", timedelta(hours=-2)),
        (30, "released", timedelta(hours=2)),
    ]:
        await reimport(
            live,
            {
                "id": anime_id,
                "status": status,
                "next_episode_at": stamp(delta),
                "updated_at": "2026-01-01T00:00:00Z",
            },
        )
    found = {i["anime"]["id"] for i in (await client.get("/anime/calendar")).json()["items"]}
    assert 1 in found and 6 not in found and 30 not in found


# --- CT13 random -----------------------------------------------------------------------------


async def test_random_picks_a_matching_title_uniformly(client, demo):
    """CT13: one AnimeDetail among the matches, no-store, no ETag; every match can come up."""
    seen = set()
    for _ in range(60):
        response = await client.get("/anime/random?ids=1,5,6")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store" and "etag" not in response.headers
        body = response.json()
        assert "genres" in body and "description" in body
        seen.add(body["id"])
    assert seen == {1, 5, 6}
    movie = (await client.get("/anime/random?kind=movie&status=released")).json()
    assert movie["kind"] == "movie" and movie["status"] == "released"


async def test_random_without_matches_is_no_match(client, demo):
    """CT13: 404 `no_match` when nothing matches."""
    response = await client.get("/anime/random?ids=999999")
    assert response.status_code == 404 and response.json()["code"] == "no_match"
    assert (await client.get("/anime/random?rating=rx")).status_code == 404  # censored


@pytest.mark.parametrize(
    ("query", "field"),
    [("q=a", "q"), ("order=name", "order"), ("page=1", "page"), ("kind=x", "kind")],
)
async def test_random_takes_the_filters_only(client, demo, query, field):
    """CT13 takes the CT1 filters except q, order, page and limit."""
    assert_field_error(await client.get(f"/anime/random?{query}"), field)


# --- R1: public, Authorization ignored ------------------------------------------------------

CATALOG_PATHS = [
    "/anime",
    "/anime?kind=movie",
    "/anime/search?q=kyojin",
    f"/anime/{AOT}",
    f"/anime/{AOT}/related",
    f"/anime/{AOT}/similar",
    f"/anime/{AOT}/franchise",
    f"/anime/{AOT}/screenshots",
    f"/anime/{AOT}/videos",
    f"/anime/{AOT}/stats",
    "/anime/genres",
    "/anime/studios",
    "/anime/calendar",
    "/anime/999999",
]


async def test_authorization_is_ignored_on_every_route(client, demo):
    """R1: an Authorization header, even an invalid one, never changes the response."""
    for path in [*CATALOG_PATHS, "/anime/random?ids=1", "/anime?order=random&ids=1"]:
        plain = await client.get(path)
        for header in BAD_AUTHORIZATION:
            response = await client.get(path, headers={"Authorization": header})
            assert response.status_code == plain.status_code != 401, (path, header)
            if "random" not in path:
                assert response.content == plain.content, (path, header)
        doubled = await client.get(
            path, headers=[("Authorization", "Bearer a"), ("Authorization", "Bot b")]
        )
        assert doubled.status_code == plain.status_code, path


async def test_a_real_session_sees_the_same_bytes(client, demo):
    """Catalog responses are the same for every caller (Decided)."""
    from tests.factories import register

    account = await register(client)
    for path in CATALOG_PATHS:
        anonymous = await client.get(path)
        signed_in = await client.get(path, headers=account.headers)
        assert signed_in.content == anonymous.content, path


# --- R2: caching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [
        ("/anime", BROWSE_CACHE),
        ("/anime/search?q=a", BROWSE_CACHE),
        ("/anime/calendar", BROWSE_CACHE),
        (f"/anime/{AOT}", DETAIL_CACHE),
        (f"/anime/{AOT}/related", DETAIL_CACHE),
        (f"/anime/{AOT}/similar", DETAIL_CACHE),
        (f"/anime/{AOT}/franchise", DETAIL_CACHE),
        (f"/anime/{AOT}/screenshots", DETAIL_CACHE),
        (f"/anime/{AOT}/videos", DETAIL_CACHE),
        (f"/anime/{AOT}/stats", STATS_CACHE),
        ("/anime/genres", REFERENCE_CACHE),
        ("/anime/studios", REFERENCE_CACHE),
        ("/anime/random", "no-store"),
        ("/anime?order=random", "no-store"),
    ],
)
async def test_cache_control_per_route(client, demo, path, cache_control):
    """R2: Cache-Control per the table; Vary: Accept-Encoding only."""
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == cache_control
    assert response.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize("path", CATALOG_PATHS[:-1])
async def test_etag_is_the_first_128_bits_of_the_body_sha256(client, demo, path):
    """R2: a strong ETag, quoted hex of SHA-256(body)[:128 bits]; If-None-Match → 304."""
    response = await client.get(path)
    etag = response.headers["etag"]
    assert etag == '"' + hashlib.sha256(response.content).hexdigest()[:32] + '"'
    for if_none_match in [etag, f"W/{etag}", f'"nope", {etag}', "*"]:
        again = await client.get(path, headers={"If-None-Match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b"" and again.headers["etag"] == etag
        assert again.headers["cache-control"] == response.headers["cache-control"]
    stale = await client.get(path, headers={"If-None-Match": '"0123456789abcdef0123456789abcdef"'})
    assert stale.status_code == 200 and stale.content == response.content


async def test_a_cached_response_is_byte_identical(client, demo, live):
    """R2: the first (built) and later (cached) responses are the same bytes and ETag."""
    first = await client.get("/anime?kind=tv&order=popularity")
    assert any("browse" in key for key in await catalog_keys(live))
    second = await client.get("/anime?kind=tv&order=popularity")
    assert first.content == second.content and first.headers["etag"] == second.headers["etag"]


async def test_responses_come_from_the_cache_until_the_version_moves(client, demo, live):
    """R2: cached by version: a write that skips the bump is not seen; a bump shows it."""
    before = (await client.get(f"/anime/{AOT}")).json()
    await live.services.db.execute(anime.update().where(anime.c.id == AOT).values(name="Changed"))
    assert (await client.get(f"/anime/{AOT}")).json() == before
    async with live.services.db.transaction() as tx:
        await bump_version(live.services.db, tx, live.services.cache)
    assert (await client.get(f"/anime/{AOT}")).json()["name"] == "Changed"


async def test_an_import_invalidates_every_cached_response(client, demo, live):
    """R2/R6: an import that changes something bumps the version; every entry misses."""
    paths = [
        f"/anime/{AOT}",
        "/anime?q=kyojin",
        "/anime/search?q=kyojin",
        f"/anime/{AOT}/franchise",
    ]
    old = {path: await client.get(path) for path in paths}
    report = await reimport(
        live, {"id": AOT, "name": "Shingeki no Kyojin (TV)", "updated_at": "2025-07-01T00:00:00Z"}
    )
    assert report.updated == 1 and report.version is not None
    for path in paths:
        new = await client.get(path, headers={"If-None-Match": old[path].headers["etag"]})
        assert new.status_code == 200, path
        assert (
            "Shingeki no Kyojin (TV)" in new.text
            and new.headers["etag"] != old[path].headers["etag"]
        )


async def test_an_unchanged_import_keeps_the_cache(client, demo, live):
    """R6: an import that changes nothing leaves the version, so ETags stay valid."""
    first = await client.get(f"/anime/{AOT}")
    report = await importer.load_demo_catalog(live.services.db, cache=live.services.cache)
    assert report.updated <= 6  # only next_episode_at of the weekly titles may move
    if report.updated == 0:
        again = await client.get(f"/anime/{AOT}", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304


async def test_canonical_query_shares_one_cache_entry(client, demo, live):
    """R2: parameters sorted, lists sorted, defaults filled: one entry for both spellings."""
    spellings = [
        "/anime?kind=tv,movie",
        "/anime?limit=20&kind=movie,tv",
        "/anime?kind=movie&kind=tv&page=1&censored=true&order=ranked",
        "/anime?censored=1&kind=tv,movie,tv",
    ]
    bodies = {(await client.get(path)).content for path in spellings}
    assert len(bodies) == 1
    assert len([k for k in await catalog_keys(live) if "browse" in k]) == 1
    await client.get("/anime/search?q=Attack%20on%20Titan")
    await client.get("/anime/search?q=attack++on+TITAN&limit=10")
    assert len([k for k in await catalog_keys(live) if "search" in k]) == 1


async def test_concurrent_cold_requests_agree(client, demo):
    """Racing requests on an empty cache all get the same bytes and ETag."""
    responses = await asyncio.gather(*(client.get("/anime?status=ongoing") for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert len({r.headers["etag"] for r in responses}) == 1


# --- helpers ----------------------------------------------------------------------------------


def _negated_date(text: str | None) -> tuple[int, ...]:
    if text is None:
        return (0,)
    year, month, day = map(int, text.split("-"))
    return (-year, -month, -day)


def demo_ids() -> set[int]:
    return {record["id"] for record in importer.demo_records()}


async def test_the_catalog_keeps_answering_while_redis_is_down(request, tmp_path):
    """A Redis outage costs the cache, not the catalog: reads fall back to the database
    (server.cache reads through while Redis is unreachable), with the same bytes."""
    import os

    import httpx

    from tests.conftest import base_settings, start_live_server, stop_live_server
    from tests.support.proxy import FlakyProxy

    if request.config._anilay_scaleout_missing:
        pytest.skip(request.config._anilay_scaleout_missing)
    from server.migrate import upgrade_async

    spare_db = int(os.environ.get("ANILAY_TEST_REDIS_SPARE_DB", "14"))
    proxy = await FlakyProxy("127.0.0.1", 6379).start()
    settings = base_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}",
        redis_url=proxy.url(spare_db),
        redis_timeout_s=0.5,
    )
    await upgrade_async(settings.database_url)
    live = await start_live_server(settings)
    try:
        await importer.load_demo_catalog(live.services.db, cache=live.services.cache)
        async with httpx.AsyncClient(base_url=live.url + "/api/v1", timeout=10) as http:
            before = await http.get(f"/anime/{AOT}")
            assert before.status_code == 200
            proxy.cut()
            for path in [f"/anime/{AOT}", "/anime?kind=movie", "/anime/search?q=kyojin"]:
                response = await http.get(path)
                assert response.status_code == 200, (path, response.text)
            during = await http.get(f"/anime/{AOT}")
            assert during.content == before.content
            assert during.headers["etag"] == before.headers["etag"]
            proxy.restore()
            assert (await http.get(f"/anime/{AOT}")).content == before.content
    finally:
        proxy.restore()
        await stop_live_server(live)
        await proxy.close()
