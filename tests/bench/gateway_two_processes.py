"""Fan-out across two gateway processes behind one Redis log, against one process.

Three of our servers run at once in subprocesses, each `create_app` with
ANILAY_ROLE=gateway (a scale-out gateway process: probes and the Socket.IO gateway, no
REST, no worker loops) on one scratch SQLite database and Redis db 3 as event log, cache
and Socket.IO manager, under the same uvicorn settings (`_gateway.uvicorn_run`):

- single: one process that holds all 1,000 sockets in its phases;
- A and B: two processes that hold 500 each in theirs.

All three tail the same stream (`anilay:events`), as every gateway process does: each
reads every event and hands it to its own subscribed sockets. So that a round measures
one configuration only, the phases alternate, each with fresh connections — single, two,
single, two — and only the phase's sockets are connected during it: 1,000 users with an
access token each (made directly in the scratch database), each socket waits for READY,
and every user socket is in the `announcements` topic. In a round the benchmark appends
N BENCH_PROBE events for `announcements` in one MULTI/EXEC (`server.log.RedisLog`, as a
committed write in another process does), and the clients count frames.

- rate of a round: 1,000 × N deliveries over the time from the append until the last
  socket has counted the last event; per process, its 500 × N over the time until its
  own sockets have all of them;
- server CPU per delivery (utime + stime from /proc over the round): unlike the rates it
  hardly depends on what else shares the machine; beside it, each process's busy share
  of the round (CPU time / wall time) and the benchmark process's own;
- exactly once: after its rounds, each phase sends one more batch that every client
  records (each event's `n`, decoded after the clock stopped): every socket must have
  every event of it once, in log order; and every socket's frame count over the phase
  must equal the events appended in it.

Nothing is pinned: with two CPUs, two gateway processes, the benchmark's clients and
Redis share them in the two-process phases, as the single process and the clients do in
its. The script says how busy each process was, so the scaling it prints can be read
for what it is on this machine.

    python tests/bench/gateway_two_processes.py [--sockets 1000] [--events 40] [--rounds 3]

Exits 1 when a delivery is missing or repeated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import _gateway as bench
import msgspec

SCRIPT = str(Path(__file__).resolve())
TOPIC = "announcements"
ROUND_TIMEOUT_S = 30.0
WARMUP_EVENTS = 5
DEADLINE_S = 170.0


class Recorder:
    """The `n` of every counted frame one client receives while it is attached."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def __call__(self, message: bytes, at: float) -> None:
        self.frames.append(message)

    def numbers(self) -> list[int]:
        return [msgspec.json.decode(frame[2:])[1]["data"]["n"] for frame in self.frames]


class Group:
    """One server process and the sockets it holds in the current phase."""

    def __init__(self, name: str, process, port: int, scratch: str) -> None:
        self.name = name
        self.process = process
        self.port = port
        self.log_path = Path(scratch) / f"{name}.stderr"
        self.tally = bench.Tally()
        self.clients: list[bench.EioClient] = []

    @property
    def pid(self) -> int:
        return self.process.pid


def start(name: str, scratch: str) -> Group:
    with open(Path(scratch) / f"{name}.stderr", "wb") as stderr:
        process, port = bench.start_server(
            SCRIPT, "ours", scratch, "gateway", pin=False, stderr=stderr
        )
    return Group(name, process, port, scratch)


async def deliver(log: bench.Log, groups: list[Group], events: list, others: list[Group]) -> dict:
    """Append `events`; wait until every socket of every group has counted all of them.
    Returns elapsed seconds (overall and per group) and CPU seconds per process (also of
    `others`, the processes with no sockets in this phase)."""
    for group in groups:
        group.tally.expect(len(events) * len(group.clients))
    every = groups + others
    cpu = {g.name: bench.cpu_seconds(g.pid) for g in every}
    load_cpu = time.process_time()
    done: dict[str, float] = {}
    start_at = time.perf_counter()

    async def finish(group: Group) -> None:
        await group.tally.reached.wait()
        done[group.name] = time.perf_counter() - start_at

    await log.append(events)
    try:
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            await asyncio.gather(*(finish(group) for group in groups))
    except TimeoutError:
        missing = sum(g.tally.target - g.tally.count for g in groups)
        raise RuntimeError(f"{missing} deliveries missing after {ROUND_TIMEOUT_S:.0f} s") from None
    elapsed = max(done.values())
    return {
        "elapsed": elapsed,
        "per_group": done,
        "cpu": {g.name: bench.cpu_seconds(g.pid) - cpu[g.name] for g in every},
        "load_cpu": time.process_time() - load_cpu,
    }


