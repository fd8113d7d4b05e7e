"""Unit tests for the message model: headers, URIs, name-addr, Via, make_response."""

from __future__ import annotations

import pytest

from softswitch.sip.errors import SipParseError, UnsupportedUriScheme
from softswitch.sip.headers import (
    Headers,
    parse_contacts,
    parse_cseq,
    parse_name_addr,
    parse_via,
)
from softswitch.sip.message import (
    BadMessage,
    Request,
    Response,
    make_error_response,
    make_response,
    parse_message,
)
from softswitch.sip.uri import parse_absolute_uri, parse_uri, unescape

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Alice <sip:alice@example.com>\r\n"
    b'From: "Alice A." <sip:alice@example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600\r\n"
    b"User-Agent: Phone/1.0\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_round_trip_is_byte_exact_for_a_clean_message() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, Request)
    assert msg.to_bytes() == REGISTER
    assert parse_message(msg.to_bytes()) == msg


def test_compact_forms_and_case_insensitive_lookup_keep_spelling() -> None:
    msg = parse_message(
        REGISTER.replace(b"Call-ID:", b"i:").replace(b"Via:", b"v:").replace(b"To:", b"tO:")
    )
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.headers.get("CALL-ID") == msg.headers.get("i")
    assert msg.headers.raw_names("to") == ["tO"]
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert b"\r\nv: SIP/2.0" in msg.to_bytes() and b"\r\ntO: Alice" in msg.to_bytes()


