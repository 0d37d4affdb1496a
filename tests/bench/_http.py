"""Shared pieces of the REST benchmarks (not a benchmark: `make bench` skips `_*.py`).

`rest_overhead.py`, `catalog.py` and `rest_inprocess.py` compare our HTTP stack with a bare
Starlette app; the apps, the uvicorn settings, the pinned server subprocesses and the
HTTP/1.1 load generator live here once, so that their numbers stay comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 30.0
CPUS = sorted(os.sched_getaffinity(0))
PINNED = len(CPUS) >= 2
SERVER_CPUS, LOAD_CPUS = set(CPUS[:1]), set(CPUS[1:])

# What makes a response count as served: a predicate on its head and its body.
Check = Callable[[bytes, bytes], bool]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run the benchmark's coroutine on uvloop when it is installed, as the servers do."""
    if installed("uvloop"):
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def settings_line(connections: int, rounds: int, seconds: float, warmup_s: float) -> str:
    """The uvicorn settings, the load and where everything runs: the run's second line."""
    import uvicorn

    return (
        f"uvicorn {uvicorn.__version__}, loop {'uvloop' if installed('uvloop') else 'asyncio'}, "
        f"http {'httptools' if installed('httptools') else 'h11'}, 1 worker each; "
        f"{connections} keep-alive connections, {rounds} rounds of {seconds:g} s "
        f"(+{warmup_s:g} s warm-up); "
        + (
            f"servers on CPU {min(SERVER_CPUS)}, load generator on CPU "
            + ",".join(map(str, sorted(LOAD_CPUS)))
            if PINNED
            else "one CPU shared by server and load generator"
        )
    )


# --- the apps ----------------------------------------------------------------------------


def bare_app(path: str):
    """A Starlette app whose one route, GET `path`, returns `{"status": "ok"}` as JSON."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def live(request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route(path, live, methods=["GET"])])


def our_app(database_url: str):
    """`create_app` on a scratch SQLite database, access log off, log level warning."""
    from server.app import create_app
    from server.settings import Settings

    # The key-encryption key file goes beside the scratch database, not into ./var.
    key_file = os.path.join(os.path.dirname(database_url.split("///", 1)[1]), "kek")
    return create_app(
        Settings(
            database_url=database_url,
            access_log=False,
            log_level="warning",
            key_encryption_key_file=key_file,
        )
    )


def uvicorn_run(app, port: int) -> None:
    """The one uvicorn configuration every benchmarked server runs under (the gateway
    benchmarks too). ANILAY_BENCH_WS picks another of uvicorn's websocket implementations
    than the product's, to compare them."""
    import uvicorn

    from server.cli import WEBSOCKETS

    uvicorn.run(
        app,
        host=HOST,
        port=port,
        workers=1,
        loop="auto",
        http="auto",
        ws=os.environ.get("ANILAY_BENCH_WS", WEBSOCKETS),
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


# --- the server subprocesses -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start(script: str, kind: str, scratch: str, *arguments: str) -> tuple[subprocess.Popen, int]:
    """`script _serve kind PORT *arguments` in a subprocess, run from the scratch directory
    so it writes nothing in the repo, on the server CPU; and the port it listens on."""
    port = free_port()
    command = [sys.executable, script, "_serve", kind, str(port), *arguments]
    process = subprocess.Popen(command, cwd=scratch)
    if PINNED:
        os.sched_setaffinity(process.pid, SERVER_CPUS)
    return process, port


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def get(port: int, path: str) -> tuple[bytes, bytes]:
    """One GET on its own connection: the response's head and body."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def wait_until_up(port: int, path: str, process: subprocess.Popen) -> bytes:
    """Wait until the server answers GET `path` with a 200; that response's body."""
    deadline = time.perf_counter() + STARTUP_TIMEOUT_S
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            head, body = await get(port, path)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        if head.startswith(b"HTTP/1.1 200"):
            return body
        raise RuntimeError(f"server on port {port} answered {head[:80]!r}")
    raise RuntimeError(f"server on port {port} did not start in {STARTUP_TIMEOUT_S:.0f} s")


# --- the load generator ------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0


async def _connection(
    port: int, path: str, check: Check, deadline: float, counting: asyncio.Event, tally: Tally
) -> None:
    """One keep-alive connection sending GETs back to back until the deadline."""
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            good = check(head, body)
            if counting.is_set():
                if good:
                    tally.ok += 1
                else:
                    tally.failed += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def drive(
    port: int, path: str, check: Check, connections: int, warmup_s: float, seconds: float
) -> tuple[float, int]:
    """Requests per second on GET `path` over `seconds`, after `warmup_s` of the same load;
    and how many responses failed `check`."""
    tally = Tally()
    counting = asyncio.Event()
    deadline = time.perf_counter() + warmup_s + seconds
    tasks = [
        asyncio.create_task(_connection(port, path, check, deadline, counting, tally))
        for _ in range(connections)
    ]
    await asyncio.sleep(warmup_s)
    counting.set()
    measured_from = time.perf_counter()
    await asyncio.gather(*tasks)
    return tally.ok / (time.perf_counter() - measured_from), tally.failed
