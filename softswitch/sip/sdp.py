"""SDP (RFC 8866, which replaced RFC 4566) and RFC 3264 offer/answer for a B2BUA that
anchors media.

Parsing keeps every line it does not model (unknown attributes, ``i=``, ``k=``, ``z=`` and
letters it has never heard of) in order, so a description that arrives in RFC 8866 order
comes back out byte for byte, apart from line endings (always CRLF on output). Anything
malformed raises :class:`SdpError` with a message naming the line and the fault; the
B2BUA answers it with ``SdpError.status`` (400 for a broken body, 488 for
:class:`SdpNegotiationError`: well-formed but nothing we can accept).

The negotiation helpers are pure functions over the parsed model:

* :func:`negotiate_answer` when a phone offers and the switch answers;
* :func:`make_offer` / :func:`apply_answer` when the switch offers to the other leg;
* :class:`LocalSdpState` keeps our ``o=`` session id and version for one leg, bumping the
  version only when what we say changes (RFC 3264 section 8).

:func:`negotiate_answer` and :func:`apply_answer` return a :class:`NegotiatedMedia`
describing one leg from the switch's side. This module stays stdlib-only
(``softswitch.sip`` must not import ``softswitch.media``), so the types mirror the media
controller's field for field: :class:`Codec` has the fields of ``media.controller.Codec``
in the same order, and :class:`MediaDirection` values are the
``media.controller.Direction`` values. The B2BUA, which may import both, converts with::

    def leg_media(n: sdp.NegotiatedMedia) -> LegMedia:
        te = n.telephone_event
        return LegMedia(
            n.remote_host, n.remote_port, Codec(*dataclasses.astuple(n.codec)),
            Codec(*dataclasses.astuple(te)) if te else None,
            Direction(n.direction.value), n.ptime_ms,
        )
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

__all__ = [
    "SUPPORTED",
    "Attribute",
    "Bandwidth",
    "Codec",
    "Connection",
    "LocalSdpState",
    "MediaDescription",
    "MediaDirection",
    "NegotiatedMedia",
    "Origin",
    "Rtcp",
    "SdpError",
    "SdpNegotiationError",
    "SessionDescription",
    "Timing",
    "apply_answer",
    "make_offer",
    "negotiate_answer",
    "parse_sdp",
    "serialize_sdp",
]


class SdpError(ValueError):
    """The body is not SDP we can read; ``status`` is the SIP response to send."""

    status: int = 400


class SdpNegotiationError(SdpError):
    """Well-formed SDP with nothing acceptable in it (no common codec, bad answer)."""

    status = 488


class MediaDirection(enum.Enum):
    """RFC 3264 direction. On a parsed line it is the writer's view; on
    :class:`NegotiatedMedia` it is the switch's view of that leg."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (MediaDirection.SENDRECV, MediaDirection.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (MediaDirection.SENDRECV, MediaDirection.RECVONLY)

    @classmethod
    def from_flags(cls, sends: bool, receives: bool) -> MediaDirection:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def reversed(self) -> MediaDirection:
        """The same stream seen from the other end."""
        return MediaDirection.from_flags(self.receives, self.sends)

    def __and__(self, other: MediaDirection) -> MediaDirection:
        return MediaDirection.from_flags(
            self.sends and other.sends, self.receives and other.receives
        )


_DIRECTIONS = {d.value: d for d in MediaDirection}


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Origin:
    username: str
    session_id: int
    session_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=``. ``ttl``/``count`` hold the multicast ``/ttl/count`` suffix (IP4 has both,
    IP6 only a count); the B2BUA never accepts multicast but can parse it."""

    nettype: str
    addrtype: str
    address: str
    ttl: int | None = None
    count: int | None = None

    @property
    def is_unspecified(self) -> bool:
        """0.0.0.0 (or ::): the RFC 2543 way of saying "do not send to me"."""
        ip = _ip_literal(self.address)
        return ip is not None and ip.is_unspecified

    @property
    def is_multicast(self) -> bool:
        if self.ttl is not None or self.count is not None:
            return True
        ip = _ip_literal(self.address)
        return ip is not None and ip.is_multicast

    @property
    def is_ip_literal(self) -> bool:
        return _ip_literal(self.address) is not None

    def __str__(self) -> str:
        text = f"{self.nettype} {self.addrtype} {self.address}"
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count is not None:
            text += f"/{self.count}"
        return text


@dataclass(frozen=True, slots=True)
class Bandwidth:
    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=`` plus the raw ``r=`` lines that belong to it (we never schedule sessions)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Attribute:
    """``a=name`` (value None) or ``a=name:value`` (value verbatim, possibly empty)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class Rtcp:
    """RFC 3605 ``a=rtcp``: where the writer wants RTCP when it is not on port + 1."""

    port: int
    connection: Connection | None = None


# Static payload types of RFC 3551 a phone may use without an rtpmap line. G722 is 8000
# on the wire although it samples at 16 kHz (RFC 3551 section 4.5.2).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    18: ("G729", 8000, 1),
}


