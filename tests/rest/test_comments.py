"""Comments (anime.md §4: CM1-CM9, R24-R33, COMMENT_CREATE, COMMENT_UPDATE, COMMENT_DELETE,
COMMENT_VOTE), on both engines, with live delivery through a real Socket.IO client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from models.anime.comments import (
    POSTED_HOOKS,
    REPLY_HOOKS,
    UPVOTE_HOOKS,
    best_key,
    comment,
    comment_report,
    comment_revision,
    comment_vote,
    controversy_key,
)
from models.anime.comments.shapes import ranking
from models.anime.comments.tables import VOTE_RATE
from models.anime.common import PUBLIC_ACTIVITY_TOPIC
from models.auth.restrictions import do_set_mute
from tests.factories import Account, ban, make_staff, register
from tests.rest.test_collections import (
    Blocks,
    add_anime,
    bot_headers,
    events_of,
    many,
    problem,
)
from tests.support.sockets import connect

ANIME = 20
OTHER_ANIME = 21


@pytest.fixture
def blocks():
    from models import social_graph

    graph = Blocks()
    previous = social_graph.register_social_graph(graph)
    yield graph
    social_graph.register_social_graph(previous)


@pytest.fixture
def audit():
    from models.anime.common import AUDIT_HOOKS

    rows: list = []

    async def record(services, tx, action) -> None:
        rows.append(action)

    AUDIT_HOOKS.append(record)
    yield rows
    AUDIT_HOOKS.remove(record)


@pytest.fixture
async def anime(live):
    await add_anime(live, ANIME, "Cowboy Bebop")
    await add_anime(live, OTHER_ANIME, "Trigun", russian="Триган")
    return ANIME


async def post(
    client: httpx.AsyncClient,
    live,
    account: Account,
    body: str = "A comment of more than twenty characters",
    anime_id: int = ANIME,
    status: int = 201,
    **extra,
) -> dict:
    """CM2, with the per-minute budget lifted (tests post more than 5 a minute)."""
    await live.services.limiter.clear("5/minute", "comment-post", str(account.id))
    await live.services.limiter.clear("200/day", "comment-post", str(account.id))
    response = await client.post(
        f"/anime/{anime_id}/comments", headers=account.headers, json={"body": body, **extra}
    )
    assert response.status_code == status, response.text
    return response.json()


async def vote(client, account: Account, comment_id: str, value: int) -> httpx.Response:
    return await client.put(
        f"/comments/{comment_id}/vote", headers=account.headers, json={"value": value}
    )


async def row_of(live, comment_id: str | int) -> dict:
    row = await live.services.db.fetch_one(
        sa.select(comment).where(comment.c.id == int(comment_id))
    )
    assert row is not None
    return row


async def set_counts(live, comment_id: str, ups: int, downs: int) -> None:
    """Counters as R28 would leave them for that many votes (sort fixtures)."""
    await live.services.db.execute(
        comment.update().where(comment.c.id == int(comment_id)).values(**ranking(ups, downs))
    )


async def assert_counters_match_votes(live, comment_id: str | int) -> dict:
    """R28: after every commit the counters and keys equal what the vote rows say."""
    row = await row_of(live, comment_id)
    votes = await live.services.db.fetch_all(
        sa.select(comment_vote.c.value).where(comment_vote.c.comment_id == int(comment_id))
    )
    ups = sum(v["value"] == 1 for v in votes)
    downs = sum(v["value"] == -1 for v in votes)
    assert {k: row[k] for k in ("ups", "downs", "score", "best_key", "controversy_key")} == ranking(
        ups, downs
    )
    return row


async def mute(live, account: Account, minutes: int = 60) -> datetime:
    until = datetime.now(UTC) + timedelta(minutes=minutes)
    await do_set_mute(live.services, account.id, until, "flame")
    return until


async def thread_ids(client, headers=None, **params) -> list[str]:
    response = await client.get(f"/anime/{ANIME}/comments", headers=headers or {}, params=params)
    assert response.status_code == 200, response.text
    return [c["id"] for c in response.json()["items"]]


# --- R29 ranking functions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ups", "downs", "key"),
    [
        (100, 1, 967480151),
        (5, 1, 574671383),
        (2, 0, 549092369),
        (1, 0, 378447503),
        (10, 10, 362262043),
        (0, 1, 0),
        (0, 0, 0),
    ],
)
def test_best_key_fixtures(ups, downs, key):
    """R29: floor(10⁹ × Wilson lower bound, z = 1.281551565545)."""
    assert best_key(ups, downs) == key


@pytest.mark.parametrize(
    ("ups", "downs", "key"), [(10, 10, 20000000), (3, 2, 2924017), (5, 0, 0), (0, 5, 0), (0, 0, 0)]
)
def test_controversy_key_fixtures(ups, downs, key):
    """R29: floor(10⁶ × (ups+downs)^(min/max)) when both sides voted, else 0."""
    assert controversy_key(ups, downs) == key


# --- CM2 posting -----------------------------------------------------------------------------


async def test_post_a_comment_and_it_is_published_after_commit(client, live, anime, capture):
    """CM2: 201 Comment; COMMENT_CREATE to `anime:{id}` and PUBLIC_ACTIVITY, without my_vote."""
    author = await register(client)
    async with capture() as seen:
        created = await post(
            client, live, author, "  Hello\r\nworld, a long enough comment  ", spoiler=True
        )
    assert created["body"] == "Hello\nworld, a long enough comment"
    assert created["anime_id"] == ANIME and created["parent_id"] is None
    assert created["root_id"] == created["id"] and created["depth"] == 0
    assert created["author"]["id"] == str(author.id) and created["state"] == "visible"
    assert created["spoiler"] is True and created["collapsed"] is False
    assert (created["ups"], created["downs"], created["score"], created["reply_count"]) == (
        0,
        0,
        0,
        0,
    )
    assert created["my_vote"] == 0 and created["edited_at"] is None
    (event,) = events_of(await seen.events(), "COMMENT_CREATE")
    assert event.targets.topics == (f"anime:{ANIME}", PUBLIC_ACTIVITY_TOPIC)
    assert "my_vote" not in event.data["comment"]
    assert event.data["comment"] == {k: v for k, v in created.items() if k != "my_vote"}


async def test_replies_thread_with_depth_root_and_reply_count(client, live, anime):
    """R25: depth = parent's + 1, root_id = parent's root; reply_count counts direct children."""
    author, replier = await register(client), await register(client)
    top = await post(client, live, author)
    reply = await post(client, live, replier, "first level reply", parent_id=top["id"])
    deeper = await post(client, live, author, "second level reply", parent_id=reply["id"])
    assert (reply["depth"], reply["root_id"], reply["parent_id"]) == (1, top["id"], top["id"])
    assert (deeper["depth"], deeper["root_id"], deeper["parent_id"]) == (2, top["id"], reply["id"])
    assert (await row_of(live, top["id"]))["reply_count"] == 1
    assert (await row_of(live, reply["id"]))["reply_count"] == 1


async def test_eight_levels_and_no_deeper(client, live, anime):
    """R25: depth ≤ 7 (eight levels); a reply under depth 7 is 422 max_depth on parent_id."""
    author = await register(client)
    parent = await post(client, live, author)
    for depth in range(1, 8):
        parent = await post(client, live, author, f"level {depth}", parent_id=parent["id"])
        assert parent["depth"] == depth
    response = await client.post(
        f"/anime/{ANIME}/comments",
        headers=author.headers,
        json={"body": "too deep", "parent_id": parent["id"]},
    )
    problem(response, 422, "max_depth", "parent_id")


async def test_reply_bad_parents(client, live, anime, blocks):
    """CM2: 404 unknown parent or one by a user in a block; 422 parent_id for another anime
    or a malformed id; 409 parent_deleted."""
    author, other, blocked = await many(client, live, 3)
    top = await post(client, live, author)
    elsewhere = await post(client, live, author, anime_id=OTHER_ANIME)
    url = f"/anime/{ANIME}/comments"

    async def reply(account, parent_id):
        await live.services.limiter.clear("5/minute", "comment-post", str(account.id))
        return await client.post(
            url, headers=account.headers, json={"body": "reply here", "parent_id": parent_id}
        )

    problem(await reply(other, "123456789012"), 404, "not_found")
    problem(await reply(other, "99999999999999999999"), 404, "not_found")
    problem(await reply(other, "abc"), 422, "validation_failed", "parent_id")
    problem(await reply(other, elsewhere["id"]), 422, "validation_failed", "parent_id")
    blocks.block(author.id, blocked.id)
    problem(await reply(blocked, top["id"]), 404, "not_found")
    assert (
        await client.delete(f"/comments/{top['id']}", headers=author.headers)
    ).status_code == 204
    problem(await reply(other, top["id"]), 409, "parent_deleted")
    assert (await row_of(live, top["id"]))["reply_count"] == 0


async def test_posting_needs_a_catalog_anime(client, live, anime):
    """R24: the anime must exist locally (404 anime_not_found); a malformed id is the same."""
    author = await register(client)
    for anime_id in ("999", "abc", "0", "99999999999"):
        response = await client.post(
            f"/anime/{anime_id}/comments", headers=author.headers, json={"body": "hello there"}
        )
        problem(response, 404, "anime_not_found")


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ("", False),
        ("   \n\t  ", False),
        ("x" * 4001, False),
        ("😀" * 4000, True),
        (" " + "y" * 4000 + " ", True),
        ("line\n" * 100 + "end", True),
        ("line\n" * 101 + "end", False),
        ("bell\x07", False),
        ("nul\x00char", False),
        ("esc\x1b[31m", False),
        ("tab\tand\nnewline", True),
    ],
)
async def test_body_rules(client, live, anime, body, ok):
    """R24: trimmed, 1..4000 code points, ≤ 100 line breaks, no control characters but \\n \\t."""
    author = await register(client)
    response = await client.post(
        f"/anime/{ANIME}/comments", headers=author.headers, json={"body": body}
    )
    if ok:
        assert response.status_code == 201, response.text
    else:
        problem(response, 422, "validation_failed", "body")
        assert await live.services.db.fetch_all(sa.select(comment)) == []


async def test_post_validates_the_body_shape(client, live, anime):
    author = await register(client)
    url = f"/anime/{ANIME}/comments"
    problem(
        await client.post(url, headers=author.headers, json={}), 422, "validation_failed", "body"
    )
    problem(
        await client.post(url, headers=author.headers, json={"body": "x", "pinned": True}),
        422,
        "validation_failed",
        "pinned",
    )
    problem(
        await client.post(url, headers=author.headers, json={"body": "x", "spoiler": "yes"}),
        422,
        "validation_failed",
        "spoiler",
    )


async def test_muted_users_cannot_post_or_edit_but_may_vote_and_report(
    client, live, anime, capture
):
    """R24: 403 muted with muted_until on CM2 and CM5; votes and reports still work."""
    author, muted = await register(client), await register(client)
    target = await post(client, live, author)
    own = await post(client, live, muted)
    until = await mute(live, muted)
    async with capture() as seen:
        response = await client.post(
            f"/anime/{ANIME}/comments", headers=muted.headers, json={"body": "let me speak"}
        )
        body = problem(response, 403, "muted")
        assert body["muted_until"].startswith(until.strftime("%Y-%m-%dT%H:%M"))
        response = await client.patch(
            f"/comments/{own['id']}", headers=muted.headers, json={"body": "edited"}
        )
        problem(response, 403, "muted")
    assert events_of(await seen.events(), "COMMENT_CREATE") == []
    assert events_of(await seen.events(), "COMMENT_UPDATE") == []
    assert (await vote(client, muted, target["id"], 1)).status_code == 200
    report = await client.post(
        f"/comments/{target['id']}/report", headers=muted.headers, json={"reason": "spam"}
    )
    assert report.status_code == 204
    await do_set_mute(live.services, muted.id, None, None)
    await post(client, live, muted, "free again and long enough")


async def test_posting_auth_bans_and_bots(client, live, anime):
    """CM2: 401 anonymous; 403 banned; bots need comments:write (auth.md R23)."""
    author = await register(client)
    url = f"/anime/{ANIME}/comments"
    problem(await client.post(url, json={"body": "hi"}), 401, "unauthorized")
    other_scope = await bot_headers(client, live, author, ["collections:read"])
    problem(
        await client.post(url, headers=other_scope, json={"body": "hi"}), 403, "insufficient_scope"
    )
    writer = await bot_headers(client, live, author, ["comments:write"])
    response = await client.post(url, headers=writer, json={"body": "posted by my bot"})
    assert response.status_code == 201 and response.json()["author"]["id"] == str(author.id)
    await mute(live, author)
    problem(await client.post(url, headers=writer, json={"body": "muted bot"}), 403, "muted")
    await ban(live.services, author.id)
    problem(await client.post(url, headers=author.headers, json={"body": "hi"}), 403, "banned")


async def test_posting_is_rate_limited(client, live, anime):
    """R24: 5 per minute per user, then 429 with Retry-After; nothing is written."""
    author = await register(client)
    url = f"/anime/{ANIME}/comments"
    for n in range(5):
        assert (
            await client.post(url, headers=author.headers, json={"body": f"comment {n}"})
        ).status_code == 201
    response = await client.post(url, headers=author.headers, json={"body": "one too many"})
    problem(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    assert len(await live.services.db.fetch_all(sa.select(comment))) == 5


async def test_the_daily_post_budget(client, live, anime):
    """R24: 200 per day per user."""
    author = await register(client)
    await live.services.limiter.hit("200/day", "comment-post", str(author.id), cost=200)
    response = await client.post(
        f"/anime/{ANIME}/comments", headers=author.headers, json={"body": "x"}
    )
    problem(response, 429, "rate_limited")


async def test_a_reply_racing_the_parents_delete_never_orphans(client, live, anime):
    """R25, R27: a reply and a delete of its parent at once: either the reply counts and the
    parent stays as a placeholder, or the reply is refused with 409."""
    author, replier = await register(client), await register(client)
    for _ in range(3):
        top = await post(client, live, author)
        await live.services.limiter.clear("5/minute", "comment-post", str(replier.id))
        reply, delete = await asyncio.gather(
            client.post(
                f"/anime/{ANIME}/comments",
                headers=replier.headers,
                json={"body": "racing", "parent_id": top["id"]},
            ),
            client.delete(f"/comments/{top['id']}", headers=author.headers),
        )
        assert delete.status_code == 204
        row = await row_of(live, top["id"])
        children = await live.services.db.fetch_all(
            sa.select(comment.c.id).where(comment.c.parent_id == int(top["id"]))
        )
        assert row["reply_count"] == len(children)
        if reply.status_code == 201:
            assert len(children) == 1
        else:
            problem(reply, 409, "parent_deleted")
            assert children == []


async def test_side_effects_reach_notifications_and_the_game(client, live, anime):
    """R33: a reply to someone else notifies them (not a reply to yourself); a comment of
    ≥ 20 characters counts for the game."""
    author, replier = await register(client), await register(client)
    replies, posted = [], []

    async def on_reply(services, tx, reply):
        replies.append(reply)

    async def on_posted(services, tx, event):
        posted.append(event)

    REPLY_HOOKS.append(on_reply)
    POSTED_HOOKS.append(on_posted)
    try:
        top = await post(client, live, author, "x" * 20)
        await post(client, live, author, "short reply", parent_id=top["id"])
        theirs = await post(client, live, replier, "y" * 19, parent_id=top["id"])
    finally:
        REPLY_HOOKS.remove(on_reply)
        POSTED_HOOKS.remove(on_posted)
    assert [(r.recipient_id, r.author_id, str(r.comment_id)) for r in replies] == [
        (author.id, replier.id, theirs["id"])
    ]
    assert [(p.user_id, p.source_key) for p in posted] == [(author.id, f"comment:{top['id']}")]


# --- CM1 threads ---------------------------------------------------------------------------------


async def test_sorts_follow_r29(client, live, anime):
    """R29: best (Wilson), top (score), new (id), controversial; ties by id desc."""
    author = await register(client)
    made = [await post(client, live, author, f"comment number {n}") for n in range(5)]
    counts = [(2, 0), (100, 1), (1, 0), (3, 2), (10, 10)]
    for created, (ups, downs) in zip(made, counts, strict=True):
        await set_counts(live, created["id"], ups, downs)
    ids = [c["id"] for c in made]

    def expected(key) -> list[str]:
        return [ids[i] for i in sorted(range(5), key=lambda i: (-key(*counts[i]), -int(ids[i])))]

    assert await thread_ids(client) == expected(best_key)  # best is the default
    assert expected(best_key) == [ids[1], ids[0], ids[2], ids[4], ids[3]]
    assert await thread_ids(client, sort="top") == [ids[1], ids[0], ids[3], ids[2], ids[4]]
    assert await thread_ids(client, sort="new") == ids[::-1]
    assert await thread_ids(client, sort="controversial") == [
        ids[4],
        ids[3],
        ids[1],
        ids[2],
        ids[0],
    ]


async def test_each_top_level_comment_carries_three_replies_in_the_same_order(client, live, anime):
    """CM1: up to 3 replies per top-level comment, sorted like the page."""
    author, other = await register(client), await register(client)
    top = await post(client, live, author)
    replies = [await post(client, live, other, f"reply {n}", parent_id=top["id"]) for n in range(5)]
    await set_counts(live, replies[1]["id"], 5, 0)
    await set_counts(live, replies[3]["id"], 2, 0)
    lonely = await post(client, live, author, "no replies here")
    page = (await client.get(f"/anime/{ANIME}/comments", params={"sort": "best"})).json()["items"]
    by_id = {c["id"]: c for c in page}
    assert [r["id"] for r in by_id[top["id"]]["replies"]] == [
        replies[1]["id"],
        replies[3]["id"],
        replies[4]["id"],
    ]
    assert by_id[lonely["id"]]["replies"] == []
    newest = (await client.get(f"/anime/{ANIME}/comments", params={"sort": "new"})).json()["items"]
    first = next(c for c in newest if c["id"] == top["id"])
    assert [r["id"] for r in first["replies"]] == [r["id"] for r in replies[::-1][:3]]
    assert all("replies" not in r for r in first["replies"])


@pytest.mark.parametrize("sort", ["best", "top", "new", "controversial"])
async def test_pages_never_repeat_or_skip(client, live, anime, sort):
    """R30: with no concurrent change, pages cover the thread exactly once; one page never
    holds an id twice."""
    author = await register(client)
    made = [await post(client, live, author, f"comment {n}") for n in range(8)]
    for n, created in enumerate(made):
        await set_counts(live, created["id"], n % 3, n % 2)  # many ties on every key
    seen: list[str] = []
    cursor = None
    while True:
        params = {"sort": sort, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/anime/{ANIME}/comments", params=params)).json()
        ids = [c["id"] for c in page["items"]]
        assert len(ids) == len(set(ids))
        seen += ids
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(cursor) <= 200
    assert sorted(seen) == sorted(c["id"] for c in made) and len(seen) == 8
    assert seen == await thread_ids(client, sort=sort, limit=50)


async def test_cursors_are_tamper_checked_and_bound_to_their_list(client, live, anime):
    """Conventions: a tampered cursor, or one of another sort or anime, is 422 on cursor."""
    author = await register(client)
    for n in range(3):
        await post(client, live, author, f"comment {n}")
    cursor = (await client.get(f"/anime/{ANIME}/comments", params={"limit": 1})).json()[
        "next_cursor"
    ]
    body, _, mac = cursor.partition(".")
    tampered = [
        body[:-1] + ("B" if body[-1] == "A" else "A") + "." + mac,
        cursor + "x",
        "x" * 201,
        "%%%",
    ]
    for bad in tampered:
        response = await client.get(f"/anime/{ANIME}/comments", params={"cursor": bad})
        problem(response, 422, "validation_failed", "cursor")
    response = await client.get(
        f"/anime/{ANIME}/comments", params={"cursor": cursor, "sort": "top"}
    )
    problem(response, 422, "validation_failed", "cursor")
    response = await client.get(f"/anime/{OTHER_ANIME}/comments", params={"cursor": cursor})
    problem(response, 422, "validation_failed", "cursor")


async def test_thread_query_validation_and_unknown_anime(client, live, anime):
    problem(
        await client.get(f"/anime/{ANIME}/comments", params={"sort": "hot"}),
        422,
        "validation_failed",
        "sort",
    )
    problem(
        await client.get(f"/anime/{ANIME}/comments", params={"limit": 0}),
        422,
        "validation_failed",
        "limit",
    )
    problem(
        await client.get(f"/anime/{ANIME}/comments", params={"before": "1"}),
        422,
        "validation_failed",
        "before",
    )
    problem(await client.get("/anime/424242/comments"), 404, "anime_not_found")
    problem(await client.get("/anime/x1/comments"), 404, "anime_not_found")


async def test_thread_has_an_etag_and_no_cache(client, live, anime):
    """CM1: Cache-Control no-cache with an ETag; If-None-Match gets 304."""
    author = await register(client)
    await post(client, live, author)
    first = await client.get(f"/anime/{ANIME}/comments")
    assert first.headers["cache-control"] == "no-cache"
    etag = first.headers["etag"]
    again = await client.get(f"/anime/{ANIME}/comments", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    await post(client, live, author, "something new was said")
    changed = await client.get(f"/anime/{ANIME}/comments", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


async def test_my_vote_appears_only_with_auth(client, live, anime):
    """Comment.my_vote: -1/0/1 for a signed-in reader, absent for anonymous ones."""
    author, voter = await register(client), await register(client)
    created = await post(client, live, author)
    await vote(client, voter, created["id"], -1)
    (anonymous,) = (await client.get(f"/anime/{ANIME}/comments")).json()["items"]
    assert "my_vote" not in anonymous
    (mine,) = (await client.get(f"/anime/{ANIME}/comments", headers=voter.headers)).json()["items"]
    assert mine["my_vote"] == -1
    (authors,) = (await client.get(f"/anime/{ANIME}/comments", headers=author.headers)).json()[
        "items"
    ]
    assert authors["my_vote"] == 0


async def test_reading_is_open_to_any_bot_key(client, live, anime):
    author = await register(client)
    await post(client, live, author)
    headers = await bot_headers(client, live, author, ["profile:read"])
    assert (await client.get(f"/anime/{ANIME}/comments", headers=headers)).status_code == 200


# --- R27 soft delete, R31 blocks ---------------------------------------------------------------


async def test_a_deleted_comment_keeps_its_place_only_when_it_has_replies(
    client, live, anime, capture
):
    """R27: with replies a placeholder (body and author null) in its place; without, left out
    of CM1, CM4 and CM9 and 404 on CM3."""
    author, other = await register(client), await register(client)
    with_replies = await post(client, live, author, "will be deleted, has replies")
    reply = await post(client, live, other, "a reply", parent_id=with_replies["id"])
    alone = await post(client, live, author, "will be deleted, alone")
    async with capture() as seen:
        for created in (with_replies, alone):
            assert (
                await client.delete(f"/comments/{created['id']}", headers=author.headers)
            ).status_code == 204
    deletes = events_of(await seen.events(), "COMMENT_DELETE")
    assert [e.data for e in deletes] == [
        {"id": with_replies["id"], "state": "deleted", "placeholder": True},
        {"id": alone["id"], "state": "deleted", "placeholder": False},
    ]
    (placeholder,) = (await client.get(f"/anime/{ANIME}/comments")).json()["items"]
    assert placeholder["id"] == with_replies["id"] and placeholder["state"] == "deleted"
    assert placeholder["body"] is None and placeholder["author"] is None
    assert [r["id"] for r in placeholder["replies"]] == [reply["id"]]
    permalink = (await client.get(f"/comments/{reply['id']}")).json()
    assert (
        permalink["ancestors"][0]["state"] == "deleted"
        and permalink["ancestors"][0]["body"] is None
    )
    assert (await client.get(f"/comments/{with_replies['id']}")).json()["comment"]["body"] is None
    problem(await client.get(f"/comments/{alone['id']}"), 404, "not_found")
    problem(await client.get(f"/comments/{alone['id']}/replies"), 404, "not_found")
    assert (await client.get(f"/users/{author.id}/comments")).json()["items"] == []
    stored = await row_of(live, alone["id"])
    assert stored["body"] == "will be deleted, alone" and stored["deleted_at"] is not None


async def test_acting_on_a_deleted_comment_is_409(client, live, anime):
    """R27: voting on, replying to, editing or reporting a deleted comment: 409."""
    author, other = await register(client), await register(client)
    created = await post(client, live, author)
    await post(client, live, other, "keeps it as a placeholder", parent_id=created["id"])
    await client.delete(f"/comments/{created['id']}", headers=author.headers)
    problem(await vote(client, other, created["id"], 1), 409, "comment_deleted")
    report = await client.post(
        f"/comments/{created['id']}/report", headers=other.headers, json={"reason": "spam"}
    )
    problem(report, 409, "comment_deleted")
    edit = await client.patch(
        f"/comments/{created['id']}", headers=author.headers, json={"body": "back"}
    )
    problem(edit, 409, "comment_deleted")
    await live.services.limiter.clear("5/minute", "comment-post", str(other.id))
    reply = await client.post(
        f"/anime/{ANIME}/comments",
        headers=other.headers,
        json={"body": "x", "parent_id": created["id"]},
    )
    problem(reply, 409, "parent_deleted")


async def test_blocked_authors_are_treated_like_deleted_comments(client, live, anime, blocks):
    """R31: for a reader, comments by someone in a block relation (either way) are `blocked`
    placeholders when they have replies, omitted otherwise; others see them normally."""
    reader, blocked_author, third = await many(client, live, 3)
    with_replies = await post(client, live, blocked_author, "has a reply below")
    reply = await post(client, live, third, "the reply", parent_id=with_replies["id"])
    alone = await post(client, live, blocked_author, "nobody replied")
    blocks.block(blocked_author.id, reader.id)
    items = (await client.get(f"/anime/{ANIME}/comments", headers=reader.headers)).json()["items"]
    assert [c["id"] for c in items] == [with_replies["id"]]
    assert (
        items[0]["state"] == "blocked" and items[0]["body"] is None and items[0]["author"] is None
    )
    assert [r["id"] for r in items[0]["replies"]] == [reply["id"]]
    problem(await client.get(f"/comments/{alone['id']}", headers=reader.headers), 404, "not_found")
    permalink = (await client.get(f"/comments/{reply['id']}", headers=reader.headers)).json()
    assert permalink["ancestors"][0]["state"] == "blocked"
    problem(await vote(client, reader, alone["id"], 1), 404, "not_found")
    problem(
        await client.get(f"/users/{blocked_author.id}/comments", headers=reader.headers),
        404,
        "user_not_found",
    )
    everyone = (await client.get(f"/anime/{ANIME}/comments")).json()["items"]
    assert {c["id"] for c in everyone} == {with_replies["id"], alone["id"]}
    replies = (
        await client.get(f"/comments/{with_replies['id']}/replies", headers=reader.headers)
    ).json()
    assert [r["id"] for r in replies["items"]] == [reply["id"]]


# --- CM3, CM4 ---------------------------------------------------------------------------------


async def test_permalink_has_the_ancestors_root_first_and_the_anime(client, live, anime):
    """CM3: {comment, ancestors (root first), anime: AnimeCompact}."""
    author = await register(client)
    chain = [await post(client, live, author, "root comment here")]
    for n in range(3):
        chain.append(await post(client, live, author, f"level {n + 1}", parent_id=chain[-1]["id"]))
    got = (await client.get(f"/comments/{chain[-1]['id']}", headers=author.headers)).json()
    assert got["comment"]["id"] == chain[-1]["id"] and got["comment"]["my_vote"] == 0
    assert [a["id"] for a in got["ancestors"]] == [c["id"] for c in chain[:-1]]
    assert got["anime"]["id"] == ANIME and got["anime"]["name"] == "Cowboy Bebop"
    assert got["anime"]["score"] == 8.78 and set(got["anime"]["image"]) == {
        "original",
        "preview",
        "x96",
        "x48",
    }
    root = (await client.get(f"/comments/{chain[0]['id']}")).json()
    assert root["ancestors"] == [] and "my_vote" not in root["comment"]
    problem(await client.get("/comments/123456789"), 404, "not_found")
    problem(await client.get("/comments/nope"), 404, "not_found")


async def test_replies_page_in_every_sort(client, live, anime):
    """CM4: direct replies only, paged."""
    author = await register(client)
    top = await post(client, live, author)
    replies = [
        await post(client, live, author, f"reply {n}", parent_id=top["id"]) for n in range(5)
    ]
    await post(client, live, author, "grandchild", parent_id=replies[0]["id"])
    seen, cursor = [], None
    while True:
        params = {"sort": "new", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/comments/{top['id']}/replies", params=params)).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in replies[::-1]]
    other_cursor = (await client.get(f"/comments/{top['id']}/replies", params={"limit": 1})).json()[
        "next_cursor"
    ]
    response = await client.get(
        f"/comments/{replies[0]['id']}/replies", params={"cursor": other_cursor}
    )
    problem(response, 422, "validation_failed", "cursor")


# --- CM5 editing -------------------------------------------------------------------------------


async def test_edit_keeps_the_previous_version(client, live, anime, capture):
    """CM5, R26: 200 Comment with edited_at; the old body in comment_revision; COMMENT_UPDATE."""
    author = await register(client)
    created = await post(client, live, author, "first version of this")
    async with capture() as seen:
        response = await client.patch(
            f"/comments/{created['id']}",
            headers=author.headers,
            json={"body": " second version ", "spoiler": True},
        )
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["body"] == "second version" and edited["spoiler"] is True and edited["edited_at"]
    revisions = await live.services.db.fetch_all(
        sa.select(comment_revision).where(comment_revision.c.comment_id == int(created["id"]))
    )
    assert [(r["body"], r["spoiler"]) for r in revisions] == [("first version of this", False)]
    (update,) = events_of(await seen.events(), "COMMENT_UPDATE")
    assert update.targets.topics == (f"anime:{ANIME}",)
    assert update.data == {
        "id": created["id"],
        "body": "second version",
        "spoiler": True,
        "edited_at": edited["edited_at"],
        "author_id": str(author.id),
    }


async def test_an_edit_that_changes_nothing_is_silent(client, live, anime, capture):
    author = await register(client)
    created = await post(client, live, author, "unchanged text here")
    async with capture() as seen:
        response = await client.patch(
            f"/comments/{created['id']}",
            headers=author.headers,
            json={"body": "unchanged text here ", "spoiler": False},
        )
    assert response.status_code == 200 and response.json()["edited_at"] is None
    assert await seen.events() == []
    assert await live.services.db.fetch_all(sa.select(comment_revision)) == []


async def test_edit_is_the_authors_within_24_hours(client, live, anime, blocks):
    """R26: someone else 403 (404 when hidden from them); after 24 h 409 edit_window_closed;
    moderators do not edit."""
    author, other, moderator, blocked = await many(client, live, 4)
    await make_staff(live.services, moderator.id, "moderator")
    created = await post(client, live, author)
    for account in (other, moderator):
        response = await client.patch(
            f"/comments/{created['id']}", headers=account.headers, json={"body": "hijack"}
        )
        problem(response, 403, "forbidden")
    blocks.block(author.id, blocked.id)
    response = await client.patch(
        f"/comments/{created['id']}", headers=blocked.headers, json={"body": "hijack"}
    )
    problem(response, 404, "not_found")
    await live.services.db.execute(
        comment.update()
        .where(comment.c.id == int(created["id"]))
        .values(created_at=datetime.now(UTC) - timedelta(hours=24, seconds=1))
    )
    response = await client.patch(
        f"/comments/{created['id']}", headers=author.headers, json={"body": "too late"}
    )
    problem(response, 409, "edit_window_closed")
    problem(
        await client.patch(f"/comments/{created['id']}", json={"body": "x"}), 401, "unauthorized"
    )
    response = await client.patch(
        f"/comments/{created['id']}", headers=author.headers, json={"body": ""}
    )
    problem(response, 422, "validation_failed", "body")
    assert (await row_of(live, created["id"]))["body"] == "A comment of more than twenty characters"


async def test_edit_validates_the_body(client, live, anime):
    author = await register(client)
    created = await post(client, live, author)
    for bad in ("", "x" * 4001, "bad\x01"):
        response = await client.patch(
            f"/comments/{created['id']}", headers=author.headers, json={"body": bad}
        )
        problem(response, 422, "validation_failed", "body")
    response = await client.patch(
        f"/comments/{created['id']}", headers=author.headers, json={"state": "visible"}
    )
    problem(response, 422, "validation_failed", "state")


async def test_concurrent_edits_keep_every_version(client, live, anime):
    """R26: racing edits each store the exact version they replaced."""
    author = await register(client)
    created = await post(client, live, author, "version zero of it")
    responses = await asyncio.gather(
        *[
            client.patch(
                f"/comments/{created['id']}", headers=author.headers, json={"body": f"version {n}"}
            )
            for n in range(1, 5)
        ]
    )
    assert all(r.status_code in (200, 409) for r in responses), [r.text for r in responses]
    applied = [r.json()["body"] for r in responses if r.status_code == 200]
    revisions = await live.services.db.fetch_all(
        sa.select(comment_revision.c.body)
        .where(comment_revision.c.comment_id == int(created["id"]))
        .order_by(comment_revision.c.id)
    )
    replaced = [r["body"] for r in revisions]
    final = (await row_of(live, created["id"]))["body"]
    # A chain: the first revision is the original, each later one a version that was
    # applied, and the current body is the last applied version.
    assert len(replaced) == len(applied) >= 1
    assert replaced[0] == "version zero of it"
    assert sorted([*replaced[1:], final]) == sorted(applied)


# --- CM6 deleting -----------------------------------------------------------------------------


async def test_delete_is_idempotent_and_the_authors_or_a_moderators(
    client, live, anime, audit, capture
):
    """CM6, R27: author → deleted; moderator → removed (audited); others 403; 204 on repeats;
    a repeat emits nothing."""
    author, other, moderator = await many(client, live, 3)
    await make_staff(live.services, moderator.id, "moderator")
    first = await post(client, live, author)
    second = await post(client, live, author, "second comment, long enough")
    problem(
        await client.delete(f"/comments/{first['id']}", headers=other.headers), 403, "forbidden"
    )
    problem(await client.delete(f"/comments/{first['id']}"), 401, "unauthorized")
    assert (
        await client.delete(f"/comments/{first['id']}", headers=author.headers)
    ).status_code == 204
    async with capture() as seen:
        assert (
            await client.delete(f"/comments/{first['id']}", headers=author.headers)
        ).status_code == 204
        assert (
            await client.delete(f"/comments/{first['id']}", headers=moderator.headers)
        ).status_code == 204
    assert await seen.events() == []
    assert (await row_of(live, first["id"]))["state"] == "deleted"
    assert (
        await client.delete(f"/comments/{second['id']}", headers=moderator.headers)
    ).status_code == 204
    assert (await row_of(live, second["id"]))["state"] == "removed"
    (action,) = audit
    assert (action.action, action.target_id, action.actor_id) == (
        "comment.remove",
        second["id"],
        moderator.id,
    )
    problem(await client.delete("/comments/123456789", headers=author.headers), 404, "not_found")
    problem(
        await client.delete(f"/comments/{first['id']}", headers=other.headers), 404, "not_found"
    )


async def test_bots_delete_only_their_owners_comments(client, live, anime):
    author, moderator = await register(client), await register(client)
    await make_staff(live.services, moderator.id, "admin")
    created = await post(client, live, author)
    headers = await bot_headers(client, live, moderator, ["comments:write"])
    problem(await client.delete(f"/comments/{created['id']}", headers=headers), 403, "forbidden")
    assert (await row_of(live, created["id"]))["state"] == "visible"


# --- CM7 votes --------------------------------------------------------------------------------


async def test_voting_up_down_switch_and_remove(client, live, anime):
    """CM7, R28: one row per (user, comment); switching moves one vote; 0 deletes the row."""
    author, voter = await register(client), await register(client)
    created = await post(client, live, author)
    cid = created["id"]
    response = await vote(client, voter, cid, 1)
    assert response.status_code == 200
    assert response.json() == {"id": cid, "ups": 1, "downs": 0, "score": 1, "my_vote": 1}
    assert (await vote(client, voter, cid, 1)).json()["ups"] == 1  # a repeat is a no-op
    assert (await vote(client, voter, cid, -1)).json() == {
        "id": cid,
        "ups": 0,
        "downs": 1,
        "score": -1,
        "my_vote": -1,
    }
    row = await assert_counters_match_votes(live, cid)
    assert row["best_key"] == 0
    assert (await vote(client, voter, cid, 0)).json() == {
        "id": cid,
        "ups": 0,
        "downs": 0,
        "score": 0,
        "my_vote": 0,
    }
    assert await live.services.db.fetch_all(sa.select(comment_vote)) == []
    assert (await vote(client, voter, cid, 0)).status_code == 200
    await assert_counters_match_votes(live, cid)


async def test_vote_bad_paths(client, live, anime):
    """CM7: own comment 403 own_comment; 404 unknown; 422 value; 401; banned 403."""
    author, voter = await register(client), await register(client)
    created = await post(client, live, author)
    problem(await vote(client, author, created["id"], 1), 403, "own_comment")
    problem(await vote(client, voter, "123456789", 1), 404, "not_found")
    for bad in (2, -2, "1", None, 0.5):
        response = await client.put(
            f"/comments/{created['id']}/vote", headers=voter.headers, json={"value": bad}
        )
        problem(response, 422, "validation_failed", "value")
    problem(
        await client.put(f"/comments/{created['id']}/vote", json={"value": 1}), 401, "unauthorized"
    )
    await ban(live.services, voter.id)
    problem(await vote(client, voter, created["id"], 1), 403, "banned")
    assert await live.services.db.fetch_all(sa.select(comment_vote)) == []


async def test_votes_are_rate_limited(client, live, anime):
    """R24: 60 votes per minute per user."""
    author, voter = await register(client), await register(client)
    created = await post(client, live, author)
    await live.services.limiter.hit(VOTE_RATE, "comment-vote", str(voter.id), cost=60)
    problem(await vote(client, voter, created["id"], 1), 429, "rate_limited")


async def test_fifty_users_voting_at_once_give_fifty(client, live, anime):
    """R28: 50 users voting concurrently give ups = 50 and keys computed from 50/0."""
    author = await register(client)
    created = await post(client, live, author)
    voters = await many(client, live, 50)
    responses = await asyncio.gather(*[vote(client, v, created["id"], 1) for v in voters])
    assert [r.status_code for r in responses] == [200] * 50
    row = await assert_counters_match_votes(live, created["id"])
    assert (row["ups"], row["downs"], row["best_key"]) == (50, 0, best_key(50, 0))


async def test_one_user_racing_alternating_votes_ends_consistent(client, live, anime):
    """R28: 20 concurrent alternating ±1 votes by one user end with one row and matching
    counters."""
    author, voter = await register(client), await register(client)
    created = await post(client, live, author)
    responses = await asyncio.gather(
        *[vote(client, voter, created["id"], 1 if n % 2 else -1) for n in range(20)]
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    votes = await live.services.db.fetch_all(
        sa.select(comment_vote).where(comment_vote.c.comment_id == int(created["id"]))
    )
    assert len(votes) == 1
    row = await assert_counters_match_votes(live, created["id"])
    assert row["ups"] + row["downs"] == 1


async def test_votes_racing_a_delete_leave_consistent_counters(client, live, anime):
    """R27, R28: votes racing the comment's deletion either land before it or get 409."""
    author = await register(client)
    created = await post(client, live, author)
    voters = await many(client, live, 6)
    results = await asyncio.gather(
        *[vote(client, v, created["id"], 1) for v in voters],
        client.delete(f"/comments/{created['id']}", headers=author.headers),
    )
    assert all(r.status_code in (200, 204, 409) for r in results)
    await assert_counters_match_votes(live, created["id"])


