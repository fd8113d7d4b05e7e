"""Failed-authentication ban tracking (fail2ban in-process), pure and clock-free.

SIP scanners try thousands of extension/password pairs per minute; each attempt costs us two
hashes and a store lookup, and a weak password eventually falls. Counting failures per source
and refusing a source for a while after too many of them stops that cheaply.

What counts as a failure is the caller's decision, and it must record only real ones: a
request without credentials that receives the normal first 401/407 challenge is *not* a
failure (every phone does that on every registration), nor is a STALE answer. Wrong
passwords, unknown users and forged nonces are.

``source`` is whatever string the caller picks, normally the peer IP address without the
port, so a scanner rotating source ports is still one source. All times are seconds passed in
as ``now``; nothing here reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque

__all__ = ["AuthFailureTracker"]


class AuthFailureTracker:
    """Ban a source after ``max_failures`` failures within a sliding ``window``.

    A failure at time ``t`` counts while ``now - t < window``. The ban lasts ``ban_time``
    seconds: it is in force for ``now < start + ban_time`` and over at exactly
    ``start + ban_time``. At most ``max_tracked`` sources are kept with failure history and
    at most ``max_tracked`` bans; beyond that the stalest entries are dropped, so a flood
    from many addresses cannot exhaust memory (it can at worst make us forget the oldest
    partial histories, or the bans closest to expiring).
    """

    def __init__(
        self,
        max_failures: int,
        window: float,
        ban_time: float,
        max_tracked: int = 100_000,
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if not window > 0:
            raise ValueError("window must be positive")
        if not ban_time >= 0:
            raise ValueError("ban_time must not be negative")
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        self._max_failures = max_failures
        self._window = float(window)
        self._ban_time = float(ban_time)
        self._max_tracked = max_tracked
        # source -> recent failure times, oldest first, at most max_failures of them (older
        # ones can never matter again). Ordered least recently failed first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        # source -> ban end. Bans all last ban_time, so insertion order is expiry order.
        self._bans: OrderedDict[str, float] = OrderedDict()
        # Totals since start, for metrics.
        self.failures_total = 0
        self.bans_total = 0

    def reconfigure(self, max_failures: int, window: float, ban_time: float) -> None:
        """New thresholds from a reloaded config. Bans in force keep their end; failure
        histories are kept, cut to the new count."""
        if max_failures < 1 or not window > 0 or not ban_time >= 0:
            raise ValueError("invalid ban settings")
        self._max_failures = max_failures
        self._window = float(window)
        self._ban_time = float(ban_time)
        for source, times in self._failures.items():
            self._failures[source] = deque(times, maxlen=max_failures)

    def record_failure(self, source: str, now: float) -> bool:
        """Count one failed attempt; True exactly when this failure starts a ban.

        Failures from a source that is already banned are ignored (the caller normally drops
        its requests before authenticating them, so they should not arrive here).
        """
        self.failures_total += 1
        self._prune(now)
        if self.is_banned(source, now):
            return False
        times = self._failures.get(source)
        if times is None:
            times = deque(maxlen=self._max_failures)
            self._failures[source] = times
            while len(self._failures) > self._max_tracked:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(source)
        cutoff = now - self._window
        while times and times[0] <= cutoff:
            times.popleft()
        times.append(now)
        if len(times) < self._max_failures:
            return False
        del self._failures[source]
        self.bans_total += 1
        self._bans[source] = now + self._ban_time
        self._bans.move_to_end(source)
        while len(self._bans) > self._max_tracked:
            self._bans.popitem(last=False)
        return True

    def record_success(self, source: str) -> None:
        """Forget the failure history of ``source`` (a ban in force is left alone)."""
        self._failures.pop(source, None)

    def is_banned(self, source: str, now: float) -> bool:
        until = self._bans.get(source)
        if until is None:
            return False
        if now >= until:
            del self._bans[source]
            return False
        return True

    def unban(self, source: str) -> bool:
        """Lift a ban and forget failures, for the operator; True if a ban was lifted."""
        self._failures.pop(source, None)
        return self._bans.pop(source, None) is not None

    def banned(self, now: float) -> list[tuple[str, float]]:
        """Sources banned at ``now`` with the time their ban ends, soonest first."""
        self._prune(now)
        return sorted(
            ((source, until) for source, until in self._bans.items() if until > now),
            key=lambda item: item[1],
        )

    def failure_count(self, source: str, now: float) -> int:
        """Failures of ``source`` still inside the window at ``now``."""
        times = self._failures.get(source)
        if times is None:
            return 0
        cutoff = now - self._window
        return sum(1 for t in times if t > cutoff)

    @property
    def tracked(self) -> int:
        """How many sources currently have failure history or a ban (for metrics)."""
        return len(self._failures) + len(self._bans)

    def _prune(self, now: float) -> None:
        # Both tables are ordered roughly by age, so expired entries gather at the front and
        # are dropped in amortised O(1) per call.
        while self._bans:
            source, until = next(iter(self._bans.items()))
            if until > now:
                break
            del self._bans[source]
        cutoff = now - self._window
        while self._failures:
            source, times = next(iter(self._failures.items()))
            if times and times[-1] > cutoff:
                break
            del self._failures[source]
