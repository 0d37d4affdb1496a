"""What our HTTP stack costs per request over a bare Starlette app, with no sockets at all.

`rest_overhead.py` measures the same two apps behind uvicorn over loopback, where the
kernel, the HTTP parser and the load generator add noise and a cost of their own. Here
both apps are called directly as ASGI callables, in this process, one request at a time:

- bare: a Starlette app whose one route (on `--path`) returns `{"status": "ok"}` as JSON;
- ours: `create_app(Settings(...))` on an embedded SQLite database (migrated first, access
  log off) after its lifespan startup, with every middleware a real request passes.

Each call gets a fresh scope like the one uvicorn builds for `GET --path`, a receive that
returns an empty body and a send that keeps only the status. Each round times bare, then
ours, over the same number of calls (after a warm-up); the medians of the rounds are
reported in µs per request with the ratio bare/ours of the times, which compares with
rest_overhead's throughput ratio ours/bare. `--profile` runs one more round of ours under
cProfile and prints where the time goes. On uvloop when it is installed.

    python tests/bench/rest_inprocess.py [--path /api/v1/health/live] [--requests 20000]
        [--rounds 5] [--profile]

A measuring tool with no target: exits 0, or 1 when a response was not a 200.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator

import _http as bench

WARMUP_REQUESTS = 500


class NotOk(Exception):
    """A response was not a 200."""


@contextlib.asynccontextmanager
async def lifespan(app) -> AsyncIterator[None]:
    """The app's ASGI lifespan, as a server runs it: startup on entry, shutdown on exit."""
    inbox: asyncio.Queue[dict] = asyncio.Queue()
    outbox: asyncio.Queue[dict] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))

    async def step(event: str) -> None:
        await inbox.put({"type": f"lifespan.{event}"})
        reply = asyncio.create_task(outbox.get())
        await asyncio.wait({reply, task}, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():  # the app returned (or raised) instead of answering
            reply.cancel()
            task.result()
            raise RuntimeError(f"the app returned during lifespan {event}")
        message = reply.result()
        if message["type"] != f"lifespan.{event}.complete":
            raise RuntimeError(f"lifespan {event}: {message}")

    await step("startup")
    try:
        yield
    finally:
        await step("shutdown")
        await task
        await _settle()


async def _settle() -> None:
    """Let the SQLite worker threads the app left behind finish while the loop still runs.

    A pooled connection that a cancelled background task dropped unclosed closes on its
    own aiosqlite thread when collected; if the loop is closed by the time it is done,
    that thread prints "Event loop is closed" on the way out."""
    gc.collect()
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 1.0)


async def _receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


async def timed(app, path: str, requests: int) -> float:
    """µs per request over `requests` calls of GET `path`; NotOk if one was not a 200."""
    statuses: collections.Counter[int] = collections.Counter()

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    raw_path = path.encode()
    started = time.perf_counter()
    for _ in range(requests):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": "GET",
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1")],
            "state": {},
        }
        await app(scope, _receive, send)
    elapsed = time.perf_counter() - started
    if statuses != {200: requests}:
        raise NotOk(f"GET {path}: {requests} requests, statuses {dict(statuses)}")
    return elapsed / requests * 1e6


async def main(path: str, requests: int, rounds: int, profile: bool) -> int:
    from server.migrate import upgrade_async

    print(f"REST in-process: bare Starlette vs Anilay on GET {path}, called as ASGI apps")
    print(
        f"loop {'uvloop' if bench.installed('uvloop') else 'asyncio'}; {rounds} rounds of "
        f"{requests} requests each (+{WARMUP_REQUESTS} warm-up), one at a time, no sockets"
    )
    results: dict[str, list[float]] = {"bare": [], "ours": []}
    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory(prefix="anilay-bench-") as scratch:
        database_url = f"sqlite+aiosqlite:///{scratch}/anilay.db"
        await upgrade_async(database_url)
        apps = {"bare": bench.bare_app(path), "ours": bench.our_app(database_url)}
        try:
            async with lifespan(apps["ours"]):
                for app in apps.values():
                    await timed(app, path, WARMUP_REQUESTS)
                for round_number in range(1, rounds + 1):
                    for kind, app in apps.items():
                        results[kind].append(await timed(app, path, requests))
                    bare_us, our_us = results["bare"][-1], results["ours"][-1]
                    print(
                        f"round {round_number}: bare {bare_us:6.1f} µs, ours {our_us:6.1f} µs, "
                        f"ratio {bare_us / our_us:.2f}",
                        flush=True,
                    )
                if profiler is not None:
                    profiler.enable()
                    await timed(apps["ours"], path, requests)
                    profiler.disable()
        except NotOk as error:
            print(error, file=sys.stderr)
            return 1
    bare, ours = statistics.median(results["bare"]), statistics.median(results["ours"])
    print(f"median: bare {bare:.1f} µs, ours {ours:.1f} µs per request")
    print(f"ratio bare/ours (median times): {bare / ours:.2f}")
    if profiler is not None:
        print(f"\ncProfile of ours, {requests} requests, top 25 by tottime:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default="/api/v1/health/live", help="GET this on both apps")
    parser.add_argument("--requests", type=int, default=20_000, help="calls per app per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="one more round under cProfile")
    args = parser.parse_args()
    raise SystemExit(bench.run(main(args.path, args.requests, args.rounds, args.profile)))
