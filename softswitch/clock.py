"""Time, injected.

Only drivers (transports, the app) hold a Clock. Protocol objects take ``now`` as an
argument and expose ``next_deadline()``; tests drive them with a ManualClock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds, for timers and durations."""

    def wall(self) -> float:
        """Seconds since the epoch, for records that outlive the process."""


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to. Starts at 0.0 (monotonic) and a fixed epoch."""

    def __init__(self, start: float = 0.0, wall_start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._now += seconds
        return self._now

    def set(self, now: float) -> None:
        if now < self._now:
            raise ValueError("a clock does not run backwards")
        self._now = now
