"""RTCP compound packets (RFC 3550 section 6) and the relay rewrite.

Parsing follows the same rules as :mod:`softswitch.media.rtp`: bounds-checked, exact
error strings, and ``serialize_compound(parse_compound(data)) == data`` for the packet
types modelled here (SR, RR, SDES, BYE); any other type (APP, XR, feedback ...) is kept
as an :class:`RtcpRawPacket` and round-trips too.

What the relay does with RTCP (:func:`relay_rewrite`): the switch is the RTP source
toward each phone under its own per-leg SSRC, with its own sequence and timestamp
offsets, so a report passed through unchanged would talk about SSRCs and sequence
numbers the other phone has never seen. The rewrite is the minimal one that keeps the
reports meaningful end to end:

* SR: the sender SSRC becomes the switch's SSRC toward the receiving phone and the RTP
  timestamp is shifted by the same offset as the media; NTP time and counts pass.
* SR/RR report blocks: only the block about the switch's own stream is kept; its SSRC
  becomes the SSRC the receiving phone sends, and the low 16 bits of the extended highest
  sequence number are shifted back by that stream's sequence offset. Loss, jitter, LSR
  and DLSR pass unchanged (LSR/DLSR stay valid because SRs are relayed end to end).
* SDES: the sender's chunk is kept under the rewritten SSRC, other chunks are dropped.
* BYE, APP and anything else are dropped: a phone restarting its stream must not end
  the stream the switch keeps sending under its own SSRC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204

SDES_END: Final = 0
SDES_CNAME: Final = 1

_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!QIII")
_BLOCK = struct.Struct("!IB3sIIII")


class RtcpError(ValueError):
    """A datagram that is not a well-formed RTCP compound packet."""


@dataclass(slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int = 0
    packets_lost: int = 0  # cumulative, 24-bit signed
    highest_sequence: int = 0  # extended: cycles << 16 | seq
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    @classmethod
    def parse(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        return cls(
            ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr
        )

    def serialize(self) -> bytes:
        lost = self.packets_lost.to_bytes(3, "big", signed=True)
        return _BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            lost,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


@dataclass(slots=True)
class RtcpSrPacket:
    ssrc: int
    ntp_timestamp: int = 0
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""  # profile-specific extension after the report blocks

    packet_type = RTCP_SR

    def count(self) -> int:
        return len(self.reports)

    def body(self) -> bytes:
        info = _SENDER_INFO.pack(
            self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        blocks = b"".join(r.serialize() for r in self.reports)
        return struct.pack("!I", self.ssrc) + info + blocks + self.extension


@dataclass(slots=True)
class RtcpRrPacket:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""

    packet_type = RTCP_RR

    def count(self) -> int:
        return len(self.reports)

    def body(self) -> bytes:
        blocks = b"".join(r.serialize() for r in self.reports)
        return struct.pack("!I", self.ssrc) + blocks + self.extension


@dataclass(slots=True)
class SdesChunk:
    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    def serialize(self) -> bytes:
        out = bytearray(struct.pack("!I", self.ssrc))
        for kind, value in self.items:
            out += bytes((kind, len(value))) + value
        out.append(SDES_END)
        out += bytes(-len(out) % 4)  # each chunk ends on a 32-bit boundary
        return bytes(out)


@dataclass(slots=True)
class RtcpSdesPacket:
    chunks: list[SdesChunk] = field(default_factory=list)

    packet_type = RTCP_SDES

    def count(self) -> int:
        return len(self.chunks)

    def body(self) -> bytes:
        return b"".join(c.serialize() for c in self.chunks)


@dataclass(slots=True)
class RtcpByePacket:
    sources: list[int] = field(default_factory=list)
    reason: bytes = b""

    packet_type = RTCP_BYE

    def count(self) -> int:
        return len(self.sources)

    def body(self) -> bytes:
        out = bytearray(struct.pack(f"!{len(self.sources)}I", *self.sources))
        if self.reason:
            out += bytes((len(self.reason),)) + self.reason
            out += bytes(-len(out) % 4)
        return bytes(out)


@dataclass(slots=True)
class RtcpRawPacket:
    """Any other packet type, kept byte for byte (the 5-bit count field included)."""

    packet_type: int
    subtype: int = 0
    data: bytes = b""

    def count(self) -> int:
        return self.subtype

    def body(self) -> bytes:
        return self.data


RtcpPacket = RtcpSrPacket | RtcpRrPacket | RtcpSdesPacket | RtcpByePacket | RtcpRawPacket


def _blocks(body: bytes, pos: int, count: int, what: str) -> tuple[list[ReportBlock], int]:
    if len(body) < pos + 24 * count:
        raise RtcpError(f"RTCP {what} has truncated report blocks")
    return [ReportBlock.parse(body, pos + 24 * i) for i in range(count)], pos + 24 * count


def _parse_sdes(body: bytes, count: int) -> RtcpSdesPacket:
    chunks = []
    pos = 0
    for _ in range(count):
        if len(body) < pos + 4:
            raise RtcpError("RTCP SDES chunk is truncated")
        chunk = SdesChunk(struct.unpack_from("!I", body, pos)[0])
        pos += 4
        while True:
            if pos >= len(body):
                raise RtcpError("RTCP SDES item is truncated")
            kind = body[pos]
            if kind == SDES_END:
                pos += 1
                pos += -pos % 4
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtcpError("RTCP SDES item is truncated")
            size = body[pos + 1]
            chunk.items.append((kind, body[pos + 2 : pos + 2 + size]))
            pos += 2 + size
        chunks.append(chunk)
    return RtcpSdesPacket(chunks)


def _parse_bye(body: bytes, count: int) -> RtcpByePacket:
    if len(body) < 4 * count:
        raise RtcpError("RTCP BYE has truncated sources")
    sources = list(struct.unpack_from(f"!{count}I", body))
    reason = b""
    pos = 4 * count
    if pos < len(body):
        size = body[pos]
        if pos + 1 + size > len(body):
            raise RtcpError("RTCP BYE reason is truncated")
        reason = body[pos + 1 : pos + 1 + size]
    return RtcpByePacket(sources, reason)


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == RTCP_SR:
        if len(body) < 24:
            raise RtcpError("RTCP SR is shorter than its sender info")
        ssrc = struct.unpack_from("!I", body)[0]
        ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body, 4)
        reports, pos = _blocks(body, 24, count, "SR")
        return RtcpSrPacket(ssrc, ntp, rtp_ts, packets, octets, reports, body[pos:])
    if packet_type == RTCP_RR:
        if len(body) < 4:
            raise RtcpError("RTCP RR is shorter than its SSRC")
        reports, pos = _blocks(body, 4, count, "RR")
        return RtcpRrPacket(struct.unpack_from("!I", body)[0], reports, body[pos:])
    if packet_type == RTCP_SDES:
        return _parse_sdes(body, count)
    if packet_type == RTCP_BYE:
        return _parse_bye(body, count)
    return RtcpRawPacket(packet_type, count, body)


def parse_compound(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Split and parse a compound RTCP packet. Padding may only end the last packet."""
    data = bytes(data)
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtcpError("RTCP packet length is less than 4 bytes")
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtcpError("RTCP packet has invalid version")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise RtcpError("RTCP packet is truncated")
        body = data[pos + 4 : end]
        if first & 0x20:
            if end != len(data):
                raise RtcpError("RTCP padding is only allowed in the last packet")
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise RtcpError("RTCP packet padding length is invalid")
            body = body[:-pad]
        packets.append(_parse_one(packet_type, first & 0x1F, body))
        pos = end
    if not packets:
        raise RtcpError("RTCP packet length is less than 4 bytes")
    return packets


