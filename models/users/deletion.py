"""Account deletion (users.md U8, U9, R9): a 14-day grace, then anonymization by the worker.

The user row is never deleted — other groups keep valid foreign keys and show "deleted
user" — it is anonymized, in one transaction per user that starts by claiming the row with a
conditional update. A crash anywhere rolls the whole of it back, so the sweeper simply runs it
again; two runs at once leave one winner.

Other groups take part through two registries:
- `DELETION_REQUEST_HOOKS` run inside U8's transaction (auth.md revokes the API keys with
  reason `owner_deleted`); push tokens of the revoked sessions go through auth's
  SESSION_REVOKE_HOOKS.
- `DELETION_HOOKS` run inside the anonymization transaction, before this group's own clean-up
  (game.md releases escrow; auth.md's API keys and push tokens delete themselves;
  social.md friendships, blocks and notifications; anime.md keeps comments as "deleted user";
  platform.md deletes time-on-site and IP logs and nulls user ids in search logs and
  telemetry). Register with `@on_deletion_requested` / `@on_account_deleted`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import msgspec
import sqlalchemy as sa

from models import privacy, social_graph
from models.auth.accounts import check_current_password
from models.auth.identity import forget_user_state
from models.auth.sessions import active_session_ids, revoke_sessions
from models.auth.tables import auth_sessions, email_tokens, refresh_tokens
from models.exports import delete_user_exports
from models.mail import mail_outbox, queue_mail
from models.oauth.tables import oauth_flows, oauth_identities
from models.user_settings import user_settings
from models.users import get_user, username_reservations, users
from models.users.profiles import USER_DELETE, UserDelete
from server.auth import Identity
from server.db import Transaction
from server.errors import ApiError, Code, FieldError
from server.events import make_event, rfc3339
from server.services import Services

log = logging.getLogger("anilay.users.deletion")

DELETION_GRACE = timedelta(days=14)
DELETED_NAME_HOLD = timedelta(days=90)
SWEEP_BATCH = 50

DeletionHook = Callable[[Services, Transaction, int], Awaitable[None]]
DELETION_REQUEST_HOOKS: list[DeletionHook] = []
DELETION_HOOKS: list[DeletionHook] = []


def on_deletion_requested(hook: DeletionHook) -> DeletionHook:
    DELETION_REQUEST_HOOKS.append(hook)
    return hook


def on_account_deleted(hook: DeletionHook) -> DeletionHook:
    DELETION_HOOKS.append(hook)
    return hook


class DeletionScheduled(msgspec.Struct):
    deletion_scheduled_at: str


async def do_request_deletion(
    services: Services, identity: Identity, password: str | None, confirm_username: str
) -> DeletionScheduled:
    """U8: schedule the deletion 14 days ahead and end every other session now."""
    user_id = identity.user_id
    row = await get_user(services.db, user_id)
    if row is None or row["status"] == "deleted":
        raise ApiError(Code.session_revoked, "This session has ended; sign in again")
    if row["status"] == "deletion_pending":
        raise _already_pending()
    if confirm_username.strip().lower() != row["username_lower"]:
        raise ApiError(
            Code.validation_failed,
            "Type your current username to confirm",
            errors=[FieldError("confirm_username", "does not match your username")],
        )
    await check_current_password(services, identity, password)
    now = datetime.now(UTC)
    scheduled = now + DELETION_GRACE
    async with services.db.transaction() as tx:
        marked = await services.db.fetch_one(
            users.update()
            .where(users.c.id == user_id, users.c.status == "active")
            .values(
                status="deletion_pending",
                deletion_requested_at=now,
                deletion_scheduled_at=scheduled,
                updated_at=now,
            )
            .returning(users.c.id, users.c.email)
        )
        if marked is None:
            raise _already_pending()
        others = await active_session_ids(services, user_id, except_session=identity.session_id)
        await revoke_sessions(services, tx, user_id, others, "account_deleted")
        for hook in DELETION_REQUEST_HOOKS:
            await hook(services, tx, user_id)
        if marked["email"]:
            await queue_mail(
                services.db,
                to=marked["email"],
                template="account_deletion_scheduled",
                subject="Your account will be deleted",
                body=(
                    "Your Anilay account is scheduled for deletion on "
                    f"{scheduled:%Y-%m-%d %H:%M} UTC. Sign in and cancel the deletion before "
                    "then to keep it. If this was not you, change your password now."
                ),
                user_id=user_id,
            )
        tx.on_commit(lambda: forget_user_state(services, user_id))
    return DeletionScheduled(deletion_scheduled_at=rfc3339(scheduled))


def _already_pending() -> ApiError:
    return ApiError(Code.deletion_pending, "The account is already scheduled for deletion")


async def do_cancel_deletion(services: Services, user_id: int) -> None:
    """U9: back to `active`, unless the worker got there first."""
    async with services.db.transaction() as tx:
        restored = await services.db.fetch_one(
            users.update()
            .where(users.c.id == user_id, users.c.status == "deletion_pending")
            .values(
                status="active",
                deletion_requested_at=None,
                deletion_scheduled_at=None,
                updated_at=datetime.now(UTC),
            )
            .returning(users.c.id)
        )
        if restored is None:
            raise ApiError(Code.not_pending, "No deletion is pending")
        tx.on_commit(lambda: forget_user_state(services, user_id))


async def anonymize_user(services: Services, user_id: int, *, immediate: bool = False) -> bool:
    """R9 for one user, in one transaction; True when this call did it.

    Without `immediate`, only a pending deletion whose time has come is carried out (the
    sweeper); with it, any account not yet deleted (admin.md A11).
    """
    db = services.db
    now = datetime.now(UTC)
    async with db.transaction() as tx:
        claim = users.update().where(users.c.id == user_id, users.c.status != "deleted")
        if not immediate:
            claim = claim.where(
                users.c.status == "deletion_pending", users.c.deletion_scheduled_at <= now
            )
        claimed = await db.fetch_one(
            claim.values(status="deleted", updated_at=now).returning(users.c.username_lower)
        )
        if claimed is None:
            return False
        friends = await social_graph.friend_ids(services, user_id)
        live = await active_session_ids(services, user_id)
        await revoke_sessions(services, tx, user_id, live, "account_deleted")
        for hook in DELETION_HOOKS:
            await hook(services, tx, user_id)
        await _delete_own_data(services, tx, user_id)
        await _release_usernames(services, user_id, claimed["username_lower"], now)
        await db.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(
                username=f"deleted_{user_id}",
                username_lower=f"deleted_{user_id}",
                username_generated=False,
                username_changed_at=None,
                display_name=None,
                display_name_lower=None,
                bio=None,
                location=None,
                website=None,
                custom_avatar_url=None,
                email=None,
                email_lower=None,
                email_verified_at=None,
                password_hash=None,
                password_changed_at=None,
                last_active_at=None,
            )
        )
        topics = [f"user:{user_id}", *(f"user:{f}" for f in sorted(friends))]
        tx.emit(make_event(USER_DELETE, UserDelete(user_id=str(user_id)), topics))

        async def forget() -> None:
            await forget_user_state(services, user_id)
            await privacy.forget_privacy(services, user_id)

        tx.on_commit(forget)
    return True


async def _delete_own_data(services: Services, tx: Transaction, user_id: int) -> None:
    """Sessions and their tokens, mail tokens, OAuth identities and flows, queued mail (it
    carries the address), settings, privacy, exports and their files."""
    db = services.db
    sessions = sa.select(auth_sessions.c.id).where(auth_sessions.c.user_id == user_id)
    await db.execute(refresh_tokens.delete().where(refresh_tokens.c.session_id.in_(sessions)))
    await db.execute(auth_sessions.delete().where(auth_sessions.c.user_id == user_id))
    await db.execute(email_tokens.delete().where(email_tokens.c.user_id == user_id))
    await db.execute(oauth_identities.delete().where(oauth_identities.c.user_id == user_id))
    await db.execute(oauth_flows.delete().where(oauth_flows.c.user_id == user_id))
    await db.execute(mail_outbox.delete().where(mail_outbox.c.user_id == user_id))
    await db.execute(user_settings.delete().where(user_settings.c.user_id == user_id))
    await db.execute(privacy.user_privacy.delete().where(privacy.user_privacy.c.user_id == user_id))
    await delete_user_exports(services, tx, user_id)


async def _release_usernames(
    services: Services, user_id: int, username_lower: str, now: datetime
) -> None:
    """The last username is held for nobody for 90 days; names the user was holding to take
    back stay held, for nobody, until their hold lapses."""
    db = services.db
    await db.execute(
        username_reservations.update()
        .where(username_reservations.c.user_id == user_id)
        .values(user_id=None)
    )
    await db.execute(
        db.upsert(
            username_reservations,
            {
                "username_lower": username_lower,
                "user_id": None,
                "reserved_until": now + DELETED_NAME_HOLD,
            },
            conflict=["username_lower"],
            update={"user_id": None, "reserved_until": now + DELETED_NAME_HOLD},
        )
    )


async def sweep_deletions(services: Services) -> int:
    """The worker's pass: anonymize every account whose grace period is over, then drop
    username holds that have lapsed. Returns how many accounts were anonymized."""
    now = datetime.now(UTC)
    due = await services.db.fetch_all(
        sa.select(users.c.id)
        .where(users.c.status == "deletion_pending", users.c.deletion_scheduled_at <= now)
        .order_by(users.c.deletion_scheduled_at)
        .limit(SWEEP_BATCH)
    )
    done = 0
    for row in due:
        try:
            done += await anonymize_user(services, row["id"])
        except Exception as error:  # one account's failure must not stop the others
            log.warning("anonymizing user %s failed (will retry): %s", row["id"], error)
    await services.db.execute(
        username_reservations.delete().where(username_reservations.c.reserved_until <= now)
    )
    return done
