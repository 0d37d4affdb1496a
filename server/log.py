"""The event log: every published event in publish order, readable after any id.

Two implementations behind one interface: the Redis stream `anilay:events` (production,
shared by every process) and an in-process list (embedded). Both trim to the newest
`maxlen` entries and to `retention_s`, and both remember the newest id they ever trimmed,
which is how a resume knows whether it would be partial (gateway.md G4).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import redis.asyncio as aioredis

from server.events import Event, LoggedEvent, decode_event, encode_event

STREAM_KEY = "anilay:events"
ZERO_ID = "0-0"


def parse_log_id(value: str) -> tuple[int, int] | None:
    """`<ms>-<seq>` as a comparable tuple, or None if it is not a log id."""
    if not isinstance(value, str) or len(value) > 41:
        return None
    ms, dash, seq = value.partition("-")
    if not dash or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _logged(log_id: str, event: Event) -> LoggedEvent:
    return LoggedEvent(
        id=log_id,
        type=event.type,
        targets=event.targets,
        data=event.data,
        ts=event.ts,
        uid=event.uid,
    )


class EventLog:
    """Append events; read them back after an id; know what has been trimmed away."""

    async def append(self, events: list[Event]) -> list[str]:
        raise NotImplementedError

    async def read_after(
        self, after: str, count: int = 500, block_ms: int | None = None
    ) -> list[LoggedEvent]:
        """Events with id > `after`, oldest first; with `block_ms`, wait that long for one."""
        raise NotImplementedError

    async def last_id(self) -> str:
        raise NotImplementedError

    async def can_resume_from(self, after: str) -> bool:
        """True when every event after `after` is still in the log, so a replay from there
        is complete. When that cannot be proven, False: a resume is never partial."""
        raise NotImplementedError

    async def trim(self) -> None:
        """Apply the retention window (maxlen is applied on append)."""

    async def length(self) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class InProcessLog(EventLog):
    def __init__(self, maxlen: int, retention_s: float) -> None:
        self.maxlen = maxlen
        self.retention_s = retention_s
        self._entries: deque[tuple[tuple[int, int], LoggedEvent]] = deque()
        self._last = (0, 0)
        self._trimmed = (0, 0)
        self._appended = asyncio.Condition()

    def _next_id(self) -> tuple[int, int]:
        ms = int(time.time() * 1000)
        if ms <= self._last[0]:
            return self._last[0], self._last[1] + 1
        return ms, 0

    async def append(self, events: list[Event]) -> list[str]:
        ids = []
        for event in events:
            key = self._next_id()
            self._last = key
            log_id = f"{key[0]}-{key[1]}"
            self._entries.append((key, _logged(log_id, event)))
            ids.append(log_id)
        while len(self._entries) > self.maxlen:
            self._trimmed = self._entries.popleft()[0]
        async with self._appended:
            self._appended.notify_all()
        return ids

    async def read_after(
        self, after: str, count: int = 500, block_ms: int | None = None
    ) -> list[LoggedEvent]:
        key = parse_log_id(after)
        if key is None:
            raise ValueError(f"not a log id: {after!r}")
        found = self._after(key, count)
        if found or not block_ms:
            return found
        async with self._appended:
            try:
                await asyncio.wait_for(
                    self._appended.wait_for(lambda: self._last > key), block_ms / 1000
                )
            except TimeoutError:
                return []
        return self._after(key, count)

    def _after(self, key: tuple[int, int], count: int) -> list[LoggedEvent]:
        if not self._entries or self._entries[-1][0] <= key:
            return []
        # Entries are sorted: binary search for the first id after `key`.
        low, high = 0, len(self._entries)
        while low < high:
            middle = (low + high) // 2
            if self._entries[middle][0] <= key:
                low = middle + 1
            else:
                high = middle
        out = []
        for index in range(low, min(low + count, len(self._entries))):
            out.append(self._entries[index][1])
        return out

    async def last_id(self) -> str:
        return f"{self._last[0]}-{self._last[1]}"

    async def can_resume_from(self, after: str) -> bool:
        wanted = parse_log_id(after)
        return wanted is not None and self._trimmed <= wanted <= self._last

    async def trim(self) -> None:
        horizon = int((time.time() - self.retention_s) * 1000)
        while self._entries and self._entries[0][0][0] < horizon:
            self._trimmed = self._entries.popleft()[0]

    async def length(self) -> int:
        return len(self._entries)


class RedisLog(EventLog):
    """The stream `anilay:events`; the stream entry id is the event id."""

    def __init__(
        self, client: aioredis.Redis, maxlen: int, retention_s: float, key: str = STREAM_KEY
    ) -> None:
        self.client = client
        self.maxlen = maxlen
        self.retention_s = retention_s
        self.key = key

    async def append(self, events: list[Event]) -> list[str]:
        # One MULTI/EXEC: a batch from one transaction lands contiguous and in order.
        async with self.client.pipeline(transaction=True) as pipe:
            for event in events:
                pipe.xadd(
                    self.key,
                    {"e": encode_event(event)},
                    maxlen=self.maxlen,
                    approximate=True,
                )
            ids = await pipe.execute()
        return [_text(i) for i in ids]

    async def read_after(
        self, after: str, count: int = 500, block_ms: int | None = None
    ) -> list[LoggedEvent]:
        if parse_log_id(after) is None:
            raise ValueError(f"not a log id: {after!r}")
        reply = await self.client.xread({self.key: after}, count=count, block=block_ms)
        out = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(_logged(_text(entry_id), decode_event(fields[b"e"])))
        return out

    async def _info(self) -> dict:
        try:
            return await self.client.xinfo_stream(self.key)
        except aioredis.ResponseError:  # no stream yet: nothing appended, nothing trimmed
            return {}

    async def last_id(self) -> str:
        return _text((await self._info()).get("last-generated-id", ZERO_ID))

    async def can_resume_from(self, after: str) -> bool:
        """Redis does not record the newest id removed by trimming (`max-deleted-entry-id`
        counts only XDEL), so: if anything was ever trimmed, the client must already hold
        the oldest retained entry (or, for an emptied stream, the last one ever added)."""
        wanted = parse_log_id(after)
        if wanted is None:
            return False
        info = await self._info()
        last = parse_log_id(_text(info.get("last-generated-id", ZERO_ID)))
        if last is None or wanted > last:
            return False
        length, added = int(info.get("length", 0)), int(info.get("entries-added", 0))
        if added == length:  # nothing was ever trimmed
            return True
        first = info.get("first-entry")
        if not first:  # everything was trimmed: only a client that saw the last one is whole
            return wanted == last
        return wanted >= parse_log_id(_text(first[0]))

    async def trim(self) -> None:
        horizon = int((time.time() - self.retention_s) * 1000)
        await self.client.xtrim(self.key, minid=f"{horizon}-0", approximate=False)

    async def length(self) -> int:
        return int(await self.client.xlen(self.key))