@dataclass(frozen=True, slots=True)
class MediaDescription:
    media: str
    port: int
    port_count: int | None
    proto: str
    formats: list[str]
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto

    def attribute_values(self, name: str) -> list[str | None]:
        return [a.value for a in self.attributes if a.name == name]

    def rtpmap(self) -> dict[int, tuple[str, int, int]]:
        """PT -> (encoding, clock rate, channels) for every listed format we can name:
        explicit ``a=rtpmap`` lines (the first one wins if a PT is mapped twice), then
        the static table for static PTs listed without one."""
        result: dict[int, tuple[str, int, int]] = {}
        if not self.is_rtp:
            return result
        for value in self.attribute_values("rtpmap"):
            pt, encoding, rate, channels = _parse_rtpmap(value or "")
            result.setdefault(pt, (encoding, rate, channels))
        for fmt in self.formats:
            pt = _small_uint(fmt)
            if pt is not None and pt not in result and pt in STATIC_PAYLOAD_TYPES:
                result[pt] = STATIC_PAYLOAD_TYPES[pt]
        return result

    def fmtp(self) -> dict[int, str]:
        result: dict[int, str] = {}
        if not self.is_rtp:
            return result
        for value in self.attribute_values("fmtp"):
            pt, params = _parse_fmtp(value or "")
            result.setdefault(pt, params)
        return result

    def direction(self, session: SessionDescription | None = None) -> MediaDirection:
        """The media-level direction attribute, else the session-level one, else
        sendrecv (RFC 3264 section 5.1)."""
        found = _direction_of(self.attributes)
        if found is None and session is not None:
            found = _direction_of(session.attributes)
        return found or MediaDirection.SENDRECV

    @property
    def ptime(self) -> int | None:
        for value in self.attribute_values("ptime"):
            # Only a hint for the packetiser: a value we cannot read is ignored rather
            # than failing the call ("20.0" from some stacks still counts).
            text = (value or "").strip(" \t")
            if re.fullmatch(r"[0-9]{1,5}(\.[0-9]{1,3})?", text):
                ms = int(float(text))
                if ms > 0:
                    return ms
        return None

    @property
    def rtcp(self) -> Rtcp | None:
        for value in self.attribute_values("rtcp"):
            return _parse_rtcp(value or "")
        return None

    def effective_connection(self, session: SessionDescription) -> Connection | None:
        return self.connection or session.connection


@dataclass(frozen=True, slots=True)
class SessionDescription:
    version: int
    origin: Origin
    session_name: str
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    times: list[Timing] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def direction(self) -> MediaDirection | None:
        """The session-level direction attribute, None when absent."""
        return _direction_of(self.attributes)

    def to_text(self) -> str:
        return _serialize(self)

    def to_bytes(self) -> bytes:
        return _serialize(self).encode("utf-8")


def serialize_sdp(sdp: SessionDescription) -> bytes:
    """The description as UTF-8 with CRLF line ends, in RFC 8866 section 5 order."""
    return sdp.to_bytes()


# --------------------------------------------------------------------------- parsing

# RFC 8866 section 5 order of the lines we keep in other_lines; letters RFC 8866 does not
# define sort just before the attributes, where they do the least harm to the order.
_SESSION_RANK = {"i": 0, "u": 1, "e": 2, "p": 3, "z": 5, "k": 6}
_SESSION_BEFORE_C = 4
_MEDIA_RANK = {"i": 0, "k": 2}
_MEDIA_BEFORE_C = 1
_UNKNOWN_RANK = 9
_SESSION_ONLY = frozenset("vostrzuep")
_MAX_DIGITS = 40  # enough for any 128-bit session id, far below int()'s own limit
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?")


def _uint(text: str, what: str, maximum: int | None = None) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        shown = text if len(text) <= 24 else text[:20] + "..."
        raise SdpError(f"{what} {shown!r} is not a number")
    value = int(text)
    if maximum is not None and value > maximum:
        raise SdpError(f"{what} {value} is out of range (max {maximum})")
    return value


def _small_uint(text: str) -> int | None:
    if text.isascii() and text.isdigit() and len(text) <= 3:
        return int(text)
    return None


def _fields(value: str) -> list[str]:
    # RFC 8866 separates fields with one space; some stacks pad with more or use tabs,
    # which costs nothing to accept for the structured lines.
    return [f for f in re.split(r"[ \t]+", value) if f]


