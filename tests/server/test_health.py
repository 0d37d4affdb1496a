"""Health probes (platform.md H1, H2, R1, R2, R4)."""

from __future__ import annotations


async def test_live_answers_ok_without_touching_anything(client):
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


async def test_ready_reports_each_dependency(client, live):
    response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    expected_redis = "ok" if live.settings.redis_url else "skipped"
    assert body["checks"]["redis"] == expected_redis


async def test_unknown_method_on_a_probe_is_405_problem(client):
    response = await client.post("/health/live")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method_not_allowed"


async def test_details_are_for_staff_only(client, live):
    from tests.factories import register

    assert (await client.get("/health/details")).status_code == 401
    account = await register(client)
    response = await client.get("/health/details", headers=account.headers)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


async def test_details_describe_every_part_and_leak_no_secret(client, live):
    from tests.factories import make_staff, register

    account = await register(client)
    await make_staff(live.services, account.id, "moderator")
    response = await client.get("/health/details", headers=account.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["role"] == "all"
    assert body["deployment"] == ("scale_out" if live.settings.redis_url else "embedded")
    checks = body["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["database"]["dialect"] == live.services.db.dialect
    assert checks["database"]["schema_revision"] == checks["database"]["expected_revision"]
    assert checks["bus"]["status"] == "ok" and checks["bus"]["pending"] == 0
    assert {"outbox", "jobs"} <= {s["name"] for s in checks["sweepers"]}
    assert checks["signing_keys"]["active_kid"] == live.services.keys.active_kid
    assert checks["push"]["status"] in ("ok", "unhealthy")
    text = response.text
    secrets = [
        live.settings.database_url,
        live.settings.key_encryption_key,
        "127.0.0.1",
        "postgres@",
        "redis://",
    ]
    if live.settings.redis_url:
        secrets.append(live.settings.redis_url)
    for secret in secrets:
        assert secret not in text


async def test_timed_sweeps_run_in_production_and_stay_off_in_tests(backend, live):
    """The test server runs each clock-driven sweep by hand; production runs them on timers."""
    import asyncio

    from tests.conftest import start_live_server, stop_live_server

    timed = {"account_deletion", "export_expiry", "push_receipts", "api_keys", "anime_list_sweep"}
    assert not timed & set(live.services.sweepers)
    assert "presence_expiry" in live.services.sweepers
    production = await start_live_server(backend.replace(timed_sweeps=True))
    try:
        async with asyncio.timeout(5):
            while not timed <= set(production.services.sweepers):
                await asyncio.sleep(0.02)
    finally:
        await stop_live_server(production)
