"""After `anilay migrate` the database is exactly the models' schema, on both engines."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import models  # noqa: F401
from server.db import metadata
from server.migrate import head_revisions


def _diff(connection):
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return compare_metadata(context, metadata), context.get_current_heads()


async def test_migrated_database_matches_the_models_exactly(backend):
    engine = create_async_engine(backend.database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            differences, revision = await connection.run_sync(_diff)
    finally:
        await engine.dispose()
    assert differences == [], f"models and migrations differ: {differences}"
    assert frozenset(revision) == head_revisions()


def test_there_is_exactly_one_head():
    from alembic.script import ScriptDirectory

    from server.migrate import alembic_config

    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"migration branches need merging: {heads}"


async def test_ready_is_503_while_the_schema_is_behind(tmp_path):
    """A process pointed at an unmigrated database must not take traffic."""
    import httpx

    from tests.conftest import base_settings, start_live_server, stop_live_server

    settings = base_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    live = await start_live_server(settings)
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            response = await http.get("/api/v1/health/ready")
    finally:
        await stop_live_server(live)
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "not_ready"
    assert body["checks"]["database"] == "behind"


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
