"""Idle sockets: memory per socket and idle CPU of one gateway process holding 5,000 of them.

Two servers, one after the other, each in a subprocess under the same uvicorn settings
(`_gateway.uvicorn_run`: one worker, uvloop / httptools / the product's websocket
implementation, `server.cli.WEBSOCKETS`), not pinned: on a machine other work shares, a
pinned server competes with whatever else runs on its CPU and cannot move, and neither
CPU time nor RSS depends on where it runs. The benchmark process (5,000 lean clients,
`_gateway.EioClient`) is pinned to the second CPU.

- bare: a python-socketio AsyncServer with no application logic (default in-memory
  manager, no auth, no rooms): the same ping interval/timeout and buffer size as ours,
  and a `heartbeat` handler that only answers `{"ok": true}`, so the same frames flow.
- ours: `create_app` with ANILAY_ROLE=gateway by default (`--role all` adds the REST routes
  and the worker loops) on a scratch SQLite database, Redis db 3 as event log, cache,
  presence store and Socket.IO manager. The 5,000 sockets belong to 250 users with 20
  sessions each (one auth session and access token per socket, made directly in the
  scratch database; 50 is the per-user session limit); each waits for READY.

Every client answers Engine.IO pings (and websocket pings, which uvicorn's `websockets`
implementations send) and sends the application `heartbeat` event `{"status": "online"}` with
an ack id every 15 s (READY's heartbeat_interval_ms), ±10% jitter. Acks are counted (and
timed), not decoded beyond `"ok":true`.

For each server:

1. start it; connect 100 sockets, let them beat once and leave (a warm-up: lazy imports,
   caches and first-call paths are one-time costs, not per-socket ones); settle 2 s;
2. **before**: VmRSS from /proc/<pid>/status, and the empty process's CPU over 3 s;
3. connect the sockets in waves of 100 (each wave waits for the previous to be ready),
   silent but for pings while they connect: the connect storm is not what is measured,
   and on a small machine the beats of the first thousands slow the rest's connects a lot;
4. then every socket starts beating, its first beat (going online) at a random moment of
   the next 15 s; after those 15 s + 1 (every socket has beaten once), the **idle window**
   (20 s): server CPU = utime + stime from /proc/<pid>/stat over the window, as % of one
   core; **with**: VmRSS at its end; memory per socket = (with - before) / sockets;
5. the server is killed, not stopped: thousands of disconnects at once are a storm of
   their own (each does Redis work), not what this measures.

Beside those: the heartbeat → ack times in the window, and the server's garbage
collections in it (the server subprocess times each one with `gc.callbacks` and hands
the totals over on SIGUSR1: benchmark instrumentation, not product code). A full
collection walks every object, thousands per socket, so with 5,000 sockets it stops the
event loop for most of a second; that is the tail of the ack times. What the server
wrote to stderr is summarised at the end (it is in a file while it runs).
Target: ≤ 40 KB per socket for ours (KB = 1,024 bytes, as /proc reports). Exits 1 when it
is over, or a socket failed to connect, was dropped, or a heartbeat was refused or never
answered.

    python tests/bench/gateway_idle.py [--sockets 5000] [--users 250] [--window 20]

ANILAY_BENCH_WS=websockets|websockets-sansio|wsproto runs both servers on another of
uvicorn's websocket implementations (to compare them).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import _gateway as bench

SCRIPT = str(Path(__file__).resolve())
TARGET_KB = 40.0
WAVE = 100
HEARTBEAT_S = 15.0  # gateway.server.HEARTBEAT_INTERVAL_MS
JITTER = 0.1
WARMUP_SOCKETS = 100
WARMUP_SETTLE_S = 2.0
EMPTY_WINDOW_S = 3.0
FIRST_BEATS_S = HEARTBEAT_S + 1.0  # every socket has gone online before the window
ANSWER_WAIT_S = 6.0  # after the last heartbeat, for its ack (a Redis pool wait is 5 s)
WAVE_TIMEOUT_S = 30.0
CONNECT_BUDGET_S = 60.0  # per server: one slower than this is measured with fewer sockets
DEADLINE_S = 175.0  # both servers, from the first server's start
HEARTBEAT = b'["heartbeat",{"status":"online"}]'


def count_gc(path: str) -> None:
    """In the server process: time every garbage collection; on SIGUSR1, write what was
    counted since the last signal to `path` (JSON) and start again. A full collection walks
    every tracked object, so its pause grows with the number of sockets."""
    import gc
    import json
    import signal

    def fresh() -> dict:
        return {"seconds": [0.0, 0.0, 0.0], "count": [0, 0, 0], "longest": [0.0, 0.0, 0.0]}

    stats, began = fresh(), [0.0]

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        took, generation = time.perf_counter() - began[0], info["generation"]
        stats["seconds"][generation] += took
        stats["count"][generation] += 1
        stats["longest"][generation] = max(stats["longest"][generation], took)

    def dump(signum, frame) -> None:
        nonlocal stats
        done, stats = stats, fresh()
        Path(path + ".tmp").write_text(json.dumps(done))
        os.replace(path + ".tmp", path)

    gc.callbacks.append(timed)
    signal.signal(signal.SIGUSR1, dump)


def _collected(path: Path) -> dict | None:
    import json

    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    path.unlink()
    return json.loads(text)


async def read_gc(process, path: Path) -> dict | None:
    """Ask the server for its collections since the last ask (see `count_gc`)."""
    import signal

    _collected(path)  # a stale answer
    process.send_signal(signal.SIGUSR1)
    for _ in range(100):
        await asyncio.sleep(0.02)
        answer = _collected(path)
        if answer is not None:
            return answer
    return None


def bare_app():
    import socketio

    from gateway.server import MAX_PAYLOAD_BYTES, PING_INTERVAL_S, PING_TIMEOUT_S

    sio = socketio.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=[],
        ping_interval=PING_INTERVAL_S,
        ping_timeout=PING_TIMEOUT_S,
        max_http_buffer_size=MAX_PAYLOAD_BYTES,
        logger=False,
        engineio_logger=False,
    )

    async def heartbeat(sid, data=None):
        return {"ok": True}

    sio.on("heartbeat", heartbeat)
    return socketio.ASGIApp(sio, socketio_path="api/v1/ws")


class IdleClient(bench.EioClient):
    """An EioClient that also heartbeats and counts the acks (and the pings it answered)."""

    rtts: list[float] | None = None  # heartbeat → ack times, while someone collects them

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.next_ack = 0
        self.beats = 0
        self.acks_ok = 0
        self.refused: list[bytes] = []  # acks that were not {"ok": true, ...}
        self.pings = 0
        self.sent_at = 0.0

    def heartbeat(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.next_ack += 1
        self.beats += 1
        self.sent_at = time.perf_counter()
        self.send(b"42" + str(self.next_ack).encode() + HEARTBEAT)

    def _text(self, message: bytes) -> None:
        head = message[:2]
        if head == b"43":  # an ack: 43<id>[{"ok":true,...}]
            if IdleClient.rtts is not None and message.startswith(b"%d[" % self.next_ack, 2):
                IdleClient.rtts.append(time.perf_counter() - self.sent_at)
            if b'"ok":true' in message:
                self.acks_ok += 1
            else:
                self.refused.append(message)
            return
        if head[:1] == b"2":
            self.pings += 1
        super()._text(message)


class Beating:
    """Sends each client's heartbeats on its own jittered 15 s schedule until stopped."""

    def __init__(self, interval_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.interval_s = interval_s
        self.stopped = False
        self.random = random.Random(7)

    def start(self, client: IdleClient, first_within_s: float = 0.0) -> None:
        """The first beat (going online) at once, or at a random moment of the next
        `first_within_s`; then every interval ± jitter."""
        self.loop.call_later(self.random.uniform(0, first_within_s), self._beat, client)

    def _beat(self, client: IdleClient) -> None:
        if self.stopped or client.lost.done():
            return
        client.heartbeat()
        delay = self.interval_s * self.random.uniform(1 - JITTER, 1 + JITTER)
        self.loop.call_later(delay, self._beat, client)


def tally(clients: list[IdleClient]) -> tuple[int, int, int, int]:
    """Heartbeats sent, acked ok, refused, pings answered, over `clients`."""
    return (
        sum(c.beats for c in clients),
        sum(c.acks_ok for c in clients),
        sum(len(c.refused) for c in clients),
        sum(c.pings for c in clients),
    )


async def connect_waves(
    port: int, auths: list[dict], ready: str | None, process, budget_s: float
) -> tuple[list[IdleClient], collections.Counter, float]:
    """Connect one wave of WAVE sockets at a time. No wave starts after `budget_s` (the run
    must end: the sockets that are in by then are measured). Returns the clients, the
    failures by reason, and the slowest wave in seconds."""
    clients: list[IdleClient] = []
    failures: collections.Counter = collections.Counter()
    slowest = 0.0
    deadline = time.perf_counter() + budget_s
    for start in range(0, len(auths), WAVE):
        if time.perf_counter() > deadline:
            print(f"  connect budget of {budget_s:.0f} s spent: stopping at {len(clients)}")
            break
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} while connecting")
        began = time.perf_counter()
        results = await asyncio.gather(
            *(
                bench.open_client(
                    port, auth, ready=ready, timeout=WAVE_TIMEOUT_S, client_class=IdleClient
                )
                for auth in auths[start : start + WAVE]
            ),
            return_exceptions=True,
        )
        slowest = max(slowest, time.perf_counter() - began)
        for result in results:
            if isinstance(result, BaseException):
                failures[f"{type(result).__name__}: {str(result)[:120]}"] += 1
            else:
                clients.append(result)
    return clients, failures, slowest


