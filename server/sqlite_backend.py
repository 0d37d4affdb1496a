"""The embedded SQLite backend for `databases`, kept open and tuned.

`databases`' own SQLite backend opens a new connection (and a new thread) on every acquire
and sets no pragmas. This one keeps a small pool of open connections, each in WAL mode with
a busy timeout and foreign keys on, and starts root transactions with `BEGIN IMMEDIATE` so
two concurrent writers queue for the write lock instead of deadlocking on a lock upgrade.
"""

from __future__ import annotations

import asyncio
import typing

import aiosqlite
from databases.backends import sqlite as base

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)
POOL_SIZE = 4


class PooledSQLitePool(base.SQLitePool):
    def __init__(self, url, **options: typing.Any) -> None:
        super().__init__(url, **options)
        self._idle: asyncio.LifoQueue[aiosqlite.Connection] = asyncio.LifoQueue()
        self._open = 0

    async def acquire(self) -> aiosqlite.Connection:
        if self._idle.empty() and self._open < POOL_SIZE:
            self._open += 1
            try:
                connection = aiosqlite.connect(
                    database=self._database, isolation_level=None, **self._options
                )
                await connection.__aenter__()
                for pragma in PRAGMAS:
                    await connection.execute(pragma)
            except BaseException:
                self._open -= 1
                raise
            return connection
        return await self._idle.get()

    async def release(self, connection: aiosqlite.Connection) -> None:
        if connection.in_transaction:  # a cancelled task left one open: never reuse it
            await connection.rollback()
        self._idle.put_nowait(connection)

    async def close(self) -> None:
        while not self._idle.empty():
            await self._idle.get_nowait().close()
            self._open -= 1


class PooledSQLiteTransaction(base.SQLiteTransaction):
    async def start(self, is_root: bool, extra_options: dict[typing.Any, typing.Any]) -> None:
        if not is_root:
            await super().start(is_root, extra_options)
            return
        self._is_root = True
        async with self._connection._connection.execute("BEGIN IMMEDIATE") as cursor:
            await cursor.close()


class PooledSQLiteConnection(base.SQLiteConnection):
    def transaction(self) -> PooledSQLiteTransaction:
        return PooledSQLiteTransaction(self)


class PooledSQLiteBackend(base.SQLiteBackend):
    def __init__(self, database_url, **options: typing.Any) -> None:
        super().__init__(database_url, **options)
        self._pool = PooledSQLitePool(self._database_url, **self._options)

    async def disconnect(self) -> None:
        await self._pool.close()
        await super().disconnect()

    def connection(self) -> PooledSQLiteConnection:
        return PooledSQLiteConnection(self._pool, self._dialect)
