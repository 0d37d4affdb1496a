"""Outgoing mail: queued in the database with the change that caused it, sent by the worker.

With no SMTP host configured (embedded, tests) a message is logged instead of sent and stays
in the table marked sent, so a developer (or a test) can read the link it carried.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import sqlalchemy as sa

from server.db import Database, UTCDateTime, metadata
from server.ids import new_id
from server.jobs import enqueue, job_handler

log = logging.getLogger("anilay.mail")

KEEP_SENT = timedelta(days=2)

mail_outbox = sa.Table(
    "mail_outbox",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("to_address", sa.String(254), nullable=False),
    sa.Column("template", sa.String(40), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Index("ix_mail_outbox_to_address_created_at", "to_address", "created_at"),
)


async def queue_mail(
    db: Database, *, to: str, template: str, subject: str, body: str, user_id: int | None = None
) -> int:
    mail_id = new_id()
    await db.execute(
        mail_outbox.insert().values(
            id=mail_id,
            to_address=to,
            template=template,
            subject=subject,
            body=body,
            user_id=user_id,
            created_at=datetime.now(UTC),
            sent_at=None,
        )
    )
    await enqueue(db, "mail.send", {"mail_id": mail_id})
    return mail_id


async def count_recent(db: Database, to: str, template: str, since: datetime) -> int:
    return int(
        await db.fetch_val(
            sa.select(sa.func.count())
            .select_from(mail_outbox)
            .where(
                mail_outbox.c.to_address == to,
                mail_outbox.c.template == template,
                mail_outbox.c.created_at >= since,
            )
        )
        or 0
    )


@job_handler("mail.send")
async def send_mail(services, payload: dict) -> None:
    row = await services.db.fetch_one(
        sa.select(mail_outbox).where(mail_outbox.c.id == payload["mail_id"])
    )
    if row is None or row["sent_at"] is not None:
        return
    settings = services.settings
    sent = {"sent_at": datetime.now(UTC)}
    if settings.smtp_host:
        message = EmailMessage()
        message["From"] = settings.mail_from
        message["To"] = row["to_address"]
        message["Subject"] = row["subject"]
        message.set_content(row["body"])
        await asyncio.to_thread(_smtp_send, settings, message)
        sent["body"] = ""  # links in mail are credentials: keep no copy once delivered
    else:
        log.info(
            "mail (not sent: no SMTP host)",
            extra={"fields": {"to": row["to_address"], "template": row["template"]}},
        )
    await services.db.execute(
        mail_outbox.update().where(mail_outbox.c.id == row["id"]).values(**sent)
    )


def _smtp_send(settings, message: EmailMessage) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
        smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(message)
