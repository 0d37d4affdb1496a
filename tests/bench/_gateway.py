"""Shared pieces of the gateway benchmarks (not a benchmark: `make bench` skips `_*.py`).

- `EioClient`: a lean Socket.IO v5 / Engine.IO v4 client, websocket transport only, on a
  hand-written RFC 6455 asyncio protocol. Thousands of python-socketio AsyncClients in one
  load process would cost more CPU than the server under test and flatten any ratio, so
  this client answers pings, sends the connect packet with `auth`, counts the frames that
  start with `42["BENCH_PROBE"` without decoding them, and decodes every other event.
- Our server in a subprocess: `create_app` on a scratch SQLite database (migrated with
  `server.migrate`) with Redis db 3 as event log, cache and Socket.IO manager, so the
  benchmark process can append to the same log the server tails, as a committed REST
  write in another process would. Redis db 3 is emptied first (ANILAY_BENCH_REDIS_URL
  points elsewhere).
- Users and access tokens, made before the server starts with the product's own
  operations: a `users` row like registration's (email verified, no password: the argon2
  hash and the verification mail are not what is measured), `create_session` from
  `models.auth.sessions`, and `KeyRing.issue` with the signing key the server then loads
  from the same database (same key-encryption key). Registering 1,000 users over HTTP is
  refused by the per-IP limits (5 registrations an hour, 20 logins in 10 minutes), and
  the product has no setting to raise them.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _http import uvicorn_run  # noqa: E402  (re-exported: one uvicorn setup for all)

from server.events import event_type, make_event  # noqa: E402

HOST = "127.0.0.1"
WS_PATH = "/api/v1/ws/"
REDIS_URL = os.environ.get("ANILAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
BENCH_KEK = "YW5pbGF5LWJlbmNoLWtleS1lbmNyeXB0aW9uLWszMiE"  # 32 bytes, benchmarks only
BENCH_WORKER_ID = 1023  # this process's snowflake worker id, leased so the server skips it
STARTUP_TIMEOUT_S = 30.0
CPUS = sorted(os.sched_getaffinity(0))
PINNED = len(CPUS) >= 2
SERVER_CPUS, LOAD_CPUS = set(CPUS[:1]), set(CPUS[1:])

EVENT = "BENCH_PROBE"
COUNTED = b'42["' + EVENT.encode() + b'"'


class BenchProbe(msgspec.Struct):
    n: int
    sent: float = 0.0  # time.perf_counter() of the benchmark process when it was appended
    pad: str = ""


event_type(EVENT, BenchProbe)


def probe_events(count: int, topics: list[str], pad: int = 0, first: int = 0) -> list:
    """`count` BENCH_PROBE events for `topics`, built with the product's `make_event`."""
    filler = "x" * pad
    return [make_event(EVENT, BenchProbe(n=first + i, pad=filler), topics) for i in range(count)]


# --- the machine -----------------------------------------------------------------------


