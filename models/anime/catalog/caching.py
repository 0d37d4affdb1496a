"""The catalog's server-side cache (anime.md R2) and `catalog_meta.version`.

Every cache key holds the catalog version, so one bump — by an import (R6) or an admin
edit (admin.md A14–A19) — makes every entry miss at once; nothing is deleted. The version
itself is read through the cache for a second (`VERSION_TTL_S`): a bump writes the new
value there after its commit, so this process and every process sharing Redis see it at
once, and a process that cannot see that write (an import run by the CLI against the
embedded in-process cache) sees it within a second.

A cached value is the ETag followed by the body, so a hit is byte-identical to the
response that filled it and costs no hashing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import sqlalchemy as sa

from models.anime.catalog_tables import catalog_meta
from server.cache import Cache
from server.db import Database, Transaction

VERSION_KEY = "catalog:version"
VERSION_TTL_S = 1.0
ETAG_LENGTH = 34  # a quoted 32-digit hex string
MISSING = b"-"  # a cached "no such anime" (404), so unknown ids do not reach the database

# R2 server TTLs, by route group.
TTL_BROWSE_S = 600  # CT1, CT2, CT12
TTL_DETAIL_S = 3600  # CT3–CT8
TTL_STATS_S = 600  # CT9 (not versioned)
TTL_REFERENCE_S = 86_400  # CT10, CT11
TTL_CANDIDATES_S = 600  # CT13's candidate ids


def etag_of(body: bytes) -> str:
    """A strong ETag: the first 128 bits of the body's SHA-256, quoted hex."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def read_version(db: Database) -> int:
    value = await db.fetch_val(sa.select(catalog_meta.c.version).where(catalog_meta.c.id == 1))
    return int(value or 0)


async def current_version(db: Database, cache: Cache) -> int:
    cached = await cache.get(VERSION_KEY)
    if cached is not None:
        return int(cached)
    version = await read_version(db)
    # add, not set: a bump that lands between our read and this write must win.
    await cache.add(VERSION_KEY, str(version).encode(), VERSION_TTL_S)
    return version


async def bump_version(db: Database, tx: Transaction, cache: Cache | None) -> int:
    """Count one change of catalog data inside `tx`; after the commit, publish the new
    version to the cache so every cached catalog response misses at once.

    Every write that changes catalog data calls this (the importer, admin.md A14–A16, A19).
    """
    statement = (
        db.insert(catalog_meta)
        .values(id=1, version=1)
        .on_conflict_do_update(index_elements=["id"], set_={"version": catalog_meta.c.version + 1})
        .returning(catalog_meta.c.version)
    )
    version = int(await db.fetch_val(statement))
    if cache is not None:

        async def publish() -> None:
            await cache.set(VERSION_KEY, str(version).encode(), VERSION_TTL_S)

        tx.on_commit(publish)
    return version


def cache_key(route: str, canonical: str, version: int | None) -> str:
    """route + canonical query + catalog version (None: an unversioned route, CT9)."""
    prefix = f"catalog:v{version}:" if version is not None else "catalog:live:"
    return f"{prefix}{route}?{canonical}"


class Cached:
    """A response body and its ETag, or `missing` for a cached 404."""

    __slots__ = ("body", "etag", "missing")

    def __init__(self, etag: str, body: bytes, missing: bool = False) -> None:
        self.etag = etag
        self.body = body
        self.missing = missing

    @classmethod
    def decode(cls, value: bytes) -> Cached:
        if value == MISSING:
            return cls("", b"", missing=True)
        return cls(value[:ETAG_LENGTH].decode("ascii"), value[ETAG_LENGTH:])

    def encode(self) -> bytes:
        return MISSING if self.missing else self.etag.encode("ascii") + self.body


async def cached(
    cache: Cache,
    key: str,
    ttl_s: float,
    build: Callable[[], Awaitable[bytes | None]],
) -> Cached:
    """The cached response under `key`, or `build()` it (None: not found) and keep it."""
    value = await cache.get(key)
    if value is not None:
        return Cached.decode(value)
    body = await build()
    entry = Cached("", b"", missing=True) if body is None else Cached(etag_of(body), body)
    await cache.set(key, entry.encode(), ttl_s)
    return entry
