"""The push tables and the group's limits (auth.md Data, R28-R33)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

import sqlalchemy as sa

from server.db import UTCDateTime, metadata

# --- constants from the spec ---------------------------------------------------------------

TOKEN_PATTERN = re.compile(r"^Expo(nent)?PushToken\[[A-Za-z0-9_-]{8,200}\]$")
TOKENS_PER_USER = 20  # a 21st evicts the least recently registered (R28)
REGISTER_RATE = "30/hour"  # P2, per user
TEST_RATE = "5/hour"  # P4, per user
TITLE_MAX = 100
BODY_MAX = 240
DATA_MAX_BYTES = 1024
CHANNEL_MAX = 32
MESSAGE_MAX_BYTES = 4096  # each message's JSON (R29)
DEFAULT_EXPIRY = timedelta(minutes=5)
BATCH_WINDOW_S = 0.5  # R30
BATCH_MAX = 100
RATE_EXCEEDED_RETRY_S = 2.0  # R32: MessageRateExceeded is retried once, after 2 s
RECEIPTS_EVERY_S = 300.0  # R33
RECEIPT_AFTER = timedelta(minutes=15)
RECEIPT_GIVE_UP = timedelta(hours=24)
TICKET_RETENTION = timedelta(days=2)
RECEIPTS_PER_SWEEP = 3000
PUSH_TOPIC = "internal:push"  # no socket ever subscribes to it
CURSOR_KEY = "push:cursor"
CURSOR_TTL_S = 86_400
CURSOR_SAVE_EVERY_S = 1.0
READ_BLOCK_MS = 1000
UNHEALTHY_ERRORS = frozenset({"InvalidCredentials", "MismatchSenderId"})
TEST_ERRORS = frozenset(
    {"DeviceNotRegistered", "MessageTooBig", "MessageRateExceeded", "InvalidCredentials"}
)
TEST_MESSAGES = {
    "en": ("Anilay", "Test notification: push works on this device."),
    "ru": ("Anilay", "Тестовое уведомление: push на этом устройстве работает."),
}

Platform = Literal["ios", "android"]
Priority = Literal["default", "high"]

# --- tables --------------------------------------------------------------------------------

push_tokens = sa.Table(
    "push_tokens",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("session_id", sa.BigInteger, nullable=True, index=True),
    sa.Column("token", sa.String(256), nullable=False, unique=True),
    sa.Column("platform", sa.String(8), nullable=False),
    sa.Column("device_name", sa.String(64), nullable=True),
    sa.Column("app_version", sa.String(32), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_registered_at", UTCDateTime, nullable=False),
    sa.Column("last_sent_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.String(64), nullable=True),
    # Serves "tokens of a user" and the eviction order (R28).
    sa.Index("ix_push_tokens_user_id_last_registered_at", "user_id", "last_registered_at"),
)

push_tickets = sa.Table(
    "push_tickets",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("push_id", sa.BigInteger, nullable=False),
    sa.Column("token_id", sa.BigInteger, nullable=False),
    sa.Column("receipt_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(8), nullable=False),  # pending, sent, error
    sa.Column("error", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("checked_at", UTCDateTime, nullable=True),
    # The at-most-once guard (R31).
    sa.UniqueConstraint("push_id", "token_id"),
    sa.Index("ix_push_tickets_status_created_at", "status", "created_at"),
    sa.Index("ix_push_tickets_created_at", "created_at"),
)
