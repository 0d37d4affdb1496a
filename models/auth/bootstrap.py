"""Operator commands on accounts and keys (`anilay create-admin`, `anilay rotate-keys`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import sqlalchemy as sa

from models.auth.identity import forget_user_state
from models.auth.policy import check_password
from models.users import check_username, users
from server.db import Database
from server.ids import new_id
from server.passwords import Passwords
from server.settings import Settings
from server.tokens import KeyRing, load_key_encryption_key


async def create_admin_account(settings: Settings, username: str, email: str, password: str) -> int:
    """Create an admin account, or promote the existing account with that username.

    The first admin cannot be made through the API (nobody may grant a role yet), so an
    operator makes it from the command line. Idempotent for an existing admin.
    """
    check_username(username)
    db = Database(settings.database_url)
    await db.connect()
    try:
        existing = await db.fetch_one(
            sa.select(users).where(users.c.username_lower == username.lower())
        )
        now = datetime.now(UTC)
        if existing is not None:
            await db.execute(
                users.update()
                .where(users.c.id == existing["id"])
                .values(role="admin", updated_at=now)
            )
            return existing["id"]
        check_password(password, username=username, email=email)
        hashed = await Passwords(settings).hash(password)
        user_id = new_id()
        await db.execute(
            users.insert().values(
                id=user_id,
                username=username,
                username_lower=username.lower(),
                username_generated=False,
                email=email,
                email_lower=email.lower(),
                email_verified_at=now,
                password_hash=hashed,
                password_changed_at=now,
                role="admin",
                status="active",
                locale="en",
                created_at=now,
                updated_at=now,
            )
        )
        return user_id
    finally:
        await db.disconnect()


async def emergency_rotate(settings: Settings) -> str:
    db = Database(settings.database_url)
    await db.connect()
    try:
        kek = await asyncio.to_thread(
            load_key_encryption_key, settings.key_encryption_key, settings.key_encryption_key_file
        )
        return await KeyRing(db, kek, settings.issuer).emergency_rotate()
    finally:
        await db.disconnect()


__all__ = ["create_admin_account", "emergency_rotate", "forget_user_state"]
