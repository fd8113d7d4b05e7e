"""Dialog state (RFC 3261 section 12): creation on each side, in-dialog requests, CSeq."""

from __future__ import annotations

import pytest

from softswitch.sip.dialog import CallDoesNotExist, Dialog, DialogState, OutOfOrder
from softswitch.sip.message import Request, Response, parse_message

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKb\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=alice1\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: call-1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@10.0.0.1:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def parse(raw: bytes) -> Request | Response:
    return parse_message(raw)


def uas_dialog() -> Dialog:
    invite = parse(INVITE)
    assert isinstance(invite, Request)
    return Dialog.as_uas(invite, "ours", "<sip:127.0.0.1:5060>")


def test_uas_dialog_from_invite() -> None:
    d = uas_dialog()
    assert d.key == ("call-1", "ours")
    assert (d.remote_tag, d.remote_seq, d.local_seq) == ("alice1", 7, 0)
    assert str(d.remote_target) == "sip:alice@10.0.0.1:5060"
    assert d.route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert d.state is DialogState.EARLY


def test_uas_builds_bye_with_route_set_and_swapped_addresses() -> None:
    d = uas_dialog()
    d.confirm()
    bye = d.create_request("BYE", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx")
    assert str(bye.uri) == "sip:alice@10.0.0.1:5060"
    assert bye.headers.get_all("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert bye.from_.tag == "ours" and str(bye.from_.uri) == "sip:bob@example.com"
    assert bye.to.tag == "alice1" and bye.to.display == "Alice"
    assert (bye.cseq.seq, bye.cseq.method) == (1, "BYE")
    assert d.create_request("BYE", "SIP/2.0/UDP h;branch=z9hG4bKy").cseq.seq == 2


def test_uac_dialog_reverses_record_route_and_takes_the_2xx_contact() -> None:
    ours = parse(
        b"INVITE sip:bob@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKq\r\n"
        b"From: <sip:alice@example.com>;tag=me\r\nTo: <sip:bob@example.com>\r\n"
        b"Call-ID: c2\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    ok = parse(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKq\r\n"
        b"Record-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\n"
        b"From: <sip:alice@example.com>;tag=me\r\nTo: <sip:bob@example.com>;tag=bob9\r\n"
        b"Call-ID: c2\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@10.0.0.7:5070>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(ours, Request) and isinstance(ok, Response)
    d = Dialog.as_uac(ours, ok, "<sip:127.0.0.1>")
    assert d.state is DialogState.CONFIRMED
    assert d.route_set == ("<sip:p2;lr>", "<sip:p1;lr>")
    ack = d.create_request("ACK", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKr", cseq=1)
    assert str(ack.uri) == "sip:bob@10.0.0.7:5070" and ack.cseq.seq == 1
    assert ack.headers.get("contact") is None
    assert d.create_request("BYE", "v").cseq.seq == 2
    with pytest.raises(ValueError):
        d.create_request("ACK", "v")


def test_strict_route_goes_into_the_request_uri() -> None:
    d = uas_dialog()
    d.route_set = ("<sip:strict.example.com>", "<sip:p2.example.com;lr>")
    req = d.create_request("BYE", "v")
    assert str(req.uri) == "sip:strict.example.com"
    assert req.headers.get_all("route") == ["<sip:p2.example.com;lr>", "<sip:alice@10.0.0.1:5060>"]


def in_dialog(method: str, cseq: int, tag: str = "alice1", contact: str = "") -> Request:
    raw = (
        f"{method} sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{cseq}\r\n"
        f"From: <sip:alice@example.com>;tag={tag}\r\nTo: <sip:bob@example.com>;tag=ours\r\n"
        f"Call-ID: call-1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{contact}"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    req = parse(raw)
    assert isinstance(req, Request)
    return req


def test_cseq_must_not_go_backwards() -> None:
    d = uas_dialog()
    d.receive_request(in_dialog("INFO", 8))
    with pytest.raises(OutOfOrder) as err:
        d.receive_request(in_dialog("BYE", 6))
    assert err.value.status == 500
    d.receive_request(in_dialog("ACK", 7))  # ACK carries the INVITE's number
    d.receive_request(in_dialog("BYE", 9))
    assert d.remote_seq == 9


def test_wrong_remote_tag_or_terminated_dialog_is_481() -> None:
    d = uas_dialog()
    with pytest.raises(CallDoesNotExist) as err:
        d.receive_request(in_dialog("BYE", 8, tag="mallory"))
    assert err.value.status == 481
    d.terminate()
    with pytest.raises(CallDoesNotExist):
        d.receive_request(in_dialog("BYE", 9))


def test_target_refresh_updates_the_remote_target() -> None:
    d = uas_dialog()
    d.receive_request(in_dialog("INVITE", 8, contact="Contact: <sip:alice@10.0.0.3:5062>\r\n"))
    assert str(d.remote_target) == "sip:alice@10.0.0.3:5062"
    d.receive_request(in_dialog("OPTIONS", 9, contact="Contact: <sip:alice@10.9.9.9>\r\n"))
    assert str(d.remote_target) == "sip:alice@10.0.0.3:5062"
