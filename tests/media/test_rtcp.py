from __future__ import annotations

import pytest

from softswitch.media.rtcp import (
    ReportBlock,
    RtcpByePacket,
    RtcpError,
    RtcpRawPacket,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSrPacket,
    SdesChunk,
    parse_compound,
    relay_rewrite,
    serialize_compound,
)

BLOCK = ReportBlock(0xAAAA, 12, -3, (2 << 16) | 500, 77, 0x11112222, 0x3333)
SR = RtcpSrPacket(0x1111, 0xE1000000_80000000, 123456, 50, 8000, [BLOCK])
SDES = RtcpSdesPacket([SdesChunk(0x1111, [(1, b"alice@example.com")])])


def test_compound_sr_sdes_round_trips():
    data = serialize_compound([SR, SDES])
    assert data[1] == 200 and data[0] == 0x81
    packets = parse_compound(data)
    assert packets == [SR, SDES]
    assert serialize_compound(packets) == data


def test_rr_bye_and_unknown_types_round_trip():
    rr = RtcpRrPacket(0x2222, [BLOCK, ReportBlock(5)])
    bye = RtcpByePacket([0x2222], b"restart")
    app = RtcpRawPacket(204, 3, b"\x00\x00\x00\x01NAME")
    data = serialize_compound([rr, bye, app])
    assert parse_compound(data) == [rr, bye, app]
    assert serialize_compound(parse_compound(data)) == data


def test_padding_on_the_last_packet_is_removed():
    rr = bytearray(serialize_compound([RtcpRrPacket(9)]))
    rr[0] |= 0x20
    rr[3] += 1
    rr += b"\x00\x00\x00\x04"
    assert parse_compound(bytes(rr)) == [RtcpRrPacket(9)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc9", "RTCP packet length is less than 4 bytes"),
        (b"\x40\xc9\x00\x01\x00\x00\x00\x01", "RTCP packet has invalid version"),
        (b"\x80\xc9\x00\x02\x00\x00\x00\x01", "RTCP packet is truncated"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x01", "RTCP RR has truncated report blocks"),
        (b"\x80\xc8\x00\x01\x00\x00\x00\x01", "RTCP SR is shorter than its sender info"),
        (b"\x81\xca\x00\x01\x00\x00\x00\x01", "RTCP SDES item is truncated"),
        (b"\x82\xcb\x00\x01\x00\x00\x00\x01", "RTCP BYE has truncated sources"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "RTCP packet padding length is invalid"),
        (b"", "RTCP packet length is less than 4 bytes"),
    ],
)
def test_malformed_rtcp_raises_exact_errors(data: bytes, message: str):
    with pytest.raises(RtcpError) as info:
        parse_compound(data)
    assert str(info.value) == message


def test_relay_rewrite_keeps_reports_meaningful_for_the_other_phone():
    # Phone X (SSRC 0x1111) reports on the switch's stream toward it (SSRC 0xAAAA).
    bye = RtcpByePacket([0x1111])
    other = ReportBlock(0xBBBB)
    sr = RtcpSrPacket(0x1111, 1, 1000, 5, 800, [BLOCK, other])
    sdes = RtcpSdesPacket([SdesChunk(0x9999, [(1, b"x")]), SdesChunk(0x1111, [(1, b"cname")])])
    out = relay_rewrite(
        [sr, sdes, bye, RtcpRawPacket(204, 0, b"abcd")],
        sender_ssrc=0x5555,
        ts_offset=-1000 + 2**32 + 7,
        own_ssrc=0xAAAA,
        reported_ssrc=0x7777,
        seq_offset=100,
    )
    assert len(out) == 2
    new_sr, new_sdes = out
    assert isinstance(new_sr, RtcpSrPacket)
    assert new_sr.ssrc == 0x5555
    assert new_sr.rtp_timestamp == 7
    assert (new_sr.packet_count, new_sr.octet_count, new_sr.ntp_timestamp) == (5, 800, 1)
    [block] = new_sr.reports
    assert block.ssrc == 0x7777
    assert block.highest_sequence == (2 << 16) | 400
    assert (block.fraction_lost, block.packets_lost, block.jitter) == (12, -3, 77)
    assert (block.lsr, block.dlsr) == (BLOCK.lsr, BLOCK.dlsr)
    assert new_sdes == RtcpSdesPacket([SdesChunk(0x5555, [(1, b"cname")])])
    # The result serializes to a valid compound packet.
    assert parse_compound(serialize_compound(out)) == out


def test_relay_rewrite_drops_blocks_about_an_unknown_sender():
    out = relay_rewrite(
        [RtcpRrPacket(0x1111, [BLOCK])],
        sender_ssrc=1,
        ts_offset=0,
        own_ssrc=0xAAAA,
        reported_ssrc=None,
        seq_offset=0,
    )
    assert out == [RtcpRrPacket(1, [])]