async def connect(groups: list[Group], auths: list[dict]) -> float:
    """Split `auths` evenly over `groups` and connect them (each to READY)."""
    share = len(auths) // len(groups)
    started = time.perf_counter()
    connected = await asyncio.gather(
        *(
            bench.open_many(
                group.port,
                auths[index * share : (index + 1) * share],
                ready="READY",
                tally=group.tally,
            )
            for index, group in enumerate(groups)
        )
    )
    for group, clients in zip(groups, connected, strict=True):
        group.clients = clients
    return time.perf_counter() - started


async def phase(
    label: str,
    groups: list[Group],
    others: list[Group],
    auths: list[dict],
    log: bench.Log,
    events: int,
    rounds: int,
    pad: int,
    first: int,
) -> tuple[list[dict], list[str], int]:
    """Connect, warm up, run the timed rounds and the exactly-once round, disconnect.
    Returns the rounds, the problems found, and the next event number."""
    took = await connect(groups, auths)
    sockets = sum(len(g.clients) for g in groups)
    names = " + ".join(f"{g.name} {len(g.clients)}" for g in groups)
    print(f"{label}: {sockets} sockets ({names}) connected to READY in {took:.1f} s", flush=True)
    sent, results, problems = 0, [], []
    try:
        await deliver(log, groups, bench.probe_events(WARMUP_EVENTS, [TOPIC], pad, first), others)
        first, sent = first + WARMUP_EVENTS, sent + WARMUP_EVENTS
        for _ in range(rounds):
            batch = bench.probe_events(events, [TOPIC], pad, first)
            result = await deliver(log, groups, batch, others)
            first, sent = first + events, sent + events
            result["deliveries"] = events * sockets
            result["sizes"] = {g.name: len(g.clients) for g in groups}
            results.append(result)
            print(f"  {label} " + describe(result, groups, others, events), flush=True)

        recorders = {}
        for group in groups:
            for client in group.clients:
                recorders[client] = client.on_counted = Recorder()
        expected = list(range(first, first + events))
        await deliver(log, groups, bench.probe_events(events, [TOPIC], pad, first), others)
        first, sent = first + events, sent + events
        for client in recorders:
            client.on_counted = None
        wrong = sum(1 for recorder in recorders.values() if recorder.numbers() != expected)
        if wrong:
            problems.append(
                f"{label}: {wrong} sockets did not get the checked events once each, in order"
            )
        miscounted = [c for g in groups for c in g.clients if c.count != sent]
        if miscounted:
            problems.append(
                f"{label}: {len(miscounted)} sockets did not count exactly {sent} events"
            )
        print(
            f"  {label} exactly once: {sockets - wrong} of {sockets} sockets got the checked "
            f"batch of {events} events once each, in order; {sockets - len(miscounted)} of "
            f"{sockets} counted exactly the {sent} events of the phase",
            flush=True,
        )
    finally:
        for group in groups:
            await bench.close_all(group.clients)
            group.clients = []
        await asyncio.sleep(1.0)  # the servers' disconnect bookkeeping finishes
    return results, problems, first


def describe(result: dict, groups: list[Group], others: list[Group], events: int) -> str:
    elapsed = result["elapsed"]
    parts = [f"{result['deliveries'] / elapsed:6.0f} deliveries/s"]
    if len(groups) > 1:
        parts.append(
            "per process "
            + ", ".join(
                f"{g.name} {result['sizes'][g.name] * events / result['per_group'][g.name]:.0f}/s"
                for g in groups
            )
        )
    cpu = sum(result["cpu"][g.name] for g in groups)
    parts.append(f"server CPU {cpu * 1e6 / result['deliveries']:.1f} µs/delivery")
    parts.append(
        "busy "
        + ", ".join(f"{g.name} {result['cpu'][g.name] / elapsed:.0%}" for g in groups + others)
        + f", load {result['load_cpu'] / elapsed:.0%}"
    )
    return "; ".join(parts)


