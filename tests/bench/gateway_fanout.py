"""Fan-out throughput of one gateway process to 1,000 sockets, against bare python-socketio.

Two servers run in subprocesses under the same uvicorn settings (one worker, no access log,
uvloop / httptools / the product's websocket implementation), pinned to the first CPU; the
benchmark process (the publisher and 1,000 lean clients per server, `_gateway.EioClient`)
is pinned to the second. Redis (db 3) is shared and unpinned.

- ours: `create_app` — the whole product in one process (REST, worker loops, gateway) on a
  scratch SQLite database with Redis db 3 as event log, cache and Socket.IO manager. 1,000
  users connect with their own access tokens and each waits for READY; every user socket
  is in the `announcements` topic. A round appends N BENCH_PROBE events for
  `announcements` to `anilay:events` in one MULTI/EXEC (`server.log.RedisLog`, as a
  committed write in another process does); the Dispatcher reads them (XREAD, 500 at a
  time), encodes each once and queues it on the 1,000 sockets.
- bare: a python-socketio AsyncServer with its default in-memory manager; connect puts the
  socket in the room `announcements` (no auth), and one task tails its own stream
  `bench:bare:events` the same way (XREAD 500, BLOCK 1000, `server.events.decode_event`)
  and does `await sio.emit(event.type, {"id", "ts", "data"}, room="announcements")` per
  event: the payload our gateway sends, so the frames on the wire are the same size.
- raw: the same bare server and sockets, fed from a second stream `bench:bare:raw`, for
  which it does the least python-socketio allows: encode the packet once and await
  `sio._send_eio_packet` for each member of the room (what our Dispatcher does, without
  the gateway's bookkeeping). Not the target's baseline; it shows what our gateway costs
  over the floor, since `sio.emit` itself is slow (one task per recipient).

A round's rate is 1,000 × N deliveries over the time from the append call until the clients
have counted the last frame; rounds alternate which server goes first, and the medians
are compared. Every socket must receive every event (checked at the end). Beside each
rate the server process's CPU time per delivery is printed (from /proc): unlike the
rates it hardly moves when other work shares the machine.

What differs besides the delivery path: ours authenticated its sockets at connect (not
timed), keeps a resumable session per socket, runs its background loops (outbox, jobs,
sweepers, worker-id lease, push fan-out, which also reads every event, and the Redis
manager's pub/sub listener) and checks each recipient's last delivered id and queue depth.
Between events, ours yields to the event loop (so each socket's writer task wakes once
per event), bare's `emit` spawns one task per recipient and waits for them, and raw does
not yield within an XREAD batch (each writer wakes once per batch and sends all of it).

    python tests/bench/gateway_fanout.py [--sockets 1000] [--events 40] [--rounds 5]

Exits 1 when the ratio ours/bare is below 0.8 or any delivery is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import _gateway as bench

SCRIPT = str(Path(__file__).resolve())
TARGET_RATIO = 0.8
TOPIC = "announcements"
BARE_STREAM = "bench:bare:events"
RAW_STREAM = "bench:bare:raw"
ROUND_TIMEOUT_S = 30.0


def bare_app():
    import redis.asyncio as aioredis
    import socketio
    from engineio import packet as eio_packet
    from socketio import packet as sio_packet

    from gateway.server import MAX_PAYLOAD_BYTES, PING_INTERVAL_S, PING_TIMEOUT_S
    from server.events import decode_event

    sio = socketio.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=[],
        ping_interval=PING_INTERVAL_S,
        ping_timeout=PING_TIMEOUT_S,
        max_http_buffer_size=MAX_PAYLOAD_BYTES,
        logger=False,
        engineio_logger=False,
    )

    async def connect(sid, environ, auth=None):
        await sio.enter_room(sid, TOPIC)

    sio.on("connect", connect)
    tasks = set()

    async def send_raw(name: str, payload: dict, room: str) -> None:
        pkt = sio.packet_class(sio_packet.EVENT, namespace="/", data=[name, payload])
        encoded = eio_packet.Packet(eio_packet.MESSAGE, pkt.encode())
        for _sid, eio_sid in list(sio.manager.get_participants("/", room)):
            await sio._send_eio_packet(eio_sid, encoded)

    async def tail() -> None:
        client = aioredis.Redis.from_url(bench.REDIS_URL)
        positions = {BARE_STREAM: "0-0", RAW_STREAM: "0-0"}
        for key in positions:
            with contextlib.suppress(aioredis.ResponseError):  # no stream yet
                positions[key] = (await client.xinfo_stream(key))["last-generated-id"].decode()
        while True:
            reply = await client.xread(positions, count=500, block=1000)
            for stream, entries in reply or []:
                key = stream.decode()
                for entry_id, fields in entries:
                    positions[key] = position = entry_id.decode()
                    event = decode_event(fields[b"e"])
                    payload = {"id": position, "ts": event.ts, "data": event.data}
                    if key == RAW_STREAM:
                        await send_raw(event.type, payload, event.targets.topics[0])
                    else:
                        await sio.emit(event.type, payload, room=event.targets.topics[0])

    async def startup() -> None:
        tasks.add(asyncio.create_task(tail()))

    return socketio.ASGIApp(sio, socketio_path="api/v1/ws", on_startup=startup)


async def deliver(
    log: bench.Log, tally: bench.Tally, sockets: int, events: int, pad: int, pid: int
) -> tuple[float, float]:
    """Deliveries per second for `events` events to `sockets` sockets, and the server's CPU
    time per delivery in µs."""
    batch = bench.probe_events(events, [TOPIC], pad)
    tally.expect(events * sockets)
    cpu = bench.cpu_seconds(pid)
    start = time.perf_counter()
    await log.append(batch)
    try:
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            await tally.reached.wait()
    except TimeoutError:
        missing = tally.target - tally.count
        raise RuntimeError(f"{missing} deliveries missing after {ROUND_TIMEOUT_S:.0f} s") from None
    elapsed = time.perf_counter() - start
    cpu_us = (bench.cpu_seconds(pid) - cpu) * 1e6 / (events * sockets)
    return events * sockets / elapsed, cpu_us


async def main(sockets: int, events: int, rounds: int, pad: int) -> int:
    print(
        f"gateway fan-out: one process, {sockets} sockets on one topic, "
        "ours vs bare python-socketio"
    )
    print(f"{events} events of ~{pad + 120} bytes per round, {rounds} rounds; {bench.placement()}")
    kinds = ("ours", "bare", "raw")  # raw: the bare server and sockets, the raw send loop
    with tempfile.TemporaryDirectory(prefix="anilay-bench-") as scratch:
        started = time.perf_counter()
        accounts = await bench.prepare_ours(scratch, sockets)
        print(f"{sockets} users with sessions and tokens in {time.perf_counter() - started:.1f} s")
        servers = {kind: bench.start_server(SCRIPT, kind, scratch) for kind in ("ours", "bare")}
        bench.pin_load_process()
        tallies = {"ours": bench.Tally(), "bare": bench.Tally()}
        tallies["raw"] = tallies["bare"]
        logs = {"ours": bench.Log(), "bare": bench.Log(BARE_STREAM), "raw": bench.Log(RAW_STREAM)}
        clients: dict[str, list[bench.EioClient]] = {}
        try:
            for process, port in servers.values():
                await bench.wait_until_up(port, process)
            started = time.perf_counter()
            clients["ours"] = await bench.open_many(
                servers["ours"][1],
                [account.auth() for account in accounts],
                ready="READY",
                tally=tallies["ours"],
            )
            ours_connect = time.perf_counter() - started
            started = time.perf_counter()
            clients["bare"] = await bench.open_many(
                servers["bare"][1], [{}] * sockets, ready=None, tally=tallies["bare"]
            )
            print(
                f"connected: ours {ours_connect:.1f} s (to READY), "
                f"bare {time.perf_counter() - started:.1f} s"
            )
            sent = {"ours": 0, "bare": 0}
            pids = {kind: servers["ours" if kind == "ours" else "bare"][0].pid for kind in kinds}
            for kind in kinds:  # warm-up, and proof that every socket is subscribed
                await deliver(logs[kind], tallies[kind], sockets, 5, pad, pids[kind])
                sent["ours" if kind == "ours" else "bare"] += 5
            results: dict[str, list[float]] = {kind: [] for kind in kinds}
            cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
            for round_number in range(1, rounds + 1):
                order = kinds if round_number % 2 else kinds[::-1]
                for kind in order:
                    rate, cpu_us = await deliver(
                        logs[kind], tallies[kind], sockets, events, pad, pids[kind]
                    )
                    results[kind].append(rate)
                    cpu[kind].append(cpu_us)
                    sent["ours" if kind == "ours" else "bare"] += events
                ours, bare, raw = (results[kind][-1] for kind in kinds)
                print(
                    f"round {round_number}: ours {ours:6.0f}, bare emit {bare:6.0f}, "
                    f"raw send {raw:6.0f} deliveries/s; ours/bare {ours / bare:.2f}; "
                    "server CPU per delivery "
                    + ", ".join(f"{kind} {cpu[kind][-1]:.1f}" for kind in kinds)
                    + " µs",
                    flush=True,
                )
            complete = True
            for server, expected in sent.items():
                short = [c for c in clients[server] if c.count != expected]
                if short:
                    complete = False
                    print(f"{server}: {len(short)} sockets did not get exactly {expected} events")
        finally:
            for kind_clients in clients.values():
                await bench.close_all(kind_clients)
            for log in logs.values():
                await log.close()
            for process, _ in servers.values():
                bench.stop_server(process)
    ours, bare, raw = (bench.median(results[kind]) for kind in kinds)
    ratio = ours / bare
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(
        "best: " + ", ".join(f"{kind} {max(results[kind]):.0f}" for kind in kinds) + " deliveries/s"
    )
    print(f"floor: bare raw send loop {raw:.0f} deliveries/s, ours/raw {ours / raw:.2f}")
    cpu_ours, cpu_bare, cpu_raw = (bench.median(cpu[kind]) for kind in kinds)
    print(
        f"server CPU per delivery (median): ours {cpu_ours:.1f} µs, bare emit {cpu_bare:.1f} µs, "
        f"raw send {cpu_raw:.1f} µs; ours/bare by CPU {cpu_bare / cpu_ours:.2f}"
    )
    print(
        f"fanout: ours {ours:.0f} deliveries/s, bare {bare:.0f} deliveries/s, "
        f"ratio {ratio:.2f} (target ≥ {TARGET_RATIO}: {verdict})"
    )
    return 0 if ratio >= TARGET_RATIO and complete else 1


if __name__ == "__main__":
    bench.raise_fd_limit()
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        kind, port, scratch = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        if kind == "ours":
            bench.serve_ours(port, scratch)
        else:
            bench.uvicorn_run(bare_app(), port)
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--events", type=int, default=40, help="events per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pad", type=int, default=100, help="filler characters per payload")
    args = parser.parse_args()
    raise SystemExit(bench.run_loop(main(args.sockets, args.events, args.rounds, args.pad)))
