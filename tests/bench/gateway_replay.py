"""Resume after a disconnect: how long until 1,000 missed events are replayed.

Our server (the whole product, one process, `_gateway.serve_ours`: SQLite + Redis db 3 as
event log and cache, one uvicorn worker) runs in a subprocess pinned to the first CPU; the
benchmark process (publisher and one lean client, `_gateway.EioClient`) to the second.

Each run, for one user:

1. connect with an access token and wait for READY (its `session_id`, `last_event_id`);
   that connect-to-READY time is printed for context;
2. disconnect cleanly, and append 1,000 BENCH_PROBE events for `user:<id>` to the log
   (`server.log.RedisLog`, as committed writes in other processes do);
3. **replay**: reconnect with `resume: {session_id, last_event_id}`; the time from opening
   the TCP connection until RESUMED arrives — the gateway sends RESUMED after the replay,
   so all 1,000 events (checked: all there, in order, once) came before it;
4. **baseline**: on that same, now live socket, append 1,000 more events in one go; the
   time from the append call until the client has counted all 1,000.

The median over the runs is compared with the target (< 0.5 s) and printed beside the
baseline, so a slow machine shows in both.

    python tests/bench/gateway_replay.py [--runs 7] [--missed 1000]

Exits 1 when the median replay is 0.5 s or more, or an event is missing or out of order.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import _gateway as bench
import msgspec

SCRIPT = str(Path(__file__).resolve())
TARGET_S = 0.5
DISCONNECT_SETTLE_S = 0.3  # the server saves the session when it sees the socket go


class Received:
    """Counted frames as they came (decoded only after the clock stopped)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.resumed_at = 0.0

    def counted(self, message: bytes, at: float) -> None:
        self.frames.append(message)

    def event(self, name: str, data, at: float) -> None:
        if name == "RESUMED" and not self.resumed_at:
            self.resumed_at = at

    def numbers(self) -> list[int]:
        return [msgspec.json.decode(frame[2:])[1]["data"]["n"] for frame in self.frames]


async def one_run(port: int, account: bench.Account, log: bench.Log, missed: int) -> dict:
    topics = [f"user:{account.user_id}"]
    started = time.perf_counter()
    first = await bench.open_client(port, account.auth(), ready="READY")
    connect_s = time.perf_counter() - started
    ready = first.of("READY")[0]
    first.close()
    await first.lost
    await asyncio.sleep(DISCONNECT_SETTLE_S)
    await log.append(bench.probe_events(missed, topics))

    received = Received()
    resume = {"session_id": ready["session_id"], "last_event_id": ready["last_event_id"]}
    started = time.perf_counter()
    client = await bench.open_client(
        port,
        account.auth(resume=resume),
        ready="RESUMED",
        on_counted=received.counted,
        on_event=received.event,
    )
    try:
        replay_s = received.resumed_at - started
        replayed = client.of("RESUMED")[0]["replayed"]
        numbers = received.numbers()
        problems = []
        if replayed != missed or numbers != list(range(missed)):
            problems.append(
                f"replay: RESUMED says {replayed}, got {len(numbers)} events"
                + ("" if numbers == sorted(set(numbers)) else " (out of order or repeated)")
            )

        tally = bench.Tally()
        client.tally = tally
        tally.expect(missed)
        batch = bench.probe_events(missed, topics, first=missed)
        started = time.perf_counter()
        await log.append(batch)
        try:
            async with asyncio.timeout(10):
                await tally.reached.wait()
        except TimeoutError:
            problems.append(f"live: {tally.count} of {missed} events arrived")
        live_s = time.perf_counter() - started
        if received.numbers() != list(range(2 * missed)):
            problems.append("live: events missing, repeated or out of order")
    finally:
        client.close()
    return {"connect": connect_s, "replay": replay_s, "live": live_s, "problems": problems}


async def main(runs: int, missed: int) -> int:
    print(f"gateway resume: replay of {missed} missed events; {bench.placement()}")
    with tempfile.TemporaryDirectory(prefix="anilay-bench-") as scratch:
        (account,) = await bench.prepare_ours(scratch, 1)
        process, port = bench.start_server(SCRIPT, "ours", scratch)
        bench.pin_load_process()
        log = bench.Log()
        results = []
        try:
            await bench.wait_until_up(port, process)
            await one_run(port, account, log, missed)  # warm-up, not counted
            for number in range(1, runs + 1):
                result = await one_run(port, account, log, missed)
                results.append(result)
                print(
                    f"run {number}: connect→READY {result['connect'] * 1000:6.1f} ms, "
                    f"resume→RESUMED with {missed} replayed {result['replay'] * 1000:6.1f} ms, "
                    f"{missed} live events {result['live'] * 1000:6.1f} ms",
                    flush=True,
                )
                for problem in result["problems"]:
                    print(f"  {problem}")
        finally:
            await log.close()
            bench.stop_server(process)
    replay = bench.median([r["replay"] for r in results])
    live = bench.median([r["live"] for r in results])
    connect = bench.median([r["connect"] for r in results])
    failed = any(r["problems"] for r in results)
    verdict = "meets" if replay < TARGET_S else "MISSES"
    print(f"connect→READY (no replay): median {connect * 1000:.1f} ms")
    print(
        f"replay: median {replay * 1000:.1f} ms for {missed} missed events "
        f"(target < {TARGET_S * 1000:.0f} ms: {verdict}); baseline {missed} live events on "
        f"an open socket {live * 1000:.1f} ms; ratio replay/live {replay / live:.2f}"
    )
    return 0 if replay < TARGET_S and not failed else 1


if __name__ == "__main__":
    bench.raise_fd_limit()
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        bench.serve_ours(int(sys.argv[3]), sys.argv[4])
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--missed", type=int, default=1000)
    args = parser.parse_args()
    raise SystemExit(bench.run_loop(main(args.runs, args.missed)))
