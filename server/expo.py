"""The Expo push service behind one small transport (auth.md R30, R32, R34).

Every call to Expo goes through `ExpoTransport`: an injected httpx client, a configurable base
URL (`/push/send`, `/push/getReceipts`), requests of at most 100 messages, a token bucket that
keeps the whole deployment under 500 messages/s (shared through Redis in scale-out), and the
retry policy of R32 for whole-request failures: HTTP 429, 5xx or a network error are retried
up to 5 times with exponential backoff (1, 2, 4, 8, 16 s with jitter, never sooner than
`Retry-After`); any other 4xx is the request's own fault and is not retried.

What a ticket or receipt *means* (delete a token, retry a message) is decided by the caller
(models.push); this module only speaks Expo's protocol.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from server.redis_client import REDIS_DOWN_ERRORS

log = logging.getLogger("anilay.expo")

DEFAULT_BASE_URL = "https://exp.host/--/api/v2"
SEND_CHUNK = 100  # Expo's limit per /push/send request
RECEIPT_CHUNK = 300  # R33
MAX_RETRIES = 5
RETRY_BASE_S = 1.0
RETRY_AFTER_CAP_S = 60.0
MESSAGES_PER_S = 500  # R30: below Expo's 600/s per project
BUCKET_KEY = "anilay:push:bucket"
TIMEOUT_S = 10.0

Sleep = Callable[[float], Awaitable[None]]


class ExpoError(Exception):
    """Expo could not take a request."""


class ExpoUnavailable(ExpoError):
    """429, 5xx or a network error, still failing after every retry."""


class ExpoRejected(ExpoError):
    """Expo refused the request itself (a 4xx other than 429, or an answer we cannot read):
    sending it again would fail again."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"Expo answered {status}: {detail}")
        self.status = status


class Ticket(msgspec.Struct, frozen=True):
    """The answer for one message: `ok` with a receipt id, or `error` with a code."""

    status: str
    id: str | None = None
    message: str | None = None
    details: dict[str, Any] | None = None

    @property
    def error(self) -> str | None:
        """Expo's error code (`DeviceNotRegistered`, ...), `Unknown` when it gave none."""
        if self.status == "ok":
            return None
        code = (self.details or {}).get("error")
        return code if isinstance(code, str) and code else "Unknown"


Receipt = Ticket  # a receipt has the shape of a ticket without the id


# --- the token bucket (R30) ---------------------------------------------------------------


class TokenBucket:
    """`acquire(n)` returns once n messages may go out."""

    async def acquire(self, n: int) -> None:
        raise NotImplementedError


class LocalTokenBucket(TokenBucket):
    """In-process: one sending process (embedded), or the fallback while Redis is down.

    Tokens may go negative: a caller takes what it needs and sleeps off the debt, so
    concurrent callers queue fairly instead of polling."""

    def __init__(
        self, rate_per_s: float = MESSAGES_PER_S, burst: float | None = None, clock=time.monotonic
    ) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(burst if burst is not None else rate_per_s)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def reserve(self, n: int) -> float:
        """Take n tokens; return how long to wait before using them (seconds)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - n
        self._at = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self, n: int) -> None:
        wait = self.reserve(n)
        if wait > 0:
            await asyncio.sleep(wait)


# Same debt model as LocalTokenBucket, on the Redis server's clock so every process agrees.
_BUCKET_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate / 1000) - n
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens * 1000 / rate)
"""


class RedisTokenBucket(TokenBucket):
    """Shared by every process of a scale-out deployment; per-process while Redis is down."""

    def __init__(
        self,
        client: Any,
        rate_per_s: float = MESSAGES_PER_S,
        burst: float | None = None,
        key: str = BUCKET_KEY,
    ) -> None:
        self.client = client
        self.rate = float(rate_per_s)
        self.burst = float(burst if burst is not None else rate_per_s)
        self.key = key
        self._script = client.register_script(_BUCKET_SCRIPT)
        self._fallback = LocalTokenBucket(rate_per_s, burst)

    async def acquire(self, n: int) -> None:
        try:
            wait_ms = int(await self._script(keys=[self.key], args=[self.rate, self.burst, n]))
        except REDIS_DOWN_ERRORS as error:
            log.warning("push rate bucket unreachable, limiting per process: %s", error)
            await self._fallback.acquire(n)
            return
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)


