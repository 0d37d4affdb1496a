"""The catalog importer (anime.md §1 Importer, R6, R7), on both engines: upserts that are
idempotent, respect age, locks and tombstones, survive bad records, and pull from a
Shikimori-compatible API politely (tests/support/fake_shikimori.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from models.anime import importer
from models.anime.catalog import get_anime_brief, get_many
from models.anime.catalog.caching import read_version
from models.anime.catalog.text import build_search_text, normalize_title
from models.anime.catalog_tables import (
    anime,
    anime_genre,
    anime_relation,
    anime_screenshot,
    anime_similar,
    anime_studio,
    anime_tombstones,
    anime_video,
    genre,
    studio,
)
from models.anime.importer import Pacer, RemoteLimits, retry_after_s
from tests.support.fake_shikimori import Scripted, running_fake_shikimori

CATALOG_TABLES = (
    anime,
    genre,
    studio,
    anime_genre,
    anime_studio,
    anime_relation,
    anime_similar,
    anime_screenshot,
    anime_video,
)
T0 = "2025-01-01T00:00:00Z"
T1 = "2025-02-01T00:00:00Z"


def record(anime_id: int = 101, **fields) -> dict:
    base = {
        "id": anime_id,
        "name": f"Title {anime_id}",
        "russian": f"Тайтл {anime_id}",
        "kind": "tv",
        "status": "released",
        "rating": "pg_13",
        "episodes": 12,
        "episodes_aired": 12,
        "duration": 24,
        "aired_on": "2020-01-10",
        "released_on": "2020-03-27",
        "score": "7.50",
        "image": {"original": f"/system/animes/original/{anime_id}.jpg"},
        "updated_at": T0,
        "genres": [{"id": 1, "name": "Action", "russian": "Экшен", "kind": "genre"}],
        "studios": [{"id": 11, "name": "Madhouse", "image": None}],
    }
    base.update(fields)
    return base


async def run(live, *records, **options) -> importer.ImportReport:
    return await importer.import_records(
        live.services.db,
        [(f"r{i}", r) for i, r in enumerate(records)],
        cache=live.services.cache,
        **options,
    )


async def snapshot(live) -> dict[str, list[dict]]:
    """Every catalog row, in a stable order."""
    out = {}
    for table in CATALOG_TABLES:
        key = [c for c in table.primary_key.columns]
        rows = await live.services.db.fetch_all(sa.select(table).order_by(*key))
        out[table.name] = rows
    return out


async def row(live, anime_id: int) -> dict:
    found = await live.services.db.fetch_one(sa.select(anime).where(anime.c.id == anime_id))
    assert found is not None
    return found


# --- normalisation (R3) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Shingeki no Kyojin", "shingeki no kyojin"),
        ("Steins;Gate", "steins gate"),
        ("  Re:Zero -- kara  ", "re zero kara"),
        ("ＡＢＣ１２３", "abc123"),
        ("Ёлка ЁЖИК", "елка ежик"),
        ("Straße", "strasse"),
        ("Madoka★Magica", "madoka magica"),
        ("進撃の巨人", "進撃の巨人"),
        ("Gintama°", "gintama"),
        ("½", "1 2"),
        ("%_\\", ""),
        ("", ""),
    ],
)
def test_normalize_title(raw, normalized):
    """R3: NFKC, case-fold, yo → ye, runs of non-letters/digits → one space, trimmed."""
    assert normalize_title(raw) == normalized


def test_search_text_keeps_titles_apart():
    """Titles are separated so a token never spans two of them; duplicates collapse."""
    assert build_search_text(["Naruto", "НАРУТО", "naruto", None, ""]) == "|naruto|наруто|"
    assert build_search_text([]) == "|"


# --- R6 ---------------------------------------------------------------------------------------


async def test_same_input_twice_is_identical_and_bumps_once(live):
    """R6: the same input twice leaves identical rows and bumps the version only once."""
    first = await importer.load_demo_catalog(live.services.db, now=datetime(2025, 6, 4, tzinfo=UTC))
    version = await read_version(live.services.db)
    before = await snapshot(live)
    second = await importer.load_demo_catalog(
        live.services.db, now=datetime(2025, 6, 4, tzinfo=UTC)
    )
    assert first.created == len(importer.demo_records()) and first.version == version == 1
    assert second.created == second.updated == 0 and second.unchanged == first.created
    assert second.version is None
    assert await read_version(live.services.db) == version
    assert await snapshot(live) == before


async def test_concurrent_identical_imports_agree(live):
    """Two imports of the same records racing leave one copy of each row."""
    records = [record(i) for i in range(200, 230)]
    reports = await asyncio.gather(run(live, *records), run(live, *records))
    assert sum(r.created for r in reports) + sum(r.unchanged + r.updated for r in reports) == 60
    assert await live.services.db.fetch_val(sa.select(sa.func.count()).select_from(anime)) == 30


async def test_older_record_is_skipped(live):
    """R6: a record older than the stored source_updated_at changes nothing."""
    await run(live, record(name="New name", updated_at=T1))
    report = await run(live, record(name="Old name", updated_at=T0))
    assert report.skipped_older == 1 and report.version is None
    assert (await row(live, 101))["name"] == "New name"
    newer = await run(live, record(name="Newest", updated_at="2025-03-01T00:00:00+03:00"))
    assert newer.updated == 1 and (await row(live, 101))["name"] == "Newest"


async def test_absent_keys_keep_stored_values(live):
    """R6: keys absent from a record keep their stored values (children too)."""
    await run(live, record(related=[{"relation": "Sequel", "anime": {"id": 5}}]))
    report = await run(live, {"id": 101, "score": "9.12", "updated_at": T1})
    assert report.updated == 1
    stored = await row(live, 101)
    assert stored["score_x100"] == 912
    assert stored["name"] == "Title 101" and stored["episodes"] == 12
    assert stored["season"] == "winter_2020" and stored["year"] == 2020
    assert stored["image_original"] == "https://shikimori.one/system/animes/original/101.jpg"
    assert (
        await live.services.db.fetch_val(
            sa.select(anime_relation.c.related_id).where(anime_relation.c.anime_id == 101)
        )
        == 5
    )
    assert (
        await live.services.db.fetch_val(
            sa.select(anime_genre.c.genre_id).where(anime_genre.c.anime_id == 101)
        )
        == 1
    )


async def test_locked_fields_are_never_overwritten(live):
    """R6: fields in locked_fields (admin.md A15 names) keep the stored value."""
    await run(live, record())
    await live.services.db.execute(
        anime.update()
        .where(anime.c.id == 101)
        .values(
            name="Local name",
            locked_fields=["name", "image_url", "genre_ids", "aired_on"],
        )
    )
    report = await run(
        live,
        record(
            name="Upstream name",
            russian="Новое",
            image={"original": "/new.jpg", "preview": "/new-p.jpg"},
            genres=[{"id": 2, "name": "Adventure", "russian": None, "kind": "genre"}],
            aired_on="2021-07-01",
            episodes=13,
            updated_at=T1,
        ),
    )
    assert report.updated == 1
    stored = await row(live, 101)
    assert stored["name"] == "Local name" and stored["russian"] == "Новое"
    assert stored["image_original"].endswith("/system/animes/original/101.jpg")
    assert stored["image_preview"] is None
    assert stored["aired_on"].isoformat() == "2020-01-10" and stored["season"] == "winter_2020"
    assert stored["episodes"] == 13
    assert "local name" in stored["search_text"] and "upstream" not in stored["search_text"]
    genres = await live.services.db.fetch_all(
        sa.select(anime_genre.c.genre_id).where(anime_genre.c.anime_id == 101)
    )
    assert [g["genre_id"] for g in genres] == [1]


async def test_tombstoned_ids_are_skipped_unless_forced(live):
    """R6: an id in anime_tombstones is skipped by every import except a forced one."""
    await live.services.db.execute(
        anime_tombstones.insert().values(
            anime_id=101, reason="duplicate", created_by=None, created_at=datetime.now(UTC)
        )
    )
    report = await run(live, record(), record(102))
    assert report.skipped_tombstoned == 1 and report.created == 1
    assert await get_anime_brief(live.services, 101) is None
    forced = await run(live, record(), force_ids=[101])
    assert forced.created == 1 and await get_anime_brief(live.services, 101) is not None


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("not an object", "not an object"),
        ({"name": "no id"}, "id is not"),
        ({"id": "12", "name": "string id"}, "id is not"),
        ({"id": True, "name": "bool id"}, "id is not"),
        ({"id": 1_000_000_001, "name": "local range"}, "id is not"),
        ({"id": 7}, "name is required"),
        ({"id": 7, "name": ""}, "name is empty"),
        ({"id": 7, "name": "x", "kind": "tv_99"}, "kind"),
        ({"id": 7, "name": "x", "status": "finished"}, "status"),
        ({"id": 7, "name": "x", "rating": "nc17"}, "rating"),
        ({"id": 7, "name": "x", "episodes": -1}, "episodes"),
        ({"id": 7, "name": "x", "episodes": "12"}, "episodes"),
        ({"id": 7, "name": "x", "score": "11"}, "score"),
        ({"id": 7, "name": "x", "score": "nan"}, "score"),
        ({"id": 7, "name": "x", "aired_on": "13/01/2020"}, "aired_on"),
        ({"id": 7, "name": "x", "updated_at": "yesterday"}, "updated_at"),
        ({"id": 7, "name": "x", "genres": "Action"}, "genres"),
        ({"id": 7, "name": "x", "genres": [{"id": "1", "name": "A"}]}, "genres"),
        ({"id": 7, "name": "x", "related": [{"relation": "Sequel", "anime": 5}]}, "related"),
        ({"id": 7, "name": "x", "videos": [{"id": 1}]}, "videos"),
        ({"id": 7, "name": "x", "synonyms": "AoT"}, "synonyms"),
        ({"id": 7, "name": "x", "rates_statuses_stats": [{"name": "x"}]}, "rates_statuses"),
        ({"id": 7, "name": 12}, "name"),
        ({"id": 7, "name": "x", "myanimelist_id": -3}, "myanimelist_id"),
    ],
)
async def test_a_malformed_record_is_reported_and_skipped(live, bad, reason):
    """R6: a malformed record is reported and skipped; the rest of the batch is stored."""
    report = await run(live, record(301), bad, record(302))
    assert report.created == 2 and report.malformed == 1
    assert [p.ref for p in report.problems] == ["r1"]
    assert reason in report.problems[0].reason
    assert await get_anime_brief(live.services, 301) and await get_anime_brief(live.services, 302)


async def test_a_failing_batch_is_retried_record_by_record(live, monkeypatch):
    """R6: a database error on one record costs only that record, never the batch."""
    original = importer.writes._apply

    async def fail_on_666(db, plan):
        if any(row["id"] == 666 for row in plan.inserts):
            raise RuntimeError("simulated constraint failure")
        await original(db, plan)

    monkeypatch.setattr(importer.writes, "_apply", fail_on_666)
    report = await run(live, record(401), record(666), record(402))
    assert report.created == 2 and report.malformed == 1
    assert report.problems[0].ref == "r1" and "simulated" in report.problems[0].reason
    assert await get_anime_brief(live.services, 401) and await get_anime_brief(live.services, 402)
    assert await get_anime_brief(live.services, 666) is None


async def test_batches_hold_five_hundred_records(live):
    """R6: 500 records per transaction: 1 201 new titles are three batches, three bumps."""
    records = [record(10_000 + i, genres=[], studios=[]) for i in range(1201)]
    report = await run(live, *records)
    assert report.created == 1201 and report.version == 3
    assert await live.services.db.fetch_val(sa.select(sa.func.count()).select_from(anime)) == 1201


async def test_children_sets_replace_when_present(live):
    """R6: related/similar/screenshots/videos/genres/studios replace the stored set."""
    await run(
        live,
        record(
            related=[
                {"relation": "Sequel", "anime": {"id": 5}},
                {"relation": "Side story", "anime": {"id": 6}},
                {"relation_kind": "spin_off", "anime": {"id": 8}},
                {"relation": "Adaptation", "anime": None, "manga": {"id": 9}},
            ],
            similar=[{"id": 3}, {"id": 2}, {"id": 3}],
            screenshots=[{"original": "/a.jpg", "preview": "/a-p.jpg"}],
        ),
    )
    relations = await live.services.db.fetch_all(
        sa.select(anime_relation).where(anime_relation.c.anime_id == 101)
    )
    assert {(r["related_id"], r["relation"]) for r in relations} == {
        (5, "sequel"),
        (6, "side_story"),
        (8, "spin_off"),
    }
    await run(
        live,
        record(
            related=[
                {"relation": "Prequel", "anime": {"id": 6}},
                {"relation": "??", "anime": {"id": 7}},
            ],
            similar=[{"id": 4}],
            screenshots=[],
            genres=[{"id": 2, "name": "Adventure", "russian": None, "kind": "genre"}],
            updated_at=T1,
        ),
    )
    relations = await live.services.db.fetch_all(
        sa.select(anime_relation).where(anime_relation.c.anime_id == 101)
    )
    assert {(r["related_id"], r["relation"]) for r in relations} == {(6, "prequel"), (7, "other")}
    similar = await live.services.db.fetch_all(
        sa.select(anime_similar).where(anime_similar.c.anime_id == 101)
    )
    assert [(s["similar_id"], s["rank"]) for s in similar] == [(4, 1)]
    assert (
        await live.services.db.fetch_val(sa.select(sa.func.count()).select_from(anime_screenshot))
        == 0
    )
    genres = await live.services.db.fetch_all(
        sa.select(anime_genre.c.genre_id).where(anime_genre.c.anime_id == 101)
    )
    assert [g["genre_id"] for g in genres] == [2]


async def test_a_changed_child_alone_is_a_change(live):
    """A record whose only change is a child set still counts (and bumps the version)."""
    await run(live, record())
    report = await run(live, record(studios=[{"id": 12, "name": "Bones", "image": None}]))
    assert report.updated == 1 and report.version is not None
    studios = await live.services.db.fetch_all(
        sa.select(anime_studio.c.studio_id).where(anime_studio.c.anime_id == 101)
    )
    assert [s["studio_id"] for s in studios] == [12]


async def test_genre_and_studio_names_follow_the_source(live):
    """Genres and studios are upserted: a renamed studio is renamed once, for every title."""
    await run(live, record(101), record(102))
    renamed = [{"id": 11, "name": "MADHOUSE Inc.", "image": "/s/11.png"}]
    report = await run(live, record(101, studios=renamed))
    assert report.updated == 0 and report.unchanged == 1 and report.version is not None
    assert await live.services.db.fetch_one(sa.select(studio).where(studio.c.id == 11)) == {
        "id": 11,
        "name": "MADHOUSE Inc.",
        "image": "https://shikimori.one/s/11.png",
    }


async def test_shikimori_shapes_are_mapped(live):
    """Shikimori's shapes: english/japanese lists, BBCode, members from rates_statuses_stats,
    relative images, tv_13 kinds, and genre kind `anime` (REST) kept as ours."""
    await run(
        live,
        record(
            english=["Attack on Titan", "AoT: The Series"],
            japanese=["進撃の巨人"],
            synonyms=["SnK"],
            kind="tv_13",
            description="[b]Bold[/b] and [url=https://x.y]link[/url]\r\n\r\n\r\n[[Wiki]] end",
            rates_statuses_stats=[
                {"name": "Запланировано", "value": 10},
                {"name": "Смотрю", "value": 5},
            ],
            genres=[{"id": 1, "name": "Action", "russian": "Экшен", "kind": "anime"}],
            myanimelist_id=101,
        ),
    )
    stored = await row(live, 101)
    assert stored["english"] == "Attack on Titan" and stored["japanese"] == "進撃の巨人"
    assert stored["synonyms"] == ["SnK", "AoT: The Series"]
    assert stored["kind"] == "tv" and stored["members"] == 15
    assert stored["description"] == "Bold and link\n\nWiki end"
    assert stored["search_text"] == (
        "|title 101|тайтл 101|attack on titan|進撃の巨人|snk|aot the series|"
    )
    assert (
        await live.services.db.fetch_val(sa.select(genre.c.kind).where(genre.c.id == 1)) == "genre"
    )


async def test_a_taken_myanimelist_id_is_dropped_and_reported(live):
    """myanimelist_id is UNIQUE: a second title claiming it is stored without it."""
    report = await run(live, record(101, myanimelist_id=5), record(102, myanimelist_id=5))
    assert report.created == 2 and len(report.problems) == 1
    assert "already belongs to anime 101" in report.problems[0].reason
    assert (await row(live, 102))["myanimelist_id"] is None


async def test_get_many_for_other_domains(live):
    """get_many: AnimeCompact builtins for the ids that exist, one query; odd ids ignored."""
    await run(live, record(101), record(102))
    found = await get_many(live.services, [101, 102, 999, -1, 2**40])
    assert set(found) == {101, 102}
    assert found[101]["aired_on"] == "2020-01-10" and found[101]["score"] == 7.5
    assert await get_anime_brief(live.services, 101) == {
        "id": 101,
        "name": "Title 101",
        "russian": "Тайтл 101",
        "english": None,
        "image_preview": None,
        "episodes": 12,
        "kind": "tv",
        "status": "released",
    }


async def test_files_and_directories(live, tmp_path):
    """A JSON file, a directory of them, `{"animes": [...]}` wrappers; an unreadable file is
    a problem, not a crash."""
    (tmp_path / "a.json").write_text(json.dumps([record(501), record(502)]), encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_text(json.dumps({"animes": [record(503)]}), "utf-8")
    (tmp_path / "sub" / "c.json").write_text(json.dumps(record(504)), encoding="utf-8")
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    report = await importer.import_path(live.services.db, tmp_path)
    assert report.created == 4
    assert [p.ref for p in report.problems] == ["broken.json"]
    single = await importer.import_path(live.services.db, tmp_path / "a.json")
    assert single.unchanged == 2


async def test_demo_catalog_covers_the_spec(live):
    """The demo catalog: ≥ 50 titles, every status and rating, ≥ 12 genres, relations and
    franchises among them, ongoing titles with an episode in the coming week."""
    now = datetime.now(UTC)
    records = importer.demo_records(now)
    assert len(records) >= 50
    assert {r["status"] for r in records} == {"anons", "ongoing", "released"}
    assert {r["rating"] for r in records} == {"none", "g", "pg", "pg_13", "r", "r_plus", "rx"}
    kinds = {r["kind"] for r in records}
    assert kinds >= {"tv", "movie", "ova", "ona", "special", "tv_special", "music", "cm"}
    assert len({g["id"] for r in records for g in r["genres"]}) >= 12
    assert sum(1 for r in records if r["related"]) >= 20
    ongoing = [r for r in records if r["status"] == "ongoing"]
    assert ongoing and all(
        now < datetime.fromisoformat(r["next_episode_at"]) <= now + timedelta(days=7)
        for r in ongoing
    )
    assert (await importer.load_demo_catalog(live.services.db)).malformed == 0


def test_demo_weekly_slots_keep_weekday_and_time():
    """Re-timing keeps the real broadcast slot (One Piece: Sundays 14:15 UTC)."""
    for now in [
        datetime(2026, 11, 28, 18, 0, tzinfo=UTC),
        datetime(2026, 11, 29, 14, 20, tzinfo=UTC),
    ]:
        one_piece = next(r for r in importer.demo_records(now) if r["id"] == 21)
        when = datetime.fromisoformat(one_piece["next_episode_at"])
        assert when.weekday() == 6 and (when.hour, when.minute) == (14, 15)
        assert now < when <= now + timedelta(days=7)


# --- R7: remote pulls -------------------------------------------------------------------------


def fast_limits(**changes) -> RemoteLimits:
    values = dict(backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
    values.update(changes)
    return RemoteLimits(**values)


def add_titles(fake, ids) -> None:
    for anime_id in ids:
        fake.add(
            record(anime_id, screenshots=[], videos=[]),
            related=[
                {
                    "relation": "Sequel",
                    "relation_russian": "Продолжение",
                    "anime": {"id": 1},
                    "manga": None,
                }
            ],
            similar=[{"id": 2, "name": "x"}],
        )


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_default_limits_are_shikimoris():
    """R7: 5 requests/s and 90 requests/min, retried with backoff."""
    limits = RemoteLimits()
    assert (limits.per_second, limits.per_minute) == (5, 90)
    assert (limits.second_s, limits.minute_s) == (1.0, 60.0)


def test_pacer_never_exceeds_either_window():
    """R7: with a simulated clock, 300 requests never put 6 in a second or 91 in a minute."""
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    pacer = Pacer(RemoteLimits(), clock=lambda: clock[0], sleep=sleep)
    starts = []

    async def drive() -> None:
        for _ in range(300):
            await pacer.wait()
            starts.append(clock[0])
            clock[0] += 0.001  # the request itself

    asyncio.run(drive())
    assert max_in_window(starts, 1.0) <= 5
    assert max_in_window(starts, 60.0) <= 90
    assert starts[-1] < 4 * 60.0  # and it does not dawdle: 300 requests in under 4 minutes


def test_retry_after_forms():
    """Retry-After as delta-seconds or an HTTP date."""
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    later = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 25 <= retry_after_s(later) <= 31


async def test_pull_imports_titles_with_their_subresources(live):
    """A remote pull stores the titles with related and similar; it names itself."""
    async with running_fake_shikimori() as fake:
        add_titles(fake, [601, 602])
        report = await importer.pull_remote(
            live.services.db,
            fake.url,
            version="9.9.9",
            ids=[601, 602, 603],
            cache=live.services.cache,
            limits=fast_limits(),
        )
    assert report.created == 2 and report.malformed == 1
    assert report.problems[0].ref == "id 603" and "not found" in report.problems[0].reason
    assert {hit.user_agent for hit in fake.hits} == {"Anilay/9.9.9"}
    assert report.requests == len(fake.hits) == 2 * 3 + 1
    related = await live.services.db.fetch_all(
        sa.select(anime_relation).where(anime_relation.c.anime_id == 601)
    )
    assert [(r["related_id"], r["relation"]) for r in related] == [(1, "sequel")]
    stored = await row(live, 601)
    assert stored["image_original"] == f"{fake.url}/system/animes/original/601.jpg"


async def test_pull_pages_walks_browse_pages(live):
    """`pages` mode: every id on browse pages 1..N, then each title."""
    async with running_fake_shikimori() as fake:
        add_titles(fake, range(700, 760))
        report = await importer.pull_remote(
            live.services.db,
            fake.url,
            version="1",
            pages=2,
            limits=fast_limits(per_second=1000, per_minute=100_000),
        )
    browse = fake.hits_to("/api/animes")
    assert [hit.query["page"] for hit in browse] == ["1", "2"]
    assert browse[0].query["limit"] == "50" and report.created == 60


@pytest.mark.slow
async def test_pull_stays_within_five_requests_a_second(live):
    """R7: ≤ 5 requests in any second, at production limits, measured by the server."""
    async with running_fake_shikimori() as fake:
        add_titles(fake, range(801, 806))
        report = await importer.pull_remote(
            live.services.db, fake.url, version="1", ids=list(range(801, 806))
        )
    times = [hit.at for hit in fake.hits]
    assert report.created == 5 and len(times) == 15
    # Arrival jitter on loopback is well under the 20 ms allowed here.
    assert max_in_window(times, 1.0 - 0.02) <= 5
    assert times[-1] - times[0] >= 2.0 - 0.05  # 15 requests need at least two full seconds


@pytest.mark.slow
async def test_pull_stays_within_the_per_minute_budget(live):
    """R7: the per-minute budget holds too (windows scaled 60× down: 90 per second, 5 per
    1/60 s), measured by the server."""
    limits = fast_limits(second_s=1 / 60, minute_s=1.0)
    async with running_fake_shikimori() as fake:
        add_titles(fake, range(900, 940))
        await importer.pull_remote(
            live.services.db, fake.url, version="1", ids=list(range(900, 940)), limits=limits
        )
    times = [hit.at for hit in fake.hits]
    assert len(times) == 120
    assert max_in_window(times, 1.0 - 0.02) <= 90
    assert times[-1] - times[0] >= 1.0  # 120 requests cannot fit into one window of 90


@pytest.mark.slow
async def test_pull_honours_429_and_retry_after(live):
    """R7: a 429 makes the client wait at least Retry-After before trying again."""
    async with running_fake_shikimori() as fake:
        add_titles(fake, [1001])
        fake.script(
            "/api/animes/1001",
            Scripted(429, {"Retry-After": "1"}),
            Scripted(429, {"Retry-After": "1"}),
        )
        started = time.monotonic()
        report = await importer.pull_remote(
            live.services.db, fake.url, version="1", ids=[1001], limits=fast_limits()
        )
        elapsed = time.monotonic() - started
    detail = [hit.at for hit in fake.hits_to("/api/animes/1001")]
    assert report.created == 1 and len(detail) == 3
    assert detail[1] - detail[0] >= 1.0 - 0.02 and detail[2] - detail[1] >= 1.0 - 0.02
    assert elapsed >= 2.0


async def test_pull_backs_off_exponentially(live):
    """R7: with no Retry-After, each retry waits twice as long as the one before."""
    async with running_fake_shikimori() as fake:
        add_titles(fake, [1002])
        fake.script(
            "/api/animes/1002",
            Scripted(429),
            Scripted(503),
            Scripted(429, {"Retry-After": "0"}),
        )
        report = await importer.pull_remote(
            live.services.db,
            fake.url,
            version="1",
            ids=[1002],
            limits=fast_limits(backoff_base_s=0.1, backoff_max_s=10, per_second=1000),
        )
    detail = [hit.at for hit in fake.hits_to("/api/animes/1002")]
    gaps = [b - a for a, b in itertools.pairwise(detail)]
    assert report.created == 1 and len(gaps) == 3
    assert gaps[0] >= 0.1 - 0.01 and gaps[1] >= 0.2 - 0.01 and gaps[2] >= 0.4 - 0.01


async def test_pull_gives_up_politely(live):
    """R7: a source that keeps refusing ends the pull with a problem, never a crash."""
    async with running_fake_shikimori() as fake:
        add_titles(fake, [1101, 1102])
        fake.script("/api/animes/1101", *[Scripted(429)] * 10)
        report = await importer.pull_remote(
            live.services.db,
            fake.url,
            version="1",
            ids=[1101, 1102],
            limits=fast_limits(max_retries=3),
        )
    assert len(fake.hits_to("/api/animes/1101")) == 4
    assert fake.hits_to("/api/animes/1102") == []  # it stops rather than hammering on
    assert report.created == 0 and "gave up" in report.problems[0].reason


async def test_catalog_reads_never_fetch_through(client, live):
    """R7: an unknown id is a 404 from local data; nothing is fetched."""
    async with running_fake_shikimori() as fake:
        add_titles(fake, [1201])
        response = await client.get("/anime/1201")
    assert response.status_code == 404 and fake.hits == []


async def test_cli_imports_a_file(live, tmp_path):
    """`anilay catalog import <file>` imports and prints a summary."""
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([record(1301), {"id": "bad"}]), encoding="utf-8")
    report = await importer.run_import_command(live.settings, str(path))
    assert report.created == 1 and report.malformed == 1
    assert await get_anime_brief(live.services, 1301)