def test_comma_list_equals_repeated_headers() -> None:
    one = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2")])
    two = Headers(
        [("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("v", "SIP/2.0/UDP b;branch=z9hG4bK2")]
    )
    assert one.values("via") == two.values("via")
    assert one.get_all("via") != two.get_all("via")


def test_commas_inside_quotes_and_brackets_do_not_split() -> None:
    h = Headers([("Contact", '"Doe, John" <sip:j@x;a=b,c>, <sip:k@y>')])
    assert h.values("contact") == ['"Doe, John" <sip:j@x;a=b,c>', "<sip:k@y>"]
    # Single-valued headers never split.
    assert Headers([("Date", "Sat, 13 Nov 2010 23:29:00 GMT")]).values("date") == [
        "Sat, 13 Nov 2010 23:29:00 GMT"
    ]


def test_headers_edit_methods_return_new_objects() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b"), ("To", "<sip:x@y>")])
    assert h.remove_first("via").values("via") == ["SIP/2.0/UDP b"]
    assert h.prepend("Via", "SIP/2.0/TCP c").values("v")[0] == "SIP/2.0/TCP c"
    assert h.replace("to", "<sip:z@y>").get("To") == "<sip:z@y>"
    assert "t" in h and "from" not in h and len(h.remove("to")) == 1


def test_folded_lines_join_with_one_space() -> None:
    data = REGISTER.replace(b"User-Agent: Phone/1.0", b"User-Agent: Phone\r\n\t /1.0")
    assert parse_message(data).headers.get("user-agent") == "Phone /1.0"


def test_bare_lf_line_ends_are_accepted() -> None:
    msg = parse_message(REGISTER.replace(b"\r\n", b"\n"))
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"


def test_bare_cr_is_rejected() -> None:
    with pytest.raises(BadMessage):
        parse_message(REGISTER.replace(b"User-Agent: Phone/1.0", b"User-Agent: Pho\rne"))


def test_quoted_display_with_escapes() -> None:
    na = parse_name_addr(r'"A \"quoted\" \\ name" <sip:a@b>;tag=x')
    assert na.display == 'A "quoted" \\ name' and na.tag == "x"
    assert parse_name_addr(str(na)) == na


def test_name_addr_versus_addr_spec_parameters() -> None:
    bracketed = parse_name_addr("<sip:a@b;transport=tcp>;expires=60")
    assert bracketed.uri.transport == "tcp" and bracketed.param("expires") == "60"
    bare = parse_name_addr("sip:a@b;expires=60")
    assert bare.uri.params == () and bare.param("expires") == "60" and not bare.bracketed
    with pytest.raises(SipParseError):
        parse_name_addr("sip:a@b?Route=x")  # headers force the <> form


def test_contact_wildcard_and_expires() -> None:
    (star,) = parse_contacts(Headers([("Contact", "*")]))
    assert star.wildcard and star.address is None
    (c,) = parse_contacts(Headers([("m", "<sip:a@b>;expires=0")]))
    assert c.expires == 0
    (bad,) = parse_contacts(Headers([("m", "<sip:a@b>;expires=١٢")]))
    with pytest.raises(SipParseError):
        _ = bad.expires


def test_uri_params_and_headers() -> None:
    uri = parse_uri("sips:bob:pw@example.com:5061;transport=tls;lr?Subject=hi&Priority=urgent")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "bob",
        "pw",
        "example.com",
        5061,
    )
    assert uri.params == (("transport", "tls"), ("lr", None))
    assert uri.headers == "Subject=hi&Priority=urgent"
    assert parse_uri(str(uri)) == uri


def test_escaped_user_and_unescape_is_not_recursive() -> None:
    uri = parse_uri("sip:%75se%72@example.com")
    assert uri.user == "%75se%72" and uri.user_unescaped == "user"
    assert unescape("v%61lue%25%34%31") == "value%41"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::10]", "[2001:db8::10]", None),
        ("sip:u@[2001:db8::10]:5070", "[2001:db8::10]", 5070),
        ("sip:[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]", None),
        ("sip:192.0.2.1:5060", "192.0.2.1", 5060),
    ],
)
def test_ipv6_and_ipv4_references(text: str, host: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert (uri.host, uri.port) == (host, port)


@pytest.mark.parametrize(
    "text",
    [
        "sip:2001:db8::10",
        "sip:[2001:db8:::1]",
        "sip:[2001:db8::1",
        "sip:300.1.1.1",
        "sip:a@b:99999",
    ],
)
def test_bad_hosts(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_tel_uri_and_unsupported_schemes() -> None:
    tel = parse_absolute_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert tel.scheme == "tel" and tel.user == "+1-201-555-0123"
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com"
    with pytest.raises(UnsupportedUriScheme) as info:
        parse_absolute_uri("http://example.com/")
    assert info.value.status == 416


def test_via_parsing() -> None:
    via = parse_via("SIP / 2.0 / udp host.example.com : 5060 ;branch=z9hG4bKx;received=1.2.3.4")
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "host.example.com",
        5060,
        "z9hG4bKx",
    )
    assert via.param("RECEIVED") == "1.2.3.4"
    assert parse_via(str(via.with_params(rport="5061"))).param("rport") == "5061"
    with pytest.raises(SipParseError):
        parse_via("SIP/2.0/UDP host1 host2")


def test_cseq_limits() -> None:
    assert parse_cseq("0009 INVITE").seq == 9
    for bad in ("2147483648 INVITE", "99999999999999999999999 INVITE", "1", "x INVITE"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_stream_mode_requires_exact_content_length() -> None:
    assert parse_message(REGISTER, datagram=False).body == b""
    with pytest.raises(BadMessage, match="Missing Content-Length"):
        parse_message(REGISTER.replace(b"Content-Length: 0\r\n", b""), datagram=False)
    with pytest.raises(BadMessage, match="smaller than the body"):
        parse_message(REGISTER + b"xx", datagram=False)
    # A datagram ignores what follows the body.
    assert parse_message(REGISTER + b"xx").body == b""


def test_serialization_states_the_true_content_length() -> None:
    msg = parse_message(REGISTER.replace(b"Content-Length: 0\r\n", b""))
    assert b"Content-Length: 0\r\n" in msg.to_bytes()
    longer = msg.replace(body=b"abc")
    assert parse_message(longer.to_bytes()).body == b"abc"


def test_make_response_per_rfc3261_8_2_6() -> None:
    req = parse_message(
        REGISTER.replace(
            b"Via: SIP", b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp\r\nVia: SIP"
        )
    )
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="abc", extra=[("Expires", "3600")])
    assert isinstance(resp, Response) and resp.reason == "OK"
    assert resp.headers.get_all("via") == req.headers.get_all("via")
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.from_ == req.from_
    assert resp.to.tag == "abc" and resp.to.uri == req.to.uri
    assert resp.headers.get("expires") == "3600"
    assert "user-agent" not in resp.headers and "contact" not in resp.headers
    # 100 Trying never carries our tag, and an existing tag is kept.
    assert make_response(req, 100, to_tag="abc").to.tag is None
    tagged = req.replace(headers=req.headers.replace("To", "<sip:alice@example.com>;tag=old"))
    assert make_response(tagged, 486, to_tag="new").to.tag == "old"


def test_error_response_from_partial_message() -> None:
    with pytest.raises(BadMessage) as info:
        parse_message(REGISTER.replace(b"CSeq: 314159 REGISTER", b"CSeq: x REGISTER"))
    resp = make_error_response(info.value, to_tag="t")
    assert resp is not None and resp.status == 400 and "CSeq" in resp.reason
    assert resp.headers.get("cseq") == "x REGISTER"
    assert resp.to.tag == "t"
    # A fault in a response is never answered.
    with pytest.raises(BadMessage) as info:
        parse_message(b"SIP/2.0 999 Nope\r\nVia: SIP/2.0/UDP h\r\n\r\n")
    assert make_error_response(info.value) is None
    # Nor is a request whose top Via cannot be read.
    with pytest.raises(BadMessage) as info:
        parse_message(REGISTER.replace(b"Via: SIP/2.0/UDP 192.0.2.10:5060", b"Via: junk"))
    assert info.value.partial is not None and info.value.partial.top_via is None
    assert make_error_response(info.value) is None


def test_garbage_and_oversize() -> None:
    for data in (b"", b"\r\n\r\n", b"hello", b"\xff\xfe\r\n\r\n", b"A" * 70000):
        with pytest.raises(BadMessage):
            parse_message(data)
    with pytest.raises(BadMessage) as info:
        parse_message(b"A" * 70000)
    assert info.value.status == 513
