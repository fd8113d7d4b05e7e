from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.media.rtp import (
    HeaderExtension,
    RtpError,
    RtpPacket,
    TelephoneEvent,
    is_rtcp,
    payload_end,
    payload_offset,
)

# A PCMU packet as a phone sends it: V=2, M=1, PT=0, seq 0x1234, ts 0xDEADBEEF.
SIMPLE = bytes.fromhex("80801234deadbeef01020304") + b"\xff" * 160


def test_parse_simple_packet():
    p = RtpPacket.parse(SIMPLE)
    assert (p.payload_type, p.marker, p.sequence_number) == (0, True, 0x1234)
    assert (p.timestamp, p.ssrc) == (0xDEADBEEF, 0x01020304)
    assert p.payload == b"\xff" * 160
    assert p.csrc == [] and p.extension is None and p.padding_size == 0
    assert bytes(p) == SIMPLE


def test_round_trip_with_csrc_extension_and_padding():
    p = RtpPacket(
        payload_type=101,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=7,
        payload=b"\x05\x8a\x03\x20",
        csrc=[1, 2, 3],
        extension=HeaderExtension(0xBEDE, b"\x10\x01\x00\x00"),
        padding_size=4,
    )
    data = bytes(p)
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert len(data) == 12 + 12 + 4 + 4 + 4 + 4
    assert data[-1] == 4
    assert RtpPacket.parse(data) == p
    assert payload_offset(data, len(data)) == 12 + 12 + 8
    assert payload_end(data, len(data)) == len(data) - 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "RTP packet length is less than 12 bytes"),
        (b"\x40" + bytes(11), "RTP packet has invalid version"),
        (b"\x82" + bytes(11) + bytes(4), "RTP packet has truncated CSRC"),
        (b"\x90" + bytes(11) + b"\x00\x00", "RTP packet has truncated extension profile / length"),
        (
            b"\x90" + bytes(11) + b"\x00\x00\x00\x02" + bytes(4),
            "RTP packet has truncated extension value",
        ),
        (b"\xa0" + bytes(11) + b"\x00", "RTP packet padding length is invalid"),
        (b"\xa0" + bytes(11) + b"\x01\x05", "RTP packet padding length is invalid"),
    ],
)
def test_truncated_packets_raise_exact_errors(data: bytes, message: str):
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(data)
    assert str(info.value) == message


def test_serialize_refuses_bad_fields():
    with pytest.raises(RtpError, match="payload type"):
        RtpPacket(payload_type=128).serialize()
    with pytest.raises(RtpError, match="15 CSRC"):
        RtpPacket(csrc=list(range(16))).serialize()
    with pytest.raises(RtpError, match="multiple of 4"):
        RtpPacket(extension=HeaderExtension(1, b"abc")).serialize()


def test_payload_offset_reports_overrun():
    data = b"\x90" + bytes(11) + b"\x00\x00\x00\x09"
    assert payload_offset(data, len(data)) == -1
    assert payload_offset(b"\x80" + bytes(11), 12) == 12


def test_is_rtcp_tells_rtcp_from_rtp_on_a_shared_port():
    assert is_rtcp(b"\x80\xc8\x00\x06")  # SR
    assert is_rtcp(b"\x81\xc9\x00\x07")  # RR
    assert not is_rtcp(SIMPLE)
    assert not is_rtcp(b"\x80\x65")  # PT 101 without marker


def test_telephone_event_round_trip():
    ev = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    data = bytes(ev)
    assert data == b"\x0b\x8a\x03\x20"
    assert TelephoneEvent.parse(data) == ev
    assert ev.digit == "#"
    assert TelephoneEvent(16).digit is None
    with pytest.raises(RtpError, match="shorter than 4 bytes"):
        TelephoneEvent.parse(b"\x01\x02")


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    marker=st.booleans(),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    extension=st.none()
    | st.builds(
        HeaderExtension,
        st.integers(0, 0xFFFF),
        st.integers(0, 8).map(lambda n: bytes(range(4 * n))),
    ),
    padding_size=st.integers(0, 255),
)


@given(packets)
def test_any_packet_round_trips(p: RtpPacket):
    data = bytes(p)
    assert RtpPacket.parse(data) == p
    assert bytes(RtpPacket.parse(data)) == data


@given(st.binary(max_size=64))
def test_parse_never_fails_with_anything_but_rtp_error(data: bytes):
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    assert struct.unpack_from("!H", data, 2)[0] == p.sequence_number
