"""The database layer on both engines: JSON and time round trips, dialect helpers,
transactions that publish events only after commit, and conditional writes under a race."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable, DropTable

from server.db import Database, UTCDateTime, ci_equals
from server.events import event_type, make_event

scratch = sa.MetaData()
wallets = sa.Table(
    "test_wallets",
    scratch,
    sa.Column("user_id", sa.BigInteger, primary_key=True),
    sa.Column("name", sa.String(32), nullable=False),
    sa.Column("coins", sa.Integer, nullable=False),
    sa.Column("meta", sa.JSON, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=True),
)


class Ping(msgspec.Struct):
    n: int


PING = event_type("TEST_PING", Ping)


@pytest.fixture
async def db(live):
    database = live.services.db
    await database.execute(DropTable(wallets, if_exists=True))
    await database.execute(CreateTable(wallets))
    yield database
    await database.execute(DropTable(wallets, if_exists=True))


async def test_json_columns_decode_to_python_objects(db):
    for index, meta in enumerate([{"a": [1, 2, {"b": None}]}, [1, "x"], "plain text", 7, True]):
        await db.execute(wallets.insert().values(user_id=index + 1, name="n", coins=0, meta=meta))
        assert (
            await db.fetch_val(sa.select(wallets.c.meta).where(wallets.c.user_id == index + 1))
            == meta
        )


async def test_timestamps_come_back_timezone_aware_utc(db):
    moment = datetime(2026, 5, 1, 12, 30, 15, 123000, tzinfo=UTC)
    other_zone = moment.astimezone(__import__("datetime").timezone(timedelta(hours=9)))
    await db.execute(wallets.insert().values(user_id=1, name="n", coins=0, updated_at=other_zone))
    row = await db.fetch_one(sa.select(wallets))
    assert row["updated_at"] == moment
    assert row["updated_at"].tzinfo is not None


async def test_a_naive_timestamp_is_refused(db):
    with pytest.raises(Exception, match="naive"):
        await db.execute(
            wallets.insert().values(user_id=1, name="n", coins=0, updated_at=datetime(2026, 1, 1))
        )


async def test_upsert_inserts_then_updates(db):
    await db.execute(
        db.upsert(
            wallets,
            {"user_id": 1, "name": "a", "coins": 5},
            ["user_id"],
            {"coins": wallets.c.coins + 5},
        )
    )
    await db.execute(
        db.upsert(
            wallets,
            {"user_id": 1, "name": "a", "coins": 5},
            ["user_id"],
            {"coins": wallets.c.coins + 5},
        )
    )
    assert await db.fetch_val(sa.select(wallets.c.coins)) == 10
    await db.execute(db.upsert(wallets, {"user_id": 1, "name": "z", "coins": 0}, ["user_id"]))
    assert await db.fetch_val(sa.select(wallets.c.name)) == "a"


async def test_case_insensitive_match(db):
    await db.execute(wallets.insert().values(user_id=1, name="Sakura", coins=0))
    row = await db.fetch_one(sa.select(wallets).where(ci_equals(wallets.c.name, "sAKURA")))
    assert row is not None and row["user_id"] == 1


async def test_events_leave_only_after_commit(db, capture):
    async with capture() as seen:
        async with db.transaction() as tx:
            await db.execute(wallets.insert().values(user_id=1, name="a", coins=1))
            tx.emit(make_event(PING, Ping(n=1), ["user:1"]))
            assert await seen.events() == []  # not before the commit
        events = await seen.events()
    assert [(e.type, e.data) for e in events] == [("TEST_PING", {"n": 1})]


async def test_events_of_a_rolled_back_transaction_never_appear(db, capture):
    async with capture() as seen:
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await db.execute(wallets.insert().values(user_id=1, name="a", coins=1))
                tx.emit(make_event(PING, Ping(n=1), ["user:1"]))
                raise RuntimeError("abort")
        assert await seen.events() == []
    assert await db.fetch_all(sa.select(wallets)) == []


async def test_a_rolled_back_savepoint_drops_only_its_own_events(db, capture):
    async with capture() as seen, db.transaction() as outer:
        outer.emit(make_event(PING, Ping(n=1), ["user:1"]))
        with pytest.raises(RuntimeError):
            async with db.transaction() as inner:
                await db.execute(wallets.insert().values(user_id=2, name="b", coins=1))
                inner.emit(make_event(PING, Ping(n=2), ["user:1"]))
                raise RuntimeError("inner abort")
        async with db.transaction() as kept:
            kept.emit(make_event(PING, Ping(n=3), ["user:1"]))
    assert [e.data["n"] for e in await seen.events()] == [1, 3]
    assert await db.fetch_all(sa.select(wallets)) == []


async def test_concurrent_conditional_decrements_never_overdraw(db):
    """50 racing `coins = coins - 1 WHERE coins >= 1` on a balance of 20: exactly 20 win."""
    await db.execute(wallets.insert().values(user_id=1, name="a", coins=20))

    async def spend() -> bool:
        async with db.transaction():
            rows = await db.fetch_all(
                wallets.update()
                .where(wallets.c.user_id == 1, wallets.c.coins >= 1)
                .values(coins=wallets.c.coins - 1)
                .returning(wallets.c.coins)
            )
        return bool(rows)

    results = await asyncio.gather(*(spend() for _ in range(50)))
    assert sum(results) == 20
    assert await db.fetch_val(sa.select(wallets.c.coins)) == 0


async def test_unique_constraint_decides_a_race_of_inserts(db):
    async def claim(n: int) -> bool:
        try:
            async with db.transaction():
                await db.execute(wallets.insert().values(user_id=1, name=f"c{n}", coins=n))
            return True
        except Exception:  # the loser sees the engine's integrity error
            return False

    results = await asyncio.gather(*(claim(n) for n in range(10)))
    assert sum(results) == 1
    assert len(await db.fetch_all(sa.select(wallets))) == 1


async def test_a_task_cancelled_anywhere_in_a_transaction_gives_its_connection_back(db, live):
    """Shutdown or a timeout cancels a task wherever it is, in BEGIN, COMMIT or ROLLBACK too.
    The pool must get the connection back every time (`databases` kept it when the cancel
    landed inside one of those, and a few such cancels exhausted the pool), and each unit of
    work must land whole or not at all."""
    small = Database(live.settings.database_url, pool_min=1, pool_max=2)
    await small.connect()

    async def write(user_id: int) -> None:
        async with small.transaction():
            await small.execute(wallets.insert().values(user_id=user_id, name="w", coins=1))
            async with small.transaction():  # a savepoint inside
                await small.execute(
                    wallets.update().where(wallets.c.user_id == user_id).values(coins=2)
                )

    try:
        for user_id, steps in enumerate([*range(60), *range(60)], start=1):
            task = asyncio.create_task(write(user_id))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        queries = asyncio.gather(*(small.fetch_val("SELECT 1") for _ in range(6)))
        assert await asyncio.wait_for(queries, 10) == [1] * 6
        coins = {row["coins"] for row in await small.fetch_all(sa.select(wallets.c.coins))}
        assert coins <= {2}
    finally:
        await asyncio.wait_for(small.disconnect(), 10)
