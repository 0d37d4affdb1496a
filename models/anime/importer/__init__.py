"""The catalog importer (anime.md §1 Importer, R6, R7).

It reads Shikimori's API format — anime objects shaped like `GET /api/animes/:id`,
optionally carrying `related`, `similar`, `screenshots` and `videos` shaped like the
matching sub-resources — from a JSON file, a directory of them, or a Shikimori-compatible
base URL, and upserts them by id:

- the same input twice leaves identical rows and bumps `catalog_meta.version` only the
  first time (a row, a child set or a genre/studio is written only when it differs);
- a record older (`updated_at`) than the stored `source_updated_at` is skipped;
- keys absent from a record keep their stored values;
- fields named in the row's `locked_fields` (admin.md A15) are never overwritten;
- ids in `anime_tombstones` are skipped unless named in `force_ids` (admin.md A17 `force`);
- `related`, `similar`, `screenshots`, `videos`, `genres` and `studios`, when present,
  replace the stored set;
- a malformed record is reported and skipped; records are written 500 per transaction,
  and a batch whose transaction fails is retried record by record, so one bad row costs
  only itself.

A remote pull (`pull_remote`) never runs inside an HTTP request: the CLI and admin.md's
import job call it. It sends `User-Agent: Anilay/<version>`, paces itself to 5 requests/s
and 90 requests/min, and on 429 waits for `Retry-After` (at least) with exponential
backoff. Unknown ids are never fetched through on a read (R7): they are 404 locally.

Modules: `records` (parse one Shikimori object; the report), `writes` (batches, R6),
`sources` (files, directories, the demo catalog), `remote` (pulls, R7), `command` (the CLI).
"""

from models.anime.importer.command import run_import_command
from models.anime.importer.records import (
    BATCH_SIZE,
    DEFAULT_IMAGE_BASE,
    LOCK_TARGETS,
    ImportReport,
    Malformed,
    Problem,
    Record,
    parse_record,
    season_of,
    strip_bbcode,
)
from models.anime.importer.remote import (
    Pacer,
    RemoteError,
    RemoteLimits,
    ShikimoriClient,
    local_ids,
    pull_remote,
    retry_after_s,
    user_agent,
)
from models.anime.importer.sources import (
    DEMO_CATALOG,
    demo_records,
    import_path,
    load_demo_catalog,
    read_path,
    seed_demo_catalog,
)
from models.anime.importer.writes import import_records

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_IMAGE_BASE",
    "DEMO_CATALOG",
    "LOCK_TARGETS",
    "ImportReport",
    "Malformed",
    "Pacer",
    "Problem",
    "Record",
    "RemoteError",
    "RemoteLimits",
    "ShikimoriClient",
    "demo_records",
    "import_path",
    "import_records",
    "load_demo_catalog",
    "local_ids",
    "parse_record",
    "pull_remote",
    "read_path",
    "retry_after_s",
    "run_import_command",
    "season_of",
    "seed_demo_catalog",
    "strip_bbcode",
    "user_agent",
]
