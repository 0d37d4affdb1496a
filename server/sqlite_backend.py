"""The embedded SQLite backend for `databases`, kept open and tuned.

`databases`' own SQLite backend opens a new connection (and a new thread) on every acquire
and sets no pragmas. This one keeps a small pool of open connections, each in WAL mode with
a busy timeout and foreign keys on, and starts root transactions with `BEGIN IMMEDIATE` so
two concurrent writers queue for the write lock instead of deadlocking on a lock upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing

import aiosqlite
from databases.backends import sqlite as base

from server.sql_compile import bind_args, compile_cached

PRAGMAS = (
    "PRAGMA busy_timeout=10000",  # first: the others may have to wait for a lock
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)
POOL_SIZE = 4


class PooledSQLitePool(base.SQLitePool):
    """At most POOL_SIZE open connections, reused last-in first-out.

    A connection that cannot go back cleanly (its rollback failed or was cancelled, or it
    failed while opening) is closed, and its slot is freed at once: a cancelled task must
    not shrink the pool for good, nor leave a connection thread running past shutdown.
    """

    def __init__(self, url, **options: typing.Any) -> None:
        super().__init__(url, **options)
        self._slots = asyncio.Semaphore(POOL_SIZE)
        self._idle: list[aiosqlite.Connection] = []
        self._open: set[aiosqlite.Connection] = set()
        # Connections open one at a time: on a new file, two connections switching it to
        # WAL at once make one fail with "database is locked" (no busy wait for that).
        self._opening = asyncio.Lock()

    async def acquire(self) -> aiosqlite.Connection:
        await self._slots.acquire()
        try:
            return self._idle.pop() if self._idle else await self._connect()
        except BaseException:
            self._slots.release()
            raise

    async def _connect(self) -> aiosqlite.Connection:
        connection = aiosqlite.connect(
            database=self._database, isolation_level=None, **self._options
        )
        self._open.add(connection)
        try:
            async with self._opening:
                await connection.__aenter__()
                for pragma in PRAGMAS:
                    await connection.execute(pragma)
        except BaseException:
            await self._discard(connection)
            raise
        return connection

    async def release(self, connection: aiosqlite.Connection) -> None:
        try:
            if connection.in_transaction:  # a cancelled task left one open: roll it back
                await connection.rollback()
        except BaseException:
            await self._discard(connection)
            raise
        else:
            self._idle.append(connection)
        finally:
            self._slots.release()

    async def _discard(self, connection: aiosqlite.Connection) -> None:
        self._open.discard(connection)
        await _close(connection)

    async def close(self) -> None:
        """Close every connection, the ones still lent out included (shutdown)."""
        connections, self._open, self._idle = list(self._open), set(), []
        for connection in connections:
            await _close(connection)


async def _close(connection: aiosqlite.Connection) -> None:
    """Close a connection even if the caller is being cancelled (the close goes on)."""
    with contextlib.suppress(Exception):
        await asyncio.shield(connection.close())


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

    def _compile(self, query: typing.Any) -> tuple:
        """As `databases` compiles, with each statement shape compiled once (sql_compile)."""
        found = compile_cached(query, self._dialect, _qmark)
        if found is None:
            return super()._compile(query)
        shape, params = found
        compiled = shape.compiled
        context = self._dialect.execution_ctx_cls()
        context.dialect = self._dialect
        context.result_column_struct = (
            compiled._result_columns,
            compiled._ordered_columns,
            compiled._textual_ordered_columns,
            compiled._ad_hoc_textual,
            compiled._loose_column_name_matching,
        )
        return (
            shape.sql,
            bind_args(shape, params),
            compiled._result_columns,
            base.CompilationContext(context),
        )


def _qmark(compiled: typing.Any) -> tuple[str, tuple[str, ...]]:
    return compiled.string, tuple(compiled.positiontup or ())


class PooledSQLiteBackend(base.SQLiteBackend):
    def __init__(self, database_url, **options: typing.Any) -> None:
        super().__init__(database_url, **options)
        self._pool = PooledSQLitePool(self._database_url, **self._options)

    async def disconnect(self) -> None:
        await self._pool.close()
        await super().disconnect()

    def connection(self) -> PooledSQLiteConnection:
        return PooledSQLiteConnection(self._pool, self._dialect)
