"""Data exports (users.md U10-U12, R10): a ZIP of everything the user's account holds.

Each domain registers an exporter (`@exporter("name")`: an async function of (services,
user_id) returning JSON-able data) and gets one `<name>.json` in the archive; message content
is never exported (end-to-end encrypted) and neither is other users' private data. U10 only
queues a job; the worker builds the ZIP into the blob store, and the sweeper expires it after
7 days. At most one export is queued or running per user (a partial unique index decides
concurrent requests) and one starts per 24 hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import sqlalchemy as sa

from models.auth.tables import auth_sessions
from models.oauth.tables import oauth_identities
from models.privacy import PRIVACY_FIELDS, load_privacy
from models.user_settings import get_settings
from models.users import get_user
from server.db import Transaction, UTCDateTime, metadata
from server.errors import ApiError, Code
from server.events import rfc3339
from server.ids import new_id
from server.jobs import enqueue, job_handler
from server.services import Services

log = logging.getLogger("anilay.exports")

EXPORT_COOLDOWN = timedelta(hours=24)
EXPORT_LIFETIME = timedelta(days=7)
# A build that started this long ago and did not finish is presumed dead (a crashed worker);
# the job queue re-runs it after its lease, the sweeper fails it after EXPORT_GIVE_UP.
EXPORT_RESTART_AFTER = timedelta(minutes=5)
EXPORT_GIVE_UP = timedelta(hours=1)
FORMAT_VERSION = 1
IN_PROGRESS = ("queued", "running")
CHUNK_BYTES = 64 * 1024
JOB_KIND = "users.export"

data_exports = sa.Table(
    "data_exports",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=True),
    sa.Column("storage_key", sa.String(256), nullable=True),
    sa.Column("error", sa.String(256), nullable=True),
    sa.Index("ix_data_exports_user_id_created_at", "user_id", "created_at"),
    sa.Index("ix_data_exports_status_expires_at", "status", "expires_at"),
    # One export queued or running per user: two concurrent U10s, one insert wins.
    sa.Index(
        "uq_data_exports_user_id_in_progress",
        "user_id",
        unique=True,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
        sqlite_where=sa.text("status IN ('queued', 'running')"),
    ),
)


class ExportStatus(msgspec.Struct):
    id: str
    status: str
    created_at: str
    finished_at: str | None
    expires_at: str | None
    size_bytes: int | None


class ExportQueued(msgspec.Struct):
    id: str
    status: str
    created_at: str


# --- the registry ---------------------------------------------------------------------------

Exporter = Callable[[Services, int], Awaitable[Any]]
_exporters: dict[str, Exporter] = {}

# Told when an export is ready, in the transaction that marks it: social.md creates the
# `export_ready` notification here. Each gets (services, tx, user_id, export_id).
ExportReadyHook = Callable[[Services, Transaction, int, int], Awaitable[None]]
EXPORT_READY_HOOKS: list[ExportReadyHook] = []


def exporter(name: str) -> Callable[[Exporter], Exporter]:
    """Register the function that writes `<name>.json` of every export."""
    if not name.replace("_", "").isalnum() or not name.islower():
        raise ValueError(f"exporter names are lower_snake: {name!r}")

    def register(function: Exporter) -> Exporter:
        if name in _exporters and _exporters[name] is not function:
            raise ValueError(f"exporter {name} is already registered")
        _exporters[name] = function
        return function

    return register


def exporter_names() -> list[str]:
    return list(_exporters)


# --- blob storage ---------------------------------------------------------------------------


class LocalBlobStore:
    """Blobs as files under one directory (the embedded deployment). Keys are relative
    paths made by this module; anything that would escape the root is refused."""

    def __init__(self, root: str) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"blob key outside the store: {key!r}")
        return path

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)


def blob_store(services: Services) -> LocalBlobStore:
    return LocalBlobStore(services.settings.data_dir)


def storage_key(user_id: int, export_id: int) -> str:
    return f"exports/{user_id}/{export_id}.zip"


# --- U10, U11, U12 --------------------------------------------------------------------------


def status_of(row: dict[str, Any], now: datetime | None = None) -> ExportStatus:
    return ExportStatus(
        id=str(row["id"]),
        status=_effective_status(row, now or datetime.now(UTC)),
        created_at=rfc3339(row["created_at"]),
        finished_at=rfc3339(row["finished_at"]) if row["finished_at"] else None,
        expires_at=rfc3339(row["expires_at"]) if row["expires_at"] else None,
        size_bytes=row["size_bytes"],
    )


def _effective_status(row: dict[str, Any], now: datetime) -> str:
    """A ready export past its expiry reads as expired before the sweeper gets to it."""
    if row["status"] == "ready" and row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return row["status"]


async def do_start_export(services: Services, user_id: int) -> ExportQueued:
    """U10: 409 while one is queued or running, 429 within 24 h of the last one started
    (failed builds do not count), else queue the job with the row."""
    db = services.db
    now = datetime.now(UTC)
    busy = await db.fetch_val(
        sa.select(data_exports.c.id).where(
            data_exports.c.user_id == user_id, data_exports.c.status.in_(IN_PROGRESS)
        )
    )
    if busy is not None:
        raise _in_progress()
    last = await db.fetch_val(
        sa.select(data_exports.c.created_at)
        .where(
            data_exports.c.user_id == user_id,
            data_exports.c.created_at > now - EXPORT_COOLDOWN,
            data_exports.c.status != "failed",
        )
        .order_by(data_exports.c.created_at.desc())
        .limit(1)
    )
    if last is not None:
        wait = math.ceil((last + EXPORT_COOLDOWN - now).total_seconds())
        raise ApiError(
            Code.export_cooldown,
            "One export can be started every 24 hours",
            headers={"Retry-After": str(max(1, wait))},
            extra={"available_at": rfc3339(last + EXPORT_COOLDOWN)},
        )
    export_id = new_id()
    try:
        async with db.transaction():
            await db.execute(
                data_exports.insert().values(
                    id=export_id, user_id=user_id, status="queued", created_at=now
                )
            )
            await enqueue(db, JOB_KIND, {"export_id": str(export_id)})
    except Exception as error:
        if "unique" in str(error).lower() or type(error).__name__ == "UniqueViolationError":
            raise _in_progress() from None
        raise
    return ExportQueued(id=str(export_id), status="queued", created_at=rfc3339(now))


def _in_progress() -> ApiError:
    return ApiError(Code.export_in_progress, "An export is already being prepared")


async def get_export(services: Services, user_id: int, export_id: int) -> ExportStatus:
    """U11; another user's export is not found, like a missing one."""
    return status_of(await _mine(services, user_id, export_id))


