"""What every transaction machine shares: identity, the two timer slots, state history
and termination. The four RFC machines in client.py and server.py decide the rest.

Same rules as those files: no I/O, no clock reads, no TU policy.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from softswitch.sip.message import Request
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction.events import (
    Event,
    State,
    TransactionTerminated,
    TransportError,
)
from softswitch.sip.transaction.keys import TransactionKey

_log = logging.getLogger("softswitch.sip.transaction")


class TransactionBase:
    __slots__ = (
        "key",
        "request",
        "reliable",
        "config",
        "state",
        "history",
        "timer_generation",
        "scheduled_at",
        "_retransmit_at",
        "_interval",
        "_timeout_at",
    )

    _initial_state: ClassVar[State]

    def __init__(
        self, key: TransactionKey, request: Request, config: TimerConfig, reliable: bool
    ) -> None:
        self.key = key
        self.request = request
        self.reliable = reliable
        self.config = config
        self.state = self._initial_state
        self.history: list[State] = [self.state]
        # Owned by the layer: the deadline it queued for this transaction, and a counter
        # bumped on every re-queue so that entries for an earlier deadline are known to
        # be stale (Kamailio's rule that a timer may fire after it was reset).
        self.timer_generation = 0
        self.scheduled_at: float | None = None
        self._retransmit_at: float | None = None
        self._interval = 0.0
        self._timeout_at: float | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.state.value}>"

    def next_deadline(self) -> float | None:
        r, t = self._retransmit_at, self._timeout_at
        if r is None:
            return t
        if t is None or r < t:
            return r
        return t

    def handle_timer(self, now: float) -> list[Event]:
        # The timeout is looked at first: when both are due the transaction is over, and
        # a last retransmission would only add load.
        if self._timeout_at is not None and now >= self._timeout_at:
            self._timeout_at = None
            return self._on_timeout()
        if self._retransmit_at is not None and now >= self._retransmit_at:
            return self._on_retransmit(now)
        return []

    def transport_error(self, now: float) -> list[Event]:
        if self.state is State.TERMINATED:
            return []
        return [TransportError(self.key), *self._terminate()]

    def terminate(self) -> list[Event]:
        """Destroy the transaction now, e.g. when the TU gives up on an INVITE that was
        CANCELled but never answered (RFC 3261 9.1)."""
        if self.state is State.TERMINATED:
            return []
        return self._terminate()

    def _set_state(self, state: State) -> None:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%r -> %s", self, state.value)
        self.state = state
        self.history.append(state)

    def _terminate(self) -> list[Event]:
        self._retransmit_at = self._timeout_at = None
        self._set_state(State.TERMINATED)
        return [TransactionTerminated(self.key)]

    def _on_timeout(self) -> list[Event]:
        raise NotImplementedError

    def _on_retransmit(self, now: float) -> list[Event]:
        raise NotImplementedError
