from __future__ import annotations

import pytest

from softswitch.media.pacer import TickPacer


def test_deadlines_do_not_drift_with_late_fires():
    p = TickPacer(0.020, start=0.0)
    assert p.next_deadline() == pytest.approx(0.020)
    assert p.due(0.0199) == 0
    assert p.due(0.0215) == 1  # 1.5 ms late: not counted
    assert p.next_deadline() == pytest.approx(0.040)  # not 0.0415
    assert p.due(0.0435) == 1  # 3.5 ms late
    assert (p.ticks, p.late) == (2, 1)
    assert p.worst_lateness == pytest.approx(0.0035)


def test_falling_behind_catches_up_a_little_and_skips_the_rest():
    p = TickPacer(0.020, start=0.0, max_catch_up=3)
    assert p.due(0.101) == 3  # deadlines 20..100 ms passed: 5
    assert p.skipped == 2
    assert p.next_deadline() == pytest.approx(0.120)
    assert p.due(31.0) == 3
    assert p.next_deadline() > 31.0


def test_period_must_be_positive():
    with pytest.raises(ValueError):
        TickPacer(0, 0.0)
