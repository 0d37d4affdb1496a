"""What a cached catalog read costs over a bare Starlette JSON route (anime.md R2).

Two servers run under identical uvicorn settings, each in its own subprocess (one worker,
no access log, log level warning, uvloop/httptools when installed):

- bare: a Starlette app whose route returns `{"status": "ok"}` as JSON — the same baseline
  as `rest_overhead.py` — plus, for reference, routes that re-serialise the very documents
  ours serves (what a naive uncached handler of the same size costs);
- ours: `create_app(Settings(...))` on an embedded SQLite database, migrated and loaded
  with the demo catalog, serving `GET /api/v1/anime/16498` (CT3) and
  `GET /api/v1/anime?kind=tv&order=popularity` (a CT1 page of 20) from its server-side
  cache, with every middleware a real request passes.

Each round drives bare, then ours, over loopback with the same load (keep-alive
connections, one request at a time each, a fixed time after a warm-up); the medians of
the rounds are compared. Targets: detail ≥ 0.6 and browse ≥ 0.3 of the bare route. The
load generator is a minimal HTTP/1.1 client on asyncio streams (a heavier client would
eat the CPU the servers share it with). With two CPUs or more the servers are pinned to
the first and the load generator to the others.

    python tests/bench/catalog.py [--rounds 6] [--seconds 1.5] [--connections 32]

Exits 1 when a ratio is below its target or any response was not a 200 with a body.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DETAIL = "/api/v1/anime/16498"
BROWSE = "/api/v1/anime?kind=tv&order=popularity"
BARE = "/bare/ok"
TARGETS = {"detail": 0.6, "browse": 0.3}
STARTUP_TIMEOUT_S = 30.0
CPUS = sorted(os.sched_getaffinity(0))
PINNED = len(CPUS) >= 2
SERVER_CPUS, LOAD_CPUS = set(CPUS[:1]), set(CPUS[1:])


# --- the servers (run in subprocesses: `catalog.py _serve bare|ours PORT DB_URL`) ---


def bare_app(documents_file: str):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    documents = json.loads(Path(documents_file).read_text(encoding="utf-8"))

    async def ok(request):
        return JSONResponse({"status": "ok"})

    async def same_detail(request):
        return JSONResponse(documents["detail"])

    async def same_browse(request):
        return JSONResponse(documents["browse"])

    return Starlette(
        routes=[
            Route(BARE, ok, methods=["GET"]),
            Route("/bare/detail", same_detail, methods=["GET"]),
            Route("/bare/browse", same_browse, methods=["GET"]),
        ]
    )


def our_app(database_url: str):
    from server.app import create_app
    from server.settings import Settings

    key_file = os.path.join(os.path.dirname(database_url.split("///", 1)[1]), "kek")
    return create_app(
        Settings(
            database_url=database_url,
            access_log=False,
            log_level="warning",
            key_encryption_key_file=key_file,
        )
    )


def serve(kind: str, port: int, argument: str) -> None:
    import uvicorn

    app = bare_app(argument) if kind == "bare" else our_app(argument)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        workers=1,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


# --- the load generator ---


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0


async def _connection(
    port: int, path: str, deadline: float, counting: asyncio.Event, tally: Tally
) -> None:
    """One keep-alive connection sending GETs back to back until the deadline."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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
            good = head.startswith(b"HTTP/1.1 200") and len(body) > 10
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
    port: int, path: str, connections: int, warmup_s: float, seconds: float
) -> tuple[float, int]:
    """Requests per second over `seconds`, after `warmup_s` of the same load; and failures."""
    tally = Tally()
    counting = asyncio.Event()
    deadline = time.perf_counter() + warmup_s + seconds
    tasks = [
        asyncio.create_task(_connection(port, path, deadline, counting, tally))
        for _ in range(connections)
    ]
    await asyncio.sleep(warmup_s)
    counting.set()
    measured_from = time.perf_counter()
    await asyncio.gather(*tasks)
    return tally.ok / (time.perf_counter() - measured_from), tally.failed


# --- orchestration ---


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _get(port: int, path: str) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def _wait_until_up(port: int, path: str, process: subprocess.Popen) -> bytes:
    deadline = time.perf_counter() + STARTUP_TIMEOUT_S
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            head, body = await _get(port, path)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        if head.startswith(b"HTTP/1.1 200"):
            return body
        raise RuntimeError(f"server on port {port} answered {head[:80]!r}")
    raise RuntimeError(f"server on port {port} did not start in {STARTUP_TIMEOUT_S:.0f} s")


