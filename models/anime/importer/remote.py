"""Remote pulls from a Shikimori-compatible API, politely (R7): a User-Agent naming the
application, at most 5 requests/s and 90 requests/min, 429 and Retry-After honoured with
exponential backoff. Never called from an HTTP request path.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from models.anime.catalog_tables import (
    anime,
)
from models.anime.importer.records import (
    BATCH_SIZE,
    ImportReport,
    is_int,
    log,
)
from models.anime.importer.writes import import_records
from server.cache import Cache
from server.db import Database


@dataclasses.dataclass(frozen=True)
class RemoteLimits:
    """Shikimori's published limits for API clients, and how to back off."""

    per_second: int = 5
    per_minute: int = 90
    second_s: float = 1.0
    minute_s: float = 60.0
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    timeout_s: float = 30.0


class RemoteError(RuntimeError):
    """The source refused or kept failing; the pull stops (politely) with what it has."""


PACING_MARGIN_S = 0.002


class Pacer:
    """Spaces request starts so that no window of `second_s` holds more than `per_second`
    and no window of `minute_s` more than `per_minute` (sliding windows)."""

    def __init__(
        self,
        limits: RemoteLimits,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self._starts: collections.deque[float] = collections.deque()

    def _delay(self, now: float) -> float:
        limits = self.limits
        while self._starts and self._starts[0] <= now - limits.minute_s:
            self._starts.popleft()
        delay = 0.0
        if len(self._starts) >= limits.per_minute:
            delay = self._starts[-limits.per_minute] + limits.minute_s - now
        if len(self._starts) >= limits.per_second:
            delay = max(delay, self._starts[-limits.per_second] + limits.second_s - now)
        return delay

    async def wait(self) -> None:
        while (delay := self._delay(self._clock())) > 0:
            # A little past the window edge: never exactly on it, whatever the float rounding.
            await self._sleep(delay + PACING_MARGIN_S)
        self._starts.append(self._clock())


def retry_after_s(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def user_agent(version: str) -> str:
    return f"Anilay/{version}"


class ShikimoriClient:
    """A polite client for a Shikimori-compatible API (anime.md R7)."""

    def __init__(
        self,
        base_url: str,
        *,
        version: str,
        limits: RemoteLimits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limits = limits or RemoteLimits()
        self.pacer = Pacer(self.limits, sleep=sleep)
        self._sleep = sleep
        self.requests = 0
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"User-Agent": user_agent(version), "Accept": "application/json"},
            timeout=self.limits.timeout_s,
            transport=transport,
            follow_redirects=True,
        )

    async def __aenter__(self) -> ShikimoriClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    def _backoff(self, attempt: int) -> float:
        return min(self.limits.backoff_max_s, self.limits.backoff_base_s * 2**attempt)

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The decoded body, or None for a 404. Retries 429 (waiting at least Retry-After),
        5xx and network errors with exponential backoff; RemoteError when it gives up."""
        last = "no attempt"
        for attempt in range(self.limits.max_retries + 1):
            await self.pacer.wait()
            self.requests += 1
            try:
                response = await self._http.get(path, params=params)
            except httpx.HTTPError as error:
                last = f"{error.__class__.__name__}: {error}"
                await self._sleep(self._backoff(attempt))
                continue
            if response.status_code == 404:
                return None
            if response.status_code == 429:
                wait = max(
                    retry_after_s(response.headers.get("retry-after")) or 0.0,
                    self._backoff(attempt),
                )
                last = "429 Too Many Requests"
                log.info("shikimori asked us to slow down; waiting %.1f s", wait)
                await self._sleep(wait)
                continue
            if response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                await self._sleep(self._backoff(attempt))
                continue
            if response.status_code >= 400:
                raise RemoteError(f"GET {path}: HTTP {response.status_code}")
            try:
                return response.json()
            except ValueError:
                raise RemoteError(f"GET {path}: the body is not JSON") from None
        raise RemoteError(f"GET {path}: gave up after {self.limits.max_retries + 1} tries ({last})")

    async def anime(
        self, anime_id: int, *, related: bool = True, similar: bool = True
    ) -> dict[str, Any] | None:
        """One title with its sub-resources (screenshots and videos are fetched only when
        the detail does not already carry them)."""
        record = await self.get_json(f"/api/animes/{anime_id}")
        if record is None:
            return None
        if not isinstance(record, dict):
            raise RemoteError(f"GET /api/animes/{anime_id}: not an object")
        if related:
            record["related"] = await self.get_json(f"/api/animes/{anime_id}/related") or []
        if similar:
            record["similar"] = await self.get_json(f"/api/animes/{anime_id}/similar") or []
        for name in ("screenshots", "videos"):
            if name not in record:
                record[name] = await self.get_json(f"/api/animes/{anime_id}/{name}") or []
        return record

    async def page_ids(self, page: int, limit: int = 50) -> list[int]:
        """The ids on one browse page, in id order (so pages are stable while walking)."""
        items = await self.get_json("/api/animes", {"page": page, "limit": limit, "order": "id"})
        if not isinstance(items, list):
            return []
        return [item["id"] for item in items if isinstance(item, dict) and is_int(item.get("id"))]


async def local_ids(
    db: Database,
    *,
    statuses: Sequence[str] = (),
    imported_before: datetime | None = None,
) -> list[int]:
    """Ids to refresh: titles in these statuses (`ongoing` mode: anons and ongoing), or
    not written by an import since `imported_before` (`stale` mode)."""
    query = sa.select(anime.c.id).where(anime.c.origin == "shikimori").order_by(anime.c.id)
    if statuses:
        query = query.where(anime.c.status.in_(list(statuses)))
    if imported_before is not None:
        query = query.where(anime.c.imported_at < imported_before)
    return [row["id"] for row in await db.fetch_all(query)]


async def pull_remote(
    db: Database,
    base_url: str,
    *,
    version: str,
    ids: Sequence[int] = (),
    pages: int = 0,
    cache: Cache | None = None,
    force_ids: Iterable[int] = (),
    limits: RemoteLimits | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    progress: Callable[[ImportReport], Awaitable[Any]] | None = None,
) -> ImportReport:
    """Pull `ids`, and/or every id on browse pages 1..`pages`, then upsert them 500 at a time.

    Network and database work never overlap in one transaction: records are fetched first,
    then each batch is written in its own transaction. When the source keeps refusing, the
    pull stops and reports what it stored.
    """
    report = ImportReport()
    wanted = list(dict.fromkeys(ids))
    pending: list[tuple[str, Any]] = []
    async with ShikimoriClient(
        base_url, version=version, limits=limits, transport=transport, sleep=sleep
    ) as client:
        try:
            for page in range(1, pages + 1):
                page_ids = await client.page_ids(page)
                wanted.extend(i for i in page_ids if i not in wanted)
                if not page_ids:
                    break
            for anime_id in wanted:
                record = await client.anime(anime_id)
                if record is None:
                    report.total += 1
                    report.malformed += 1
                    report.problem(f"id {anime_id}", "not found at the source")
                    continue
                pending.append((f"id {anime_id}", record))
                if len(pending) >= BATCH_SIZE:
                    await import_records(
                        db,
                        pending,
                        cache=cache,
                        force_ids=force_ids,
                        image_base=base_url,
                        report=report,
                    )
                    pending.clear()
                    if progress is not None:
                        await progress(report)
        except RemoteError as error:
            report.problem(base_url, str(error))
        finally:
            report.requests = client.requests
    if pending:
        await import_records(
            db, pending, cache=cache, force_ids=force_ids, image_base=base_url, report=report
        )
    return report