# Every offer and answer asks about the same few media addresses, and the ipaddress
# module is slow to build one; the results are immutable.
@functools.lru_cache(maxsize=4096)
def _ip_literal(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _parse_connection_fields(parts: Sequence[str], what: str) -> Connection:
    if len(parts) != 3:
        raise SdpError(f"{what} needs <nettype> <addrtype> <address>, got {len(parts)} fields")
    nettype, addrtype, address = parts
    if nettype != "IN":
        raise SdpError(f"{what} network type {nettype!r} is not supported (only IN)")
    if addrtype not in ("IP4", "IP6"):
        raise SdpError(f"{what} address type {addrtype!r} is not IP4 or IP6")
    ttl = count = None
    if "/" in address:
        address, *suffix = address.split("/")
        limit = 2 if addrtype == "IP4" else 1
        if len(suffix) > limit:
            raise SdpError(f"{what} has too many '/' parts for {addrtype} multicast")
        ip = _ip_literal(address)
        if ip is None or not ip.is_multicast:
            raise SdpError(f"{what} uses /ttl or /count on non-multicast address {address!r}")
        if addrtype == "IP4":
            ttl = _uint(suffix[0], f"{what} multicast TTL", 255)
            if len(suffix) == 2:
                count = _uint(suffix[1], f"{what} multicast address count")
        else:
            count = _uint(suffix[0], f"{what} multicast address count")
        if count == 0:
            raise SdpError(f"{what} multicast address count is 0")
    ip = _ip_literal(address)
    if ip is not None:
        if (ip.version == 4) != (addrtype == "IP4"):
            raise SdpError(f"{what} address {address!r} is not an {addrtype} address")
    elif any(c.isalpha() for c in address) and _HOST_RE.fullmatch(address):
        # RFC 8866 allows a domain name here; the B2BUA decides whether to resolve it.
        pass
    else:
        raise SdpError(f"{what} address {address!r} is not a valid {addrtype} address")
    return Connection(nettype, addrtype, address, ttl, count)


def _parse_origin(value: str) -> Origin:
    parts = _fields(value)
    if len(parts) != 6:
        raise SdpError(f"o= needs 6 fields, got {len(parts)}")
    username, sess_id, sess_version, nettype, addrtype, address = parts
    # The origin address is only an identifier (phones put hostnames, even private
    # names, there), so it is not checked like c=.
    return Origin(
        username,
        _uint(sess_id, "o= session id"),
        _uint(sess_version, "o= session version"),
        nettype,
        addrtype,
        address,
    )


def _parse_bandwidth(value: str) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    if not sep or not bwtype or _fields(bwtype) != [bwtype]:
        raise SdpError(f"b= must be <type>:<kbps>, got {value!r}")
    return Bandwidth(bwtype, _uint(amount, f"b={bwtype} bandwidth"))


def _parse_timing(value: str) -> Timing:
    parts = _fields(value)
    if len(parts) != 2:
        raise SdpError(f"t= needs <start> <stop>, got {value!r}")
    return Timing(_uint(parts[0], "t= start time"), _uint(parts[1], "t= stop time"), [])


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    if not name:
        raise SdpError(f"attribute without a name: a={value!r}")
    return Attribute(name, rest if sep else None)


def _parse_media(value: str) -> MediaDescription:
    parts = _fields(value)
    if len(parts) < 3:
        raise SdpError(f"m= needs <media> <port> <proto> <fmt>..., got {value!r}")
    media, port_text, proto, *formats = parts
    port_text, slash, count_text = port_text.partition("/")
    port = _uint(port_text, "m= port", 65535)
    port_count = None
    if slash:
        port_count = _uint(count_text, "m= port count")
        if port_count == 0:
            raise SdpError("m= port count is 0")
    if not formats and port != 0:
        # Some stacks write a refused stream as "m=video 0 RTP/AVP" with no format;
        # harmless on a port-0 line, meaningless on a live one.
        raise SdpError(f"m={media} lists no formats")
    if "RTP/" in proto:
        for fmt in formats:
            _uint(fmt, f"m={media} payload type", 127)
    return MediaDescription(media, port, port_count, proto, formats)


def _parse_rtpmap(value: str) -> tuple[int, str, int, int]:
    parts = _fields(value)
    if len(parts) != 2:
        raise SdpError(f"a=rtpmap must be <pt> <encoding>/<rate>[/<channels>], got {value!r}")
    pt = _uint(parts[0], "a=rtpmap payload type", 127)
    pieces = parts[1].split("/")
    if len(pieces) not in (2, 3) or not pieces[0]:
        raise SdpError(f"a=rtpmap:{pt} encoding {parts[1]!r} is not <name>/<rate>[/<channels>]")
    rate = _uint(pieces[1], f"a=rtpmap:{pt} clock rate")
    channels = _uint(pieces[2], f"a=rtpmap:{pt} channels") if len(pieces) == 3 else 1
    if rate == 0 or channels == 0:
        raise SdpError(f"a=rtpmap:{pt} has a zero clock rate or channel count")
    return pt, pieces[0], rate, channels


def _parse_fmtp(value: str) -> tuple[int, str]:
    fmt, _, params = value.lstrip(" \t").partition(" ")
    return _uint(fmt, "a=fmtp payload type", 127), params.strip(" \t")


def _parse_rtcp(value: str) -> Rtcp:
    parts = _fields(value)
    if len(parts) not in (1, 4):
        raise SdpError(f"a=rtcp must be <port> [IN <addrtype> <address>], got {value!r}")
    port = _uint(parts[0], "a=rtcp port", 65535)
    conn = _parse_connection_fields(parts[1:], "a=rtcp") if len(parts) == 4 else None
    return Rtcp(port, conn)


def _direction_of(attributes: Iterable[Attribute]) -> MediaDirection | None:
    for attr in attributes:
        if attr.value is None and attr.name in _DIRECTIONS:
            return _DIRECTIONS[attr.name]
    return None


def _check_directions(attributes: Sequence[Attribute], where: str) -> None:
    found = {a.name for a in attributes if a.value is None and a.name in _DIRECTIONS}
    if len(found) > 1:
        raise SdpError(f"{where} has conflicting direction attributes: {', '.join(sorted(found))}")


def _check_media_attribute(media: MediaDescription, attr: Attribute) -> None:
    if not media.is_rtp:
        return
    if attr.name == "rtpmap":
        _parse_rtpmap(attr.value or "")
    elif attr.name == "fmtp":
        _parse_fmtp(attr.value or "")
    elif attr.name == "rtcp":
        _parse_rtcp(attr.value or "")


def _split_lines(text: str) -> list[tuple[int, str, str]]:
    out = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip(" \t"):
            # Blank lines (a trailing empty line, a body padded by a proxy) carry
            # nothing; refusing them would fail calls for no gain.
            continue
        if "\r" in line or "\x00" in line:
            raise SdpError(f"line {number}: stray CR or NUL inside the line")
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"line {number}: not a <type>=<value> line: {line[:40]!r}")
        out.append((number, line[0], line[2:]))
    return out


