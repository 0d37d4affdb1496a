"""What only real processes show: draining on SIGTERM, and several gateway processes
behind one log where killing one loses nothing (gateway.md "Delivery across processes",
G10)."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from tests.factories import register
from tests.support.processes import start_server
from tests.support.sockets import Recorder


async def socket_on(url: str, token: str, **auth) -> Recorder:
    recorder = Recorder(url)
    await recorder.connect({"token": token, **auth})
    return recorder


async def test_sigterm_drains_sockets_then_exits(tmp_path):
    from server.migrate import upgrade_async

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'drain.db'}"
    await upgrade_async(database_url)
    server = await start_server(database_url, GATEWAY_DRAIN_S="2")
    try:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as http:
            account = await register(http)
            socket = await socket_on(server.url, account.access_token)
            await socket.wait_for("READY")
            server.terminate()
            (reconnect,) = await socket.wait_for("RECONNECT")
            assert 0 <= reconnect["after_ms"] <= 1400
            ready = await http.get("/health/ready")
            assert ready.status_code == 503, "the load balancer must stop sending"
            assert (await http.get("/health/live")).status_code == 200
            refused = Recorder(server.url)
            with pytest.raises(Exception):  # noqa: B017 - socketio's ConnectionError
                await refused.connect({"token": account.access_token})
            assert [r["code"] for r in refused.refused] == ["draining"]
            await socket.close()
        assert await server.wait(10) is not None
    finally:
        await server.stop()


@pytest.fixture
async def shared_backend(request):
    if request.config._anilay_scaleout_missing:
        pytest.skip(request.config._anilay_scaleout_missing)
    import asyncpg
    import redis.asyncio as aioredis

    from server.migrate import upgrade_async
    from tests.conftest import PG_ADMIN_URL, PG_TEST_DB, REDIS_TEST_URL, pg_url

    name = PG_TEST_DB + "_procs"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    database_url = pg_url(name).replace("postgresql://", "postgresql+asyncpg://")
    await upgrade_async(database_url)
    spare = os.environ.get("ANILAY_TEST_REDIS_SPARE_DB", "14")  # no live test server uses it
    redis_url = REDIS_TEST_URL.rsplit("/", 1)[0] + "/" + spare
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    return database_url, redis_url


async def test_two_gateways_one_log_and_a_kill_loses_nothing(shared_backend):
    """G10: a client on each gateway receives the same event; kill -9 one gateway
    mid-stream; its client resumes on the other with nothing lost or duplicated."""
    database_url, redis_url = shared_backend
    rest = await start_server(database_url, role="rest", redis_url=redis_url)
    worker = await start_server(database_url, role="worker", redis_url=redis_url)
    first = await start_server(database_url, role="gateway", redis_url=redis_url)
    second = await start_server(database_url, role="gateway", redis_url=redis_url)
    try:
        async with httpx.AsyncClient(base_url=rest.url + "/api/v1") as http:
            account = await register(http)
        on_first = await socket_on(first.url, account.access_token)
        on_second = await socket_on(second.url, account.access_token)
        (ready,) = await on_first.wait_for("READY")
        await on_second.wait_for("READY")

        import redis.asyncio as aioredis

        from server.events import make_event
        from server.log import RedisLog
        from tests.gateway.conftest import PROBE, Probe

        client = aioredis.Redis.from_url(redis_url)
        log = RedisLog(client, 100_000, 300)
        topic = f"user:{account.id}"

        async def emit(n: int) -> None:
            await log.append([make_event(PROBE, Probe(n=n), [topic])])

        for n in range(50):
            await emit(n)
        await on_first.wait_for("TEST_PROBE", 50)
        await on_second.wait_for("TEST_PROBE", 50)
        assert [e["data"]["n"] for e in on_second.of("TEST_PROBE")] == list(range(50))

        streaming = asyncio.create_task(_stream(emit, range(50, 250)))
        await asyncio.sleep(0.05)
        first.kill()  # mid-stream, no goodbye
        await first.wait()
        await on_first.wait_disconnected(timeout=30)
        got = on_first.of("TEST_PROBE")
        resumed = await socket_on(
            second.url,
            account.access_token,
            resume={"session_id": ready["session_id"], "last_event_id": got[-1]["id"]},
        )
        await streaming
        await resumed.wait_for("RESUMED")
        missing = 250 - len(got)
        await resumed.wait_for("TEST_PROBE", missing, timeout=10)
        union = [e["data"]["n"] for e in got] + [e["data"]["n"] for e in resumed.of("TEST_PROBE")]
        assert union == list(range(250)), "nothing lost, nothing twice"
        await on_second.wait_for("TEST_PROBE", 250)
        assert [e["data"]["n"] for e in on_second.of("TEST_PROBE")] == list(range(250))
        await client.aclose()
        for socket in (on_second, resumed):
            await socket.close()
    finally:
        for server in (rest, worker, first, second):
            await server.stop()


async def _stream(emit, numbers) -> None:
    for n in numbers:
        await emit(n)
        await asyncio.sleep(0.002)


async def test_volatile_typing_crosses_gateway_processes_through_redis(client, live, backend):
    """Typing is volatile: not logged, sent through python-socketio's AsyncRedisManager to
    every gateway, so a typer on one process reaches a reader on another."""
    if not live.settings.redis_url:
        pytest.skip("the Redis manager exists only in scale-out")
    from gateway import handlers
    from server.realtime import subscriptions_changed
    from tests.conftest import start_live_server, stop_live_server

    other = await start_live_server(live.settings)
    alice, bob = await register(client), await register(client)

    async def member(services, connection, field, target_id):
        return f"conversation:{target_id}"

    handlers.TYPING_CHECKS["conversation_id"] = member
    try:
        typer = await socket_on(live.url, alice.access_token)
        reader = await socket_on(other.url, bob.access_token)
        await typer.wait_for("READY")
        await reader.wait_for("READY")
        async with live.services.db.transaction() as tx:
            for user in (alice.id, bob.id):
                subscriptions_changed(tx, user, add=["conversation:8"])
        await asyncio.sleep(0.3)
        assert (await typer.emit("typing", {"conversation_id": "8"}))["forwarded"] is True
        (typing,) = await reader.wait_for("TYPING_START")
        assert typing["user_id"] == str(alice.id)
        await typer.close()
        await reader.close()
    finally:
        handlers.TYPING_CHECKS.pop("conversation_id", None)
        await stop_live_server(other)
