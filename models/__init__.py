"""The data of every domain. Importing this package registers every table on the one
MetaData (server.db.metadata) that migrations and tests compare against."""

from server import bus as _platform_tables  # noqa: F401  (the outbox)
