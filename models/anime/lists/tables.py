"""The watch-list tables (anime.md §2 Data) and the constants of its rules.

Every list query has an index that serves it: L1's orders (`updated` = rev, `added` = id,
`score`, `episodes`) each have a (user_id, key DESC, ...) index, with a status-first twin for
the common `updated` + status filter; `title` joins the catalog and sorts the caller's rows
(bounded by the list, read through the user_id prefix of the unique key). L7 reads history by
(user_id, id) and (user_id, anime_id, id); CT9 counts by (anime_id, status).
"""

from __future__ import annotations

import sqlalchemy as sa

from server.db import UTCDateTime, metadata

STATUSES = ("planned", "watching", "rewatching", "completed", "on_hold", "dropped")
HISTORY_ACTIONS = ("add", "status", "score", "episodes", "rewatches", "text", "delete", "import")
IMPORT_FORMATS = ("mal_xml", "shikimori_json")
IMPORT_MODES = ("add_only", "overwrite")
IMPORT_STATES = ("queued", "running", "done", "failed")
IMPORT_IN_PROGRESS = ("queued", "running")

# N1 ranges.
SCORE_MAX = 10
EPISODES_MAX = 9999
REWATCHES_MAX = 999
TEXT_MAX = 4096

# Limits and windows.
WRITE_RATE = "60/minute"  # L3-L5 together, per user
IMPORT_RATE = "5/hour"
EXPORT_RATE = "10/hour"
CAS_ATTEMPTS = 3  # R10: a lost compare-and-swap is retried this many times, then 409
EPISODE_ATTEMPTS = 6  # L5: status transitions a racing increment can meet, with margin
HISTORY_RETENTION_DAYS = 365
IDEMPOTENCY_RETENTION_HOURS = 24
IDEMPOTENCY_KEY_MAX = 255

IMPORT_WIRE_MAX = 5 * 1024 * 1024
IMPORT_DECOMPRESSED_MAX = 25 * 1024 * 1024
IMPORT_ENTRIES_MAX = 20_000
IMPORT_BATCH = 500  # R13: entries per transaction
IMPORT_PROBLEMS_MAX = 100
IMPORT_JOB_KIND = "anime_list.import"

anime_list_entry = sa.Table(
    "anime_list_entry",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("anime_id", sa.Integer, sa.ForeignKey("anime.id"), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("score", sa.SmallInteger, nullable=False),
    sa.Column("episodes", sa.SmallInteger, nullable=False),
    sa.Column("rewatches", sa.SmallInteger, nullable=False),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("started_on", sa.Date, nullable=True),
    sa.Column("completed_on", sa.Date, nullable=True),
    sa.Column("rev", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("user_id", "anime_id"),
    sa.Index("ix_anime_list_entry_anime_id_status", "anime_id", "status"),
)
_entry = anime_list_entry.c
sa.Index("ix_anime_list_entry_user_id_rev", _entry.user_id, _entry.rev.desc())
sa.Index("ix_anime_list_entry_user_id_status_rev", _entry.user_id, _entry.status, _entry.rev.desc())
sa.Index("ix_anime_list_entry_user_id_id", _entry.user_id, _entry.id.desc())
sa.Index(
    "ix_anime_list_entry_user_id_score_id", _entry.user_id, _entry.score.desc(), _entry.id.desc()
)
sa.Index(
    "ix_anime_list_entry_user_id_episodes_id",
    _entry.user_id,
    _entry.episodes.desc(),
    _entry.id.desc(),
)

anime_list_history = sa.Table(
    "anime_list_history",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("anime_id", sa.Integer, nullable=False),
    sa.Column("action", sa.String(10), nullable=False),
    sa.Column("before", sa.JSON, nullable=True),
    sa.Column("after", sa.JSON, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
_history = anime_list_history.c
sa.Index("ix_anime_list_history_user_id_id", _history.user_id, _history.id.desc())
sa.Index(
    "ix_anime_list_history_user_id_anime_id_id",
    _history.user_id,
    _history.anime_id,
    _history.id.desc(),
)

anime_list_import = sa.Table(
    "anime_list_import",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(10), nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("added", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("skipped", sa.Integer, nullable=False),
    sa.Column("problems", sa.JSON, nullable=False),
    # The parsed rows, waiting for the job; cleared when it finishes.
    sa.Column("entries", sa.JSON, nullable=True),
    # How many parsed rows the job has applied (batches are committed one by one).
    sa.Column("applied", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    # One import queued or running per user: of two concurrent L8s, one insert wins.
    sa.Index(
        "uq_anime_list_import_user_id_in_progress",
        "user_id",
        unique=True,
        postgresql_where=sa.text("state IN ('queued', 'running')"),
        sqlite_where=sa.text("state IN ('queued', 'running')"),
    ),
)

sa.Index(
    "ix_anime_list_import_user_id_id", anime_list_import.c.user_id, anime_list_import.c.id.desc()
)

# L5's Idempotency-Key: the first successful response, replayed for a repeat (DESIGN).
anime_list_idempotency = sa.Table(
    "anime_list_idempotency",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key", sa.String(IDEMPOTENCY_KEY_MAX), primary_key=True),
    sa.Column("request", sa.String(64), nullable=False),  # what the key was used for
    sa.Column("status", sa.SmallInteger, nullable=True),  # null until the response is stored
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_anime_list_idempotency_created_at", "created_at"),
)