def start_logged(kind: str, scratch: str, extra: tuple, log_path: Path):
    """The server, unpinned, its stderr in a file."""
    with open(log_path, "wb") as stderr:
        return bench.start_server(SCRIPT, kind, scratch, *extra, pin=False, stderr=stderr)


def percentiles_ms(values: list[float]) -> str:
    if not values:
        return "none"
    ms = [v * 1000 for v in values]
    return (
        f"p50 {bench.percentile(ms, 0.5):.1f} ms, p99 {bench.percentile(ms, 0.99):.1f} ms, "
        f"max {max(ms):.1f} ms"
    )


def kill(process) -> None:
    if process.poll() is None:
        process.kill()
    bench.stop_server(process)


async def measure(
    kind: str, scratch: str, auths: list[dict], window_s: float, role: str, connect_budget_s: float
) -> dict:
    """One server through steps 1-5 of the module docstring; the numbers in a dict."""
    extra = (role,) if kind == "ours" else ()
    log_path = Path(scratch) / f"{kind}.stderr"
    process, port = start_logged(kind, scratch, extra, log_path)
    pid = process.pid
    ready = "READY" if kind == "ours" else None
    beating = Beating(HEARTBEAT_S)
    clients: list[IdleClient] = []
    result: dict = {"kind": kind, "log": log_path, "wanted": len(auths)}
    try:
        await bench.wait_until_up(port, process)
        warm, warm_failures, _ = await connect_waves(
            port, auths[:WARMUP_SOCKETS], ready, process, connect_budget_s
        )
        for client in warm:
            beating.start(client)
        await asyncio.sleep(1.0)  # their first heartbeats are answered
        await bench.close_all(warm, batch=WAVE, pause_s=0.1)
        await asyncio.sleep(WARMUP_SETTLE_S)

        cpu, began = bench.cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(EMPTY_WINDOW_S)
        result["empty_cpu"] = (bench.cpu_seconds(pid) - cpu) / (time.perf_counter() - began)
        result["rss_before"] = bench.rss_kb(pid)

        cpu, began = bench.cpu_seconds(pid), time.perf_counter()
        clients, failures, slowest = await connect_waves(
            port, auths, ready, process, connect_budget_s
        )
        failures.update(warm_failures)
        result["connect_s"] = time.perf_counter() - began
        result["connect_cpu_s"] = bench.cpu_seconds(pid) - cpu
        result["failures"] = failures
        result["sockets"] = len(clients)
        print(
            f"{kind}: {len(clients)} of {len(auths)} sockets connected in "
            f"{result['connect_s']:.1f} s (waves of {WAVE}, slowest wave {slowest:.2f} s; "
            f"server CPU {result['connect_cpu_s'] * 1000 / max(1, len(clients)):.1f} ms per "
            f"connect), {sum(failures.values())} failed",
            flush=True,
        )
        for reason, count in failures.most_common(5):
            print(f"  {count} × {reason}")

        for client in clients:
            beating.start(client, first_within_s=HEARTBEAT_S)
        await asyncio.sleep(FIRST_BEATS_S)
        result["rss_settled"] = bench.rss_kb(pid)
        sent, acked, _, pings = tally(clients)
        load_cpu = time.process_time()
        IdleClient.rtts = []
        gc_path = Path(scratch) / f"{kind}.gc.json"
        await read_gc(process, gc_path)
        cpu, began = bench.cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(window_s)
        elapsed = time.perf_counter() - began
        result["idle_cpu"] = (bench.cpu_seconds(pid) - cpu) / elapsed
        result["gc"] = await read_gc(process, gc_path)
        result["load_cpu"] = (time.process_time() - load_cpu) / elapsed
        result["rss_with"] = bench.rss_kb(pid)
        result["rtts"], IdleClient.rtts = IdleClient.rtts, None
        sent2, acked2, _, pings2 = tally(clients)
        result["window"] = {
            "beats": sent2 - sent,
            "acks": acked2 - acked,
            "pings": pings2 - pings,
            "seconds": elapsed,
        }
        beating.stopped = True
        await asyncio.sleep(ANSWER_WAIT_S)  # the last beats are answered
        result["beats"], result["acks"], result["refused"], _ = tally(clients)
        result["lost"] = sum(1 for c in clients if c.lost.done())
        result["refusals"] = [m for c in clients for m in c.refused][:3]
        result["alive"] = process.poll() is None
    finally:
        beating.stopped = True
        IdleClient.rtts = None
        kill(process)
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
    return result