class _Builder:
    """Collects one parse; fields mirror SessionDescription while lines arrive."""

    def __init__(self) -> None:
        self.origin: Origin | None = None
        self.session_name: str | None = None
        self.connection: Connection | None = None
        self.bandwidths: list[Bandwidth] = []
        self.times: list[Timing] = []
        self.attributes: list[Attribute] = []
        self.other: list[tuple[str, str]] = []
        self.media: list[MediaDescription] = []

    def session_line(self, kind: str, value: str) -> None:
        if kind == "v":
            raise SdpError("duplicate v=")
        if kind == "o":
            if self.origin is not None:
                raise SdpError("duplicate o=")
            self.origin = _parse_origin(value)
        elif kind == "s":
            if self.session_name is not None:
                raise SdpError("duplicate s=")
            self.session_name = value
        elif kind == "c":
            if self.connection is not None:
                raise SdpError("more than one session-level c=")
            self.connection = _parse_connection_fields(_fields(value), "c=")
        elif kind == "b":
            self.bandwidths.append(_parse_bandwidth(value))
        elif kind == "t":
            self.times.append(_parse_timing(value))
        elif kind == "r":
            if not self.times:
                raise SdpError("r= before any t=")
            self.times[-1].repeats.append(value)
        elif kind == "a":
            self.attributes.append(_parse_attribute(value))
        else:
            self.other.append((kind, value))

    def media_line(self, kind: str, value: str) -> None:
        current = self.media[-1]
        if kind in _SESSION_ONLY:
            raise SdpError(f"{kind}= is only allowed before the first m= line")
        if kind == "c":
            if current.connection is not None:
                raise SdpError(
                    f"more than one c= in m={current.media} (multicast layering is not supported)"
                )
            conn = _parse_connection_fields(_fields(value), "c=")
            self.media[-1] = replace(current, connection=conn)
        elif kind == "b":
            current.bandwidths.append(_parse_bandwidth(value))
        elif kind == "a":
            attr = _parse_attribute(value)
            _check_media_attribute(current, attr)
            current.attributes.append(attr)
        else:
            current.other_lines.append((kind, value))

    def finish(self) -> SessionDescription:
        if self.origin is None:
            raise SdpError("missing o=")
        if self.session_name is None:
            raise SdpError("missing s=")
        # A missing t= is accepted: some embedded stacks leave it out, and it carries
        # nothing a phone call uses.
        _check_directions(self.attributes, "the session level")
        media = []
        for index, m in enumerate(self.media):
            _check_directions(m.attributes, f"m= line {index + 1} ({m.media})")
            if m.port != 0 and m.connection is None and self.connection is None:
                raise SdpError(f"m= line {index + 1} ({m.media}) has no c= and no session c=")
            ranked = sorted(m.other_lines, key=lambda kv: _MEDIA_RANK.get(kv[0], _UNKNOWN_RANK))
            media.append(replace(m, other_lines=ranked))
        return SessionDescription(
            version=0,
            origin=self.origin,
            session_name=self.session_name,
            connection=self.connection,
            bandwidths=self.bandwidths,
            times=self.times,
            attributes=self.attributes,
            media=media,
            other_lines=sorted(self.other, key=lambda kv: _SESSION_RANK.get(kv[0], _UNKNOWN_RANK)),
        )


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; raise SdpError (and nothing else) when it is malformed.

    Strict where a fault changes meaning (v= first, one o= and s=, session-only lines
    after m=, numbers, addresses, payload types, rtpmap/fmtp/rtcp syntax, conflicting
    directions, a live stream with no c=). Lenient where phones are sloppy and the
    meaning is still clear: LF or CRLF, blank lines, extra spaces between fields, a
    missing t=, and lines out of RFC order inside a section (they are re-emitted in RFC
    order).
    """
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP is not UTF-8 (byte {exc.start})") from None
    elif isinstance(data, str):
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise SdpError("SDP text contains unencodable characters") from None
    else:
        raise SdpError(f"SDP must be bytes or str, not {type(data).__name__}")
    lines = _split_lines(text)
    if not lines:
        raise SdpError("empty SDP body")
    number, kind, value = lines[0]
    if kind != "v":
        raise SdpError(f"line {number}: SDP must start with v=, got {kind}=")
    if value.strip(" \t") != "0":
        raise SdpError(f"line {number}: unsupported SDP version {value!r}")
    builder = _Builder()
    for number, kind, value in lines[1:]:
        try:
            if kind == "m":
                builder.media.append(_parse_media(value))
            elif builder.media:
                builder.media_line(kind, value)
            else:
                builder.session_line(kind, value)
        except SdpError as exc:
            raise SdpError(f"line {number}: {exc}") from None
    return builder.finish()


def _serialize(sdp: SessionDescription) -> str:
    lines = [f"v={sdp.version}", f"o={sdp.origin}", f"s={sdp.session_name}"]
    session_other = sdp.other_lines
    lines += [
        f"{k}={v}"
        for k, v in session_other
        if _SESSION_RANK.get(k, _UNKNOWN_RANK) < _SESSION_BEFORE_C
    ]
    if sdp.connection is not None:
        lines.append(f"c={sdp.connection}")
    lines += [f"b={b}" for b in sdp.bandwidths]
    for t in sdp.times:
        lines.append(f"t={t.start} {t.stop}")
        lines += [f"r={r}" for r in t.repeats]
    lines += [
        f"{k}={v}"
        for k, v in session_other
        if _SESSION_RANK.get(k, _UNKNOWN_RANK) > _SESSION_BEFORE_C
    ]
    lines += [f"a={a}" for a in sdp.attributes]
    for m in sdp.media:
        port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
        lines.append(" ".join([f"m={m.media}", port, m.proto, *m.formats]))
        lines += [
            f"{k}={v}"
            for k, v in m.other_lines
            if _MEDIA_RANK.get(k, _UNKNOWN_RANK) < _MEDIA_BEFORE_C
        ]
        if m.connection is not None:
            lines.append(f"c={m.connection}")
        lines += [f"b={b}" for b in m.bandwidths]
        lines += [
            f"{k}={v}"
            for k, v in m.other_lines
            if _MEDIA_RANK.get(k, _UNKNOWN_RANK) > _MEDIA_BEFORE_C
        ]
        lines += [f"a={a}" for a in m.attributes]
    for line in lines:
        # A value holding a line break would smuggle extra lines into the body.
        if "\r" in line or "\n" in line or "\x00" in line:
            raise SdpError(f"refusing to serialize a line with CR, LF or NUL: {line[:40]!r}")
    return "\r\n".join(lines) + "\r\n"


# --------------------------------------------------------------------------- offer/answer


@dataclass(frozen=True, slots=True)
class Codec:
    """A payload format on one leg. Same fields, same order, as media.controller.Codec.

    In :data:`SUPPORTED` the payload type is the one we offer with and ``fmtp`` what we
    ask to receive; in :class:`NegotiatedMedia` the payload type is that leg's and
    ``fmtp`` is what the remote asked for (it governs what we send it)."""

    name: str
    payload_type: int
    clock_rate: int = 8000
    channels: int = 1
    fmtp: str = ""

    @property
    def is_telephone_event(self) -> bool:
        return self.name.lower() == "telephone-event"

    def same_format(self, other: Codec) -> bool:
        if self.name.lower() != other.name.lower() or self.clock_rate != other.clock_rate:
            return False
        # RFC 7587 says opus/48000/2 always, but some stacks write opus/48000; the
        # channel count carries no meaning for Opus, so it is not compared.
        return self.name.lower() == "opus" or self.channels == other.channels

    @property
    def encoding(self) -> str:
        text = f"{self.name}/{self.clock_rate}"
        return text + f"/{self.channels}" if self.channels != 1 else text


SUPPORTED: tuple[Codec, ...] = (
    Codec("PCMU", 0, 8000),
    Codec("PCMA", 8, 8000),
    Codec("opus", 111, 48000, 2, "useinbandfec=1"),
    Codec("telephone-event", 101, 8000, 1, "0-16"),
)

_AUDIO_PROTOS = ("RTP/AVP", "RTP/AVPF")  # AVPF feedback is optional, so plain RTP is fine
_DEFAULT_PTIME = 20


class _Endpoint(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """One leg's audio stream after offer/answer, from the switch's point of view."""

    remote_host: str
    remote_port: int
    codec: Codec
    telephone_event: Codec | None
    direction: MediaDirection
    ptime_ms: int = _DEFAULT_PTIME
    remote_rtcp: tuple[str, int] | None = None  # from a=rtcp; None means remote_port + 1
    on_hold: bool = False  # remote said sendonly/inactive or used c=0.0.0.0
    stream_index: int = 0  # which m= line carries the audio

    @property
    def telephone_event_pt(self) -> int | None:
        return None if self.telephone_event is None else self.telephone_event.payload_type


def _local(local: tuple[str, int] | _Endpoint) -> tuple[str, int, str]:
    host, port = (local.host, local.port) if not isinstance(local, tuple) else local
    ip = _ip_literal(host)
    if ip is None:
        raise ValueError(f"local media address {host!r} must be an IP literal")
    if not 0 < port <= 65535:
        raise ValueError(f"local media port {port} is out of range")
    return host, port, "IP4" if ip.version == 4 else "IP6"


def _formats_of(m: MediaDescription) -> list[Codec]:
    """The RTP formats listed on an m= line, in its order, as the writer named them.
    A dynamic PT without an rtpmap cannot be identified, so it is left out."""
    rtpmap, fmtp = m.rtpmap(), m.fmtp()
    out = []
    for fmt in m.formats:
        pt = _small_uint(fmt)
        if pt is not None and pt in rtpmap:
            name, rate, channels = rtpmap[pt]
            out.append(Codec(name, pt, rate, channels, fmtp.get(pt, "")))
    return out


def _find(codec: Codec, candidates: Iterable[Codec]) -> Codec | None:
    return next((c for c in candidates if c.same_format(codec)), None)


def _pick_event(events: Sequence[Codec], audio: Codec) -> Codec | None:
    # RFC 4733 section 7.1.1: telephone-event should run at the audio codec's rate.
    same_rate = [e for e in events if e.clock_rate == audio.clock_rate]
    candidates = same_rate or list(events)
    return candidates[0] if candidates else None


def _audio_attributes(
    codecs: Sequence[Codec], ptime: int, direction: MediaDirection
) -> list[Attribute]:
    attrs = [Attribute("rtpmap", f"{c.payload_type} {c.encoding}") for c in codecs]
    attrs += [Attribute("fmtp", f"{c.payload_type} {c.fmtp}") for c in codecs if c.fmtp]
    attrs.append(Attribute("ptime", str(ptime)))
    attrs.append(Attribute(direction.value))
    return attrs


def _rejected(m: MediaDescription) -> MediaDescription:
    # RFC 3264 section 6: a refused stream stays, in its place, with port 0.
    return MediaDescription(m.media, 0, None, m.proto, list(m.formats))


def _remote_rtcp(m: MediaDescription, conn: Connection) -> tuple[str, int] | None:
    rtcp = m.rtcp
    if rtcp is None:
        return None
    host = rtcp.connection.address if rtcp.connection is not None else conn.address
    return host, rtcp.port


def _usable_connection(m: MediaDescription, sdp: SessionDescription, who: str) -> Connection:
    conn = m.effective_connection(sdp)
    if conn is None:
        raise SdpError(f"{who} m={m.media} has no connection address")
    if conn.is_multicast:
        raise SdpNegotiationError(f"{who} m={m.media} is multicast, which is not supported")
    if not conn.is_ip_literal:
        raise SdpNegotiationError(f"{who} m={m.media} c= {conn.address!r} is not an IP address")
    return conn


def _session(
    host: str, addrtype: str, session_id: int, version: int, times: list[Timing]
) -> SessionDescription:
    return SessionDescription(
        version=0,
        origin=Origin("-", session_id, version, "IN", addrtype, host),
        session_name="-",
        connection=Connection("IN", addrtype, host),
        times=times,
    )


def _answer_audio(
    offer: SessionDescription,
    index: int,
    m: MediaDescription,
    supported: Sequence[Codec],
    port: int,
    prefer: Sequence[str] | None,
    local_direction: MediaDirection,
    ptime: int,
) -> tuple[MediaDescription, NegotiatedMedia]:
    if m.proto not in _AUDIO_PROTOS:
        raise SdpNegotiationError(f"audio stream {index + 1}: transport {m.proto} not supported")
    conn = _usable_connection(m, offer, f"audio stream {index + 1}:")
    ours_audio = [c for c in supported if not c.is_telephone_event]
    ours_events = [c for c in supported if c.is_telephone_event]
    offered = _formats_of(m)
    common = [(o, s) for o in offered if not o.is_telephone_event and (s := _find(o, ours_audio))]
    if not common:
        names = ", ".join(c.encoding for c in offered) or "nothing we can identify"
        raise SdpNegotiationError(f"audio stream {index + 1}: no codec in common (offered {names})")
    theirs, ours = common[0]
    if prefer:
        # RFC 3264 lets the answerer pick any offered codec: the B2BUA prefers the one
        # the other leg already uses so that media can be relayed without transcoding.
        rank = {name.lower(): i for i, name in enumerate(prefer)}
        theirs, ours = min(common, key=lambda pair: rank.get(pair[1].name.lower(), len(rank)))
    events = [(o, s) for o in offered if o.is_telephone_event and (s := _find(o, ours_events))]
    event_offer = _pick_event([o for o, _ in events], theirs)
    event_ours = next((s for o, s in events if o is event_offer), None)

    offer_dir = m.direction(offer)
    remote = offer_dir
    if conn.is_unspecified:
        # RFC 2543 hold: c=0.0.0.0 means "do not send to me" whatever the attribute says.
        remote = offer_dir & MediaDirection.SENDONLY
    answer_dir = remote.reversed() & local_direction

    # The answer reuses the offerer's PT for each format (RFC 3264 section 6.1) and
    # states our own receive parameters (fmtp) for it.
    answered = [replace(ours, payload_type=theirs.payload_type)]
    event_codec = None
    if event_offer is not None and event_ours is not None:
        answered.append(replace(event_ours, payload_type=event_offer.payload_type))
        event_codec = replace(
            event_ours, payload_type=event_offer.payload_type, fmtp=event_offer.fmtp
        )
    answer_m = MediaDescription(
        "audio",
        port,
        None,
        m.proto,
        [str(c.payload_type) for c in answered],
        attributes=_audio_attributes(answered, ptime, answer_dir),
    )
    negotiated = NegotiatedMedia(
        remote_host=conn.address,
        remote_port=m.port,
        codec=replace(ours, payload_type=theirs.payload_type, fmtp=theirs.fmtp),
        telephone_event=event_codec,
        direction=answer_dir,
        ptime_ms=m.ptime or _DEFAULT_PTIME,
        remote_rtcp=_remote_rtcp(m, conn),
        on_hold=offer_dir in (MediaDirection.SENDONLY, MediaDirection.INACTIVE)
        or conn.is_unspecified,
        stream_index=index,
    )
    return answer_m, negotiated


def negotiate_answer(
    offer: SessionDescription,
    supported: Sequence[Codec],
    local: tuple[str, int] | _Endpoint,
    *,
    session_id: int,
    version: int,
    prefer: Sequence[str] | None = None,
    direction: MediaDirection = MediaDirection.SENDRECV,
    ptime: int = _DEFAULT_PTIME,
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer a phone's offer with the switch's media address (RFC 3264 section 6).

    The first audio stream we can accept is answered with one codec (the first offered
    one we support, or the first in ``prefer`` order) plus telephone-event when offered,
    each with the offerer's PT. Every other m= line is refused with port 0 in its place.
    ``direction`` is what the switch itself wants (INACTIVE/SENDONLY to hold the phone).
    Raises SdpNegotiationError (488) when no audio stream is acceptable.
    """
    host, port, addrtype = _local(local)
    media: list[MediaDescription] = []
    negotiated: NegotiatedMedia | None = None
    reasons: list[str] = []
    for index, m in enumerate(offer.media):
        if negotiated is None and m.media == "audio" and m.port != 0:
            try:
                answer_m, negotiated = _answer_audio(
                    offer, index, m, supported, port, prefer, direction, ptime
                )
            except SdpNegotiationError as exc:
                reasons.append(str(exc))
                media.append(_rejected(m))
            else:
                media.append(answer_m)
        else:
            media.append(_rejected(m))
    if negotiated is None:
        detail = "; ".join(reasons) or "the offer has no active audio stream"
        raise SdpNegotiationError(f"no audio codec in common: {detail}")
    # RFC 3264 section 6: the answer's t= must equal the offer's.
    times = [replace(t, repeats=list(t.repeats)) for t in offer.times] or [Timing(0, 0)]
    answer = replace(_session(host, addrtype, session_id, version, times), media=media)
    return answer, negotiated


