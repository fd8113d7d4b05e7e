"""SIP timer values (RFC 3261 section 17 and table 4, RFC 6026 timers L and M).

One frozen TimerConfig is handed to every transaction, so a trunk can be tuned and an
integration test can run with T1 = 10 ms. Every timer that the RFC defines as a multiple
of T1 is derived from it here, so shrinking T1 shrinks the whole transaction lifetime.

| timer | machine / state                          | unreliable       | reliable |
| ----- | ---------------------------------------- | ---------------- | -------- |
| A     | INVITE client, Calling: retransmit       | T1, doubling     | unused   |
| B     | INVITE client, Calling: give up          | 64*T1            | 64*T1    |
| D     | INVITE client, Completed: absorb finals  | timer_d          | 0        |
| E     | non-INVITE client: retransmit            | T1 doubling, T2  | unused   |
| F     | non-INVITE client: give up               | 64*T1            | 64*T1    |
| G     | INVITE server, Completed: resend final   | T1 doubling, T2  | unused   |
| H     | INVITE server, Completed: wait for ACK   | 64*T1            | 64*T1    |
| I     | INVITE server, Confirmed: absorb ACKs    | T4               | 0        |
| J     | non-INVITE server, Completed             | 64*T1            | 0        |
| K     | non-INVITE client, Completed             | T4               | 0        |
| L     | INVITE server, Accepted (RFC 6026)       | 64*T1            | 64*T1    |
| M     | INVITE client, Accepted (RFC 6026)       | 64*T1            | 64*T1    |

Timer C belongs to a proxy, not to a transaction; its value lives here only so that all
timer settings come from one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    t1: float = 0.5
    """RTT estimate; the base of every retransmission and timeout interval."""
    t2: float = 4.0
    """Cap on the retransmission interval of non-INVITE requests and INVITE responses."""
    t4: float = 5.0
    """How long a message may linger in the network (Timers I and K)."""
    timer_d: float | None = None
    """Timer D over unreliable transports. RFC 3261 asks for at least 32 s, which is
    64*T1 at the default T1; None keeps it tied to 64*T1 so a scaled T1 scales it too."""
    timer_c: float = 180.0
    """Proxy INVITE timer (RFC 3261 16.6 step 11); not used by the transaction layer."""

    def __post_init__(self) -> None:
        if self.t1 <= 0 or self.t2 < self.t1 or self.t4 < 0:
            raise ValueError("timers need 0 < T1 <= T2 and T4 >= 0")
        if self.timer_d is not None and self.timer_d < 0:
            raise ValueError("Timer D cannot be negative")

    # Timers that depend on the transport take ``reliable``; RFC 3261 zeroes the ones
    # that only exist to absorb retransmissions, which a reliable transport never makes.

    @property
    def timer_a(self) -> float:
        return self.t1

    @property
    def timer_b(self) -> float:
        return 64 * self.t1

    def timer_d_for(self, reliable: bool) -> float:
        if reliable:
            return 0.0
        return 64 * self.t1 if self.timer_d is None else self.timer_d

    @property
    def timer_e(self) -> float:
        return self.t1

    @property
    def timer_f(self) -> float:
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        return self.t1

    @property
    def timer_h(self) -> float:
        return 64 * self.t1

    def timer_i_for(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4

    def timer_j_for(self, reliable: bool) -> float:
        return 0.0 if reliable else 64 * self.t1

    def timer_k_for(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4

    @property
    def timer_l(self) -> float:
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        return 64 * self.t1