def per_socket_kb(result: dict) -> float:
    return (result["rss_with"] - result["rss_before"]) / max(1, result["sockets"])


def report(result: dict) -> None:
    kind, window = result["kind"], result["window"]
    print(
        f"{kind}: RSS before {result['rss_before'] / 1024:.1f} MB; with {result['sockets']} "
        f"sockets {result['rss_settled'] / 1024:.1f} MB once all had beaten, "
        f"{result['rss_with'] / 1024:.1f} MB after the idle window → "
        f"{per_socket_kb(result):.1f} KB/socket"
    )
    seconds = window["seconds"]
    print(
        f"{kind}: idle CPU {result['idle_cpu'] * 100:.1f}% of a core over {seconds:.0f} s: "
        f"{window['beats'] / seconds:.0f} heartbeats/s sent, {window['acks'] / seconds:.0f}/s "
        f"acked, {window['pings'] / seconds:.0f} Engine.IO pings/s answered "
        f"(≈ {result['idle_cpu'] * seconds * 1000 / max(1, window['beats']):.2f} ms of server "
        f"CPU per heartbeat); empty process {result['empty_cpu'] * 100:.1f}%, load process "
        f"{result['load_cpu'] * 100:.1f}%"
    )
    print(f"{kind}: heartbeat → ack in the window: {percentiles_ms(result['rtts'])}")
    collected = result.get("gc")
    if collected:
        print(
            f"{kind}: garbage collection in the window: {collected['count'][2]} full "
            f"collections, longest {collected['longest'][2] * 1000:.0f} ms; all generations "
            f"{sum(collected['seconds']):.2f} s = {sum(collected['seconds']) / seconds * 100:.1f}"
            "% of a core"
        )
    print(
        f"{kind}: {result['beats']} heartbeats sent, {result['acks']} acked ok, "
        f"{result['refused']} refused, {result['beats'] - result['acks'] - result['refused']} "
        f"unanswered; {result['lost']} sockets dropped by the server"
    )
    for message in result["refusals"]:
        print(f"  refused: {message[:200]!r}")
    for line in bench.server_log_summary(result["log"]):
        print(f"{kind} server log: {line}")


