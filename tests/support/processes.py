"""Real `anilay serve` processes for tests of what only a process can show: SIGTERM
draining, kill -9, several gateways behind one Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from dataclasses import dataclass

import httpx

from tests.conftest import TEST_KEY_ENCRYPTION_KEY

STARTUP_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.process.kill()

    async def wait(self, within_s: float = 15.0) -> int:
        return await asyncio.wait_for(self.process.wait(), within_s)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def start_server(
    database_url: str, *, role: str = "all", redis_url: str | None = None, **env: str
) -> ServerProcess:
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ANILAY_PORT": str(port),
        "ANILAY_ROLE": role,
        "ANILAY_ENV": "test",
        "ANILAY_ARGON2_TIME_COST": "1",
        "ANILAY_ARGON2_MEMORY_KIB": "1024",
        "ANILAY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY,
        "ANILAY_ACCESS_LOG": "0",
        "ANILAY_LOG_LEVEL": "warning",
        **env,
    }
    environment.pop("REDIS_URL", None)
    if redis_url:
        environment["REDIS_URL"] = redis_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    server = ServerProcess(process, port)
    async with httpx.AsyncClient(base_url=server.url, timeout=1) as http:
        deadline = asyncio.get_running_loop().time() + STARTUP_S
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if (await http.get("/api/v1/health/live")).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                await server.stop()
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.1)
