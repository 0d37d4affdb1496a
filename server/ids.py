"""Snowflake ids: 41 bits of milliseconds since 2025-01-01, 10 bits worker, 12 bits sequence.

Time-ordered, unique across processes as long as each process has its own worker id, and
serialized as JSON strings (JavaScript cannot hold 64-bit integers).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER_ID = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_ID = (1 << 63) - 1
# A backwards step this small (NTP slew) is waited out; anything larger is refused.
CLOCK_SKEW_TOLERANCE_MS = 5


class ClockMovedBackwards(RuntimeError):
    """The wall clock went back: minting now could repeat an id already handed out."""


class SnowflakeGenerator:
    def __init__(self, worker_id: int, clock=time.time) -> None:
        if not 0 <= worker_id <= MAX_WORKER_ID:
            raise ValueError(f"worker id must be 0..{MAX_WORKER_ID}, got {worker_id}")
        self.worker_id = worker_id
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000) - EPOCH_MS

    def next_id(self) -> int:
        with self._lock:
            now = self._now_ms()
            if now < self._last_ms:
                behind = self._last_ms - now
                if behind > CLOCK_SKEW_TOLERANCE_MS:
                    raise ClockMovedBackwards(f"clock moved back {behind} ms; refusing to mint")
                while now < self._last_ms:
                    time.sleep(0.001)
                    now = self._now_ms()
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & MAX_SEQUENCE
                if self._sequence == 0:  # 4096 ids this millisecond: wait for the next one
                    while now <= self._last_ms:
                        now = self._now_ms()
            else:
                self._sequence = 0
            self._last_ms = now
            return (
                (now << (WORKER_BITS + SEQUENCE_BITS))
                | (self.worker_id << SEQUENCE_BITS)
                | self._sequence
            )


def snowflake_time(snowflake: int) -> datetime:
    """When an id was minted (its embedded timestamp)."""
    ms = (snowflake >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def snowflake_at(moment: datetime) -> int:
    """The smallest id minted at `moment`: a cursor bound for time queries."""
    ms = int(moment.timestamp() * 1000) - EPOCH_MS
    return max(ms, 0) << (WORKER_BITS + SEQUENCE_BITS)


def parse_snowflake(value: object) -> int | None:
    """A snowflake from its wire form (a decimal string), or None if it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 < value <= MAX_ID else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
        return number if 0 < number <= MAX_ID else None
    return None


_generator = SnowflakeGenerator(0)


def configure(worker_id: int) -> None:
    """Set this process's worker id; called once at startup by the composition root."""
    global _generator
    if worker_id != _generator.worker_id:
        _generator = SnowflakeGenerator(worker_id)


def new_id() -> int:
    return _generator.next_id()
