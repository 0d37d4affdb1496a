"""The embedded engine's connection pool under cancellation (server/sqlite_backend.py).

Tasks get cancelled at any await: a request whose client went away, a background loop at
shutdown. The pool must come out of it whole: never fewer usable connections than before,
never more than POOL_SIZE open, and no connection thread left running after disconnect."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.db import Database
from server.sqlite_backend import POOL_SIZE


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/pool.db")
    await database.connect()
    await database.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    yield database
    await database.disconnect()


def _pool(db: Database):
    return db._engine._backend._pool


def _connection_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.is_alive() and "_connection_worker" in t.name)


async def _writer(db: Database, started: asyncio.Event) -> None:
    async with db.transaction():
        await db.execute("INSERT INTO items (name) VALUES ('half-written')")
        started.set()
        await asyncio.sleep(30)


async def test_cancelled_transactions_roll_back_and_give_their_connection_back(db):
    for _ in range(POOL_SIZE * 3):
        started = asyncio.Event()
        task = asyncio.create_task(_writer(db, started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await db.fetch_val("SELECT count(*) FROM items") == 0
    assert len(_pool(db)._open) <= POOL_SIZE


async def test_a_connection_cancelled_while_opening_is_closed_and_its_slot_freed(tmp_path):
    """Shutdown cancels background tasks wherever they are, opening a connection included:
    the half-open connection is closed (no thread left behind) and the slot comes back."""
    before = _connection_threads()
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/opening.db")
    await database.connect()
    try:
        for delay in (0, 1, 2, 3, 5, 8):
            task = asyncio.create_task(database.fetch_val("SELECT 1"))
            for _ in range(delay):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        results = await asyncio.wait_for(
            asyncio.gather(*(database.fetch_val("SELECT 1") for _ in range(POOL_SIZE * 3))), 10
        )
        assert results == [1] * (POOL_SIZE * 3)
        assert len(_pool(database)._open) <= POOL_SIZE
    finally:
        await database.disconnect()
    for _ in range(100):
        if _connection_threads() <= before:
            break
        await asyncio.sleep(0.02)
    assert _connection_threads() <= before


async def test_more_concurrent_queries_than_connections_all_finish(db):
    async def insert(n: int) -> None:
        async with db.transaction():
            await db.execute("INSERT INTO items (name) VALUES (:name)", {"name": f"n{n}"})
            await asyncio.sleep(0.001)

    await asyncio.wait_for(asyncio.gather(*(insert(n) for n in range(POOL_SIZE * 10))), 20)
    assert await db.fetch_val("SELECT count(*) FROM items") == POOL_SIZE * 10
    assert len(_pool(db)._open) <= POOL_SIZE


async def test_disconnect_closes_connections_still_lent_out(tmp_path):
    before = _connection_threads()
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/lent.db")
    await database.connect()
    await database.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    started = asyncio.Event()
    holder = asyncio.create_task(_writer(database, started))
    await started.wait()
    await database.disconnect()  # shutdown while a task still holds a connection
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)
    for _ in range(100):
        if _connection_threads() <= before:
            break
        await asyncio.sleep(0.02)
    assert _connection_threads() <= before