async def _mine(services: Services, user_id: int, export_id: int) -> dict[str, Any]:
    row = await services.db.fetch_one(
        sa.select(data_exports).where(
            data_exports.c.id == export_id, data_exports.c.user_id == user_id
        )
    )
    if row is None:
        raise ApiError(Code.not_found, "There is no such export")
    return row


async def open_export(
    services: Services, user_id: int, export_id: int
) -> tuple[AsyncIterator[bytes], int]:
    """U12: the ZIP as chunks and its size. 409 until it is built; 404 once expired or
    failed. The file is opened before answering, so an expiry racing the download cannot cut
    it short."""
    row = await _mine(services, user_id, export_id)
    status = _effective_status(row, datetime.now(UTC))
    if status in IN_PROGRESS:
        raise ApiError(Code.export_not_ready, "The export is still being prepared")
    if status != "ready" or not row["storage_key"]:
        raise ApiError(Code.not_found, "There is no such export")
    path = blob_store(services).path(row["storage_key"])
    try:
        handle: BinaryIO = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        raise ApiError(Code.not_found, "There is no such export") from None
    size = os.fstat(handle.fileno()).st_size

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    return chunks(), size


# --- the worker -----------------------------------------------------------------------------


@job_handler(JOB_KIND)
async def run_export_job(services: Services, payload: dict[str, Any]) -> None:
    await build_export(services, int(payload["export_id"]))


