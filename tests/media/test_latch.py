"""Latching decisions, on a manual clock (plain floats)."""

from __future__ import annotations

from softswitch.media.latch import Latch, LatchKind

SDP = ("198.51.100.7", 4000)
PTS = frozenset({0, 101})
WINDOW = 10.0


def fresh(now: float = 0.0, sdp=SDP) -> Latch:
    latch = Latch()
    latch.reset(sdp, PTS, now, WINDOW)
    return latch


def test_before_latching_media_goes_to_the_sdp_address():
    latch = fresh()
    assert latch.target == SDP
    assert latch.rtcp_target == ("198.51.100.7", 4001)


def test_packet_from_the_sdp_address_latches():
    latch = fresh()
    assert latch.offer(SDP, 0, now=0.1)
    assert latch.kind is LatchKind.SDP
    assert latch.target == SDP


def test_sdp_ip_with_another_port_latches_even_after_the_window():
    latch = fresh()
    assert latch.offer(("198.51.100.7", 5555), 0, now=WINDOW + 100)
    assert latch.kind is LatchKind.SDP
    assert latch.target == ("198.51.100.7", 5555)


def test_nat_address_latches_only_inside_the_window():
    inside = fresh()
    assert inside.offer(("203.0.113.9", 61000), 0, now=WINDOW - 0.01)
    assert inside.kind is LatchKind.NAT
    assert inside.target == ("203.0.113.9", 61000)

    late = fresh()
    assert not late.offer(("203.0.113.9", 61000), 0, now=WINDOW)
    assert late.kind is LatchKind.NONE
    assert late.target == SDP


def test_unexpected_payload_type_never_latches():
    latch = fresh()
    assert not latch.offer(("203.0.113.9", 61000), 8, now=0.1)
    assert not latch.offer(SDP, 96, now=0.1)
    assert latch.latched is None
    assert latch.offer(("203.0.113.9", 61000), 101, now=0.2)  # telephone-event is expected


def test_after_latching_strangers_are_dropped_even_from_the_sdp_address():
    latch = fresh()
    assert latch.offer(("203.0.113.9", 61000), 0, now=0.1)
    assert latch.offer(("203.0.113.9", 61000), 0, now=0.2)
    assert not latch.offer(("203.0.113.66", 61000), 0, now=0.2)
    assert not latch.offer(("203.0.113.9", 61001), 0, now=0.2)
    assert not latch.offer(SDP, 0, now=0.3)
    assert latch.target == ("203.0.113.9", 61000)


def test_new_address_from_signalling_reopens_the_window():
    latch = fresh()
    assert latch.offer(("203.0.113.9", 61000), 0, now=1.0)
    latch.reset(("198.51.100.8", 4002), PTS, now=100.0, window=WINDOW)
    assert latch.latched is None and latch.target == ("198.51.100.8", 4002)
    assert latch.offer(("203.0.113.10", 62000), 0, now=105.0)


def test_same_address_renegotiation_keeps_the_latch():
    latch = fresh()
    assert latch.offer(("203.0.113.9", 61000), 0, now=1.0)
    latch.set_expected(frozenset({8}))
    assert latch.target == ("203.0.113.9", 61000)
    assert latch.offer(("203.0.113.9", 61000), 8, now=50.0)


def test_without_sdp_address_only_the_window_latches():
    latch = fresh(sdp=None)
    assert latch.target is None and latch.rtcp_target is None
    assert latch.offer(("203.0.113.9", 61000), 0, now=1.0)
    no_window = fresh(sdp=None)
    assert not no_window.offer(("203.0.113.9", 61000), 0, now=WINDOW + 1)


def test_rtcp_latches_to_the_rtp_ip_only():
    latch = fresh()
    assert not latch.offer_rtcp(("203.0.113.9", 61001))  # RTP not latched yet
    assert latch.offer(("203.0.113.9", 61000), 0, now=1.0)
    assert latch.rtcp_target == ("203.0.113.9", 61001)
    assert not latch.offer_rtcp(("203.0.113.66", 61001))
    assert latch.offer_rtcp(("203.0.113.9", 40000))  # NAT mapped RTCP elsewhere
    assert latch.rtcp_target == ("203.0.113.9", 40000)
    assert not latch.offer_rtcp(("203.0.113.9", 61001))