def _start(kind: str, argument: str, scratch: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "_serve", kind, str(port), argument]
    process = subprocess.Popen(command, cwd=scratch)
    if PINNED:
        os.sched_setaffinity(process.pid, SERVER_CPUS)
    return process, port


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


async def _prepare(database_url: str) -> None:
    """Migrate the scratch database and load the demo catalog, as `anilay seed` does."""
    import models  # noqa: F401
    from models.anime.importer import seed_demo_catalog
    from server.db import Database
    from server.migrate import upgrade_async

    await upgrade_async(database_url)
    db = Database(database_url)
    await db.connect()
    try:
        loaded = await seed_demo_catalog(db)
    finally:
        await db.disconnect()
    print(f"demo catalog: {loaded} titles")


async def main(rounds: int, seconds: float, warmup_s: float, connections: int) -> int:
    import uvicorn

    print("Catalog: cached CT3 and CT1 on Anilay vs a bare Starlette JSON route")
    print(
        f"uvicorn {uvicorn.__version__}, loop {'uvloop' if _installed('uvloop') else 'asyncio'}, "
        f"http {'httptools' if _installed('httptools') else 'h11'}, 1 worker each; "
        f"{connections} keep-alive connections, {rounds} rounds of {seconds:g} s "
        f"(+{warmup_s:g} s warm-up); "
        + (
            f"servers on CPU {min(SERVER_CPUS)}, load generator on CPU "
            + ",".join(map(str, sorted(LOAD_CPUS)))
            if PINNED
            else "one CPU shared by server and load generator"
        )
    )
    runs = {
        "bare": ("bare", BARE),
        "bare-same-detail": ("bare", "/bare/detail"),
        "bare-same-browse": ("bare", "/bare/browse"),
        "detail": ("ours", DETAIL),
        "browse": ("ours", BROWSE),
    }
    results: dict[str, list[float]] = {name: [] for name in runs}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="anilay-bench-") as scratch:
        database_url = f"sqlite+aiosqlite:///{scratch}/anilay.db"
        await _prepare(database_url)
        ours = _start("ours", database_url, scratch)
        servers = {"ours": ours}
        try:
            documents = {
                "detail": json.loads(await _wait_until_up(ours[1], DETAIL, ours[0])),
                "browse": json.loads(await _wait_until_up(ours[1], BROWSE, ours[0])),
            }
            documents_file = os.path.join(scratch, "documents.json")
            await asyncio.to_thread(
                Path(documents_file).write_text, json.dumps(documents), encoding="utf-8"
            )
            servers["bare"] = _start("bare", documents_file, scratch)
            await _wait_until_up(servers["bare"][1], BARE, servers["bare"][0])
            if PINNED:
                os.sched_setaffinity(0, LOAD_CPUS)
            for round_number in range(1, rounds + 1):
                line = []
                for name, (server, path) in runs.items():
                    rate, failed = await drive(
                        servers[server][1], path, connections, warmup_s, seconds
                    )
                    results[name].append(rate)
                    failures += failed
                    line.append(f"{name} {rate:6.0f}")
                print(f"round {round_number}: " + ", ".join(line) + " req/s", flush=True)
        finally:
            for process, _ in servers.values():
                process.terminate()
            for process, _ in servers.values():
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    print("medians: " + ", ".join(f"{name} {rate:.0f} req/s" for name, rate in medians.items()))
    verdict_ok = True
    for name, target in TARGETS.items():
        ratio = medians[name] / medians["bare"]
        same = medians[name] / medians[f"bare-same-{name}"]
        meets = ratio >= target
        verdict_ok &= meets
        print(
            f"{name}: ratio ours/bare {ratio:.2f} ({'meets' if meets else 'BELOW'} the target "
            f"of {target:.2f}); vs bare re-serialising the same document {same:.2f}"
        )
    if failures:
        print(f"{failures} responses were not 200 with a body", file=sys.stderr)
    return 0 if verdict_ok and not failures else 1


def _run_load_generator(args: argparse.Namespace) -> int:
    coroutine = main(args.rounds, args.seconds, args.warmup, args.connections)
    if _installed("uvloop"):
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.5, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=0.3, help="unmeasured load first")
    parser.add_argument("--connections", type=int, default=32)
    raise SystemExit(_run_load_generator(parser.parse_args()))
