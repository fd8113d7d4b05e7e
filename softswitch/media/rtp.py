"""RTP packets (RFC 3550 section 5.1) and telephone-events (RFC 4733 section 2.3).

:class:`RtpPacket` is the readable form used by tests, tools and slow paths: every field
is bounds-checked on parse and ``bytes(RtpPacket.parse(data)) == data`` for any valid
packet. The engine's hot path does not build these objects; it rewrites the fixed
12-byte header in place (see :data:`FIXED_HEADER` and :func:`payload_offset`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

RTP_VERSION: Final = 2
FIXED_HEADER_SIZE: Final = 12
# flags/version byte, marker+PT byte, sequence number, timestamp, SSRC
FIXED_HEADER: Final = struct.Struct("!BBHII")

DTMF_EVENTS: Final = "0123456789*#ABCD"
EVENT_FLASH: Final = 16


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet."""


@dataclass(slots=True)
class HeaderExtension:
    """The single RFC 3550 header extension: a 16-bit profile word and its data."""

    profile: int
    data: bytes  # length is a multiple of 4


@dataclass(slots=True)
class RtpPacket:
    payload_type: int = 0
    marker: bool = False
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    payload: bytes = b""
    csrc: list[int] = field(default_factory=list)
    extension: HeaderExtension | None = None
    padding_size: int = 0  # bytes of padding after the payload, count byte included

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        data = bytes(data)
        if len(data) < FIXED_HEADER_SIZE:
            raise RtpError("RTP packet length is less than 12 bytes")
        first, second, seq, ts, ssrc = FIXED_HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpError("RTP packet has invalid version")
        pos = FIXED_HEADER_SIZE
        cc = first & 0x0F
        if len(data) < pos + 4 * cc:
            raise RtpError("RTP packet has truncated CSRC")
        csrc = list(struct.unpack_from(f"!{cc}I", data, pos))
        pos += 4 * cc
        extension = None
        if first & 0x10:
            if len(data) < pos + 4:
                raise RtpError("RTP packet has truncated extension profile / length")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpError("RTP packet has truncated extension value")
            extension = HeaderExtension(profile, data[pos : pos + 4 * words])
            pos += 4 * words
        end = len(data)
        padding_size = 0
        if first & 0x20:
            padding_size = data[-1]
            if padding_size == 0 or padding_size > end - pos:
                raise RtpError("RTP packet padding length is invalid")
            end -= padding_size
        return cls(
            payload_type=second & 0x7F,
            marker=bool(second & 0x80),
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=data[pos:end],
            csrc=csrc,
            extension=extension,
            padding_size=padding_size,
        )

    def serialize(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise RtpError("RTP payload type must be in 0..127")
        if len(self.csrc) > 15:
            raise RtpError("RTP packet can carry at most 15 CSRC")
        first = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding_size:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = (0x80 if self.marker else 0) | self.payload_type
        out = [
            FIXED_HEADER.pack(
                first,
                second,
                self.sequence_number & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        ]
        if self.csrc:
            out.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            ext = self.extension
            if len(ext.data) % 4:
                raise RtpError("RTP header extension length must be a multiple of 4")
            out.append(struct.pack("!HH", ext.profile, len(ext.data) // 4))
            out.append(ext.data)
        out.append(self.payload)
        if self.padding_size:
            if not 1 <= self.padding_size <= 255:
                raise RtpError("RTP padding size must be in 1..255")
            out.append(bytes(self.padding_size - 1) + bytes((self.padding_size,)))
        return b"".join(out)

    def __bytes__(self) -> bytes:
        return self.serialize()


def payload_offset(data: bytes | bytearray | memoryview, length: int) -> int:
    """Where the payload starts in an RTP packet of ``length`` bytes, or -1 if the CSRC
    list or header extension runs past the end. Assumes version and length >= 12 checked."""
    pos = FIXED_HEADER_SIZE + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if pos + 4 > length:
            return -1
        pos += 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
    return pos if pos <= length else -1


def payload_end(data: bytes | bytearray | memoryview, length: int) -> int:
    """Where the payload ends (padding removed), or -1 if the padding count is invalid."""
    if not data[0] & 0x20:
        return length
    pad = data[length - 1]
    return length - pad if pad else -1


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """RFC 5761 section 4: on a shared port, RTCP packet types 192..223 sit where the RTP
    marker bit and payload types 64..95 would be."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The 4-byte payload of an RFC 4733 named-event packet."""

    event: int
    end: bool = False
    volume: int = 10  # dBm0 below zero, 0..63
    duration: int = 0  # in RTP timestamp units

    _STRUCT = struct.Struct("!BBH")

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> TelephoneEvent:
        if len(payload) < 4:
            raise RtpError("telephone-event payload is shorter than 4 bytes")
        event, flags, duration = cls._STRUCT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        return self._STRUCT.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration
        )

    def __bytes__(self) -> bytes:
        return self.serialize()

    @property
    def digit(self) -> str | None:
        """The DTMF character of the event, or None for other events (flash, tones)."""
        if self.event < len(DTMF_EVENTS):
            return DTMF_EVENTS[self.event]
        return None