async def test_the_first_upvote_per_voter_reaches_the_game(client, live, anime):
    """R33: upvote_received keyed (comment, voter): toggling cannot farm it."""
    author, voter = await register(client), await register(client)
    created = await post(client, live, author)
    received = []

    async def hook(services, tx, event):
        received.append(event.source_key)

    UPVOTE_HOOKS.append(hook)
    try:
        for value in (1, 0, 1, -1, 1):
            await vote(client, voter, created["id"], value)
    finally:
        UPVOTE_HOOKS.remove(hook)
    assert set(received) == {f"upvote:{created['id']}:{voter.id}"}


async def test_comment_vote_is_throttled_and_trailing_with_the_latest_counts(
    client, live, anime, capture
):
    """COMMENT_VOTE: at most one per comment per 2 s, trailing, with the latest counts and
    never the voter; a no-op or a refused vote emits nothing."""
    author = await register(client)
    created = await post(client, live, author)
    voters = await many(client, live, 3)
    async with capture() as seen:
        for voter in voters:
            assert (await vote(client, voter, created["id"], 1)).status_code == 200
        await vote(client, voters[0], created["id"], 1)  # no-op
        await vote(client, author, created["id"], 1)  # refused
        await asyncio.sleep(3.0)
    events = events_of(await seen.events(), "COMMENT_VOTE")
    assert [e.data for e in events] == [{"id": created["id"], "ups": 3, "downs": 0, "score": 3}]
    assert events[0].targets.topics == (f"anime:{ANIME}",)
    async with capture() as seen:
        await vote(client, voters[0], created["id"], 1)  # no-op: nothing scheduled
        await asyncio.sleep(2.6)
    assert events_of(await seen.events(), "COMMENT_VOTE") == []


