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
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import _http as bench

SCRIPT = str(Path(__file__).resolve())
DETAIL = "/api/v1/anime/16498"
BROWSE = "/api/v1/anime?kind=tv&order=popularity"
BARE = "/bare/ok"
TARGETS = {"detail": 0.6, "browse": 0.3}


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


def serve(kind: str, port: int, argument: str) -> None:
    app = bare_app(argument) if kind == "bare" else bench.our_app(argument)
    bench.uvicorn_run(app, port)


def _served(head: bytes, body: bytes) -> bool:
    return head.startswith(b"HTTP/1.1 200") and len(body) > 10


# --- orchestration ---


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
    print("Catalog: cached CT3 and CT1 on Anilay vs a bare Starlette JSON route")
    print(bench.settings_line(connections, rounds, seconds, warmup_s))
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
        ours = bench.start(SCRIPT, "ours", scratch, database_url)
        servers = {"ours": ours}
        try:
            documents = {
                "detail": json.loads(await bench.wait_until_up(ours[1], DETAIL, ours[0])),
                "browse": json.loads(await bench.wait_until_up(ours[1], BROWSE, ours[0])),
            }
            documents_file = os.path.join(scratch, "documents.json")
            await asyncio.to_thread(
                Path(documents_file).write_text, json.dumps(documents), encoding="utf-8"
            )
            servers["bare"] = bench.start(SCRIPT, "bare", scratch, documents_file)
            await bench.wait_until_up(servers["bare"][1], BARE, servers["bare"][0])
            if bench.PINNED:
                os.sched_setaffinity(0, bench.LOAD_CPUS)
            for round_number in range(1, rounds + 1):
                line = []
                for name, (server, path) in runs.items():
                    rate, failed = await bench.drive(
                        servers[server][1], path, _served, connections, warmup_s, seconds
                    )
                    results[name].append(rate)
                    failures += failed
                    line.append(f"{name} {rate:6.0f}")
                print(f"round {round_number}: " + ", ".join(line) + " req/s", flush=True)
        finally:
            bench.stop([process for process, _ in servers.values()])
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


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.5, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=0.3, help="unmeasured load first")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    raise SystemExit(bench.run(main(args.rounds, args.seconds, args.warmup, args.connections)))
