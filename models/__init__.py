"""The data of every domain. Importing this package registers every table on the one
MetaData (server.db.metadata) that migrations and tests compare against."""

from models import api_keys, exports, mail, oauth, privacy, push, user_settings, users  # noqa: F401  # noqa: F401  (users.md tables, export job)
from models.anime import (  # noqa: F401  (anime.md §3, §4: tables, jobs)
    catalog_tables,
    collections,
    comments,
    lists,
)
from models.auth import accounts, tables  # noqa: F401  (accounts registers its jobs)
from server import bus, jobs, tokens  # noqa: F401  (platform tables: outbox, jobs, keys)
