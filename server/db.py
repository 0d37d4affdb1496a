"""The database handle: `databases` over asyncpg or aiosqlite, SQLAlchemy Core queries.

Rows come back as plain dicts with JSON decoded and timestamps timezone-aware on both
engines. `transaction()` collects the events a unit of work emits and hands them to the
bus only after the commit; a rollback drops them (STYLE habit 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import databases
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

Row = dict[str, Any]
CommitHook = Callable[[list[Any]], Awaitable[None]]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
"""The one MetaData every domain's tables join; Alembic targets it."""


class UTCDateTime(sa.TypeDecorator):
    """A timestamp stored in UTC and always returned timezone-aware, on both engines."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value


class _ReleasingTransaction(databases.core.Transaction):
    """`databases`' transaction, with its connection given back whatever happens.

    `databases` gives the pooled connection back only once BEGIN, COMMIT or ROLLBACK has
    returned: a task cancelled during one of them (shutdown, a timeout) kept the connection
    for good, and a handful of such cancellations exhausted the PostgreSQL pool. Here the
    connection always goes back; the pool resets it (asyncpg) or rolls it back (SQLite).
    """

    async def start(self) -> _ReleasingTransaction:
        connection = self._connection
        self._transaction = connection._connection.transaction()
        async with connection._transaction_lock:
            is_root = not connection._transaction_stack
            await connection.__aenter__()
            try:
                await self._transaction.start(is_root=is_root, extra_options=self._extra_options)
            except BaseException:
                self._transaction = None
                await connection.__aexit__()
                raise
            connection._transaction_stack.append(self)
        return self

    async def commit(self) -> None:
        await self._end(commit=True)

    async def rollback(self) -> None:
        await self._end(commit=False)

    async def _end(self, *, commit: bool) -> None:
        connection = self._connection
        async with connection._transaction_lock:
            assert connection._transaction_stack[-1] is self
            connection._transaction_stack.pop()
            transaction, self._transaction = self._transaction, None
            assert transaction is not None
            try:
                await (transaction.commit() if commit else transaction.rollback())
            finally:
                await connection.__aexit__()


class _Engine(databases.Database):
    SUPPORTED_BACKENDS = {
        **databases.Database.SUPPORTED_BACKENDS,
        "sqlite+aiosqlite": "server.sqlite_backend:PooledSQLiteBackend",
        "sqlite": "server.sqlite_backend:PooledSQLiteBackend",
        "postgresql": "server.postgres_backend:CachingPostgresBackend",
        "postgresql+asyncpg": "server.postgres_backend:CachingPostgresBackend",
        "postgres": "server.postgres_backend:CachingPostgresBackend",
    }

    def transaction(self, *, force_rollback: bool = False, **options: Any) -> _ReleasingTransaction:
        return _ReleasingTransaction(self.connection, force_rollback=force_rollback, **options)


class Transaction:
    """A unit of work: queries run in it, `emit` queues events for after the commit and
    `on_commit` queues work (cache invalidation) that must happen once the data is durable
    and before the events leave."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.callbacks: list[Callable[[], Awaitable[Any]]] = []

    def emit(self, *events: Any) -> None:
        self.events.extend(events)

    def on_commit(self, callback: Callable[[], Awaitable[Any]]) -> None:
        self.callbacks.append(callback)


_current_unit: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
    "current_unit", default=None
)


class Database:
    def __init__(self, url: str, *, pool_min: int = 1, pool_max: int = 10) -> None:
        self.url = url
        self.dialect = "postgresql" if url.startswith("postgres") else "sqlite"
        options: dict[str, Any] = {}
        if self.dialect == "postgresql":
            options = {"min_size": pool_min, "max_size": pool_max}
        self._engine = _Engine(url, **options)
        self._on_commit: CommitHook | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def connect(self) -> None:
        if self.dialect == "sqlite":
            path = sqlite_path(self.url)
            if path and path != ":memory:":
                await asyncio.to_thread(ensure_parent_dir, path)
        await self._engine.connect()

    async def disconnect(self) -> None:
        if self._engine.is_connected:
            await self._engine.disconnect()

    def set_commit_hook(self, hook: CommitHook | None) -> None:
        """Where committed events go (the bus). Set once by the composition root."""
        self._on_commit = hook

    # --- queries ---------------------------------------------------------------------
    async def fetch_all(self, query: ClauseElement | str, values: dict | None = None) -> list[Row]:
        return [_to_row(r) for r in await self._engine.fetch_all(query, values)]

    async def fetch_one(self, query: ClauseElement | str, values: dict | None = None) -> Row | None:
        record = await self._engine.fetch_one(query, values)
        return None if record is None else _to_row(record)

    async def fetch_val(self, query: ClauseElement | str, values: dict | None = None) -> Any:
        row = await self.fetch_one(query, values)
        return None if row is None else next(iter(row.values()), None)

    async def execute(self, query: ClauseElement | str, values: dict | None = None) -> Any:
        """Run a statement. For conditional writes, add `.returning(...)` and use fetch_*:
        the rows returned are the rows the condition let through, on both engines."""
        return await self._engine.execute(query, values)

    async def execute_many(self, query: ClauseElement, rows: Sequence[dict]) -> None:
        if rows:
            await self._engine.execute_many(query, list(rows))

    # --- transactions ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Run a unit of work; its events are published only once the outermost commit is done.

        A nested `transaction()` is a savepoint: its events join the outer unit on success and
        are dropped with it on rollback.
        """
        outer = _current_unit.get()
        unit = Transaction()
        token = _current_unit.set(unit)
        try:
            async with self._engine.transaction():
                yield unit
        finally:
            _current_unit.reset(token)
        if outer is not None:
            outer.events.extend(unit.events)
            outer.callbacks.extend(unit.callbacks)
            return
        for callback in unit.callbacks:
            await callback()
        if unit.events and self._on_commit is not None:
            await self._on_commit(unit.events)

    # --- dialect helpers -------------------------------------------------------------
    def insert(self, table: sa.Table):
        """An INSERT that supports `.on_conflict_do_update/nothing` on either engine."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def upsert(
        self,
        table: sa.Table,
        values: dict[str, Any],
        conflict: Sequence[str],
        update: dict[str, Any] | None = None,
    ):
        """INSERT … ON CONFLICT (conflict) DO UPDATE SET update (or DO NOTHING when empty)."""
        statement = self.insert(table).values(**values)
        if not update:
            return statement.on_conflict_do_nothing(index_elements=list(conflict))
        return statement.on_conflict_do_update(index_elements=list(conflict), set_=update)

    async def ping(self) -> None:
        await self._engine.fetch_val("SELECT 1")


def ci_equals(column: sa.ColumnElement, value: str) -> sa.ColumnElement[bool]:
    """Case-insensitive equality that an index on lower(column) serves on both engines."""
    return sa.func.lower(column) == value.lower()


def sqlite_path(url: str) -> str | None:
    """The file path of a SQLite URL (four slashes = absolute, three = relative)."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            return url[len(prefix) :].split("?", 1)[0]
    return None


def ensure_parent_dir(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def _to_row(record: Any) -> Row:
    # keys() on purpose: iterating an asyncpg Record yields its values, not its keys.
    row = {key: record[key] for key in record._mapping.keys()}  # noqa: SIM118
    for key, value in row.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            row[key] = value.replace(tzinfo=UTC)
    return row
