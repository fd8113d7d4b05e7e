"""SDP parsing/serialization (RFC 8866) and RFC 3264 offer/answer for the B2BUA."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softswitch.media import controller
from softswitch.sip.sdp import (
    SUPPORTED,
    Attribute,
    Codec,
    Connection,
    LocalSdpState,
    MediaDescription,
    MediaDirection,
    NegotiatedMedia,
    SdpError,
    SdpNegotiationError,
    SessionDescription,
    apply_answer,
    make_offer,
    negotiate_answer,
    parse_sdp,
    serialize_sdp,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "sip" / "sdp"
FIXTURES = sorted(DATA.glob("*.sdp"))
SWITCH = ("203.0.113.1", 40000)
SWITCH6 = ("2001:db8::1", 40002)
SENDRECV, SENDONLY = MediaDirection.SENDRECV, MediaDirection.SENDONLY
RECVONLY, INACTIVE = MediaDirection.RECVONLY, MediaDirection.INACTIVE


def fixture(name: str) -> SessionDescription:
    return parse_sdp((DATA / f"{name}.sdp").read_bytes())


def sdp(*lines: str) -> SessionDescription:
    return parse_sdp("\r\n".join(lines) + "\r\n")


HEAD = ("v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0")


def audio_offer(*media_lines: str, head: tuple[str, ...] = HEAD) -> SessionDescription:
    return sdp(*head, *media_lines)


def answer(offer: SessionDescription, **kw) -> tuple[SessionDescription, NegotiatedMedia]:
    kw.setdefault("session_id", 77)
    kw.setdefault("version", 1)
    return negotiate_answer(offer, kw.pop("supported", SUPPORTED), kw.pop("local", SWITCH), **kw)


# --------------------------------------------------------------------------- fixtures


def test_fixtures_present():
    names = {p.stem.split("_")[0] for p in FIXTURES}
    assert {"yealink", "snom", "polycom", "grandstream", "baresip", "sipp"} <= names
    assert {"asterisk", "freeswitch", "webrtc", "linphone", "cisco"} <= names


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_round_trips_byte_for_byte(path: Path):
    text = path.read_text()
    crlf = text.replace("\n", "\r\n").encode()
    parsed = parse_sdp(text)
    assert parse_sdp(crlf) == parsed  # LF and CRLF read the same
    assert serialize_sdp(parsed) == crlf  # always CRLF out, nothing lost or moved
    assert parse_sdp(serialize_sdp(parsed)) == parsed


def test_yealink_fields():
    s = fixture("yealink_t46u")
    assert s.origin.username == "-" and s.origin.session_id == 20010
    assert s.origin.address == "192.168.1.50" and s.session_name == "SDP data"
    assert s.connection == Connection("IN", "IP4", "192.168.1.50")
    assert [(t.start, t.stop) for t in s.times] == [(0, 0)]
    (m,) = s.media
    assert (m.media, m.port, m.port_count, m.proto) == ("audio", 11796, None, "RTP/AVP")
    assert m.formats == ["0", "8", "18", "9", "101"]
    assert m.rtpmap()[18] == ("G729", 8000, 1)
    assert m.fmtp() == {18: "annexb=no", 101: "0-15"}
    assert m.ptime == 20 and m.direction(s) is SENDRECV and m.rtcp is None
    assert m.effective_connection(s) == s.connection


def test_snom_lowercase_codec_names_still_negotiate():
    s = fixture("snom_d785")
    assert s.media[0].rtpmap()[0] == ("pcmu", 8000, 1)
    # G722 comes first but is not ours: the first offered codec we support is PCMU.
    _, neg = answer(s)
    assert neg.codec == Codec("PCMU", 0, 8000, 1, "")
    assert neg.telephone_event == Codec("telephone-event", 101, 8000, 1, "0-15")


def test_polycom_session_level_direction_and_bandwidth():
    s = fixture("polycom_vvx")
    assert s.direction is SENDRECV
    assert [str(b) for b in s.bandwidths] == ["AS:512"]
    audio, video = s.media
    assert audio.attribute_values("sendrecv") == []
    assert audio.direction(s) is SENDRECV
    assert [str(b) for b in video.bandwidths] == ["TIAS:448000"]
    assert video.rtpmap()[109] == ("H264", 90000, 1)
    assert video.attributes[-1] == Attribute("rtcp-fb", "* nack pli")


def test_grandstream_opus_fmtp():
    m = fixture("grandstream_gxp2170").media[0]
    assert m.rtpmap()[123] == ("opus", 48000, 2)
    assert m.fmtp()[123].startswith("maxplaybackrate=16000; sprop-maxcapturerate=16000")
    _, neg = answer(fixture("grandstream_gxp2170"), prefer=["opus"])
    assert neg.codec.name == "opus" and neg.codec.payload_type == 123
    assert "useinbandfec=1" in neg.codec.fmtp  # the phone's wishes, for our encoder


def test_freeswitch_rtcp_and_event_rate():
    s = fixture("freeswitch")
    m = s.media[0]
    assert m.rtcp is not None and m.rtcp.port == 24619
    assert m.rtcp.connection == Connection("IN", "IP4", "198.51.100.7")
    _, neg = answer(s)
    assert neg.codec.name == "opus" and neg.codec.payload_type == 102
    assert neg.remote_rtcp == ("198.51.100.7", 24619)
    # Only telephone-event/8000 is ours, so 101 is kept even though 104 matches Opus' rate.
    assert neg.telephone_event_pt == 101
    wide = [*SUPPORTED, Codec("telephone-event", 100, 48000, 1, "0-16")]
    _, neg = answer(s, supported=wide)
    assert neg.telephone_event_pt == 104  # RFC 4733: same rate as the audio codec


def test_webrtc_parses_but_is_not_negotiable():
    s = fixture("webrtc_chrome")
    assert s.connection is None
    m = s.media[0]
    assert m.proto == "UDP/TLS/RTP/SAVPF" and m.connection is not None
    assert s.attributes[2] == Attribute(
        "msid-semantic", " WMS 5b2f0a1e-4f0c-4b8e-9a51-8b9d3c0e6a11"
    )
    assert m.rtcp is not None and m.rtcp.port == 9
    with pytest.raises(SdpNegotiationError, match="UDP/TLS/RTP/SAVPF"):
        answer(s)


def test_sipp_minimal():
    _, neg = answer(fixture("sipp_uac"))
    assert (neg.remote_host, neg.remote_port) == ("127.0.0.1", 6000)
    assert neg.telephone_event is None and neg.ptime_ms == 20


def test_asterisk_maxptime_kept_and_opus_by_preference():
    s = fixture("asterisk_pjsip")
    assert s.media[0].attribute_values("maxptime") == ["150"]
    _, neg = answer(s)
    assert neg.codec.name == "PCMU"
    _, neg = answer(s, prefer=["opus", "PCMA"])
    assert neg.codec == Codec("opus", 111, 48000, 2, "useinbandfec=1")
    _, neg = answer(s, prefer=["PCMA"])
    assert neg.codec.name == "PCMA" and neg.codec.payload_type == 8
    _, neg = answer(s, prefer=["G729"])  # nothing preferred is offered: offer order
    assert neg.codec.name == "PCMU"


def test_ipv6_connection_and_answer_family():
    s = fixture("linphone_ipv6")
    assert s.connection == Connection("IN", "IP6", "2001:db8:10::45")
    assert s.origin.addrtype == "IP6"
    ans, neg = answer(s, local=SWITCH6)
    assert neg.remote_host == "2001:db8:10::45" and neg.remote_port == 7078
    assert ans.connection == Connection("IN", "IP6", "2001:db8::1")
    assert ans.origin.addrtype == "IP6" and ans.origin.address == "2001:db8::1"
    ans, _ = answer(s, local=SWITCH)  # our family decides, not theirs
    assert ans.connection == Connection("IN", "IP4", "203.0.113.1")


# --------------------------------------------------------------------------- model helpers


def test_static_payload_types_without_rtpmap():
    s = audio_offer("m=audio 5000 RTP/AVP 0 8 9 18 3 96")
    assert s.media[0].rtpmap() == {
        0: ("PCMU", 8000, 1),
        8: ("PCMA", 8000, 1),
        9: ("G722", 8000, 1),
        18: ("G729", 8000, 1),
        3: ("GSM", 8000, 1),
    }
    _, neg = answer(audio_offer("m=audio 5000 RTP/AVP 18 8"))
    assert neg.codec == Codec("PCMA", 8, 8000, 1, "")


def test_direction_media_level_overrides_session_level():
    s = sdp(*HEAD, "a=sendonly", "m=audio 5000 RTP/AVP 0", "m=audio 5002 RTP/AVP 0", "a=inactive")
    assert s.direction is SENDONLY
    assert s.media[0].direction(s) is SENDONLY
    assert s.media[0].direction() is SENDRECV  # without the session: the default
    assert s.media[1].direction(s) is INACTIVE


def test_connection_media_level_overrides_session_level():
    s = sdp(
        *HEAD,
        "m=audio 5000 RTP/AVP 0",
        "m=audio 5002 RTP/AVP 0",
        "c=IN IP4 198.51.100.9",
    )
    assert s.media[0].effective_connection(s) == Connection("IN", "IP4", "192.0.2.10")
    assert s.media[1].effective_connection(s) == Connection("IN", "IP4", "198.51.100.9")
    no_session_c = sdp(*HEAD[:3], "t=0 0", "m=audio 5000 RTP/AVP 0", "c=IN IP4 198.51.100.9")
    _, neg = answer(no_session_c)
    assert neg.remote_host == "198.51.100.9"


def test_rtcp_attribute_port_only():
    s = audio_offer("m=audio 5000 RTP/AVP 0", "a=rtcp:5005")
    assert s.media[0].rtcp is not None and s.media[0].rtcp.port == 5005
    _, neg = answer(s)
    assert neg.remote_rtcp == ("192.0.2.10", 5005)


def test_ptime_is_a_lenient_hint():
    assert audio_offer("m=audio 5000 RTP/AVP 0", "a=ptime:30").media[0].ptime == 30
    assert audio_offer("m=audio 5000 RTP/AVP 0", "a=ptime:20.0").media[0].ptime == 20
    assert audio_offer("m=audio 5000 RTP/AVP 0", "a=ptime:soon").media[0].ptime is None
    _, neg = answer(audio_offer("m=audio 5000 RTP/AVP 0", "a=ptime:30"))
    assert neg.ptime_ms == 30


def test_multicast_connection_parsed_then_refused():
    s = sdp(*HEAD[:3], "c=IN IP4 224.2.1.1/127/3", "t=0 0", "m=audio 5000 RTP/AVP 0")
    assert s.connection == Connection("IN", "IP4", "224.2.1.1", 127, 3)
    assert str(s.connection) == "IN IP4 224.2.1.1/127/3"
    v6 = sdp(*HEAD[:3], "c=IN IP6 ff15::101/3", "t=0 0", "m=audio 5000 RTP/AVP 0")
    assert v6.connection == Connection("IN", "IP6", "ff15::101", None, 3)
    with pytest.raises(SdpNegotiationError, match="multicast"):
        answer(s)


def test_hostname_connection_is_parsed_but_not_negotiated():
    s = sdp(*HEAD[:3], "c=IN IP4 media.example.com", "t=0 0", "m=audio 5000 RTP/AVP 0")
    assert s.connection is not None and s.connection.address == "media.example.com"
    with pytest.raises(SdpNegotiationError, match="not an IP address"):
        answer(s)


def test_unknown_lines_and_attributes_kept_in_place():
    text = (
        "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=x\r\ni=info\r\nu=http://example.com/\r\n"
        "e=ops@example.com\r\np=+1 555 0100\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        "r=7d 1h 0 25h\r\nz=2882844526 -1h\r\nk=prompt\r\ny=0100000001\r\n"
        "a=x-vendor:thing\r\na=recvonly\r\nm=audio 5000/2 RTP/AVP 0\r\ni=voice\r\n"
        "b=AS:64\r\nk=clear:abc\r\nf=v/2///a/1/8/1\r\na=x-foo\r\na=x-empty:\r\n"
    )
    s = parse_sdp(text)
    assert s.other_lines[:4] == [("i", "info"), ("u", "http://example.com/"), *s.other_lines[2:4]]
    assert ("y", "0100000001") in s.other_lines
    assert s.times[0].repeats == ["7d 1h 0 25h"]
    assert s.media[0].port_count == 2
    assert s.media[0].other_lines == [("i", "voice"), ("k", "clear:abc"), ("f", "v/2///a/1/8/1")]
    assert s.media[0].attributes == [Attribute("x-foo"), Attribute("x-empty", "")]
    assert serialize_sdp(s).decode() == text


# --------------------------------------------------------------------------- leniency


def test_sloppy_but_clear_input_is_accepted_and_normalised():
    text = (
        "v=0\no=-  1   1 IN IP4 192.0.2.10\ns=\nc=IN IP4 192.0.2.10\n"  # no t=, extra spaces
        "m=audio 5000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n"
        "c=IN IP4 192.0.2.11\nb=AS:80\n\n"  # c=/b= after a=, trailing blank line
    )
    s = parse_sdp(text)
    assert s.times == [] and s.session_name == ""
    m = s.media[0]
    assert m.connection == Connection("IN", "IP4", "192.0.2.11")
    assert serialize_sdp(s) == (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=\r\nc=IN IP4 192.0.2.10\r\n"
        b"m=audio 5000 RTP/AVP 0 101\r\nc=IN IP4 192.0.2.11\r\nb=AS:80\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
    )
    assert parse_sdp(serialize_sdp(s)) == s
    ans, _ = answer(s)
    assert [(t.start, t.stop) for t in ans.times] == [(0, 0)]


def test_rejected_stream_without_formats_is_accepted():
    s = audio_offer("m=audio 5000 RTP/AVP 0", "m=video 0 RTP/AVP")
    assert s.media[1].formats == []
    ans, _ = answer(s)
    assert ans.media[1].port == 0 and ans.media[1].formats == []


# --------------------------------------------------------------------------- malformed

MALFORMED = {
    "empty": ("", "empty"),
    "missing v=": ("o=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n", "must start with v="),
    "v=1": ("v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", "unsupported SDP version"),
    "duplicate v=": ("v=0\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", "duplicate v="),
    "missing o=": ("v=0\r\ns=-\r\nt=0 0\r\n", "missing o="),
    "missing s=": ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nt=0 0\r\n", "missing s="),
    "duplicate o=": (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\no=- 2 2 IN IP4 192.0.2.1\r\ns=-\r\n",
        "line 3: duplicate o=",
    ),
    "duplicate s=": ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\ns=x\r\n", "duplicate s="),
    "short o=": ("v=0\r\no=- 1 IN IP4 192.0.2.1\r\ns=-\r\n", "o= needs 6 fields"),
    "o= id": ("v=0\r\no=- abc 1 IN IP4 192.0.2.1\r\ns=-\r\n", "session id 'abc'"),
    "o= huge": ("v=0\r\no=- " + "9" * 5000 + " 1 IN IP4 a\r\ns=-\r\n", "session id"),
    "not a line": ("v=0\r\nhello\r\n", "line 2: not a <type>=<value>"),
    "upper type": ("v=0\r\nO=- 1 1 IN IP4 192.0.2.1\r\n", "not a <type>=<value>"),
    "stray CR": ("v=0\r\no=- 1 1 IN\rIP4 192.0.2.1\r\ns=-\r\n", "stray CR"),
    "bad c= type": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IPX 1.2.3.4\r\n", "IPX"),
    "bad c= net": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=ATM NSAP x\r\n", "network type"),
    "bad c= ip": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 1.2.3.999\r\n", "IP4 address"),
    "c= family": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 2001:db8::1\r\n", "not an IP4"),
    "unicast ttl": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1/127\r\n",
        "non-multicast",
    ),
    "two session c=": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.2\r\n",
        "more than one",
    ),
    "bad m= port": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio port RTP/AVP 0\r\n",
        "m= port 'port'",
    ),
    "m= port too big": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio 70000 RTP/AVP 0\r\n",
        "out of range",
    ),
    "non-numeric PT": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio 5000 RTP/AVP 0 PCMA\r\n",
        "payload type 'PCMA'",
    ),
    "PT above 127": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio 5000 RTP/AVP 200\r\n",
        "out of range",
    ),
    "short m=": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nm=audio 5000\r\n", "m= needs"),
    "live m= no fmt": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio 5000 RTP/AVP\r\n",
        "lists no formats",
    ),
    "no c= at all": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n",
        "no c=",
    ),
    "t= after m=": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
        "m=audio 5000 RTP/AVP 0\r\nt=0 0\r\n",
        "only allowed before the first m=",
    ),
    "o= after m=": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
        "m=audio 5000 RTP/AVP 0\r\no=- 1 1 IN IP4 a\r\n",
        "only allowed before",
    ),
    "r= before t=": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nr=7d 1h 0\r\n", "r= before any t="),
    "bad t=": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=now\r\n", "t= needs"),
    "bad b=": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nb=AS\r\n", "b= must be"),
    "bad b= value": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nb=AS:lots\r\n", "bandwidth"),
    "empty attribute": ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\na=:x\r\n", "attribute without a name"),
    "bad rtpmap": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
        "m=audio 5000 RTP/AVP 96\r\na=rtpmap:96 opus\r\n",
        "a=rtpmap:96 encoding",
    ),
    "rtpmap PT": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
        "m=audio 5000 RTP/AVP 96\r\na=rtpmap:x opus/48000\r\n",
        "rtpmap payload",
    ),
    "rtpmap rate": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
        "m=audio 5000 RTP/AVP 96\r\na=rtpmap:96 opus/fast\r\n",
        "clock rate",
    ),
    "fmtp PT": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
        "m=audio 5000 RTP/AVP 96\r\na=fmtp:opus x=1\r\n",
        "fmtp payload",
    ),
    "bad rtcp": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
        "m=audio 5000 RTP/AVP 0\r\na=rtcp:5001 IN IP4\r\n",
        "a=rtcp must be",
    ),
    "two directions": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
        "m=audio 5000 RTP/AVP 0\r\na=sendonly\r\na=recvonly\r\n",
        "conflicting",
    ),
    "two media c=": (
        "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nm=audio 5000 RTP/AVP 0\r\n"
        "c=IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.2\r\n",
        "more than one c=",
    ),
}


@pytest.mark.parametrize("text,message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_raises_sdp_error_naming_the_fault(text: str, message: str):
    with pytest.raises(SdpError, match=message.replace("(", r"\(").replace("?", r"\?")) as info:
        parse_sdp(text)
    assert info.value.status == 400


def test_non_utf8_bytes():
    with pytest.raises(SdpError, match="not UTF-8"):
        parse_sdp(b"v=0\r\ns=\xff\r\n")


def test_error_statuses():
    assert issubclass(SdpError, ValueError)
    assert SdpError.status == 400 and SdpNegotiationError.status == 488


# --------------------------------------------------------------------------- answering


def test_answer_keeps_offer_pts_and_uses_our_address_and_origin():
    offer = audio_offer(
        "m=audio 5000 RTP/AVP 8 0 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
    )
    ans, neg = answer(offer, session_id=4242, version=7)
    assert ans.origin.session_id == 4242 and ans.origin.session_version == 7
    assert ans.origin.address == "203.0.113.1" and ans.origin.username == "-"
    assert ans.connection == Connection("IN", "IP4", "203.0.113.1")
    (m,) = ans.media
    assert (m.port, m.proto, m.formats) == (40000, "RTP/AVP", ["8", "101"])
    assert m.rtpmap() == {8: ("PCMA", 8000, 1), 101: ("telephone-event", 8000, 1)}
    assert m.fmtp() == {101: "0-16"}  # what we can receive
    assert m.direction(ans) is SENDRECV and m.ptime == 20
    assert neg == NegotiatedMedia(
        remote_host="192.0.2.10",
        remote_port=5000,
        codec=Codec("PCMA", 8, 8000, 1, ""),
        telephone_event=Codec("telephone-event", 101, 8000, 1, "0-15"),
        direction=SENDRECV,
        ptime_ms=20,
        remote_rtcp=None,
        on_hold=False,
        stream_index=0,
    )
    assert parse_sdp(serialize_sdp(ans)) == ans


@pytest.mark.parametrize(
    "pts,rtpmaps,expected",
    [
        ("0 8 111", [], ("PCMU", 0)),
        ("8 0", [], ("PCMA", 8)),
        ("111 8", ["a=rtpmap:111 opus/48000/2"], ("opus", 111)),
        ("96 0", ["a=rtpmap:96 opus/48000/2"], ("opus", 96)),
        ("97 96 8", ["a=rtpmap:97 iLBC/8000", "a=rtpmap:96 OPUS/48000/2"], ("opus", 96)),
        ("96 0", ["a=rtpmap:96 opus/48000"], ("opus", 96)),  # sloppy channel count
        ("98 0", ["a=rtpmap:98 opus/16000/2"], ("PCMU", 0)),  # wrong rate is not Opus
        ("100 8", [], ("PCMA", 8)),  # unidentifiable dynamic PT skipped
    ],
)
def test_first_supported_codec_in_offer_order(pts, rtpmaps, expected):
    ans, neg = answer(audio_offer(f"m=audio 5000 RTP/AVP {pts}", *rtpmaps))
    assert (neg.codec.name, neg.codec.payload_type) == expected
    assert ans.media[0].formats == [str(expected[1])]


def test_opus_answer_carries_our_fmtp_and_reports_theirs():
    offer = audio_offer(
        "m=audio 5000 RTP/AVP 109 0",
        "a=rtpmap:109 opus/48000/2",
        "a=fmtp:109 maxplaybackrate=16000;stereo=0",
    )
    ans, neg = answer(offer)
    assert ans.media[0].rtpmap()[109] == ("opus", 48000, 2)
    assert ans.media[0].fmtp() == {109: "useinbandfec=1"}
    assert neg.codec == Codec("opus", 109, 48000, 2, "maxplaybackrate=16000;stereo=0")


def test_no_common_codec():
    offer = audio_offer("m=audio 5000 RTP/AVP 18 9 97", "a=rtpmap:97 iLBC/8000")
    with pytest.raises(SdpNegotiationError, match="no audio codec in common") as info:
        answer(offer)
    assert info.value.status == 488
    assert "G729/8000" in str(info.value)
    with pytest.raises(SdpNegotiationError):
        answer(audio_offer("m=video 5000 RTP/AVP 96", "a=rtpmap:96 H264/90000"))
    with pytest.raises(SdpNegotiationError):  # telephone-event alone is not audio
        answer(audio_offer("m=audio 5000 RTP/AVP 101", "a=rtpmap:101 telephone-event/8000"))
    with pytest.raises(SdpNegotiationError):
        answer(audio_offer("m=audio 5000 RTP/SAVP 0"))


def test_rejected_video_line_kept_as_port_zero():
    offer = fixture("polycom_vvx")
    ans, neg = answer(offer)
    assert [(m.media, m.port) for m in ans.media] == [("audio", 40000), ("video", 0)]
    assert ans.media[1].formats == ["109", "34"] and ans.media[1].attributes == []
    assert neg.stream_index == 0 and neg.telephone_event_pt == 127


def test_m_lines_count_and_order_kept_with_audio_second():
    offer = audio_offer(
        "m=video 5002 RTP/AVP 96",
        "a=rtpmap:96 VP8/90000",
        "m=audio 5000 RTP/SAVP 0",  # refused: no SRTP
        "m=audio 5004 RTP/AVP 8",
        "m=audio 5006 RTP/AVP 0",  # only one audio stream is anchored
        "m=application 5008 TCP/BFCP *",
    )
    ans, neg = answer(offer)
    assert [(m.media, m.port) for m in ans.media] == [
        ("video", 0),
        ("audio", 0),
        ("audio", 40000),
        ("audio", 0),
        ("application", 0),
    ]
    assert ans.media[4].formats == ["*"]
    assert neg.stream_index == 2 and neg.remote_port == 5004 and neg.codec.name == "PCMA"


def test_avpf_is_answered_as_avpf():
    ans, _ = answer(audio_offer("m=audio 5000 RTP/AVPF 0"))
    assert ans.media[0].proto == "RTP/AVPF"


def test_offer_t_line_is_copied():
    head = (*HEAD[:4], "t=3034423619 3042462419")
    ans, _ = answer(audio_offer("m=audio 5000 RTP/AVP 0", head=head))
    assert [(t.start, t.stop) for t in ans.times] == [(3034423619, 3042462419)]


@pytest.mark.parametrize(
    "offered,answered,on_hold",
    [
        ([], SENDRECV, False),
        (["a=sendrecv"], SENDRECV, False),
        (["a=sendonly"], RECVONLY, True),
        (["a=recvonly"], SENDONLY, False),
        (["a=inactive"], INACTIVE, True),
    ],
)
def test_answer_direction_table(offered, answered, on_hold):
    ans, neg = answer(audio_offer("m=audio 5000 RTP/AVP 0", *offered))
    assert ans.media[0].direction(ans) is answered
    assert ans.media[0].attribute_values(answered.value) == [None]  # always explicit
    assert neg.direction is answered and neg.on_hold is on_hold


def test_session_level_hold_direction():
    offer = sdp(*HEAD, "a=sendonly", "m=audio 5000 RTP/AVP 0")
    ans, neg = answer(offer)
    assert ans.media[0].direction(ans) is RECVONLY and neg.on_hold


def test_rfc2543_hold_with_zero_address():
    ans, neg = answer(fixture("cisco_rfc2543_hold"))
    assert neg.on_hold and neg.remote_host == "0.0.0.0"
    # Nothing may be sent to 0.0.0.0: the switch only receives.
    assert neg.direction is RECVONLY and ans.media[0].direction(ans) is RECVONLY
    ans, neg = answer(sdp(*HEAD[:3], "c=IN IP6 ::", "t=0 0", "m=audio 5000 RTP/AVP 0"))
    assert neg.on_hold and neg.direction is RECVONLY


def test_asterisk_hold_fixture():
    ans, neg = answer(fixture("asterisk_hold"))
    assert neg.on_hold and neg.direction is RECVONLY
    assert neg.telephone_event_pt == 101


def test_switch_side_direction_is_intersected():
    offer = audio_offer("m=audio 5000 RTP/AVP 0")
    ans, neg = answer(offer, direction=SENDONLY)  # the switch holds the phone
    assert neg.direction is SENDONLY and not neg.on_hold
    ans, neg = answer(audio_offer("m=audio 5000 RTP/AVP 0", "a=sendonly"), direction=SENDONLY)
    assert neg.direction is INACTIVE and ans.media[0].direction(ans) is INACTIVE


def test_local_endpoint_object_is_accepted():
    ans, _ = answer(
        audio_offer("m=audio 5000 RTP/AVP 0"), local=controller.MediaEndpoint("192.0.2.99", 30000)
    )
    assert ans.connection == Connection("IN", "IP4", "192.0.2.99") and ans.media[0].port == 30000
    with pytest.raises(ValueError):
        answer(audio_offer("m=audio 5000 RTP/AVP 0"), local=("switch.example.com", 30000))


# --------------------------------------------------------------------------- offering


def test_make_offer_lists_everything_we_support():
    offer = make_offer(SUPPORTED, SWITCH, session_id=9, version=3)
    assert offer.origin.session_id == 9 and offer.origin.session_version == 3
    (m,) = offer.media
    assert m.formats == ["0", "8", "111", "101"]
    assert m.rtpmap() == {
        0: ("PCMU", 8000, 1),
        8: ("PCMA", 8000, 1),
        111: ("opus", 48000, 2),
        101: ("telephone-event", 8000, 1),
    }
    assert m.fmtp() == {111: "useinbandfec=1", 101: "0-16"}
    assert m.direction(offer) is SENDRECV and m.ptime == 20
    assert parse_sdp(serialize_sdp(offer)) == offer


def test_make_offer_restricted_and_reordered():
    offer = make_offer(SUPPORTED, SWITCH, session_id=9, version=3, codecs=["opus", "pcmu", "G729"])
    assert offer.media[0].formats == ["111", "0", "101"]
    with pytest.raises(SdpNegotiationError):
        make_offer(SUPPORTED, SWITCH, session_id=9, version=3, codecs=["G729"])
    with pytest.raises(ValueError, match="reuse"):
        make_offer([*SUPPORTED, Codec("G722", 0)], SWITCH, session_id=1, version=1)


def callee_answer(*media_lines: str, addr: str = "198.51.100.20") -> SessionDescription:
    return sdp(
        "v=0", f"o=callee 5 5 IN IP4 {addr}", "s=-", f"c=IN IP4 {addr}", "t=0 0", *media_lines
    )


def test_apply_answer_basic():
    offer = make_offer(SUPPORTED, SWITCH, session_id=9, version=1)
    neg = apply_answer(
        offer,
        callee_answer(
            "m=audio 6000 RTP/AVP 8 101",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:30",
            "a=rtcp:6001",
        ),
    )
    assert neg == NegotiatedMedia(
        remote_host="198.51.100.20",
        remote_port=6000,
        codec=Codec("PCMA", 8, 8000, 1, ""),
        telephone_event=Codec("telephone-event", 101, 8000, 1, "0-15"),
        direction=SENDRECV,
        ptime_ms=30,
        remote_rtcp=("198.51.100.20", 6001),
        on_hold=False,
        stream_index=0,
    )


def test_apply_answer_without_rtpmap_for_our_dynamic_pt():
    offer = make_offer(SUPPORTED, SWITCH, session_id=9, version=1)
    neg = apply_answer(offer, callee_answer("m=audio 6000 RTP/AVP 111", "a=fmtp:111 stereo=0"))
    assert neg.codec == Codec("opus", 111, 48000, 2, "stereo=0")


def test_telephone_event_pt_each_leg_keeps_its_own():
    # Caller offers telephone-event as 101; the switch answers with 101.
    caller = audio_offer(
        "m=audio 5000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15"
    )
    ans, leg_a = answer(caller)
    assert leg_a.telephone_event_pt == 101 and ans.media[0].formats == ["0", "101"]
    # The switch offers the callee its own list; the callee answers event as 96.
    offer = make_offer(SUPPORTED, SWITCH, session_id=9, version=1, codecs=["PCMU"])
    assert offer.media[0].formats == ["0", "101"]
    leg_b = apply_answer(
        offer,
        callee_answer(
            "m=audio 6000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16"
        ),
    )
    assert leg_b.telephone_event_pt == 96 and leg_b.codec.payload_type == 0
    # And the other way round: the switch offers with 96, the callee follows.
    b_supported = [
        c if not c.is_telephone_event else dataclasses.replace(c, payload_type=96)
        for c in SUPPORTED
    ]
    offer = make_offer(b_supported, SWITCH, session_id=9, version=1)
    leg_b = apply_answer(
        offer,
        callee_answer("m=audio 6000 RTP/AVP 8 96", "a=rtpmap:96 telephone-event/8000"),
    )
    assert leg_b.telephone_event_pt == 96 and leg_a.telephone_event_pt == 101


@pytest.mark.parametrize(
    "media_lines,message",
    [
        (["m=audio 0 RTP/AVP 0"], "rejected the audio stream"),
        (["m=audio 6000 RTP/AVP 18"], "was not offered"),
        (["m=audio 6000 RTP/AVP 97", "a=rtpmap:97 iLBC/8000"], "was not offered"),
        (["m=audio 6000 RTP/AVP 111", "a=rtpmap:111 PCMA/8000"], "maps PT 111"),
        (["m=audio 6000 RTP/AVP 101"], "no audio codec"),
        (["m=audio 6000 RTP/AVP 99"], "no rtpmap"),
        (["m=audio 6000 RTP/SAVP 0"], "transport"),
        (["m=video 6000 RTP/AVP 0"], "audio in the offer, video"),
        (["m=audio 6000 RTP/AVP 0", "m=video 0 RTP/AVP 96"], "2 m= lines"),
    ],
)
def test_apply_answer_rejects_bad_answers(media_lines, message):
    offer = make_offer(SUPPORTED, SWITCH, session_id=9, version=1)
    with pytest.raises(SdpNegotiationError, match=message):
        apply_answer(offer, callee_answer(*media_lines))


@pytest.mark.parametrize(
    "ours,theirs,switch_view,on_hold",
    [
        (SENDRECV, "a=sendrecv", SENDRECV, False),
        (SENDRECV, "a=recvonly", SENDONLY, False),
        (SENDRECV, "a=sendonly", RECVONLY, True),
        (SENDRECV, "a=inactive", INACTIVE, True),
        (SENDONLY, "a=recvonly", SENDONLY, False),
        (SENDONLY, "a=sendrecv", SENDONLY, False),  # sloppy phone: we still only send
        (INACTIVE, "a=inactive", INACTIVE, True),
        (RECVONLY, "a=sendonly", RECVONLY, True),
    ],
)
def test_apply_answer_direction(ours, theirs, switch_view, on_hold):
    offer = make_offer(SUPPORTED, SWITCH, session_id=9, version=1, direction=ours)
    assert offer.media[0].direction(offer) is ours
    neg = apply_answer(offer, callee_answer("m=audio 6000 RTP/AVP 0", theirs))
    assert neg.direction is switch_view and neg.on_hold is on_hold


def test_apply_answer_zero_address_is_hold():
    offer = make_offer(SUPPORTED, SWITCH, session_id=9, version=1)
    neg = apply_answer(offer, callee_answer("m=audio 6000 RTP/AVP 0", addr="0.0.0.0"))
    assert neg.on_hold and neg.direction is RECVONLY


def test_apply_answer_ipv6():
    offer = make_offer(SUPPORTED, SWITCH6, session_id=9, version=1)
    assert offer.connection == Connection("IN", "IP6", "2001:db8::1")
    answer_sdp = sdp(
        "v=0",
        "o=- 5 5 IN IP6 2001:db8::20",
        "s=-",
        "c=IN IP6 2001:db8::20",
        "t=0 0",
        "m=audio 6000 RTP/AVP 0",
    )
    neg = apply_answer(offer, answer_sdp)
    assert (neg.remote_host, neg.remote_port) == ("2001:db8::20", 6000)


# --------------------------------------------------------------------------- versions


def test_local_state_bumps_version_only_on_change():
    state = LocalSdpState(session_id=1000, version=1000)
    first = state.offer(SUPPORTED, SWITCH)
    assert (first.origin.session_id, first.origin.session_version) == (1000, 1000)
    assert state.offer(SUPPORTED, SWITCH) == first  # session refresh: same SDP
    hold = state.offer(SUPPORTED, SWITCH, direction=SENDONLY)
    assert hold.origin.session_version == 1001
    assert hold.media[0].direction(hold) is SENDONLY
    again = state.offer(SUPPORTED, SWITCH, direction=SENDONLY)
    assert again.origin.session_version == 1001
    resume = state.offer(SUPPORTED, SWITCH)
    assert resume.origin.session_version == 1002 and resume.origin.session_id == 1000
    recodec = state.offer(SUPPORTED, SWITCH, codecs=["PCMA"])
    assert recodec.origin.session_version == 1003
    assert state.last is recodec


def test_local_state_answers_then_reoffers_keeping_m_lines():
    state = LocalSdpState(session_id=50)
    ans, _ = state.answer(fixture("polycom_vvx"), SUPPORTED, SWITCH)
    assert ans.origin.session_version == 0
    ans2, neg = state.answer(fixture("polycom_vvx"), SUPPORTED, SWITCH)
    assert ans2.origin.session_version == 0
    held, neg = state.answer(
        sdp(*HEAD, "m=audio 2222 RTP/AVP 0", "a=sendonly", "m=video 0 RTP/AVP 109"),
        SUPPORTED,
        SWITCH,
    )
    assert held.origin.session_version == 1 and neg.on_hold
    # Our own re-offer on this leg keeps both m= lines (RFC 3264 section 8).
    reoffer = state.offer(SUPPORTED, SWITCH, direction=SENDONLY)
    assert [(m.media, m.port) for m in reoffer.media] == [("audio", 40000), ("video", 0)]
    assert reoffer.origin.session_version == 2


def test_make_offer_previous_without_audio_appends():
    previous = sdp(*HEAD, "m=video 0 RTP/AVP 96")
    offer = make_offer(SUPPORTED, SWITCH, session_id=1, version=2, previous=previous)
    assert [(m.media, m.port) for m in offer.media] == [("video", 0), ("audio", 40000)]


# --------------------------------------------------------------------------- media handoff


def test_types_mirror_the_media_controller():
    names = [f.name for f in dataclasses.fields(Codec)]
    assert names == [f.name for f in dataclasses.fields(controller.Codec)]
    assert {d.value for d in MediaDirection} == {d.value for d in controller.Direction}
    _, neg = answer(fixture("asterisk_pjsip"), prefer=["opus"])
    te = neg.telephone_event
    leg = controller.LegMedia(
        neg.remote_host,
        neg.remote_port,
        controller.Codec(*dataclasses.astuple(neg.codec)),
        controller.Codec(*dataclasses.astuple(te)) if te else None,
        controller.Direction(neg.direction.value),
        neg.ptime_ms,
    )
    assert leg.codec == controller.Codec("opus", 111, 48000, 2, "useinbandfec=1")
    assert leg.telephone_event is not None and leg.telephone_event.payload_type == 101


# --------------------------------------------------------------------------- fuzz

FUZZ = settings(
    max_examples=int(os.environ.get("SDP_FUZZ_EXAMPLES", 1500)),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = [p.read_text() for p in FIXTURES]
SDP_ALPHABET = st.sampled_from(
    list("vosctmabrzkiuep=:/ \t\r\n0123456789.-*AIPNRTVSMUCu") + ["\x00", "é", "\x85", "\u2028"]
)


def _check(data: bytes | str) -> None:
    try:
        parsed = parse_sdp(data)
    except SdpError:
        return
    wire = serialize_sdp(parsed)
    assert parse_sdp(wire) == parsed
    assert serialize_sdp(parse_sdp(wire)) == wire
    try:
        negotiate_answer(parsed, SUPPORTED, SWITCH, session_id=1, version=1)
    except SdpNegotiationError:
        pass


@FUZZ
@given(st.one_of(st.text(), st.text(SDP_ALPHABET), st.binary()))
def test_fuzz_arbitrary_input_only_raises_sdp_error(data):
    _check(data)


def _mutate(text: str, rnd: random.Random) -> str:
    lines = text.split("\n")
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(7)
        i = rnd.randrange(len(lines))
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1:
            lines.insert(rnd.randrange(len(lines)), lines[i])
        elif op == 2:
            j = rnd.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and lines[i]:
            k = rnd.randrange(len(lines[i]))
            lines[i] = lines[i][:k] + rnd.choice(" :/=0a9\t\r-x*") + lines[i][k + 1 :]
        elif op == 4 and lines[i]:
            k = rnd.randrange(len(lines[i]))
            lines[i] = lines[i][:k] + lines[i][k + 1 :]
        elif op == 5:
            lines[i] = lines[i] + rnd.choice(["/2", " 96", ":", "  ", "/127/3", "0"])
        else:
            lines = lines[: i + 1]
    return "\n".join(lines)


@FUZZ
@given(st.sampled_from(SEEDS), st.randoms(use_true_random=False))
def test_fuzz_mutated_fixtures(seed, rnd):
    _check(_mutate(seed, rnd))


media_strategy = st.builds(
    MediaDescription,
    media=st.sampled_from(["audio", "video", "application"]),
    port=st.integers(0, 65535),
    port_count=st.none() | st.integers(1, 4),
    proto=st.sampled_from(["RTP/AVP", "RTP/AVPF"]),
    formats=st.lists(st.integers(0, 127).map(str), min_size=1, max_size=5),
    connection=st.none()
    | st.builds(Connection, st.just("IN"), st.just("IP4"), st.ip_addresses(v=4).map(str)),
    attributes=st.lists(
        st.sampled_from(
            [
                Attribute("sendonly"),
                Attribute("ptime", "20"),
                Attribute("rtpmap", "96 opus/48000/2"),
            ]
            + [Attribute("x-thing", "a b"), Attribute("fmtp", "101 0-16"), Attribute("rtcp", "9")]
        ),
        unique=True,
    ),
)


@FUZZ
@given(st.lists(media_strategy, max_size=3), st.integers(0, 2**64))
def test_fuzz_generated_descriptions_round_trip(media, session_id):
    s = SessionDescription(
        version=0,
        origin=make_offer(SUPPORTED, SWITCH, session_id=session_id, version=1).origin,
        session_name="-",
        connection=Connection("IN", "IP4", "192.0.2.1"),
        times=make_offer(SUPPORTED, SWITCH, session_id=1, version=1).times,
        media=media,
    )
    assert parse_sdp(serialize_sdp(s)) == s
