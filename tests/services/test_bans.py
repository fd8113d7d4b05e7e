"""AuthFailureTracker: sliding-window failure counting, bans, bounded memory."""

from __future__ import annotations

import pytest

from softswitch.services.bans import AuthFailureTracker

IP = "192.0.2.7"


def tracker(**kwargs) -> AuthFailureTracker:
    params = {"max_failures": 5, "window": 60.0, "ban_time": 600.0}
    params.update(kwargs)
    return AuthFailureTracker(**params)


def test_nth_failure_in_window_bans_and_n_minus_one_does_not() -> None:
    t = tracker()
    results = [t.record_failure(IP, 100.0 + i) for i in range(4)]
    assert results == [False] * 4
    assert not t.is_banned(IP, 104.0)
    assert t.failure_count(IP, 104.0) == 4
    assert t.record_failure(IP, 104.0) is True
    assert t.is_banned(IP, 104.0)


def test_only_the_failure_that_starts_the_ban_returns_true() -> None:
    t = tracker(max_failures=2)
    assert t.record_failure(IP, 0.0) is False
    assert t.record_failure(IP, 1.0) is True
    assert t.record_failure(IP, 2.0) is False  # already banned


def test_failures_spread_over_more_than_the_window_do_not_ban() -> None:
    t = tracker(max_failures=3, window=60.0)
    # Any three consecutive failures span exactly 60 s: the oldest has just left the window.
    for i in range(20):
        assert t.record_failure(IP, i * 30.0) is False
    assert not t.is_banned(IP, 20 * 30.0)


def test_window_edge_is_half_open() -> None:
    t = tracker(max_failures=2, window=10.0)
    t.record_failure(IP, 0.0)
    assert t.record_failure(IP, 10.0) is False  # the first one is exactly 10 s old: gone
    assert t.record_failure(IP, 19.999) is True


def test_ban_expires_at_exactly_ban_time() -> None:
    t = tracker(max_failures=1, ban_time=600.0)
    assert t.record_failure(IP, 1000.0) is True
    assert t.is_banned(IP, 1599.999)
    assert not t.is_banned(IP, 1600.0)
    assert t.banned(1600.0) == []


def test_after_ban_expiry_counting_starts_afresh() -> None:
    t = tracker(max_failures=2, window=60.0, ban_time=100.0)
    t.record_failure(IP, 0.0)
    assert t.record_failure(IP, 1.0) is True
    assert t.record_failure(IP, 101.0) is False
    assert t.record_failure(IP, 102.0) is True


def test_success_resets_failure_history() -> None:
    t = tracker(max_failures=3)
    t.record_failure(IP, 0.0)
    t.record_failure(IP, 1.0)
    t.record_success(IP)
    assert t.failure_count(IP, 2.0) == 0
    assert t.record_failure(IP, 2.0) is False
    assert t.record_failure(IP, 3.0) is False
    assert t.record_failure(IP, 4.0) is True


def test_sources_are_independent() -> None:
    t = tracker(max_failures=2)
    t.record_failure("198.51.100.1", 0.0)
    t.record_failure("198.51.100.2", 0.0)
    assert not t.is_banned("198.51.100.1", 0.0)
    assert t.record_failure("198.51.100.1", 1.0) is True
    assert not t.is_banned("198.51.100.2", 1.0)


def test_banned_lists_sources_with_their_end_time_soonest_first() -> None:
    t = tracker(max_failures=1, ban_time=100.0)
    t.record_failure("b", 10.0)
    t.record_failure("a", 20.0)
    assert t.banned(50.0) == [("b", 110.0), ("a", 120.0)]
    assert t.banned(115.0) == [("a", 120.0)]


def test_unban() -> None:
    t = tracker(max_failures=1)
    t.record_failure(IP, 0.0)
    assert t.unban(IP) is True
    assert not t.is_banned(IP, 1.0)
    assert t.unban(IP) is False


def test_memory_is_bounded_under_a_flood_of_sources() -> None:
    t = tracker(max_failures=3, max_tracked=100)
    for i in range(10_000):
        t.record_failure(f"10.0.{i // 256}.{i % 256}", float(i) / 1000)
        assert t.tracked <= 200
    # The most recent sources are the ones remembered.
    assert t.failure_count("10.0.39.15", 10.0) == 1
    assert t.failure_count("10.0.0.0", 10.0) == 0


def test_bans_are_bounded_too() -> None:
    t = tracker(max_failures=1, max_tracked=10)
    for i in range(50):
        assert t.record_failure(f"s{i}", float(i)) is True
    assert len(t.banned(50.0)) == 10
    assert t.is_banned("s49", 50.0)
    assert not t.is_banned("s0", 50.0)


def test_stale_histories_are_dropped() -> None:
    t = tracker(max_failures=3, window=60.0)
    for i in range(50):
        t.record_failure(f"s{i}", 0.0)
    t.record_failure("late", 1000.0)
    assert t.tracked == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 0},
        {"window": 0.0},
        {"ban_time": -1.0},
        {"max_tracked": 0},
    ],
)
def test_invalid_configuration_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        tracker(**kwargs)


def test_totals_count_every_failure_and_ban_for_metrics():
    tracker = AuthFailureTracker(2, 10.0, 5.0)
    tracker.record_failure("192.0.2.1", 0.0)
    tracker.record_failure("192.0.2.1", 1.0)  # bans
    tracker.record_failure("192.0.2.2", 1.0)
    assert (tracker.failures_total, tracker.bans_total) == (3, 1)
