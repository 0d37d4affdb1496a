"""Compile each SQL statement shape once.

`databases` compiles every statement it runs, and SQLAlchemy's compiler costs 150-250 µs
for an ordinary select: several times the query itself on a warm PostgreSQL. SQLAlchemy's
own engine avoids this with a cache keyed by the statement's structure (its cache key,
which leaves the bound values out); this does the same for our two `databases` backends.
A hit re-binds the new statement's values into the cached compilation
(`construct_params(extracted_parameters=...)`, as the engine does).

Statements whose SQL text depends on their values are never cached: expanding IN lists
and literal-execute parameters are rendered into the text at compile time. So are
statements SQLAlchemy cannot key (DDL, some text constructs).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.ddl import DDLElement
from sqlalchemy.sql.elements import ClauseElement

MAX_ENTRIES = 4096  # distinct statement shapes; the whole cache is dropped beyond it


class Shape(NamedTuple):
    """One compiled statement shape: the compilation and, for the driver, its SQL text and
    the bind names in placeholder order."""

    compiled: Compiled
    sql: str
    names: tuple[str, ...]


_shapes: dict[tuple[str, tuple], Shape | None] = {}  # None: this shape is not cacheable


def compile_cached(
    query: ClauseElement, dialect: Dialect, build: Any
) -> tuple[Shape, dict[str, Any]] | None:
    """The cached shape of `query` and its bind values; None when it cannot be cached
    (the caller compiles it the usual way). `build(compiled)` makes a new entry's
    (sql, names) for the driver."""
    if isinstance(query, DDLElement):
        return None
    key = query._generate_cache_key()
    if key is None or any(p.expanding or p.literal_execute for p in key.bindparams):
        return None
    index = (dialect.name, key.key)
    shape = _shapes.get(index, False)
    if shape is None:
        return None
    if shape is False:
        compiled = query.compile(
            dialect=dialect, cache_key=key, compile_kwargs={"render_postcompile": True}
        )
        if compiled.literal_execute_params or compiled.post_compile_params:
            shape = None
        else:
            shape = Shape(compiled, *build(compiled))
        if len(_shapes) >= MAX_ENTRIES:
            _shapes.clear()
        _shapes[index] = shape
        if shape is None:
            return None
    return shape, shape.compiled.construct_params(extracted_parameters=key.bindparams)


def bind_args(shape: Shape, params: dict[str, Any]) -> list[Any]:
    """The driver's positional arguments: each value through its type's bind processor."""
    processors = shape.compiled._bind_processors
    return [
        processors[name](params[name]) if name in processors else params[name]
        for name in shape.names
    ]