# --- CM8 reports ------------------------------------------------------------------------------


async def test_report_once_per_reporter_and_collapse_at_five(client, live, anime):
    """CM8, R32: 204, a repeat is a no-op; 5 distinct open reporters collapse the comment;
    your own comment 403."""
    author = await register(client)
    created = await post(client, live, author)
    reporters = await many(client, live, 5)
    url = f"/comments/{created['id']}/report"
    for n, reporter in enumerate(reporters[:4]):
        assert (
            await client.post(
                url, headers=reporter.headers, json={"reason": "spam", "text": f"r{n}"}
            )
        ).status_code == 204
        assert (
            await client.post(url, headers=reporter.headers, json={"reason": "hate"})
        ).status_code == 204
    assert (await row_of(live, created["id"]))["collapsed"] is False
    assert (
        await client.post(url, headers=reporters[4].headers, json={"reason": "other"})
    ).status_code == 204
    assert (await row_of(live, created["id"]))["collapsed"] is True
    reports = await live.services.db.fetch_all(sa.select(comment_report))
    assert len(reports) == 5 and {r["reason"] for r in reports} == {"spam", "other"}
    (shown,) = (await client.get(f"/anime/{ANIME}/comments")).json()["items"]
    assert shown["collapsed"] is True and shown["body"] is not None  # stays in place
    problem(
        await client.post(url, headers=author.headers, json={"reason": "spam"}), 403, "own_comment"
    )


