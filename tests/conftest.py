"""Test fixtures: every storage test runs on both engines, against a real server.

- `embedded`: SQLite file + in-process log, cache and rate limits.
- `scaleout`: PostgreSQL + Redis (database `anilay_test`, Redis db 15).

`live` is a real uvicorn serving `create_app(settings)` on a free port inside the test
event loop, so a test talks to it over real HTTP and Socket.IO and can still look at the
same process's services (its database, its event log) directly.

Without PostgreSQL or Redis the scale-out engine is skipped, loudly; with CI=true that is
a failure: CI must never silently test one engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
import uvicorn

import models  # noqa: F401
from server.app import Application, create_app
from server.cache import InProcessCache
from server.cli import WEBSOCKETS
from server.db import metadata
from server.events import LoggedEvent
from server.migrate import upgrade_async
from server.services import Services
from server.settings import Settings
from tests.support.net import tcp_listener

PG_ADMIN_URL = os.environ.get(
    "ANILAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_TEST_DB = os.environ.get("ANILAY_TEST_POSTGRES_DB", "anilay_test")
REDIS_TEST_URL = os.environ.get("ANILAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ALL_BACKENDS = ("embedded", "scaleout")
TEST_KEY_ENCRYPTION_KEY = "dGVzdC1vbmx5LWtleS1lbmNyeXB0aW9uLWtleS0zMmI"  # 32 bytes, tests only


def _wanted_backends() -> tuple[str, ...]:
    raw = os.environ.get("ANILAY_TEST_BACKENDS", ",".join(ALL_BACKENDS))
    return tuple(b.strip() for b in raw.split(",") if b.strip() in ALL_BACKENDS)


def pg_url(database: str = PG_TEST_DB) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


async def _probe_scaleout() -> str | None:
    """None when PostgreSQL and Redis answer; otherwise why not."""
    try:
        connection = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        await connection.close()
    except Exception as error:  # any failure means "not available"
        return f"PostgreSQL unreachable ({error.__class__.__name__}: {error})"
    client = aioredis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as error:
        return f"Redis unreachable ({error.__class__.__name__}: {error})"
    finally:
        await client.aclose()
    return None


def pytest_configure(config: pytest.Config) -> None:
    wanted = _wanted_backends()
    reason = asyncio.run(_probe_scaleout()) if "scaleout" in wanted else "not requested"
    config._anilay_scaleout_missing = reason if "scaleout" in wanted else None  # type: ignore[attr-defined]
    config._anilay_backends = wanted  # type: ignore[attr-defined]
    if reason and "scaleout" in wanted and IN_CI:
        raise pytest.UsageError(f"CI=true but the PostgreSQL + Redis engine cannot run: {reason}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    missing = getattr(config, "_anilay_scaleout_missing", None)
    backends = getattr(config, "_anilay_backends", ALL_BACKENDS)
    if "scaleout" not in backends:
        terminalreporter.write_line(
            "ENGINES: PostgreSQL + Redis NOT RUN (ANILAY_TEST_BACKENDS excludes it)", yellow=True
        )
    elif missing:
        terminalreporter.write_line(
            f"ENGINES: PostgreSQL + Redis NOT RUN: {missing}. Only SQLite was tested.", red=True
        )
    else:
        terminalreporter.write_line(
            "ENGINES: SQLite + in-process and PostgreSQL + Redis both run", green=True
        )


def base_settings(**overrides) -> Settings:
    """Production settings with test costs lowered (argon2; a production-values test exists)."""
    values = dict(
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        access_log=False,
        worker_id=1,
        outbox_poll_s=0.05,
        jobs_poll_s=0.05,
        timed_sweeps=False,  # tests run each sweep right after they move its clock
        environment="test",
        key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
        host="127.0.0.1",
        port=0,
    )
    values.update(overrides)
    return Settings(**values)


async def _fresh_postgres() -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
            "AND pid <> pg_backend_pid()",
            PG_TEST_DB,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{PG_TEST_DB}"')
        await admin.execute(f'CREATE DATABASE "{PG_TEST_DB}"')
    finally:
        await admin.close()


@pytest.fixture(scope="session", params=ALL_BACKENDS)
async def backend(request, tmp_path_factory) -> Settings:
    """Settings for one engine, with a freshly migrated database."""
    name = request.param
    if name not in request.config._anilay_backends:
        pytest.skip(f"{name} engine not requested")
    if name == "embedded":
        path = tmp_path_factory.mktemp("db") / "anilay.db"
        settings = base_settings(database_url=f"sqlite+aiosqlite:///{path}")
    else:
        if request.config._anilay_scaleout_missing:
            pytest.skip(request.config._anilay_scaleout_missing)
        await _fresh_postgres()
        client = aioredis.Redis.from_url(REDIS_TEST_URL)
        await client.flushdb()
        await client.aclose()
        settings = base_settings(
            database_url=pg_url().replace("postgresql://", "postgresql+asyncpg://"),
            redis_url=REDIS_TEST_URL,
        )
    await upgrade_async(settings.database_url)
    return settings


@dataclass
class LiveServer:
    url: str
    app: Application
    server: uvicorn.Server
    task: asyncio.Task

    @property
    def services(self) -> Services:
        return self.app.services

    @property
    def settings(self) -> Settings:
        return self.app.services.settings

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


async def start_live_server(settings: Settings, app: Application | None = None) -> LiveServer:
    app = app or create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        ws=WEBSOCKETS,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    sock = tcp_listener()
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError("live server did not start")
    return LiveServer(url=f"http://127.0.0.1:{port}", app=app, server=server, task=task)


async def stop_live_server(live: LiveServer) -> None:
    live.server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(live.task, 10)


@pytest.fixture(scope="session")
async def _server(backend: Settings) -> AsyncIterator[LiveServer]:
    live = await start_live_server(backend)
    yield live
    await stop_live_server(live)


KEEP_TABLES = frozenset({"signing_keys"})


async def _table_names(services: Services) -> set[str]:
    if services.db.dialect == "postgresql":
        query = "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {row["name"] for row in await services.db.fetch_all(query)}


async def reset_state(services: Services) -> None:
    """Empty every table and the engine's shared state, so tests cannot see each other."""
    # Signing keys are process state (the running server holds them): keep them. Only
    # tables that exist are emptied (the migration test proves they all do once merged).
    existing = await _table_names(services)
    tables = [
        t
        for t in reversed(metadata.sorted_tables)
        if t.name not in KEEP_TABLES and t.name in existing
    ]
    if services.db.dialect == "postgresql":
        if tables:
            names = ", ".join(f'"{t.name}"' for t in tables)
            await services.db.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    else:
        for table in tables:
            await services.db.execute(sa.delete(table))
    if services.redis is not None:
        keys = [k async for k in services.redis.scan_iter(match="anilay:rl*")]
        keys += [k async for k in services.redis.scan_iter(match="anilay:cache:*")]
        if keys:
            await services.redis.delete(*keys)
    if isinstance(services.cache, InProcessCache):
        services.cache._entries.clear()
    await services.limiter.reset()
    services.bus.outbox_pending = False


@pytest.fixture
async def live(_server: LiveServer) -> LiveServer:
    await reset_state(_server.services)
    return _server


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url + "/api/v1", timeout=10) as http:
        yield http


class EventCapture:
    """The events appended to the log after a point in time, read back from the log itself."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.start = "0-0"

    async def __aenter__(self) -> EventCapture:
        self.start = await self.services.log.last_id()
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    async def events(self) -> list[LoggedEvent]:
        return await self.services.log.read_after(self.start, count=10_000)


@pytest.fixture
def capture(live: LiveServer):
    return lambda: EventCapture(live.services)