def serialize_packet(packet: RtcpPacket) -> bytes:
    body = packet.body()
    if len(body) % 4:
        raise RtcpError("RTCP packet body must be a multiple of 4 bytes")
    count = packet.count()
    if count > 31:
        raise RtcpError("RTCP packet count field is limited to 31")
    return _HEADER.pack(0x80 | count, packet.packet_type, len(body) // 4) + body


def serialize_compound(packets: list[RtcpPacket]) -> bytes:
    return b"".join(serialize_packet(p) for p in packets)


def relay_rewrite(
    packets: list[RtcpPacket],
    *,
    sender_ssrc: int,
    ts_offset: int,
    own_ssrc: int,
    reported_ssrc: int | None,
    seq_offset: int,
) -> list[RtcpPacket]:
    """Rewrite a phone's compound RTCP for the phone on the other leg (module docstring).

    ``sender_ssrc``/``ts_offset``: the switch's SSRC toward the receiving phone and the
    timestamp offset of the media flowing that way. ``own_ssrc``: the switch's SSRC
    toward the reporting phone, the only source whose report block is kept.
    ``reported_ssrc``/``seq_offset``: the SSRC the receiving phone sends (None if not
    seen yet: the block is dropped) and the sequence offset applied to its media.
    """
    out: list[RtcpPacket] = []
    original: int | None = None
    for p in packets:
        if isinstance(p, RtcpSrPacket | RtcpRrPacket):
            if original is None:
                original = p.ssrc
            reports = []
            for block in p.reports:
                if block.ssrc != own_ssrc or reported_ssrc is None:
                    continue
                high = block.highest_sequence
                back = ((high & 0xFFFF) - seq_offset) & 0xFFFF
                reports.append(
                    ReportBlock(
                        reported_ssrc,
                        block.fraction_lost,
                        block.packets_lost,
                        (high & 0xFFFF0000) | back,
                        block.jitter,
                        block.lsr,
                        block.dlsr,
                    )
                )
            if isinstance(p, RtcpSrPacket):
                out.append(
                    RtcpSrPacket(
                        sender_ssrc,
                        p.ntp_timestamp,
                        (p.rtp_timestamp + ts_offset) & 0xFFFFFFFF,
                        p.packet_count,
                        p.octet_count,
                        reports,
                    )
                )
            else:
                out.append(RtcpRrPacket(sender_ssrc, reports))
        elif isinstance(p, RtcpSdesPacket) and out:
            mine = [c for c in p.chunks if c.ssrc == original]
            if mine:
                out.append(RtcpSdesPacket([SdesChunk(sender_ssrc, list(mine[0].items))]))
    return out