async def test_five_concurrent_reports_collapse(client, live, anime):
    """R32 under concurrency: the count is taken after claiming the comment."""
    author = await register(client)
    created = await post(client, live, author)
    reporters = await many(client, live, 5)
    responses = await asyncio.gather(
        *[
            client.post(
                f"/comments/{created['id']}/report", headers=r.headers, json={"reason": "spam"}
            )
            for r in reporters
        ]
    )
    assert [r.status_code for r in responses] == [204] * 5
    assert (await row_of(live, created["id"]))["collapsed"] is True


async def test_report_bad_paths(client, live, anime):
    """CM8: 422 reason/text; 404 unknown; bots never report; 429 after 20 an hour."""
    author, reporter = await register(client), await register(client)
    created = await post(client, live, author)
    url = f"/comments/{created['id']}/report"
    problem(
        await client.post(url, headers=reporter.headers, json={"reason": "boring"}),
        422,
        "validation_failed",
        "reason",
    )
    problem(
        await client.post(
            url, headers=reporter.headers, json={"reason": "spam", "text": "t" * 501}
        ),
        422,
        "validation_failed",
        "text",
    )
    problem(
        await client.post(
            "/comments/123456789/report", headers=reporter.headers, json={"reason": "spam"}
        ),
        404,
        "not_found",
    )
    headers = await bot_headers(client, live, reporter, ["comments:write"])
    problem(
        await client.post(url, headers=headers, json={"reason": "spam"}), 403, "bot_not_allowed"
    )
    await live.services.limiter.hit("20/hour", "comment-report", str(reporter.id), cost=20)
    problem(
        await client.post(url, headers=reporter.headers, json={"reason": "spam"}),
        429,
        "rate_limited",
    )
    assert await live.services.db.fetch_all(sa.select(comment_report)) == []


