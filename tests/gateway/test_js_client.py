"""The official JavaScript client (socket.io-client 4.x) connects, receives READY and an
event, and resumes (issue: gateway core). Its node_modules come from ANILAY_TEST_NODE_MODULES
(.ci/run installs it outside the repository); without it the test is skipped, except in CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.factories import register
from tests.gateway.conftest import publish

SCRIPT = Path(__file__).with_name("js") / "resume_client.js"
NODE_MODULES = os.environ.get("ANILAY_TEST_NODE_MODULES", "")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _available() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not NODE_MODULES or not (Path(NODE_MODULES) / "socket.io-client").is_dir():
        return "ANILAY_TEST_NODE_MODULES does not hold socket.io-client"
    return None


@pytest.fixture
def node_client():
    missing = _available()
    if missing and IN_CI:
        pytest.fail(f"CI must run the JavaScript client test: {missing}")
    if missing:
        pytest.skip(missing)


async def read_json(process) -> dict:
    async with asyncio.timeout(10):
        line = await process.stdout.readline()
    assert line, (await process.stderr.read()).decode()
    return json.loads(line)


async def test_the_javascript_client_gets_ready_an_event_and_resumes(node_client, client, live):
    account = await register(client)
    topic = f"user:{account.id}"
    process = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        live.url,
        account.access_token,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": NODE_MODULES},
    )
    try:
        assert "ready" in await read_json(process)
        await asyncio.sleep(0.1)
        await publish(live.services, 1, topic)
        assert (await read_json(process))["event"] == 1
        assert await read_json(process) == {"disconnected": True}
        await publish(live.services, 2, topic)
        await publish(live.services, 3, topic)
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        assert await read_json(process) == {"resumed": 2, "replayed_events": [2, 3]}
        assert await asyncio.wait_for(process.wait(), 5) == 0
    finally:
        if process.returncode is None:
            process.kill()
