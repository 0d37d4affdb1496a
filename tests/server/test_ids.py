"""Snowflake ids (DESIGN "IDs"): layout, order, uniqueness, and a clock that goes back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from server.ids import (
    EPOCH_MS,
    ClockMovedBackwards,
    SnowflakeGenerator,
    parse_snowflake,
    snowflake_at,
    snowflake_time,
)


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def test_layout_is_41_bits_time_10_bits_worker_12_bits_sequence():
    clock = FakeClock(EPOCH_MS + 5000)
    snowflake = SnowflakeGenerator(worker_id=7, clock=clock).next_id()
    assert snowflake >> 22 == 5000
    assert (snowflake >> 12) & 0x3FF == 7
    assert snowflake & 0xFFF == 0


def test_ids_increase_and_never_repeat_within_a_millisecond():
    clock = FakeClock(EPOCH_MS + 1)
    generator = SnowflakeGenerator(1, clock=clock)
    ids = [generator.next_id() for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000


def test_two_workers_never_mint_the_same_id_at_the_same_instant():
    clock = FakeClock(EPOCH_MS + 10)
    a = {SnowflakeGenerator(1, clock=clock).next_id() for _ in range(1)}
    b = {SnowflakeGenerator(2, clock=clock).next_id() for _ in range(1)}
    assert a.isdisjoint(b)


def test_concurrent_threads_get_unique_ids():
    generator = SnowflakeGenerator(3)
    out: list[list[int]] = [[] for _ in range(4)]

    def mint(bucket: list[int]) -> None:
        bucket.extend(generator.next_id() for _ in range(5000))

    threads = [threading.Thread(target=mint, args=(bucket,)) for bucket in out]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for bucket in out for i in bucket]
    assert len(set(everything)) == 20_000


def test_a_clock_that_goes_back_is_refused():
    clock = FakeClock(EPOCH_MS + 10_000)
    generator = SnowflakeGenerator(1, clock=clock)
    generator.next_id()
    clock.ms -= 1000
    with pytest.raises(ClockMovedBackwards):
        generator.next_id()


def test_sequence_exhaustion_waits_for_the_next_millisecond():
    ticks = iter(range(EPOCH_MS + 100, EPOCH_MS + 10_000))
    frozen = [EPOCH_MS + 50]

    def clock() -> float:
        return frozen[0] / 1000

    generator = SnowflakeGenerator(1, clock=clock)
    first = [generator.next_id() for _ in range(4096)]
    frozen_ms = frozen[0]

    def advancing() -> float:
        return next(ticks) / 1000

    generator._clock = advancing
    after = generator.next_id()
    assert after >> 22 > frozen_ms - EPOCH_MS
    assert after > max(first)


def test_worker_id_out_of_range_is_refused():
    with pytest.raises(ValueError):
        SnowflakeGenerator(1024)


def test_time_round_trip():
    moment = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert snowflake_time(snowflake_at(moment)) == moment


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123", 123),
        (123, 123),
        ("0", None),
        ("-5", None),
        ("12a", None),
        ("", None),
        ("9" * 20, None),
        (True, None),
        (None, None),
        (" 12", None),
        ("１２", None),
    ],
)
def test_parse_snowflake(raw, expected):
    assert parse_snowflake(raw) == expected