# --- CM9 -----------------------------------------------------------------------------------


async def test_a_users_comments_newest_first_with_their_anime(client, live, anime):
    """CM9: visible comments only, newest first, with anime {id, name, russian}; `before`."""
    author = await register(client)
    first = await post(client, live, author, "on bebop")
    second = await post(client, live, author, "on trigun", anime_id=OTHER_ANIME)
    gone = await post(client, live, author, "deleted one")
    await client.delete(f"/comments/{gone['id']}", headers=author.headers)
    body = (await client.get(f"/users/{author.id}/comments")).json()
    assert [c["id"] for c in body["items"]] == [second["id"], first["id"]]
    assert body["items"][0]["anime"] == {"id": OTHER_ANIME, "name": "Trigun", "russian": "Триган"}
    page = (await client.get(f"/users/{author.id}/comments", params={"limit": 1})).json()
    assert [c["id"] for c in page["items"]] == [second["id"]] and page["next_cursor"] == second[
        "id"
    ]
    rest = (
        await client.get(f"/users/{author.id}/comments", params={"before": page["next_cursor"]})
    ).json()
    assert [c["id"] for c in rest["items"]] == [first["id"]] and rest["next_cursor"] is None
    problem(await client.get("/users/123456789/comments"), 404, "user_not_found")
    problem(
        await client.get(f"/users/{author.id}/comments", params={"before": "x"}),
        422,
        "validation_failed",
        "before",
    )
    problem(
        await client.get(f"/users/{author.id}/comments", params={"limit": 101}),
        422,
        "validation_failed",
        "limit",
    )