async def main(sockets: int, events: int, rounds: int, pad: int) -> int:
    print(
        f"gateway fan-out across processes: {sockets} sockets on `{TOPIC}`, one gateway "
        f"process vs two ({sockets // 2} each) tailing one Redis log"
    )
    print(
        f"{events} events of ~{pad + 120} bytes per round, {rounds} rounds per phase, phases "
        f"single, two, single, two; nothing pinned ({len(bench.CPUS)} CPUs); load average "
        "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    )
    with tempfile.TemporaryDirectory(prefix="anilay-bench-") as scratch:
        accounts = await bench.prepare_ours(scratch, sockets)
        auths = [account.auth() for account in accounts]
        single, a, b = (start(name, scratch) for name in ("single", "A", "B"))
        log = bench.Log()
        results: dict[str, list[dict]] = {"single": [], "two": []}
        problems: list[str] = []
        first = 0
        try:
            async with asyncio.timeout(DEADLINE_S):
                for group in (single, a, b):
                    await bench.wait_until_up(group.port, group.process)
                for label in ("single", "two", "single", "two"):
                    groups, others = ([single], [a, b]) if label == "single" else ([a, b], [single])
                    found, trouble, first = await phase(
                        label, groups, others, auths, log, events, rounds, pad, first
                    )
                    results[label] += found
                    problems += trouble
        finally:
            await log.close()
            for group in (single, a, b):
                bench.stop_server(group.process)
            logs = {g.name: bench.server_log_summary(g.log_path) for g in (single, a, b)}
    for name, lines in logs.items():
        for line in lines:
            print(f"{name} server log: {line}")

    def rate(label: str) -> float:
        return bench.median([r["deliveries"] / r["elapsed"] for r in results[label]])

    def per_process(name: str) -> float:
        return bench.median(
            [r["sizes"][name] * events / r["per_group"][name] for r in results["two"]]
        )

    def cpu_us(label: str, names: list[str]) -> float:
        return bench.median(
            [sum(r["cpu"][n] for n in names) * 1e6 / r["deliveries"] for r in results[label]]
        )

    def busy(label: str, name: str) -> float:
        return bench.median([r["cpu"][name] / r["elapsed"] for r in results[label]])

    def load_busy(label: str) -> float:
        return bench.median([r["load_cpu"] / r["elapsed"] for r in results[label]])

    one, two = rate("single"), rate("two")
    cpu_one, cpu_two = cpu_us("single", ["single"]), cpu_us("two", ["A", "B"])
    # The single process during the two-process rounds has no sockets: it only reads and
    # decodes every event. Summed over the rounds (/proc counts CPU in 10 ms ticks).
    tailed = len(results["two"]) * events
    idle_tailer = sum(r["cpu"]["single"] for r in results["two"]) * 1e6 / tailed
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK") / tailed
    print(
        f"server CPU per delivery (median): single {cpu_one:.1f} µs, two processes "
        f"{cpu_two:.1f} µs together (A {cpu_us('two', ['A']) * 2:.1f}, B "
        f"{cpu_us('two', ['B']) * 2:.1f} per own delivery); a process with no sockets spends "
        f"{idle_tailer:.0f} µs (± {tick_us:.0f}) per event reading the log"
    )
    print(
        f"busy share of a round (median): single {busy('single', 'single'):.0%} of a core, "
        f"load {load_busy('single'):.0%}; two: A {busy('two', 'A'):.0%}, B {busy('two', 'B'):.0%}, "
        f"load {load_busy('two'):.0%} (of {len(bench.CPUS)} cores)"
    )
    cores_one, cores_two = busy("single", "single"), busy("two", "A") + busy("two", "B")
    print(
        f"why: in their rounds the two processes together got {cores_two:.2f} cores of CPU "
        f"against the single process's {cores_one:.2f} (the clients took "
        f"{load_busy('two'):.2f} and {load_busy('single'):.2f}, Redis and other work the "
        f"rest); at the CPU per delivery above that predicts "
        f"×{(cores_two / cpu_two) / (cores_one / cpu_one):.2f}"
    )
    capacity_one = 1e6 / cpu_one
    capacity_two = 2 * 1e6 / cpu_two
    print(
        f"with a core of its own per process, the CPU per delivery allows ~{capacity_one:.0f} "
        f"deliveries/s for one process and ~{capacity_two:.0f} for two "
        f"(×{capacity_two / capacity_one:.2f}); here they share {len(bench.CPUS)} cores with "
        "the clients and Redis"
    )
    for problem in problems:
        print(f"PROBLEM {problem}")
    once = "every socket got every event exactly once" if not problems else "deliveries WRONG"
    print(
        f"two processes: {two:.0f} deliveries/s overall (A {per_process('A'):.0f}/s, B "
        f"{per_process('B'):.0f}/s) vs single process {one:.0f} deliveries/s, ratio "
        f"{two / one:.2f}; {once} ({sockets} sockets, {first} events)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    bench.raise_fd_limit()
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        bench.serve_ours(int(sys.argv[3]), sys.argv[4], sys.argv[5])
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--events", type=int, default=40, help="events per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per phase")
    parser.add_argument("--pad", type=int, default=100, help="filler characters per payload")
    args = parser.parse_args()
    raise SystemExit(bench.run_loop(main(args.sockets, args.events, args.rounds, args.pad)))
