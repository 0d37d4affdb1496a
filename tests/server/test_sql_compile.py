"""Statement shapes compiled once (server/sql_compile.py): a cached compilation must give
the driver exactly what a fresh one gives, for every kind of statement we run, on both
engines; statements whose text depends on their values must never come from the cache."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from databases.backends import postgres as pg_base
from databases.backends import sqlite as sqlite_base

from server import sql_compile
from server.db import UTCDateTime
from server.postgres_backend import CachingPostgresBackend, CachingPostgresConnection
from server.sqlite_backend import PooledSQLiteBackend, PooledSQLiteConnection

meta = sa.MetaData()
things = sa.Table(
    "things",
    meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("name", sa.String(40)),
    sa.Column("tags", sa.JSON),
    sa.Column("score", sa.Integer),
    sa.Column("at", UTCDateTime),
)


def _connections():
    pg = CachingPostgresBackend("postgresql://x@127.0.0.1/none")
    lite = PooledSQLiteBackend("sqlite+aiosqlite:///unused.db")
    return [
        ("postgresql", CachingPostgresConnection(pg, pg._dialect), pg_base.PostgresConnection),
        ("sqlite", PooledSQLiteConnection(lite._pool, lite._dialect), sqlite_base.SQLiteConnection),
    ]


def _statements(n: int) -> list:
    moment = datetime(2026, 1, 1 + n, tzinfo=UTC)
    return [
        sa.select(things).where(things.c.id == n, things.c.name == f"n{n}"),
        sa.select(things.c.id).where(things.c.score > n).order_by(things.c.id).limit(n + 1),
        sa.select(things).where(things.c.at < moment).limit(10).offset(n),
        things.insert().values(id=n, name=f"n{n}", tags={"n": [n]}, score=n, at=moment),
        things.update()
        .where(things.c.id == n)
        .values(score=things.c.score + n)
        .returning(things.c.score),
        things.delete().where(things.c.id == n),
        sa.text("SELECT * FROM things WHERE id = :id AND name = :name").bindparams(
            id=n, name=f"n{n}"
        ),
    ]


def _normalised(result: tuple) -> tuple:
    sql, args = result[0], result[1]
    return sql, list(args)


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_a_cached_compilation_binds_each_statements_own_values(engine):
    _, connection, parent = next(c for c in _connections() if c[0] == engine)
    sql_compile._shapes.clear()
    for n in range(1, 4):  # the first round fills the cache; the next ones hit it
        for statement in _statements(n):
            assert _normalised(connection._compile(statement)) == _normalised(
                parent._compile(connection, statement)
            ), statement
    assert len(sql_compile._shapes) == len(_statements(1))


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_value_dependent_sql_is_never_cached(engine):
    _, connection, parent = next(c for c in _connections() if c[0] == engine)
    sql_compile._shapes.clear()
    for ids in ([1], [1, 2, 3], [4, 5]):
        statement = sa.select(things).where(things.c.id.in_(ids))
        first = _normalised(connection._compile(statement))
        assert first == _normalised(parent._compile(connection, statement))
        assert len(first[1]) == len(ids)
    assert all(shape is None for shape in sql_compile._shapes.values())


def test_the_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(sql_compile, "MAX_ENTRIES", 5)
    _, connection, _ = _connections()[0]
    sql_compile._shapes.clear()
    for width in range(1, 20):  # nineteen shapes: one more column each time
        connection._compile(sa.select(*[sa.literal_column(f"c{i}") for i in range(width)]))
    assert len(sql_compile._shapes) <= 5
