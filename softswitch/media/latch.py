"""Symmetric RTP latching: learn where a phone really is without letting strangers in.

A phone behind NAT advertises an address in SDP that the switch cannot reach (its
private address) and sends from another one (its router's public mapping). The switch
sends back to where the phone's packets come from (symmetric RTP, RFC 4961). Latching to
*any* first packet would let whoever guesses the port hijack or tap the stream (the
"RTP bleed" problem), so a leg latches only to a packet that

* is RTP with one of the leg's negotiated payload types, and
* comes from the IP address the SDP gave (any port: a NAT in front of a phone on a
  public address may still rewrite the port), or, when it does not, arrives within a
  short window after the address was (re)negotiated: the phone behind NAT sends
  first thing after the answer, an attacker has to win that race with the right payload
  type.

Once latched, the leg accepts packets from that exact address only, until signalling
gives it a new address (re-INVITE), which reopens the window. RTCP latches separately:
it must come from the IP address RTP latched to; its port is learned from the first one.

Pure: decisions take ``now`` and never read a clock.
"""

from __future__ import annotations

import enum

Address = tuple[str, int]


class LatchKind(enum.Enum):
    NONE = "none"
    SDP = "sdp"  # from the SDP's IP address
    NAT = "nat"  # from elsewhere, within the window


class Latch:
    __slots__ = ("expected", "kind", "latched", "rtcp", "sdp", "window_end")

    def __init__(self) -> None:
        self.sdp: Address | None = None
        self.latched: Address | None = None
        self.kind = LatchKind.NONE
        self.expected: frozenset[int] = frozenset()
        self.window_end = 0.0
        self.rtcp: Address | None = None

    def reset(
        self, sdp: Address | None, expected: frozenset[int], now: float, window: float
    ) -> None:
        """A new address from signalling: forget what was learned, open the window."""
        self.sdp = sdp
        self.latched = None
        self.rtcp = None
        self.kind = LatchKind.NONE
        self.expected = expected
        self.window_end = now + window

    def set_expected(self, expected: frozenset[int]) -> None:
        """Same address, renegotiated payload types: the latch stays."""
        self.expected = expected

    def offer(self, addr: Address, payload_type: int, now: float) -> bool:
        """Should an RTP packet from ``addr`` be accepted? Latches on the first good one."""
        if self.latched is not None:
            return addr == self.latched
        if payload_type not in self.expected:
            return False
        if self.sdp is not None and addr[0] == self.sdp[0]:
            self.kind = LatchKind.SDP
        elif now < self.window_end:
            self.kind = LatchKind.NAT
        else:
            return False
        self.latched = addr
        return True

    def offer_rtcp(self, addr: Address) -> bool:
        if self.rtcp is not None:
            return addr == self.rtcp
        if self.latched is None or addr[0] != self.latched[0]:
            return False
        self.rtcp = addr
        return True

    @property
    def target(self) -> Address | None:
        """Where to send RTP: the latched address, else what SDP said."""
        return self.latched if self.latched is not None else self.sdp

    @property
    def rtcp_target(self) -> Address | None:
        if self.rtcp is not None:
            return self.rtcp
        base = self.target
        return None if base is None else (base[0], base[1] + 1)
