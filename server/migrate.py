"""Alembic, driven from code: upgrade to head, and read the revision a database is at.

Used by `anilay migrate`, by readiness (the schema must equal the code's head) and by the
test that proves migrations produce exactly the models' tables on both engines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from server.db import ensure_parent_dir, sqlite_path

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revisions() -> frozenset[str]:
    """The code's migration heads (one, except while parallel branches await a merge)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def upgrade(database_url: str, revision: str = "heads") -> None:
    """Bring the database to `revision` (blocking: run it off the event loop)."""
    path = sqlite_path(database_url)
    if path and path != ":memory:":
        ensure_parent_dir(path)
    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "heads") -> None:
    await asyncio.to_thread(upgrade, database_url, revision)


async def current_revisions(db) -> frozenset[str]:
    """The revisions recorded in the database (empty for an unmigrated database)."""
    try:
        rows = await db.fetch_all("SELECT version_num FROM alembic_version")
    except Exception:  # no alembic_version table yet: an unmigrated database
        return frozenset()
    return frozenset(row["version_num"] for row in rows)
