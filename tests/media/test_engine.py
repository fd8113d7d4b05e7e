"""The engine on real loopback sockets, driven by hand: ``now`` is a plain float.

Each test sends datagrams from fake phones, lets the engine read them with
``settle(engine, now)`` and, for transcoded media, runs ``engine.tick(now)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest

from softswitch.media.controller import (
    Codec,
    Direction,
    DtmfReceived,
    LegMedia,
    MediaTimeout,
)
from softswitch.media.engine import MediaEngine, PlanError
from softswitch.media.rtcp import (
    ReportBlock,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSrPacket,
    SdesChunk,
    parse_compound,
    serialize_compound,
)
from softswitch.media.rtp import TelephoneEvent
from swcodecs import g711
from tests.media._phones import Phone, settle
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(20)

PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
TE101 = Codec("telephone-event", 101)
TE96 = Codec("telephone-event", 96)


@pytest.fixture
def engine() -> Iterator[MediaEngine]:
    base = free_port(udp=True, tcp=False, span=24)
    eng = MediaEngine(
        "127.0.0.1", (base, base + 23), media_timeout=30.0, latch_window=5.0, rng=random.Random(7)
    )
    yield eng
    eng.close()


@pytest.fixture
def phones() -> Iterator[list[Phone]]:
    made: list[Phone] = []
    yield made
    for p in made:
        p.close()


def phone(phones: list[Phone], host: str = "127.0.0.1", port: int = 0) -> Phone:
    p = Phone(host, port)
    phones.append(p)
    return p


def media(p: Phone, codec: Codec = PCMU, **kw) -> LegMedia:
    return LegMedia(p.host, p.port, codec, **kw)


def call(engine: MediaEngine, a: Phone, b: Phone, ma=None, mb=None, now: float = 0.0):
    ea = engine.allocate("call", "a")
    eb = engine.allocate("call", "b")
    engine.connect("call", {"a": ma or media(a), "b": mb or media(b)}, now)
    return (ea.host, ea.port), (eb.host, eb.port)


def test_relay_rewrites_the_header_and_keeps_the_payload(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, to_b = call(engine, a, b)
    sent = [a.send(to_a, bytes([i]) * 160) for i in range(3)]
    settle(engine, 0.0)
    got = b.receive_rtp(3)
    leg_b = engine.legs("call")["b"]
    assert [p.payload for p in got] == [p.payload for p in sent]
    assert {p.ssrc for p in got} == {leg_b.ssrc}
    assert [p.sequence_number for p in got] == [
        (got[0].sequence_number + i) & 0xFFFF for i in range(3)
    ]
    assert [p.timestamp - got[0].timestamp for p in got] == [0, 160, 320]
    assert [p.marker for p in got] == [True, False, False]
    assert all(p.payload_type == 0 for p in got)
    # The stream toward b comes from b's own port (symmetric RTP).
    assert {addr for _, addr in b.receive(0, 0.0)} <= {to_b}
    assert engine.stats.forwarded == 3


def test_packets_come_from_the_destination_legs_port(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, to_b = call(engine, a, b)
    a.send(to_a)
    settle(engine, 0.0)
    [(_, source)] = b.receive(1)
    assert source == to_b


def test_far_side_ssrc_change_keeps_sequence_and_timestamp_continuous(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, _ = call(engine, a, b)
    for i in range(3):
        a.send(to_a)
        settle(engine, 0.02 * i)
    # The far side restarts: new SSRC, new random sequence and timestamp, 20 ms later.
    a.send(to_a, ssrc=0xCAFE, seq=40000, ts=123, advance=False)
    settle(engine, 0.06)
    # ... and again after a second of silence.
    a.send(to_a, ssrc=0xBEEF, seq=7, ts=99999, advance=False)
    settle(engine, 1.06)
    got = b.receive_rtp(5)
    assert len(got) == 5
    seqs = [p.sequence_number for p in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(5)]
    assert [(p.timestamp - got[0].timestamp) & 0xFFFFFFFF for p in got] == [0, 160, 320, 480, 8480]
    assert [p.marker for p in got] == [True, False, False, True, True]
    assert len({p.ssrc for p in got}) == 1


def test_sequence_restart_with_the_same_ssrc_is_smoothed(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, _ = call(engine, a, b)
    a.send(to_a, seq=100)
    settle(engine, 0.0)
    a.send(to_a, seq=30000, ts=a.ts, advance=False)  # jump beyond MAX_DROPOUT
    settle(engine, 0.02)
    a.send(to_a, seq=29999, ts=a.ts - 160, advance=False)  # one step back: reordering
    settle(engine, 0.04)
    first, second, third = b.receive_rtp(3)
    assert second.sequence_number == (first.sequence_number + 1) & 0xFFFF
    assert second.marker
    # A late packet keeps its place relative to the new mapping (no resync).
    assert third.sequence_number == (second.sequence_number - 1) & 0xFFFF
    assert third.timestamp == (second.timestamp - 160) & 0xFFFFFFFF
    assert not third.marker


def test_continuity_across_update_with_a_new_far_side(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, _ = call(engine, a, b)
    a.send(to_a)
    a.send(to_a)
    settle(engine, 0.0)
    # Re-INVITE: a's phone moves to another address and starts a new stream.
    a2 = phone(phones)
    engine.update("call", "a", media(a2), now=0.5)
    a2.send(to_a, ssrc=0x51, seq=1, ts=1)
    settle(engine, 0.5)
    got = b.receive_rtp(3)
    assert len(got) == 3 and len({p.ssrc for p in got}) == 1
    assert got[2].sequence_number == (got[1].sequence_number + 1) & 0xFFFF
    assert (got[2].timestamp - got[1].timestamp) & 0xFFFFFFFF == 4000  # 0.5 s at 8 kHz
    # The old address is no longer accepted.
    a.send(to_a)
    settle(engine, 0.52)
    assert b.receive(timeout=0.05) == []


def test_telephone_event_payload_type_is_remapped_and_reported_once(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, _ = call(engine, a, b, media(a, telephone_event=TE101), media(b, telephone_event=TE96))
    a.send(to_a)
    ts = a.ts
    events = [TelephoneEvent(5, False, 10, 160), TelephoneEvent(5, False, 10, 320)]
    events += [TelephoneEvent(5, True, 10, 800)] * 3
    for i, ev in enumerate(events):
        a.send(to_a, bytes(ev), pt=101, ts=ts, marker=i == 0)
    settle(engine, 0.1)
    got = b.receive_rtp(6)
    assert [p.payload_type for p in got] == [0, 96, 96, 96, 96, 96]
    assert [p.payload for p in got[1:]] == [bytes(e) for e in events]
    assert len({p.timestamp for p in got[1:]}) == 1
    seqs = [p.sequence_number for p in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(6)]
    assert engine.take_events() == [DtmfReceived("call", "a", "5", 100)]


def test_telephone_events_are_dropped_toward_a_leg_without_them(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, _ = call(engine, a, b, media(a, telephone_event=TE101), media(b))
    a.send(to_a, bytes(TelephoneEvent(11, True, 10, 400)), pt=101)
    settle(engine, 0.0)
    assert b.receive(timeout=0.05) == []
    assert engine.take_events() == [DtmfReceived("call", "a", "#", 50)]


def test_unknown_payload_types_are_not_forwarded(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, _ = call(engine, a, b)
    a.send(to_a)
    a.send(to_a, b"\x00", pt=13)  # comfort noise was not negotiated
    settle(engine, 0.0)
    assert len(b.receive(timeout=0.05)) == 1


def test_hold_sendonly_leg_gets_no_media_and_no_timeout(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, to_b = call(engine, a, b)
    engine.update("call", "b", media(b, direction=Direction.SENDONLY), now=0.0)
    a.send(to_a)
    b.send(to_b)  # music on hold from the holding phone still reaches a
    settle(engine, 0.0)
    assert b.receive(timeout=0.05) == []
    assert len(a.receive(1)) == 1
    engine.tick(40.0)
    assert engine.take_events() == [MediaTimeout("call", "a")]  # a stayed silent


def test_inactive_and_recvonly_legs(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, to_b = call(engine, a, b)
    engine.update("call", "a", media(a, direction=Direction.INACTIVE), now=0.0)
    engine.update("call", "b", media(b, direction=Direction.RECVONLY), now=0.0)
    a.send(to_a)
    b.send(to_b)
    settle(engine, 0.0)
    assert a.receive(timeout=0.05) == [] and b.receive(timeout=0.05) == []
    engine.tick(100.0)
    assert engine.take_events() == []  # neither leg is expected to send


def test_media_timeout_on_a_manual_clock(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, to_b = call(engine, a, b, now=0.0)
    a.send(to_a)
    settle(engine, 5.0)
    engine.tick(29.99)
    assert engine.take_events() == []
    engine.tick(30.0)
    assert engine.take_events() == [MediaTimeout("call", "b")]
    engine.tick(35.0)
    assert engine.take_events() == [MediaTimeout("call", "a")]
    engine.tick(100.0)
    assert engine.take_events() == []  # reported once
    # Resuming after hold restarts the timer.
    engine.update("call", "b", media(b, direction=Direction.SENDONLY), now=100.0)
    engine.update("call", "b", media(b), now=110.0)
    engine.tick(139.99)
    assert engine.take_events() == []
    engine.tick(140.0)
    assert engine.take_events() == [MediaTimeout("call", "b")]


def test_packets_from_strangers_do_not_refresh_the_timeout(engine, phones):
    a, b = phone(phones), phone(phones)
    stranger = phone(phones, "127.0.0.3")
    to_a, _ = call(engine, a, b, now=0.0)
    a.send(to_a)
    settle(engine, 0.0)
    stranger.send(to_a)
    settle(engine, 29.0)
    engine.tick(30.5)
    assert MediaTimeout("call", "a") in engine.take_events()


def test_latching_in_the_engine(engine, phones):
    sdp = phone(phones, "127.0.0.1")  # what SDP says; the phone never sends from it
    nat = phone(phones, "127.0.0.2")
    stranger = phone(phones, "127.0.0.3")
    b = phone(phones)
    to_a, to_b = call(engine, sdp, b, now=0.0)
    nat.send(to_a, pt=8)  # wrong payload type: not latched, not forwarded
    settle(engine, 1.0)
    nat.send(to_a)
    settle(engine, 1.0)
    stranger.send(to_a)
    settle(engine, 1.0)
    assert len(b.receive(timeout=0.05)) == 1
    b.send(to_b)
    settle(engine, 1.0)
    assert len(nat.receive(1)) == 1
    assert sdp.receive(timeout=0.02) == [] and stranger.receive(timeout=0.02) == []
    leg_a = engine.legs("call")["a"]
    assert leg_a.dest == nat.addr
    # Only the wrong payload type reached the engine: once latched, the socket is
    # connected to the phone and the kernel drops the stranger's packets.
    assert leg_a.connected
    assert engine.stats.dropped == 1


def test_strangers_packets_queued_before_the_latch_are_dropped(engine, phones):
    a, b = phone(phones), phone(phones)
    stranger = phone(phones, "127.0.0.3")
    to_a, _ = call(engine, a, b, now=0.0)
    a.send(to_a, b"\x01" * 160)
    stranger.send(to_a, b"\x02" * 160)  # in the window, right payload type, but second
    a.send(to_a, b"\x03" * 160)
    settle(engine, 0.5)
    assert [p.payload[:1] for p in b.receive_rtp(3)] == [b"\x01", b"\x03"]
    assert engine.stats.dropped == 1


def test_no_latch_outside_the_window_from_another_ip(engine, phones):
    a = phone(phones, "127.0.0.1")
    nat = phone(phones, "127.0.0.2")
    b = phone(phones)
    to_a, _ = call(engine, a, b, now=0.0)
    nat.send(to_a)
    settle(engine, 5.0)  # the window is 5 s
    assert b.receive(timeout=0.05) == []


def test_transcoding_tick_pcmu_to_pcma_equals_the_reference(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, to_b = call(engine, a, b, media(a, PCMU), media(b, PCMA))
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (4, 160), dtype=np.uint8)
    sent = [a.send(to_a, row.tobytes()) for row in codes]
    back = b.send(to_b, codes[0].tobytes(), pt=8)
    settle(engine, 0.0)
    assert b.receive(timeout=0.05) == []  # transcoded media waits for the tick
    engine.tick(0.02)
    got = b.receive_rtp(4)
    assert [p.payload_type for p in got] == [8] * 4
    assert np.array_equal(
        np.frombuffer(b"".join(p.payload for p in got), np.uint8).reshape(4, 160),
        g711.ulaw_to_alaw(codes),
    )
    seqs = [p.sequence_number for p in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(4)]
    assert got[3].timestamp - got[0].timestamp == sent[3].timestamp - sent[0].timestamp
    [rev] = a.receive_rtp(1)
    assert rev.payload_type == 0
    assert rev.payload == g711.alaw_to_ulaw(np.frombuffer(back.payload, np.uint8)).tobytes()
    assert engine.stats.transcoded == 5


def test_transcoding_other_frame_sizes_and_events(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, _ = call(
        engine, a, b, media(a, PCMA, telephone_event=TE96), media(b, PCMU, telephone_event=TE101)
    )
    codes = np.arange(240, dtype=np.uint8)  # 30 ms
    a.send(to_a, codes.tobytes(), pt=8)
    a.send(to_a, bytes(TelephoneEvent(1, False, 10, 160)), pt=96)
    settle(engine, 0.0)
    engine.tick(0.02)
    audio, event = b.receive_rtp(2)
    assert audio.payload == g711.alaw_to_ulaw(codes).tobytes()
    assert event.payload_type == 101 and event.payload == bytes(TelephoneEvent(1, False, 10, 160))
    assert event.sequence_number == (audio.sequence_number + 1) & 0xFFFF


def test_rtcp_is_relayed_with_the_switch_ssrcs(engine, phones):
    def pair() -> tuple[Phone, Phone]:
        port = free_port(udp=True, tcp=False, span=2)
        return phone(phones, port=port), phone(phones, port=port + 1)

    (a, a_rtcp), (b, b_rtcp) = pair(), pair()
    to_a, to_b = call(engine, a, b)
    legs = engine.legs("call")
    a.send(to_a, ssrc=0xA1)
    b.send(to_b, ssrc=0xB1, seq=500)
    settle(engine, 0.0)
    [from_a] = b.receive_rtp(1)
    [from_b] = a.receive_rtp(1)
    # a reports on the stream it receives (the switch's SSRC toward a).
    block = ReportBlock(legs["a"].ssrc, 0, 0, (1 << 16) | from_b.sequence_number, 3)
    sr = RtcpSrPacket(0xA1, 42, a.ts, 1, 160, [block])
    sdes = RtcpSdesPacket([SdesChunk(0xA1, [(1, b"a@x")])])
    a_rtcp.send_raw(serialize_compound([sr, sdes]), (to_a[0], to_a[1] + 1))
    settle(engine, 0.1)
    [(data, source)] = b_rtcp.receive(1)
    assert source == (to_b[0], to_b[1] + 1)
    out_sr, out_sdes = parse_compound(data)
    assert isinstance(out_sr, RtcpSrPacket)
    assert out_sr.ssrc == legs["b"].ssrc
    assert out_sr.rtp_timestamp == (from_a.timestamp + 160) & 0xFFFFFFFF
    [out_block] = out_sr.reports
    assert out_block.ssrc == 0xB1 and out_block.highest_sequence == (1 << 16) | 500
    assert out_sdes.chunks[0].ssrc == legs["b"].ssrc
    # RTCP from another IP is not relayed.
    stranger = phone(phones, "127.0.0.3")
    stranger.send_raw(serialize_compound([RtcpRrPacket(0xA1)]), (to_a[0], to_a[1] + 1))
    settle(engine, 0.1)
    assert b_rtcp.receive(timeout=0.05) == []


def test_plans_the_engine_cannot_serve_are_refused(engine, phones):
    a, b = phone(phones), phone(phones)
    engine.allocate("x", "a")
    engine.allocate("x", "b")
    engine.allocate("x", "c")
    with pytest.raises(PlanError, match="G722"):
        engine.connect("x", {"a": media(a, Codec("G722", 9)), "b": media(b)}, 0.0)
    with pytest.raises(PlanError, match="conference"):
        engine.connect("x", {"a": media(a), "b": media(b), "c": media(b)}, 0.0)
    with pytest.raises(KeyError):
        engine.connect("x", {"zz": media(a)}, 0.0)
    with pytest.raises(KeyError):
        engine.update("nope", "a", media(a), 0.0)


def test_release_closes_the_ports(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, _ = call(engine, a, b)
    in_use = engine.pool.in_use
    engine.release("call")
    assert engine.pool.in_use == frozenset() and engine.session_count == 0
    a.send(to_a)
    assert settle(engine, 0.0) == 0
    assert b.receive(timeout=0.05) == []
    assert len(in_use) == 2


def test_endpoint_advertises_the_configured_host():
    base = free_port(udp=True, tcp=False, span=4)
    eng = MediaEngine("0.0.0.0", (base, base + 3), advertised_host="192.0.2.10")
    try:
        ep = eng.allocate("s", "a")
        assert ep.host == "192.0.2.10" and base <= ep.port <= base + 2
    finally:
        eng.close()


def test_codec_change_by_update_keeps_the_stream_continuous(engine, phones):
    a, b = phone(phones), phone(phones)
    to_a, _ = call(engine, a, b)
    a.send(to_a)
    settle(engine, 0.0)
    # Re-INVITE: a switches to PCMA, so the call goes from relay to transcoding.
    engine.update("call", "a", media(a, PCMA), now=0.02)
    a.send(to_a, b"\xd5" * 160, pt=8)
    settle(engine, 0.02)
    engine.tick(0.04)
    first, second = b.receive_rtp(2)
    assert second.payload_type == 0
    assert second.payload == g711.alaw_to_ulaw(b"\xd5" * 160).tobytes()
    assert second.sequence_number == (first.sequence_number + 1) & 0xFFFF
    assert second.timestamp == (first.timestamp + 160) & 0xFFFFFFFF
    assert second.ssrc == first.ssrc


def test_media_timeout_rearms_after_a_hold_that_outlived_the_deadline(engine, phones):
    a, b = phone(phones), phone(phones)
    call(engine, a, b, now=0.0)
    engine.update("call", "b", media(b, direction=Direction.INACTIVE), now=5.0)
    engine.update("call", "a", media(a, direction=Direction.INACTIVE), now=5.0)
    engine.tick(31.0)  # the pending deadlines come due while both legs are held
    assert engine.take_events() == []
    engine.update("call", "b", media(b), now=40.0)
    engine.tick(69.99)
    assert engine.take_events() == []
    engine.tick(70.0)
    assert engine.take_events() == [MediaTimeout("call", "b")]
