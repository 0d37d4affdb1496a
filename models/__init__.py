"""The data of every domain. Importing this package registers every table on the one
MetaData (server.db.metadata) that migrations and tests compare against."""

from models import api_keys, mail, oauth, push, users  # noqa: F401
from models.auth import accounts, tables  # noqa: F401  (accounts registers its jobs)
from models import exports, privacy, user_settings  # noqa: F401  (users.md tables, export job)
from models.anime import catalog_tables  # noqa: F401  (anime.md: catalog, lists, ...)
from models.anime import lists  # noqa: F401  (anime.md §2: list tables, import job, hooks)
from models.anime import collections, comments  # noqa: F401  (anime.md §3, §4: tables, jobs)
from server import bus, jobs, tokens  # noqa: F401  (platform tables: outbox, jobs, keys)
