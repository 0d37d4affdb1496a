"""Demo data for the embedded default (`anilay seed`): idempotent, so `make run` can call it
every time. Each domain adds its rows here as it lands; accounts first."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from models.anime.importer import seed_demo_catalog
from models.users import users
from server.db import Database
from server.ids import new_id
from server.passwords import Passwords
from server.settings import Settings

# The README lists these; they exist only where someone ran `anilay seed`.
DEMO_PASSWORD = "anilay-demo-pass"
DEMO_USERS = (
    ("sakura", "Sakura Haruno", "admin"),
    ("kenji", "Kenji", "moderator"),
    ("yuki", "Yuki", "user"),
    ("hana", "Hana", "user"),
)


async def seed_accounts(db: Database, passwords: Passwords) -> int:
    created = 0
    hashed = await passwords.hash(DEMO_PASSWORD)
    now = datetime.now(UTC)
    for username, display_name, role in DEMO_USERS:
        exists = await db.fetch_val(sa.select(users.c.id).where(users.c.username_lower == username))
        if exists is not None:
            continue
        await db.execute(
            users.insert().values(
                id=new_id(),
                username=username,
                username_lower=username,
                username_generated=False,
                display_name=display_name,
                display_name_lower=display_name.lower(),
                email=f"{username}@demo.anilay.dev",
                email_lower=f"{username}@demo.anilay.dev",
                email_verified_at=now,
                password_hash=hashed,
                password_changed_at=now,
                role=role,
                status="active",
                locale="en",
                created_at=now,
                updated_at=now,
            )
        )
        created += 1
    return created


async def seed_demo(settings: Settings) -> dict[str, int]:
    db = Database(settings.database_url)
    await db.connect()
    try:
        accounts = await seed_accounts(db, Passwords(settings))
        return {"accounts": accounts, "anime": await seed_demo_catalog(db)}
    finally:
        await db.disconnect()
