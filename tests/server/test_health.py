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