def make_offer(
    supported: Sequence[Codec],
    local: tuple[str, int] | _Endpoint,
    *,
    session_id: int,
    version: int,
    direction: MediaDirection = MediaDirection.SENDRECV,
    codecs: Sequence[str] | None = None,
    ptime: int = _DEFAULT_PTIME,
    previous: SessionDescription | None = None,
) -> SessionDescription:
    """The switch's offer to a leg: one audio stream listing ``supported`` (or only the
    ``codecs`` named, in that order) with our PTs, plus every telephone-event format we
    support. For a re-offer pass the SDP we last sent on the leg as ``previous``: its m=
    lines keep their count and order, the others refused with port 0 (RFC 3264 8)."""
    host, port, addrtype = _local(local)
    audio = [c for c in supported if not c.is_telephone_event]
    if codecs is not None:
        by_name = {c.name.lower(): c for c in reversed(audio)}
        audio = [by_name[n.lower()] for n in dict.fromkeys(codecs) if n.lower() in by_name]
    if not audio:
        raise SdpNegotiationError("none of the requested codecs is supported")
    listed = audio + [c for c in supported if c.is_telephone_event]
    pts = [c.payload_type for c in listed]
    if len(set(pts)) != len(pts):
        raise ValueError(f"supported codecs reuse a payload type: {pts}")
    audio_m = MediaDescription(
        "audio",
        port,
        None,
        "RTP/AVP",
        [str(pt) for pt in pts],
        attributes=_audio_attributes(listed, ptime, direction),
    )
    media = [audio_m]
    if previous is not None and previous.media:
        slot = next(
            (i for i, m in enumerate(previous.media) if m.media == "audio" and m.port != 0),
            next((i for i, m in enumerate(previous.media) if m.media == "audio"), None),
        )
        media = [audio_m if i == slot else _rejected(m) for i, m in enumerate(previous.media)]
        if slot is None:
            media.append(audio_m)
    return replace(_session(host, addrtype, session_id, version, [Timing(0, 0)]), media=media)