async def build_export(services: Services, export_id: int) -> bool:
    """Build one export; True when this call built it. Safe to call twice (the second call
    finds it claimed) and after a crash (a stale `running` build is claimed again)."""
    db = services.db
    now = datetime.now(UTC)
    claimed = await db.fetch_one(
        data_exports.update()
        .where(
            data_exports.c.id == export_id,
            sa.or_(
                data_exports.c.status == "queued",
                sa.and_(
                    data_exports.c.status == "running",
                    data_exports.c.started_at < now - EXPORT_RESTART_AFTER,
                ),
            ),
        )
        .values(status="running", started_at=now)
        .returning(data_exports.c.user_id, data_exports.c.created_at)
    )
    if claimed is None:
        return False
    user_id = claimed["user_id"]
    key = storage_key(user_id, export_id)
    store = blob_store(services)
    try:
        size = await _write_zip(services, store, key, user_id, export_id, claimed["created_at"])
    except Exception as error:  # a failed build is reported on the export, not retried
        log.warning("export %s failed: %s", export_id, error)
        await asyncio.to_thread(store.delete, key)
        await db.execute(
            data_exports.update()
            .where(data_exports.c.id == export_id, data_exports.c.status == "running")
            .values(status="failed", finished_at=datetime.now(UTC), error=str(error)[:256])
        )
        return False
    finished = datetime.now(UTC)
    async with db.transaction() as tx:
        ready = await db.fetch_one(
            data_exports.update()
            .where(data_exports.c.id == export_id, data_exports.c.status == "running")
            .values(
                status="ready",
                finished_at=finished,
                expires_at=finished + EXPORT_LIFETIME,
                size_bytes=size,
                storage_key=key,
            )
            .returning(data_exports.c.id)
        )
        if ready is not None:
            for hook in EXPORT_READY_HOOKS:
                await hook(services, tx, user_id, export_id)
    if ready is None:  # the account was deleted (or the build failed over) meanwhile
        await asyncio.to_thread(store.delete, key)
        return False
    return True


async def _write_zip(
    services: Services,
    store: LocalBlobStore,
    key: str,
    user_id: int,
    export_id: int,
    created_at: datetime,
) -> int:
    """Write the archive next to its final place and move it there when complete."""
    path = store.path(key)
    partial = path.with_name(path.name + ".part")
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    names = exporter_names()
    manifest = {
        "format_version": FORMAT_VERSION,
        "export_id": str(export_id),
        "user_id": str(user_id),
        "created_at": rfc3339(created_at),
        "generated_at": rfc3339(datetime.now(UTC)),
        "files": [f"{name}.json" for name in names],
    }
    archive = await asyncio.to_thread(zipfile.ZipFile, partial, "w", zipfile.ZIP_DEFLATED)
    try:
        await asyncio.to_thread(archive.writestr, "manifest.json", _pretty(manifest))
        for name in names:
            data = await _exporters[name](services, user_id)
            await asyncio.to_thread(archive.writestr, f"{name}.json", _pretty(data))
    except BaseException:
        await asyncio.to_thread(archive.close)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(partial.unlink)
        raise
    await asyncio.to_thread(archive.close)
    await asyncio.to_thread(os.replace, partial, path)
    return (await asyncio.to_thread(path.stat)).st_size


def _pretty(data: Any) -> bytes:
    return msgspec.json.format(msgspec.json.encode(data, enc_hook=_encode_extra), indent=2)


def _encode_extra(value: Any) -> Any:
    if isinstance(value, bytes):
        return None  # never a hash or a token
    raise NotImplementedError(f"cannot export {type(value).__name__}")


async def sweep_exports(services: Services) -> int:
    """Expire ready exports past their 7 days (the file is deleted) and fail builds that
    never finished. Returns how many changed."""
    db = services.db
    now = datetime.now(UTC)
    store = blob_store(services)
    due = await db.fetch_all(
        sa.select(data_exports.c.id)
        .where(data_exports.c.status == "ready", data_exports.c.expires_at <= now)
        .limit(500)
    )
    changed = 0
    for row in due:
        expired = await db.fetch_one(
            data_exports.update()
            .where(data_exports.c.id == row["id"], data_exports.c.status == "ready")
            .values(status="expired", storage_key=None)
            .returning(data_exports.c.id, data_exports.c.user_id)
        )
        if expired is not None:
            await asyncio.to_thread(store.delete, storage_key(expired["user_id"], expired["id"]))
            changed += 1
    dead = await db.fetch_all(
        data_exports.update()
        .where(
            data_exports.c.status.in_(IN_PROGRESS),
            data_exports.c.created_at < now - EXPORT_GIVE_UP,
        )
        .values(status="failed", finished_at=now, error="the build did not finish")
        .returning(data_exports.c.id)
    )
    return changed + len(dead)


