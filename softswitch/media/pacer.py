"""Tick pacing on a monotonic clock, pure.

Deadlines are ``start + k * period``, never "previous fire + period", so the timer's own
lateness does not accumulate into drift. A tick that fires more than ``late_after``
behind its deadline counts as late; when the driver falls behind by more than
``max_catch_up`` periods (the process was descheduled, a clock jumped in a test), the
missed ticks are skipped and counted rather than run back to back, since a burst of
catch-up ticks would only send stale audio in a burst.
"""

from __future__ import annotations


class TickPacer:
    def __init__(
        self,
        period: float,
        start: float,
        *,
        late_after: float = 0.002,
        max_catch_up: int = 3,
    ) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self.period = period
        self.late_after = late_after
        self.max_catch_up = max_catch_up
        self._origin = start
        self._k = 1  # index of the next deadline
        self.ticks = 0
        self.late = 0
        self.skipped = 0
        self.worst_lateness = 0.0

    def next_deadline(self) -> float:
        return self._origin + self._k * self.period

    def due(self, now: float) -> int:
        """How many ticks to run at ``now`` (0 if the next deadline is still ahead)."""
        deadline = self.next_deadline()
        if now < deadline:
            return 0
        k = int((now - self._origin) / self.period) + 1
        while self._origin + k * self.period <= now:  # float rounding near a deadline
            k += 1
        behind = k - self._k  # deadlines passed
        lateness = now - deadline
        if lateness > self.late_after:
            self.late += 1
        self.worst_lateness = max(self.worst_lateness, lateness)
        run = min(behind, self.max_catch_up)
        self.skipped += behind - run
        self._k = k
        self.ticks += run
        return run
