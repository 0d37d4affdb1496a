"""The data of every domain. Importing this package registers every table on the one
MetaData (server.db.metadata) that migrations and tests compare against, and every job
and hook the domains declare at import time."""

from models import (  # noqa: F401
    api_keys,
    exports,
    mail,
    oauth,
    privacy,
    push,
    user_settings,
    users,
)
from models.anime import catalog_tables, collections, comments, lists  # noqa: F401
from models.auth import accounts, tables  # noqa: F401
from server import bus, jobs, tokens  # noqa: F401  (platform tables: outbox, jobs, keys)