async def delete_user_exports(services: Services, tx: Transaction, user_id: int) -> None:
    """Account deletion (R9): the rows go with the transaction, the files once it commits."""
    await services.db.execute(data_exports.delete().where(data_exports.c.user_id == user_id))
    store = blob_store(services)

    async def remove_files() -> None:
        await asyncio.to_thread(store.delete_prefix, f"exports/{user_id}")

    tx.on_commit(remove_files)


# --- what this group exports ----------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


@exporter("account")
async def export_account(services: Services, user_id: int) -> dict[str, Any]:
    row = await get_user(services.db, user_id)
    assert row is not None
    return {
        "id": str(row["id"]),
        "username": row["username"],
        "email": row["email"],
        "email_verified_at": _time(row["email_verified_at"]),
        "has_password": row["password_hash"] is not None,
        "password_changed_at": _time(row["password_changed_at"]),
        "role": row["role"],
        "status": row["status"],
        "locale": row["locale"],
        "username_changed_at": _time(row["username_changed_at"]),
        "banned_until": _time(row["banned_until"]),
        "ban_reason": row["ban_reason"],
        "muted_until": _time(row["muted_until"]),
        "mute_reason": row["mute_reason"],
        "deletion_scheduled_at": _time(row["deletion_scheduled_at"]),
        "created_at": _time(row["created_at"]),
        "updated_at": _time(row["updated_at"]),
        "last_active_at": _time(row["last_active_at"]),
    }


@exporter("profile")
async def export_profile(services: Services, user_id: int) -> dict[str, Any]:
    row = await get_user(services.db, user_id)
    assert row is not None
    return {
        "display_name": row["display_name"],
        "bio": row["bio"],
        "location": row["location"],
        "website": row["website"],
        "custom_avatar_url": row["custom_avatar_url"],
    }


@exporter("settings")
async def export_settings(services: Services, user_id: int) -> dict[str, Any]:
    return msgspec.to_builtins(await get_settings(services, user_id))


@exporter("privacy")
async def export_privacy(services: Services, user_id: int) -> dict[str, Any]:
    privacy = await load_privacy(services, user_id)
    return {field: getattr(privacy, field) for field in (*PRIVACY_FIELDS, "updated_at")}


@exporter("sessions")
async def export_sessions(services: Services, user_id: int) -> list[dict[str, Any]]:
    """Every sign-in of the account, without any token."""
    rows = await services.db.fetch_all(
        sa.select(auth_sessions)
        .where(auth_sessions.c.user_id == user_id)
        .order_by(auth_sessions.c.created_at, auth_sessions.c.id)
    )
    return [
        {
            "id": str(row["id"]),
            "client": row["client"],
            "device_name": row["device_name"],
            "user_agent": row["user_agent"],
            "auth_method": row["auth_method"],
            "last_ip": row["last_ip"],
            "created_at": _time(row["created_at"]),
            "last_used_at": _time(row["last_used_at"]),
            "expires_at": _time(row["expires_at"]),
            "revoked_at": _time(row["revoked_at"]),
            "revoke_reason": row["revoke_reason"],
        }
        for row in rows
    ]


@exporter("oauth_identities")
async def export_oauth_identities(services: Services, user_id: int) -> list[dict[str, Any]]:
    """Linked sign-in providers as the provider described the account; no provider token is
    ever stored (auth.md R16)."""
    rows = await services.db.fetch_all(
        sa.select(oauth_identities)
        .where(oauth_identities.c.user_id == user_id)
        .order_by(oauth_identities.c.created_at, oauth_identities.c.id)
    )
    return [
        {
            "provider": row["provider"],
            "subject": row["subject"],
            "username": row["username"],
            "email": row["email"],
            "avatar_url": row["avatar_url"],
            "created_at": _time(row["created_at"]),
            "last_login_at": _time(row["last_login_at"]),
        }
        for row in rows
    ]
