"""Bans and mutes as they take effect (auth.md R2, R9; gateway.md G12).

The admin group decides them; these are the operations it calls. A change applies to the
next request (the cached user state is dropped after commit), and a ban closes the user's
sockets within a second (GATEWAY_DISCONNECT through the log).
"""

from __future__ import annotations

from datetime import UTC, datetime

from models.auth.identity import forget_user_state
from models.users import users
from server.realtime import disconnect_user
from server.services import Services


async def _restrict(services: Services, user_id: int, values: dict, *, disconnect: bool) -> None:
    async with services.db.transaction() as tx:
        await services.db.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(**values, updated_at=datetime.now(UTC))
        )

        async def forget() -> None:
            await forget_user_state(services, user_id)

        tx.on_commit(forget)
        if disconnect:
            disconnect_user(tx, user_id, "banned", "This account is banned")


async def do_set_ban(
    services: Services, user_id: int, until: datetime | None, reason: str | None
) -> None:
    active = until is not None and until > datetime.now(UTC)
    await _restrict(
        services,
        user_id,
        {"banned_until": until, "ban_reason": reason if until else None},
        disconnect=active,
    )


async def do_set_mute(
    services: Services, user_id: int, until: datetime | None, reason: str | None
) -> None:
    await _restrict(
        services,
        user_id,
        {"muted_until": until, "mute_reason": reason if until else None},
        disconnect=False,
    )