def raise_fd_limit() -> None:
    """Thousands of sockets in one process: lift the soft open-files limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin_load_process() -> None:
    if PINNED:
        os.sched_setaffinity(0, LOAD_CPUS)


def placement() -> str:
    """Where everything runs, and how busy the machine already is (a loaded machine slows
    every number down; the CPU-per-delivery figures are the least affected)."""
    busy = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    if not PINNED:
        return f"one CPU shared by server, Redis and load; {busy}"
    load = ",".join(map(str, sorted(LOAD_CPUS)))
    return f"server on CPU {min(SERVER_CPUS)}, load process on CPU {load}, Redis unpinned; {busy}"


def rss_kb(pid: int) -> int:
    """A process's resident set size in KiB (VmRSS from /proc/<pid>/status; 0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def server_log_summary(path: str | Path, top: int = 6) -> list[str]:
    """What a server wrote to its stderr file: its distinct messages, most frequent first
    (traceback frames and chained-exception banners are left out, their last line kept)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    skip = ("Traceback", "The above exception", "During handling", "  ", "^", "~")
    counted = collections.Counter(
        line[:160] for line in lines if line.strip() and not line.startswith(skip)
    )
    if not counted:
        return []
    tracebacks = sum(line.startswith("Traceback") for line in lines)
    summary = [f"{len(lines)} lines on stderr, {tracebacks} tracebacks; most frequent:"]
    summary += [f"  {count} × {line}" for line, count in counted.most_common(top)]
    return summary


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (from /proc; 0.0 where there is none).

    CPU per delivery does not depend on what else the machine runs, unlike a rate."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_loop(coroutine) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# --- servers ---------------------------------------------------------------------------


def our_settings(scratch: str, role: str = "all"):
    from server.settings import Settings

    return Settings(
        role=role,  # type: ignore[arg-type]
        database_url=f"sqlite+aiosqlite:///{scratch}/anilay.db",
        redis_url=REDIS_URL,
        access_log=False,
        log_level="warning",
        key_encryption_key=BENCH_KEK,
        key_encryption_key_file=f"{scratch}/kek",
        data_dir=f"{scratch}/data",
    )


def serve_ours(port: int, scratch: str, role: str = "all") -> None:
    """Our whole product in this process (`role` as ANILAY_ROLE: "all", or "gateway" for a
    scale-out gateway process). With ANILAY_BENCH_PROFILE=path, under cProfile (stats
    written to that path when the server stops)."""
    from server.app import create_app

    app = create_app(our_settings(scratch, role))
    profile_path = os.environ.get("ANILAY_BENCH_PROFILE")
    if not profile_path:
        uvicorn_run(app, port)
        return
    import cProfile
    import signal

    # uvicorn re-raises SIGTERM once it has shut down: exit through `finally` instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvicorn_run(app, port)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)


def start_server(
    script: str, kind: str, scratch: str, *extra: str, pin: bool = True, stderr: Any = None
) -> tuple[subprocess.Popen, int]:
    """`script _serve kind port scratch` in a subprocess, pinned to the server CPU unless
    `pin` is false; `stderr` as for Popen (default: this process's)."""
    port = free_port()
    command = [sys.executable, script, "_serve", kind, str(port), scratch, *extra]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(command, cwd=scratch, env=env, stderr=stderr)
    if PINNED and pin:
        os.sched_setaffinity(process.pid, SERVER_CPUS)
    return process, port


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def wait_until_up(port: int, process: subprocess.Popen) -> None:
    """Until an Engine.IO handshake on the websocket path succeeds (lifespan is done)."""
    deadline = time.perf_counter() + STARTUP_TIMEOUT_S
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            client = await open_client(port, None, timeout=2)
        except (OSError, TimeoutError, ConnectionError):
            await asyncio.sleep(0.1)
            continue
        client.close()
        return
    raise RuntimeError(f"server on port {port} did not start in {STARTUP_TIMEOUT_S:.0f} s")


# --- users and the event log -----------------------------------------------------------


@dataclasses.dataclass
class Account:
    user_id: int
    session_id: int
    token: str = ""
    spare_sessions: list[int] = dataclasses.field(default_factory=list)
    spare_tokens: list[str] = dataclasses.field(default_factory=list)  # when asked for

    def auth(self, **extra: Any) -> dict[str, Any]:
        return {"token": self.token, **extra}


async def reset_redis() -> None:
    """Empty the benchmark's Redis database and lease our snowflake worker id in it."""
    import redis.asyncio as aioredis

    from server.workers import WORKER_LEASE_KEY

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
        await client.set(WORKER_LEASE_KEY.format(BENCH_WORKER_ID), "bench", ex=600)
    finally:
        await client.aclose()


async def prepare_ours(
    scratch: str, users: int, spare_sessions: int = 0, spare_tokens: bool = False
) -> list[Account]:
    """Migrate the scratch database; make `users` accounts with a session and a token each.

    `spare_sessions` more sessions per user are opened first (for a user to revoke over
    REST); at most 49, so the 50-session limit never revokes one by itself. With
    `spare_tokens`, each spare session gets an access token too (`Account.spare_tokens`,
    in `spare_sessions` order): one user with several devices, a socket each.
    """
    from datetime import UTC, datetime

    from models.auth.sessions import create_session
    from models.users import users as users_table
    from server import ids
    from server.app import build_services
    from server.migrate import upgrade_async
    from server.tokens import KeyRing, load_key_encryption_key

    assert spare_sessions < 50
    await reset_redis()
    ids.configure(BENCH_WORKER_ID)
    settings = our_settings(scratch)
    await upgrade_async(settings.database_url)
    services = build_services(settings)
    await services.db.connect()
    try:
        kek = load_key_encryption_key(settings.key_encryption_key, settings.key_encryption_key_file)
        services.keys = KeyRing(services.db, kek, settings.issuer)
        await services.keys.ensure_active()
        accounts = []
        now = datetime.now(UTC)
        session_args = dict(
            client="other", device_name="bench", user_agent="bench", ip=HOST, auth_method="password"
        )
        async with services.db.transaction() as tx:
            for index in range(users):
                user_id = ids.new_id()
                name = f"bench{index:05d}"
                await services.db.execute(
                    users_table.insert().values(
                        id=user_id,
                        username=name,
                        username_lower=name,
                        username_generated=False,
                        email=f"{name}@bench.invalid",
                        email_lower=f"{name}@bench.invalid",
                        email_verified_at=now,
                        role="user",
                        status="active",
                        locale="en",
                        created_at=now,
                        updated_at=now,
                    )
                )
                spare = []
                for _ in range(spare_sessions):
                    row, _ = await create_session(services, tx, user_id=user_id, **session_args)
                    spare.append(row["id"])
                row, _ = await create_session(services, tx, user_id=user_id, **session_args)
                accounts.append(Account(user_id, row["id"], spare_sessions=spare))
        for account in accounts:
            account.token = services.keys.issue(account.user_id, account.session_id, "user")
            if spare_tokens:
                account.spare_tokens = [
                    services.keys.issue(account.user_id, session_id, "user")
                    for session_id in account.spare_sessions
                ]
        return accounts
    finally:
        await services.db.disconnect()
        if services.redis is not None:
            await services.redis.aclose()


class Log:
    """Appends to a Redis stream with the product's RedisLog (one MULTI/EXEC per call)."""

    def __init__(self, key: str | None = None) -> None:
        import redis.asyncio as aioredis

        from server.log import STREAM_KEY, RedisLog

        self.client = aioredis.Redis.from_url(REDIS_URL)
        self.log = RedisLog(self.client, maxlen=100_000, retention_s=300, key=key or STREAM_KEY)

    async def append(self, events: list) -> list[str]:
        return await self.log.append(events)

    async def close(self) -> None:
        await self.client.aclose()


# --- the client ------------------------------------------------------------------------


class Refused(Exception):
    """The server answered the Socket.IO connect with connect_error."""


class Tally:
    """Counted frames across many clients; `reached` is set when `target` is hit."""

    def __init__(self) -> None:
        self.count = 0
        self.target = -1
        self.reached = asyncio.Event()

    def expect(self, more: int) -> None:
        self.target = self.count + more
        self.reached.clear()
        if self.count >= self.target:
            self.reached.set()


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, final frame (RFC 6455 §5.3: every client frame is masked)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    if not size:
        return head + mask
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return head + mask + masked


_decode_json = msgspec.json.decode
_encode_json = msgspec.json.encode


class EioClient(asyncio.Protocol):
    """One Socket.IO connection to namespace "/"; see the module docstring."""

    def __init__(
        self,
        port: int,
        auth: dict[str, Any] | None,
        tally: Tally | None = None,
        on_counted: Callable[[bytes, float], None] | None = None,
        on_event: Callable[[str, Any, float], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.port = port
        self.auth = auth
        self.tally = tally
        self.on_counted = on_counted
        self.on_event = on_event
        self.count = 0  # counted frames received
        self.events: list[tuple[str, Any]] = []  # every other event, decoded
        self.opened: asyncio.Future = loop.create_future()  # Engine.IO open packet
        self.connected: asyncio.Future = loop.create_future()  # Socket.IO connect answer
        self.lost: asyncio.Future = loop.create_future()
        self.changed = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self._head: bytearray | None = bytearray()
        self._buffer = bytearray()
        self._fragments: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {WS_PATH}?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {HOST}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._head[: self._head.find(b"\r\n")])
            data = bytes(self._head[end + 4 :])
            self._head = None
            if b" 101 " not in status + b" ":
                self._fail(ConnectionError(f"websocket upgrade refused: {status!r}"))
                return
            if not data:
                return
        buffer = self._buffer
        buffer += data
        size, position = len(buffer), 0
        counted = COUNTED
        while size - position >= 2:
            first, length = buffer[position], buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = (buffer[position + 2] << 8) | buffer[position + 3]
                start = position + 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                start = position + 10
            end = start + length
            if end > size:
                break
            position = end
            if first == 0x81:  # a whole text frame: the common case
                if buffer.startswith(counted, start, end) and self.on_counted is None:
                    self._count()
                else:
                    self._text(bytes(buffer[start:end]))
                continue
            opcode = first & 0x0F
            if opcode in (0x0, 0x1):  # a fragment of a text message
                self._fragments.append(bytes(buffer[start:end]))
                if first & 0x80:
                    message, self._fragments = b"".join(self._fragments), []
                    self._text(message)
            elif opcode == 0x8:
                self.close()
            elif opcode == 0x9:
                self._write(_client_frame(0xA, bytes(buffer[start:end])))
        if position:
            del buffer[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))
        if not self.lost.done():
            self.lost.set_result(None)
        self.changed.set()

    # Engine.IO / Socket.IO
    def _count(self) -> None:
        self.count += 1
        tally = self.tally
        if tally is not None:
            tally.count += 1
            if tally.count == tally.target:
                tally.reached.set()

    def _text(self, message: bytes) -> None:
        kind = message[:1]
        if kind == b"4":
            packet = message[1:2]
            if packet == b"2":
                if message.startswith(COUNTED):
                    self._count()
                    if self.on_counted is not None:
                        self.on_counted(message, time.perf_counter())
                    return
                name, *args = _decode_json(message[2:])
                data = args[0] if args else None
                self.events.append((name, data))
                if self.on_event is not None:
                    self.on_event(name, data, time.perf_counter())
                self.changed.set()
            elif packet == b"0":
                if not self.connected.done():
                    self.connected.set_result(_decode_json(message[2:] or b"{}"))
            elif packet == b"4":
                if not self.connected.done():
                    self.connected.set_exception(Refused(message[2:].decode()))
            elif packet == b"1":
                self.close()
        elif kind == b"2":  # ping: answer at once or the server drops us
            self.send(b"3" + message[1:])
        elif kind == b"0":
            if not self.opened.done():
                self.opened.set_result(_decode_json(message[1:]))
            if self.auth is not None:
                self.send(b"40" + _encode_json(self.auth))
        elif kind == b"1":
            self.close()

    def _fail(self, error: BaseException) -> None:
        for future in (self.opened, self.connected):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: no "never retrieved" warning

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # the API the benchmarks use
    def send(self, text: bytes) -> None:
        self._write(_client_frame(0x1, text))

    def close(self) -> None:
        """Leave the namespace and close the websocket (a clean disconnect)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(0x1, b"41") + _client_frame(0x8, b"\x03\xe8"))
            self.transport.close()

    def of(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 10) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(self.of(name)) < count:
                if self.lost.done():
                    raise ConnectionError(f"closed while waiting for {name}")
                self.changed.clear()
                await self.changed.wait()
        return self.of(name)


async def open_client(
    port: int,
    auth: dict[str, Any] | None,
    *,
    ready: str | None = None,
    timeout: float = 10,
    client_class: type[EioClient] = EioClient,
    **options: Any,
) -> EioClient:
    """Connect; with `auth`, also join namespace "/"; with `ready`, wait for that event.
    `client_class` may be a subclass of EioClient (e.g. one that also sends)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, client = await loop.create_connection(
            lambda: client_class(port, auth, **options), HOST, port
        )
        try:
            await asyncio.shield(client.opened)
            if auth is not None:
                await asyncio.shield(client.connected)
            if ready is not None:
                await client.wait_for(ready, timeout=timeout)
        except BaseException:
            client.close()
            raise
    return client


async def open_many(
    port: int,
    auths: list[dict[str, Any]],
    *,
    ready: str | None,
    concurrency: int = 50,
    **options: Any,
) -> list[EioClient]:
    """One client per auth, `concurrency` handshakes at a time (more at once exhaust our
    server's Redis pool, see `close_all`); each is connected, and has its `ready` event,
    when this returns."""
    gate = asyncio.Semaphore(concurrency)

    async def one(auth: dict[str, Any]) -> EioClient:
        async with gate:
            return await open_client(port, auth, ready=ready, timeout=30, **options)

    return list(await asyncio.gather(*(one(auth) for auth in auths)))


async def close_all(clients: list[EioClient], batch: int = 25, pause_s: float = 0.05) -> None:
    """Close every client, `batch` at a time: a thousand disconnects at once exhaust our
    server's Redis connection pool (100) and fail in its disconnect handler, which is not
    what these benchmarks measure."""
    for start in range(0, len(clients), batch):
        for client in clients[start : start + batch]:
            client.close()
        await asyncio.sleep(pause_s)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await asyncio.gather(*(client.lost for client in clients), return_exceptions=True)
