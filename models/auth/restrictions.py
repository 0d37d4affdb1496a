"""Bans and mutes as they take effect (auth.md R2, R9; gateway.md G12).

The admin group decides them; this is the operation it calls. The change applies to the
next request (the cached user state is dropped after commit) and closes the user's
sockets within a second (GATEWAY_DISCONNECT through the log).
"""

from __future__ import annotations

from datetime import UTC, datetime

from models.auth.identity import forget_user_state
from models.users import users
from server.realtime import disconnect_user
from server.services import Services


async def do_set_ban(
    services: Services, user_id: int, until: datetime | None, reason: str | None
) -> None:
    async with services.db.transaction() as tx:
        await services.db.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(
                banned_until=until,
                ban_reason=reason if until else None,
                updated_at=datetime.now(UTC),
            )
        )

        async def forget() -> None:
            await forget_user_state(services, user_id)

        tx.on_commit(forget)
        if until is not None and until > datetime.now(UTC):
            disconnect_user(tx, user_id, "banned", "This account is banned")


async def do_set_mute(
    services: Services, user_id: int, until: datetime | None, reason: str | None
) -> None:
    async with services.db.transaction() as tx:
        await services.db.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(
                muted_until=until,
                mute_reason=reason if until else None,
                updated_at=datetime.now(UTC),
            )
        )

        async def forget() -> None:
            await forget_user_state(services, user_id)

        tx.on_commit(forget)