# --- live delivery (gateway) ---------------------------------------------------------------


async def test_subscribers_of_the_anime_get_creates_and_votes_live(client, live, anime):
    """COMMENT_CREATE and COMMENT_VOTE reach sockets that emitted subscribe {"anime_id"}, and
    only them; a refused post publishes nothing."""
    author, voter, watcher, elsewhere = await many(client, live, 4)
    socket = await connect(live, watcher.access_token)
    other = await connect(live, elsewhere.access_token)
    await socket.wait_for("READY")
    await other.wait_for("READY")
    assert await socket.emit("subscribe", {"anime_id": ANIME}) == {
        "ok": True,
        "topic": f"anime:{ANIME}",
    }
    assert (await other.emit("subscribe", {"anime_id": OTHER_ANIME}))["ok"] is True
    refused = await client.post(
        f"/anime/{ANIME}/comments", headers=author.headers, json={"body": "\x07"}
    )
    assert refused.status_code == 422
    created = await post(client, live, author, "live comment for watchers")
    (create,) = await socket.wait_for("COMMENT_CREATE")
    assert create["data"]["comment"]["id"] == created["id"]
    assert create["data"]["comment"]["body"] == "live comment for watchers"
    await vote(client, voter, created["id"], 1)
    (voted,) = await socket.wait_for("COMMENT_VOTE", timeout=8)
    assert voted["data"] == {"id": created["id"], "ups": 1, "downs": 0, "score": 1}
    await asyncio.sleep(0.2)
    assert other.of("COMMENT_CREATE") == [] and other.of("COMMENT_VOTE") == []
    assert len(socket.of("COMMENT_CREATE")) == 1
    await socket.close()
    await other.close()