async def main(sockets: int, users: int, window_s: float, role: str) -> int:
    print(
        f"gateway idle: {sockets} idle sockets on one process ({users} users), heartbeat "
        f"every {HEARTBEAT_S:.0f} s ±{JITTER:.0%}; bare python-socketio, then ours (role {role})"
    )
    per_user = -(-sockets // users)
    if per_user > 50:
        raise SystemExit(f"at most 50 sessions per user: use --users {-(-sockets // 50)} or more")
    bench.pin_load_process()
    load = ",".join(map(str, sorted(bench.LOAD_CPUS if bench.PINNED else bench.CPUS)))
    print(
        f"servers unpinned (CPUs {','.join(map(str, bench.CPUS))}), load process on CPU {load}, "
        "Redis unpinned; load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="anilay-bench-") as scratch:
        started = time.perf_counter()
        accounts = await bench.prepare_ours(scratch, users, per_user - 1, spare_tokens=True)
        # Session-major order: a wave holds sockets of 100 different users.
        sessions = [[account.token, *account.spare_tokens] for account in accounts]
        tokens = [tokens[index] for index in range(per_user) for tokens in sessions][:sockets]
        auths = [{"token": token} for token in tokens]
        print(
            f"{users} users, {len(auths)} sessions and tokens in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        async with asyncio.timeout(DEADLINE_S):
            for kind in ("bare", "ours"):
                results[kind] = await measure(
                    kind, scratch, auths, window_s, role, CONNECT_BUDGET_S
                )
                report(results[kind])
    ours, bare = results["ours"], results["bare"]
    ours_kb, bare_kb = per_socket_kb(ours), per_socket_kb(bare)
    ratio = ours_kb / bare_kb if bare_kb > 0 else float("inf")
    problems = []
    for kind, r in results.items():
        unanswered = r["beats"] - r["acks"] - r["refused"]
        failed = sum(r["failures"].values())
        checks = (
            (r["sockets"] < r["wanted"], f"only {r['sockets']} of {r['wanted']} connected"),
            (failed, f"{failed} connects failed"),
            (r["lost"], f"{r['lost']} sockets dropped by the server"),
            (r["refused"], f"{r['refused']} heartbeats refused"),
            (unanswered, f"{unanswered} heartbeats never answered"),
            (not r["alive"], "the server died"),
        )
        problems += [f"{kind}: {what}" for bad, what in checks if bad]
    for problem in problems:
        print(f"PROBLEM {problem}")
    verdict = "meets" if ours_kb <= TARGET_KB else "OVER"
    print(
        f"idle: {ours['sockets']} sockets, ours {ours_kb:.1f} KB/socket, bare {bare_kb:.1f} "
        f"KB/socket, ratio {ratio:.2f}, idle CPU {ours['idle_cpu'] * 100:.1f}% of a core "
        f"(bare {bare['idle_cpu'] * 100:.1f}%) (target ≤ {TARGET_KB:.0f} KB/socket: {verdict})"
    )
    return 0 if ours_kb <= TARGET_KB and not problems else 1


if __name__ == "__main__":
    bench.raise_fd_limit()
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        kind, port, scratch = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        count_gc(str(Path(scratch) / f"{kind}.gc.json"))
        if kind == "ours":
            bench.serve_ours(port, scratch, sys.argv[5])
        else:
            bench.uvicorn_run(bare_app(), port)
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--users", type=int, default=250, help="sessions are spread over them")
    parser.add_argument("--window", type=float, default=20.0, help="idle CPU window, seconds")
    parser.add_argument("--role", choices=("gateway", "all"), default="gateway")
    args = parser.parse_args()
    raise SystemExit(bench.run_loop(main(args.sockets, args.users, args.window, args.role)))
