"""One contract, two implementations: the event log, the cache and the rate limiter each
behave the same in process (embedded) and on Redis (production) (STYLE habit 7)."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest
import redis.asyncio as aioredis

from server.cache import InProcessCache, RedisCache
from server.errors import ApiError
from server.events import event_type, make_event
from server.log import InProcessLog, RedisLog, parse_log_id
from server.ratelimit import RateLimiter
from tests.conftest import REDIS_TEST_URL


class Tick(msgspec.Struct):
    n: int


TICK = event_type("TEST_TICK", Tick)


def ticks(*numbers: int):
    return [make_event(TICK, Tick(n=n), ["user:1"]) for n in numbers]


@pytest.fixture(params=["memory", "redis"])
async def kind(request):
    if request.param == "redis" and request.config._anilay_scaleout_missing:
        pytest.skip(request.config._anilay_scaleout_missing)
    return request.param


@pytest.fixture
async def redis_client(kind):
    if kind != "redis":
        yield None
        return
    client = aioredis.Redis.from_url(REDIS_TEST_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def make_log(kind, redis_client):
    keys: list[str] = []

    def build(maxlen: int = 1000, retention_s: float = 300):
        if kind == "memory":
            return InProcessLog(maxlen, retention_s)
        keys.append(f"anilay:test-events:{uuid.uuid4().hex}")
        return RedisLog(redis_client, maxlen, retention_s, key=keys[-1])

    yield build
    if redis_client is not None and keys:
        await redis_client.delete(*keys)


# --- the event log -------------------------------------------------------------------------


async def test_log_returns_events_in_append_order_with_increasing_ids(make_log):
    log = make_log()
    ids = await log.append(ticks(1, 2, 3))
    await log.append(ticks(4))
    read = await log.read_after("0-0")
    assert [e.data["n"] for e in read] == [1, 2, 3, 4]
    assert [e.id for e in read[:3]] == ids
    assert [parse_log_id(e.id) for e in read] == sorted(parse_log_id(e.id) for e in read)
    assert await log.last_id() == read[-1].id


async def test_read_after_an_id_returns_only_later_events_and_respects_count(make_log):
    log = make_log()
    ids = await log.append(ticks(1, 2, 3, 4, 5))
    assert [e.data["n"] for e in await log.read_after(ids[1])] == [3, 4, 5]
    assert [e.data["n"] for e in await log.read_after(ids[1], count=2)] == [3, 4]
    assert await log.read_after(ids[-1]) == []


async def test_a_blocking_read_wakes_up_on_append(make_log):
    log = make_log()
    start = await log.last_id()
    reader = asyncio.create_task(log.read_after(start, block_ms=2000))
    await asyncio.sleep(0.05)
    await log.append(ticks(9))
    events = await asyncio.wait_for(reader, 2)
    assert [e.data["n"] for e in events] == [9]


async def test_a_blocking_read_times_out_empty(make_log):
    log = make_log()
    started = time.monotonic()
    assert await log.read_after(await log.last_id(), block_ms=100) == []
    assert time.monotonic() - started < 1.5


async def test_events_survive_the_round_trip_with_payload_and_targets(make_log):
    log = make_log()
    event = ticks(42)[0]
    await log.append([event])
    (read,) = await log.read_after("0-0")
    assert (read.type, read.data, read.targets.topics, read.uid, read.ts) == (
        "TEST_TICK",
        {"n": 42},
        ("user:1",),
        event.uid,
        event.ts,
    )


async def test_trimming_by_length_is_remembered_so_resume_is_never_partial(make_log):
    log = make_log(maxlen=10)
    ids = []
    for n in range(0, 600, 20):  # Redis trims approximately, by whole stream nodes
        ids.extend(await log.append(ticks(*range(n, n + 20))))
    assert await log.length() < 600
    # Every id that is gone must be refused; the newest ones must still be resumable.
    assert not await log.can_resume_from(ids[0])
    assert await log.can_resume_from(ids[-2])
    assert await log.can_resume_from(ids[-1])
    retained = [e.id for e in await log.read_after("0-0", count=1000)]
    assert await log.can_resume_from(retained[0])
    gone = [i for i in ids if i not in retained]
    assert gone and not any([await log.can_resume_from(i) for i in gone[:-1]])


async def test_trimming_by_age_applies_the_retention_window(make_log):
    log = make_log(retention_s=0.2)
    old = await log.append(ticks(1))
    await asyncio.sleep(0.3)
    new = await log.append(ticks(2))
    await log.trim()
    assert [e.data["n"] for e in await log.read_after("0-0")] == [2]
    assert await log.can_resume_from(new[0])
    assert not await log.can_resume_from("0-0")
    await asyncio.sleep(0.3)
    await log.trim()
    assert await log.read_after("0-0") == []
    assert await log.can_resume_from(new[0]), "saw the last event: nothing missed"
    assert not await log.can_resume_from(old[0])


async def test_resume_from_garbage_or_the_future_is_refused(make_log):
    log = make_log()
    await log.append(ticks(1))
    assert not await log.can_resume_from("not-an-id")
    assert not await log.can_resume_from("99999999999999-0")


async def test_an_empty_log_can_resume_from_its_start(make_log):
    log = make_log()
    assert await log.can_resume_from("0-0")


# --- the cache ----------------------------------------------------------------------------


@pytest.fixture
def cache(kind, redis_client):
    return InProcessCache() if kind == "memory" else RedisCache(redis_client)


async def test_cache_set_get_delete(cache):
    key = f"test:{uuid.uuid4().hex}"
    assert await cache.get(key) is None
    await cache.set(key, b"value", ttl_s=10)
    assert await cache.get(key) == b"value"
    await cache.delete(key)
    assert await cache.get(key) is None


async def test_cache_entries_expire(cache):
    key = f"test:{uuid.uuid4().hex}"
    await cache.set(key, b"v", ttl_s=0.1)
    await asyncio.sleep(0.2)
    assert await cache.get(key) is None


async def test_cache_add_sets_only_once_even_when_racing(cache):
    key = f"test:{uuid.uuid4().hex}"
    results = await asyncio.gather(*(cache.add(key, b"x", ttl_s=10) for _ in range(20)))
    assert sum(results) == 1


async def test_cache_get_many_answers_each_key_in_order(cache):
    first, absent, third = (f"test:{uuid.uuid4().hex}" for _ in range(3))
    await cache.set(first, b"1", ttl_s=10)
    await cache.set(third, b"3", ttl_s=10)
    assert await cache.get_many(first, absent, third) == [b"1", None, b"3"]
    await cache.delete(first)
    assert await cache.get_many(first, third) == [None, b"3"]


async def test_redis_cache_misses_while_down_and_applies_postponed_deletions_first(
    kind, redis_client
):
    """platform.md R2: while Redis is unreachable reads miss (callers go to the database)
    and writes are skipped; a deletion made meanwhile is applied before anything is read
    once Redis answers, so no stale entry is ever served."""
    if kind != "redis":
        pytest.skip("the outage is Redis's")
    from tests.support.proxy import FlakyProxy

    proxy = await FlakyProxy("127.0.0.1", 6379).start()
    db = redis_client.connection_pool.connection_kwargs.get("db", 0)
    client = aioredis.Redis.from_url(proxy.url(db), socket_timeout=0.5)
    cache = RedisCache(client)
    stale, other = f"test:{uuid.uuid4().hex}", f"test:{uuid.uuid4().hex}"
    try:
        await cache.set(stale, b"old", ttl_s=60)
        await cache.set(other, b"kept", ttl_s=60)
        proxy.cut()
        assert await cache.get(stale) is None
        assert await cache.get_many(stale, other) == [None, None]
        await cache.set(other, b"skipped", ttl_s=60)
        assert await cache.add(f"test:{uuid.uuid4().hex}", b"x", ttl_s=60) is False
        await cache.delete(stale)  # postponed
        proxy.restore()
        assert await cache.get_many(stale, other) == [None, b"kept"]
        assert await redis_client.get("anilay:cache:" + stale) is None
    finally:
        await client.aclose()
        await proxy.close()
        await redis_client.delete("anilay:cache:" + stale, "anilay:cache:" + other)


def test_in_process_cache_is_bounded():
    cache = InProcessCache(max_entries=3)
    for n in range(10):
        asyncio.run(cache.set(f"k{n}", b"v", 60))
    assert len(cache._entries) == 3


# --- rate limits --------------------------------------------------------------------------


@pytest.fixture
async def limiter(kind):
    limiter = RateLimiter(REDIS_TEST_URL if kind == "redis" else None)
    yield limiter
    await limiter.reset()


async def test_limit_allows_up_to_the_rule_then_refuses_with_retry_after(limiter):
    who = uuid.uuid4().hex
    results = [await limiter.hit("3/minute", "test", who) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results[:3]] == [2, 1, 0]
    headers = results[-1].headers()
    assert int(headers["Retry-After"]) >= 1
    assert headers["X-RateLimit-Limit"] == "3"


async def test_limits_are_per_identifier(limiter):
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    for _ in range(2):
        await limiter.hit("2/minute", "test", a)
    assert not (await limiter.hit("2/minute", "test", a)).allowed
    assert (await limiter.hit("2/minute", "test", b)).allowed


async def test_check_raises_a_429_problem(limiter):
    who = uuid.uuid4().hex
    await limiter.check("1/minute", "test", who)
    with pytest.raises(ApiError) as error:
        await limiter.check("1/minute", "test", who)
    assert error.value.status == 429
    assert "Retry-After" in error.value.headers


async def test_concurrent_hits_never_exceed_the_limit(limiter):
    who = uuid.uuid4().hex
    results = await asyncio.gather(*(limiter.hit("10/minute", "test", who) for _ in range(30)))
    assert sum(r.allowed for r in results) == 10


async def test_a_dead_redis_falls_back_to_per_process_limits():
    limiter = RateLimiter("redis://127.0.0.1:1/0")
    who = uuid.uuid4().hex
    results = [await limiter.hit("2/minute", "test", who) for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
