"""`anilay catalog import <path-or-url>`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.anime.importer.records import (
    ImportReport,
)
from models.anime.importer.remote import (
    local_ids,
    pull_remote,
)
from models.anime.importer.sources import (
    import_path,
)
from server.db import Database


async def run_import_command(
    settings: Any,
    source: str,
    *,
    ids: Sequence[int] = (),
    pages: int = 0,
    ongoing: bool = False,
    force: bool = False,
) -> ImportReport:
    """`anilay catalog import <path-or-url>`: a file or directory, or a base URL with
    `--ids`, `--pages` and/or `--ongoing`. With Redis configured the new version reaches
    every process's cache at once; otherwise the embedded server sees it within a second."""
    from server.cache import RedisCache
    from server.redis_client import connect_redis

    db = Database(settings.database_url)
    redis = (
        connect_redis(settings.redis_url, settings.redis_timeout_s) if settings.redis_url else None
    )
    cache = RedisCache(redis) if redis is not None else None
    await db.connect()
    try:
        if source.startswith(("http://", "https://")):
            wanted = list(ids)
            if ongoing:
                wanted += await local_ids(db, statuses=("anons", "ongoing"))
            if not wanted and not pages:
                raise SystemExit("anilay: a URL needs --ids, --pages or --ongoing")
            return await pull_remote(
                db,
                source,
                version=settings.version,
                ids=wanted,
                pages=pages,
                cache=cache,
                force_ids=wanted if force else (),
            )
        return await import_path(db, source, cache=cache, force_ids=ids if force else ())
    finally:
        await db.disconnect()
        if redis is not None:
            await redis.aclose()