def apply_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedMedia:
    """Read the callee's answer to our offer. The answer must mirror the offer's m=
    lines, accept the audio stream and only use formats we offered; anything else is
    SdpNegotiationError (the B2BUA then ends that leg)."""
    if len(answer.media) != len(offer.media):
        raise SdpNegotiationError(
            f"answer has {len(answer.media)} m= lines, the offer had {len(offer.media)}"
        )
    for i, (om, am) in enumerate(zip(offer.media, answer.media, strict=True)):
        if om.media != am.media:
            raise SdpNegotiationError(
                f"m= line {i + 1} is {om.media} in the offer, {am.media} in the answer"
            )
        if om.port == 0 and am.port != 0:
            raise SdpNegotiationError(f"answer accepts m= line {i + 1}, which the offer disabled")
    index = next((i for i, m in enumerate(offer.media) if m.media == "audio" and m.port != 0), None)
    if index is None:
        raise SdpNegotiationError("the offer has no active audio stream")
    om, am = offer.media[index], answer.media[index]
    if am.port == 0:
        raise SdpNegotiationError("the callee rejected the audio stream")
    if om.proto not in _AUDIO_PROTOS:
        raise SdpNegotiationError(f"offer audio transport {om.proto} is not supported")
    if am.proto != om.proto:
        raise SdpNegotiationError(f"answer uses transport {am.proto}, the offer {om.proto}")
    conn = _usable_connection(am, answer, "answer")

    ours = {c.payload_type: c for c in _formats_of(om)}
    answer_map, answer_fmtp = am.rtpmap(), am.fmtp()
    chosen: list[Codec] = []
    for fmt in am.formats:
        pt = _small_uint(fmt)
        if pt is None or pt > 127:
            raise SdpError(f"answer payload type {fmt!r} is not a number")
        if pt in answer_map:
            name, rate, channels = answer_map[pt]
            theirs = Codec(name, pt, rate, channels, answer_fmtp.get(pt, ""))
        elif pt in ours:
            # RFC 3264 asks for rtpmap lines in the answer too, but an answerer that
            # reuses our PTs without repeating them is unambiguous.
            theirs = replace(ours[pt], fmtp=answer_fmtp.get(pt, ""))
        else:
            raise SdpNegotiationError(f"answer format {pt} has no rtpmap and is not in the offer")
        if pt in ours:
            if not ours[pt].same_format(theirs):
                raise SdpNegotiationError(
                    f"answer maps PT {pt} to {theirs.encoding}, the offer to {ours[pt].encoding}"
                )
            mine = ours[pt]
        else:
            # RFC 3264 6.1 only says SHOULD keep the offer's PT; a callee that answers a
            # format we offered under another dynamic PT is followed: that PT is what it
            # expects to receive on this leg.
            mine = _find(theirs, ours.values()) if pt >= 96 else None
            if mine is None:
                raise SdpNegotiationError(f"answer format {pt} ({theirs.encoding}) was not offered")
        chosen.append(replace(mine, payload_type=pt, fmtp=theirs.fmtp))
    audio = [c for c in chosen if not c.is_telephone_event]
    if not audio:
        raise SdpNegotiationError("answer accepts no audio codec")
    event = _pick_event([c for c in chosen if c.is_telephone_event], audio[0])

    offer_dir = om.direction(offer)
    answer_dir = am.direction(answer)
    remote = answer_dir & MediaDirection.SENDONLY if conn.is_unspecified else answer_dir
    # Taking the intersection also copes with phones that answer a sendonly hold with
    # sendrecv: we still only do what we offered.
    return NegotiatedMedia(
        remote_host=conn.address,
        remote_port=am.port,
        codec=audio[0],
        telephone_event=event,
        direction=offer_dir & remote.reversed(),
        ptime_ms=am.ptime or _DEFAULT_PTIME,
        remote_rtcp=_remote_rtcp(am, conn),
        on_hold=answer_dir in (MediaDirection.SENDONLY, MediaDirection.INACTIVE)
        or conn.is_unspecified,
        stream_index=index,
    )


