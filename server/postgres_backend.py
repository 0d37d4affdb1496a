"""The PostgreSQL backend of `databases` (asyncpg), with each statement shape compiled once
(server/sql_compile.py)."""

from __future__ import annotations

import typing

from databases.backends import postgres as base

from server.sql_compile import bind_args, compile_cached


class CachingPostgresConnection(base.PostgresConnection):
    def _compile(self, query: typing.Any) -> tuple:
        found = compile_cached(query, self._dialect, _numbered)
        if found is None:
            return super()._compile(query)
        shape, params = found
        return shape.sql, bind_args(shape, params), shape.compiled._result_columns


class CachingPostgresBackend(base.PostgresBackend):
    def connection(self) -> CachingPostgresConnection:
        return CachingPostgresConnection(self, self._dialect)


def _numbered(compiled: typing.Any) -> tuple[str, tuple[str, ...]]:
    """asyncpg's `$1, $2, ...` placeholders, numbered in bind-name order (as `databases`)."""
    names = tuple(sorted(compiled.params))
    mapping = {name: f"${number}" for number, name in enumerate(names, start=1)}
    return compiled.string % mapping, names
