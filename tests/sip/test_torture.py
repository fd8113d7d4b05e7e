"""RFC 4475 and RFC 5118 torture messages against the parser, driven by torture_cases."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from softswitch.sip.errors import SipParseError
from softswitch.sip.headers import parse_contacts
from softswitch.sip.message import (
    BadMessage,
    Request,
    Response,
    make_error_response,
    parse_message,
)
from tests.sip.torture_cases import CASES, DATA_DIR, JSON_PATH, TortureCase


def _load(case: TortureCase) -> bytes:
    return case.path.read_bytes()


def test_every_file_has_a_case_and_the_json_copy_matches() -> None:
    on_disk = {
        str(p.relative_to(DATA_DIR))
        for d in ("rfc4475", "rfc5118")
        for p in (DATA_DIR / d).glob("*")
    }
    assert on_disk == {c.filename for c in CASES}
    assert len(CASES) == 49 + 12
    assert json.loads(JSON_PATH.read_text()) == [c.as_dict() for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.filename)
def test_treatment(case: TortureCase) -> None:
    data = _load(case)
    if case.kind in ("accept", "app"):
        msg = parse_message(data)
        # Whatever parses must survive a round trip.
        again = parse_message(msg.to_bytes())
        assert again.headers.get_all("call-id") == msg.headers.get_all("call-id")
        assert again.body == msg.body
        check = FIELD_CHECKS.get(case.filename.split("/")[1].removesuffix(".sip"))
        if check is not None:
            check(msg)
        return
    with pytest.raises(BadMessage) as info:
        parse_message(data)
    err = info.value
    assert err.status == case.status
    assert case.reason_contains is not None and case.reason_contains in err.reason
    response = make_error_response(err, to_tag="t1")
    if case.kind == "reject":
        assert response is not None
        assert response.status == case.status
        assert response.headers.get_all("via") == err.partial.headers.get_all("via")
        assert response.to_bytes().startswith(b"SIP/2.0 %d " % case.status)
    else:
        assert case.kind == "drop"
        assert response is None


# -- the fields each RFC test highlights ------------------------------------------------


def _wsinv(msg: Request) -> None:
    assert msg.method == "INVITE"
    assert msg.uri.params == (("unknownparam", None),)
    assert msg.to.uri.host == "chair-dnrc.example.com" and msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"' and msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert (msg.cseq.seq, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("subject") == ""
    assert msg.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = parse_contacts(msg.headers)
    assert contact.address.display == 'Quoted string ""'
    assert contact.address.params == (
        ("newparam", "newvalue"),
        ("secondparam", None),
        ("q", "0.33"),
    )
    assert len(msg.body) == 150 and msg.body.endswith(b"a=rtpmap:31 LPC\r\n")


def _intmeth(msg: Request) -> None:
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.uri.host == "example.com"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"


def _esc01(msg: Request) -> None:
    assert msg.uri.user == "sips%3Auser%40example.com"
    assert msg.uri.user_unescaped == "sips:user@example.com"
    assert msg.to.uri.user_unescaped == "user"
    assert msg.from_.uri.user_unescaped == "I have spaces"
    (contact,) = parse_contacts(msg.headers)
    assert contact.address.uri.param("n%61me") == "v%61lue%25%34%31"


def _escnull(msg: Request) -> None:
    assert msg.to.uri.user_unescaped == "null-\x00-null"
    users = [c.address.uri.user_unescaped for c in parse_contacts(msg.headers)]
    assert users == ["\x00", "\x00\x00"]


def _esc02(msg: Request) -> None:
    assert msg.method == "RE%47IST%45R" and msg.method != "REGISTER"
    assert msg.to.display == "%Z%45"
    assert len(parse_contacts(msg.headers)) == 2
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def _lwsdisp(msg: Request) -> None:
    assert msg.from_.display == "caller" and msg.from_.uri.user == "caller"


def _longreq(msg: Request) -> None:
    assert len(msg.vias) == 34
    assert msg.vias[0].host == "sip33.example.com"
    assert msg.vias[-1].branch == "very" + "long" * 50 + "branchvalue"
    assert msg.to.display.startswith("I have a user name of extremeextreme")
    assert msg.to.uri.port == 6000
    assert msg.from_.tag == "12" + "982" * 50 + "424"
    assert msg.call_id == "longreq.one" + "really" * 20 + "longcallid"
    assert msg.headers.get("Unknown-" + "Long" * 20 + "-Name").startswith("unknown-long")
    assert len(msg.body) == 150


def _dblreq(msg: Request) -> None:
    assert msg.method == "REGISTER" and msg.body == b""


def _semiuri(msg: Request) -> None:
    assert msg.uri.user == "user;par=u%40example.net" and msg.uri.params == ()
    assert len(msg.headers.values("accept")) == 6


def _transports(msg: Request) -> None:
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def _mpart01(msg: Request) -> None:
    assert len(msg.body) == 553 and msg.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert msg.content_type == "multipart/mixed"


def _unreason(msg: Response) -> None:
    assert msg.status == 200 and msg.reason.startswith("= 2**3 * 5**2 но")


def _noreason(msg: Response) -> None:
    assert msg.status == 100 and msg.reason == ""


def _badbranch(msg: Request) -> None:
    assert msg.top_via.branch == "z9hG4bK"


def _regbadct(msg: Request) -> None:
    with pytest.raises(SipParseError) as info:
        parse_contacts(msg.headers)
    assert info.value.status == 400


def _unksm2(msg: Request) -> None:
    assert (msg.to.uri.scheme, msg.from_.uri.scheme) == ("isbn", "http")
    assert parse_contacts(msg.headers)[0].address.uri.scheme == "name"


def _cparam01(msg: Request) -> None:
    (contact,) = parse_contacts(msg.headers)
    assert contact.address.uri.params == ()
    assert contact.address.params == (("unknownparam", None),)


def _cparam02(msg: Request) -> None:
    (contact,) = parse_contacts(msg.headers)
    assert contact.address.uri.params == (("unknownparam", None),)
    assert contact.address.params == ()


def _regescrt(msg: Request) -> None:
    (contact,) = parse_contacts(msg.headers)
    assert contact.address.uri.headers == "Route=%3Csip:sip.example.com%3E"


def _zeromf(msg: Request) -> None:
    assert msg.max_forwards == 0


def _inv2543(msg: Request) -> None:
    assert msg.max_forwards is None and msg.top_via.branch is None
    assert msg.body.startswith(b"v=0") and msg.from_.tag is None


def _bcast(msg: Response) -> None:
    assert msg.vias[1].host == "255.255.255.255"


def _ipv6_good(msg: Request) -> None:
    assert msg.uri.host == "[2001:db8::10]" and msg.uri.port is None
    assert msg.top_via.host == "[2001:db8::9:1]"
    assert parse_contacts(msg.headers)[0].address.uri.host == "[2001:db8::1]"


def _port_ambiguous(msg: Request) -> None:
    assert msg.uri.host == "[2001:db8::10:5070]" and msg.uri.port is None


def _port_unambiguous(msg: Request) -> None:
    assert msg.uri.host == "[2001:db8::10]" and msg.uri.port == 5070


def _received_with_delim(msg: Request) -> None:
    assert msg.top_via.param("received") == "[2001:db8::9:255]"


def _received_no_delim(msg: Request) -> None:
    assert msg.top_via.param("received") == "2001:db8::9:255"


def _mult_ip_in_header(msg: Request) -> None:
    assert [(v.host, v.port) for v in msg.vias] == [
        ("[2001:db8::9:1]", 6050),
        ("192.0.2.1", None),
        ("[2001:db8::9:255]", None),
    ]


def _mult_ip_in_sdp(msg: Request) -> None:
    assert msg.uri.host == "[2001:db8::10]" and len(msg.body) == 181


def _ipv4_mapped(msg: Request) -> None:
    assert (msg.top_via.host, msg.top_via.port) == ("[::ffff:192.0.2.10]", 19823)
    assert len(msg.body) == 236


def _two_colons(msg: Request) -> None:
    assert msg.uri.host == "[2001:db8::192.0.2.1]"


FIELD_CHECKS: dict[str, Callable[..., None]] = {
    "wsinv": _wsinv,
    "intmeth": _intmeth,
    "esc01": _esc01,
    "escnull": _escnull,
    "esc02": _esc02,
    "lwsdisp": _lwsdisp,
    "longreq": _longreq,
    "dblreq": _dblreq,
    "semiuri": _semiuri,
    "transports": _transports,
    "mpart01": _mpart01,
    "unreason": _unreason,
    "noreason": _noreason,
    "badbranch": _badbranch,
    "regbadct": _regbadct,
    "unksm2": _unksm2,
    "cparam01": _cparam01,
    "cparam02": _cparam02,
    "regescrt": _regescrt,
    "zeromf": _zeromf,
    "inv2543": _inv2543,
    "bcast": _bcast,
    "ipv6-good": _ipv6_good,
    "port-ambiguous": _port_ambiguous,
    "port-unambiguous": _port_unambiguous,
    "via-received-param-with-delim": _received_with_delim,
    "via-received-param-no-delim": _received_no_delim,
    "mult-ip-in-header": _mult_ip_in_header,
    "mult-ip-in-sdp": _mult_ip_in_sdp,
    "ipv4-mapped-ipv6": _ipv4_mapped,
    "ipv6-correct-abnf-2-colons": _two_colons,
}


def test_ipv6_in_sdp_with_the_length_corrected() -> None:
    data = (DATA_DIR / "rfc5118" / "ipv6-in-sdp.sip").read_bytes()
    head, _, body = data.partition(b"\r\n\r\n")
    fixed = head.replace(b"Content-Length: 268", b"Content-Length: %d" % len(body))
    msg = parse_message(fixed + b"\r\n\r\n" + body)
    assert msg.uri.host == "[2001:db8::10]" and msg.to.uri.host == "[2001:db8::10]"
    assert b"c=IN IP6 2001:db8::20" in msg.body


def test_clerr_over_a_stream_waits_for_more_data() -> None:
    from softswitch.sip.framing import NEED_DATA, StreamFramer

    framer = StreamFramer()
    framer.feed((DATA_DIR / "rfc4475" / "clerr.sip").read_bytes())
    assert framer.next_message() is NEED_DATA


def test_dblreq_over_a_stream() -> None:
    # On a stream the INVITE is framed on its own (RFC 3261 18.3). Its body as printed is
    # one octet longer than its Content-Length (the "m =video" line), so the stray "C"
    # that follows cannot start a message: a framing error, and the connection closes.
    from softswitch.sip.framing import KEEPALIVE_PONG, FramingError, StreamFramer

    framer = StreamFramer()
    framer.feed((DATA_DIR / "rfc4475" / "dblreq.sip").read_bytes())
    first = framer.next_message()
    assert isinstance(first, bytes) and parse_message(first, datagram=False).method == "REGISTER"
    assert framer.next_message() is KEEPALIVE_PONG
    second = framer.next_message()
    assert isinstance(second, bytes) and parse_message(second, datagram=False).method == "INVITE"
    with pytest.raises(FramingError) as info:
        framer.next_message()
    assert info.value.status == 400