class LocalSdpState:
    """Our ``o=`` line on one leg: a fixed session id, and a version that goes up by
    exactly one each time what we send changes and stays put when it does not
    (RFC 3264 section 8). ``last`` is the SDP we most recently sent."""

    def __init__(self, session_id: int, version: int = 0) -> None:
        self.session_id = session_id
        self.version = version
        self.last: SessionDescription | None = None

    def _with_version(self, sdp: SessionDescription, version: int) -> SessionDescription:
        origin = replace(sdp.origin, session_id=self.session_id, session_version=version)
        return replace(sdp, origin=origin)

    def stamp(self, sdp: SessionDescription) -> SessionDescription:
        """``sdp`` with our session id and the right version; remembers it as sent."""
        if self.last is not None:
            if self._with_version(sdp, self.version) == self.last:
                return self.last
            self.version += 1
        self.last = self._with_version(sdp, self.version)
        return self.last

    def offer(
        self,
        supported: Sequence[Codec],
        local: tuple[str, int] | _Endpoint,
        *,
        direction: MediaDirection = MediaDirection.SENDRECV,
        codecs: Sequence[str] | None = None,
        ptime: int = _DEFAULT_PTIME,
    ) -> SessionDescription:
        sdp = make_offer(
            supported,
            local,
            session_id=self.session_id,
            version=self.version,
            direction=direction,
            codecs=codecs,
            ptime=ptime,
            previous=self.last,
        )
        return self.stamp(sdp)

    def answer(
        self,
        offer: SessionDescription,
        supported: Sequence[Codec],
        local: tuple[str, int] | _Endpoint,
        *,
        prefer: Sequence[str] | None = None,
        direction: MediaDirection = MediaDirection.SENDRECV,
        ptime: int = _DEFAULT_PTIME,
    ) -> tuple[SessionDescription, NegotiatedMedia]:
        sdp, negotiated = negotiate_answer(
            offer,
            supported,
            local,
            session_id=self.session_id,
            version=self.version,
            prefer=prefer,
            direction=direction,
            ptime=ptime,
        )
        return self.stamp(sdp), negotiated
