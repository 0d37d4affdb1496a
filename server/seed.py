"""Demo data for the embedded default: idempotent, so `make run` can call it every time.

Each domain adds its own demo rows here through its real operations as it lands.
"""

from __future__ import annotations

from server.db import Database
from server.settings import Settings

SEEDERS: list = []


async def seed_demo(settings: Settings) -> dict[str, int]:
    db = Database(settings.database_url)
    await db.connect()
    try:
        summary: dict[str, int] = {}
        for seeder in SEEDERS:
            summary.update(await seeder(db))
        return summary
    finally:
        await db.disconnect()
