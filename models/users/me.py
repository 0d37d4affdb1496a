"""The owner's own view of their account (users.md U4), and U5, which answers with it.

One bootstrap call: the profile as others would see it in full, plus what only the owner
sees — email, settings, privacy, loadout, account status and the username cooldown.
"""

from __future__ import annotations

from typing import Any

import msgspec

from models.privacy import Privacy, get_privacy
from models.user_settings import Settings, get_settings
from models.users import get_user
from models.users.edits import do_update_profile, username_change_available_at
from models.users.profiles import Loadout, Profile, current_loadout, full_profile
from server.errors import ApiError, Code
from server.events import rfc3339
from server.services import Services


class Me(msgspec.Struct):
    profile: Profile
    email: str | None
    email_verified: bool
    settings: Settings
    privacy: Privacy
    loadout: Loadout
    status: str
    username_change_available_at: str | None
    deletion_scheduled_at: str | None


async def describe_me(services: Services, user_id: int) -> Me:
    row = await get_user(services.db, user_id)
    if row is None or row["status"] == "deleted":
        raise ApiError(Code.session_revoked, "This session has ended; sign in again")
    available = username_change_available_at(row)
    scheduled = row["deletion_scheduled_at"]
    return Me(
        profile=await full_profile(services, user_id, row),
        email=row["email"],
        email_verified=row["email_verified_at"] is not None,
        settings=await get_settings(services, user_id),
        privacy=await get_privacy(services, user_id),
        loadout=await current_loadout(services, row),
        status=row["status"],
        username_change_available_at=rfc3339(available) if available else None,
        deletion_scheduled_at=rfc3339(scheduled)
        if scheduled and row["status"] == "deletion_pending"
        else None,
    )


async def do_update_me(services: Services, user_id: int, changes: dict[str, Any]) -> Me:
    """U5: edit, then answer with the whole account as U4 does."""
    await do_update_profile(services, user_id, changes)
    return await describe_me(services, user_id)