# --- the transport (R32, R34) -------------------------------------------------------------


class ExpoTransport:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str = DEFAULT_BASE_URL,
        access_token: str | None = None,
        bucket: TokenBucket | None = None,
        retry_base_s: float = RETRY_BASE_S,
        max_retries: int = MAX_RETRIES,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.bucket = bucket or LocalTokenBucket()
        self.retry_base_s = retry_base_s
        self.max_retries = max_retries
        self._sleep = sleep

    async def send(self, messages: Sequence[dict[str, Any]]) -> list[Ticket]:
        """Send messages in requests of at most 100; one ticket per message, in order.

        Raises ExpoUnavailable / ExpoRejected when a request fails as a whole; tickets of
        the chunks sent before it are then lost to the caller, which is why callers hand
        this at most one chunk at a time when they need every ticket.
        """
        tickets: list[Ticket] = []
        for start in range(0, len(messages), SEND_CHUNK):
            chunk = list(messages[start : start + SEND_CHUNK])
            await self.bucket.acquire(len(chunk))
            reply = await self._post("/push/send", chunk)
            tickets.extend(_tickets(reply.get("data"), len(chunk)))
        return tickets

    async def get_receipts(self, ids: Sequence[str]) -> dict[str, Receipt]:
        """Receipts for ticket ids, in requests of at most 300 ids. An id Expo does not
        answer for (not ready yet, or forgotten) is simply absent."""
        receipts: dict[str, Receipt] = {}
        for start in range(0, len(ids), RECEIPT_CHUNK):
            reply = await self._post(
                "/push/getReceipts", {"ids": list(ids[start : start + RECEIPT_CHUNK])}
            )
            data = reply.get("data")
            if not isinstance(data, dict):
                continue
            for receipt_id, raw in data.items():
                receipt = _ticket(raw)
                if receipt is not None:
                    receipts[str(receipt_id)] = receipt
        return receipts

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Content-Type": "application/json",
        }
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        return headers

    async def _post(self, path: str, payload: Any) -> dict[str, Any]:
        body = msgspec.json.encode(payload)
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = await self.client.post(
                    self.base_url + path, content=body, headers=self._headers(), timeout=TIMEOUT_S
                )
            except httpx.HTTPError as error:
                failure = f"{error.__class__.__name__}: {error}"
            else:
                status = response.status_code
                if status == 429 or status >= 500:
                    failure = f"HTTP {status}"
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                elif status >= 400:
                    raise ExpoRejected(status, response.text[:200])
                else:
                    return _json_object(response)
            if attempt >= self.max_retries:
                raise ExpoUnavailable(f"{path}: {failure} after {attempt} retries")
            delay = self.retry_base_s * (2**attempt) * random.uniform(0.8, 1.2)
            if retry_after is not None:
                delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S))
            log.info("expo %s failed (%s); retry %d in %.2fs", path, failure, attempt + 1, delay)
            attempt += 1
            await self._sleep(delay)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        reply = response.json()
    except ValueError:
        raise ExpoRejected(response.status_code, "answer is not JSON") from None
    if not isinstance(reply, dict):
        raise ExpoRejected(response.status_code, "answer is not a JSON object")
    if "data" not in reply and reply.get("errors"):
        raise ExpoRejected(response.status_code, str(reply["errors"])[:200])
    return reply


def _ticket(raw: Any) -> Ticket | None:
    if not isinstance(raw, dict) or raw.get("status") not in ("ok", "error"):
        return None
    details = raw.get("details")
    receipt_id = raw.get("id")
    message = raw.get("message")
    return Ticket(
        status=raw["status"],
        id=str(receipt_id) if receipt_id is not None else None,
        message=str(message)[:200] if message is not None else None,
        details=details if isinstance(details, dict) else None,
    )


def _tickets(data: Any, expected: int) -> list[Ticket]:
    """One ticket per message sent; a missing or unreadable one counts as an error."""
    unknown = Ticket(status="error", message="no ticket")
    if isinstance(data, dict):  # a single message is answered with a single ticket
        data = [data]
    if not isinstance(data, list):
        return [unknown] * expected
    tickets = [_ticket(raw) or unknown for raw in data[:expected]]
    return tickets + [unknown] * (expected - len(tickets))
