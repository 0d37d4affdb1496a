"""The per-socket event budget (gateway.md: 120 events per 60 s, then refusals; three
refusals in a window close the socket). The live flood test is in test_presence.py; these
pin the counter's arithmetic with a hand-held clock."""

from __future__ import annotations

import pytest

from gateway.handlers import EVENTS_PER_WINDOW, WINDOW_S, Limits, SlidingCount


def test_the_121st_event_in_a_window_is_refused():
    limits = Limits()
    now = limits.events.started
    assert all(limits.allow(now + i * 0.01) for i in range(EVENTS_PER_WINDOW))
    assert not limits.allow(now + 2)
    assert not limits.allow(now + WINDOW_S - 0.01)


def test_refused_events_do_not_use_up_the_budget():
    limits = Limits()
    now = limits.events.started
    for _ in range(EVENTS_PER_WINDOW):
        limits.allow(now)
    for _ in range(50):
        assert not limits.allow(now + 1)
    assert limits.events.current == EVENTS_PER_WINDOW


def test_the_budget_comes_back_as_the_window_slides():
    limits = Limits()
    now = limits.events.started
    for _ in range(EVENTS_PER_WINDOW):
        limits.allow(now)
    # Half a window later, half of the previous window still counts: 60 of 120 are free.
    later = now + WINDOW_S * 1.5
    granted = sum(limits.allow(later) for _ in range(EVENTS_PER_WINDOW))
    assert granted == EVENTS_PER_WINDOW // 2


def test_after_two_quiet_windows_nothing_is_remembered():
    limits = Limits()
    now = limits.events.started
    for _ in range(EVENTS_PER_WINDOW):
        limits.allow(now)
    assert all(limits.allow(now + 2 * WINDOW_S + i * 0.001) for i in range(EVENTS_PER_WINDOW))


def test_strikes_count_up_within_a_window_and_fade_after_it():
    limits = Limits()
    now = limits.strikes.started
    assert [limits.strike(now + i) for i in range(3)] == [1, 2, 3]
    assert limits.strike(now + 3 * WINDOW_S) == 1


@pytest.mark.parametrize("elapsed", [0.0, 0.25, 0.5, 0.99])
def test_the_estimate_weights_the_previous_window_by_its_overlap(elapsed):
    count = SlidingCount(10.0, 100.0)
    count.current = 40
    assert count.estimate(100.0 + 10.0 * (1 + elapsed)) == pytest.approx(40 * (1 - elapsed))
    assert count.current == 0 and count.previous == 40


def test_a_socket_costs_a_few_hundred_bytes_of_budget_not_a_timestamp_per_event():
    limits = Limits()
    for _ in range(EVENTS_PER_WINDOW):
        limits.allow(limits.events.started)
    assert not hasattr(limits, "__dict__")
    assert not hasattr(limits.events, "__dict__")
