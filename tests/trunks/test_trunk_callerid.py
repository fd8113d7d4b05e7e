"""Caller ID selection, RFC 3325/3323 headers, trunk hunting and the digest client."""

from __future__ import annotations

import pytest

from softswitch.sip.auth import parse_credentials
from softswitch.sip.message import Request, make_response, parse_message
from softswitch.trunks.callerid import (
    ANONYMOUS_FROM,
    CallerId,
    called_user,
    identity_headers,
    select_caller_id,
    strip_privacy_prefix,
)
from softswitch.trunks.digest import AuthFailure, DigestClient, with_credentials
from softswitch.trunks.hunt import TrunkHunt, TrunkUsage, should_try_next
from softswitch.trunks.model import Trunk
from softswitch.trunks.numbering import E164, Emergency
from tests.trunks.trunk_fixtures import BASE, load


def test_caller_id_selection(settings) -> None:
    acme = settings.tenant("acme.example")
    assert select_caller_id(acme, "201").number == "+390212345600"
    assert select_caller_id(acme, "202").number == "+390212345600"  # caller_id_for lists 202
    assert select_caller_id(acme, "203").number == "+390212345600"  # tenant main = first DID


def test_caller_id_extension_setting_and_privacy() -> None:
    text = BASE.replace(
        "[tenants.outbound.extensions.203]\nexternal = false",
        '[tenants.outbound.extensions.203]\ncaller_id = "+390212345602"\nprivacy = true',
    )
    settings, errors = load(text)
    assert errors == []
    acme = settings.tenant("acme.example")
    caller = select_caller_id(acme, "203", display="Reception")
    assert caller == CallerId("+390212345602", "Reception", True)
    assert not select_caller_id(acme, "203", emergency=True).private
    assert select_caller_id(acme, "201", privacy_requested=True).private


def test_strip_privacy_prefix() -> None:
    assert strip_privacy_prefix("#31#0212345678", ("#31#", "*67")) == ("0212345678", True)
    assert strip_privacy_prefix("*67 212 555 1234", ("#31#", "*67")) == ("212 555 1234", True)
    assert strip_privacy_prefix("0212345678", ("#31#",)) == ("0212345678", False)
    assert strip_privacy_prefix("#31#", ("#31#",)) == ("#31#", False)


TRUNK = Trunk(
    name="t",
    host="sip.carrier.example",
    username="0212345600",
    country="IT",
    number_format="national",
)


def test_identity_headers_public() -> None:
    headers = identity_headers(CallerId("+390212345600", "Acme"), TRUNK, tag="abc")
    assert headers == [
        ("From", '"Acme" <sip:0212345600@sip.carrier.example;user=phone>;tag=abc'),
        ("P-Asserted-Identity", '"Acme" <sip:+390212345600@sip.carrier.example;user=phone>'),
    ]


def test_identity_headers_private() -> None:
    headers = identity_headers(CallerId("+390212345600", None, True), TRUNK, tag="abc")
    assert headers == [
        ("From", f"{ANONYMOUS_FROM};tag=abc"),
        ("P-Asserted-Identity", "<sip:+390212345600@sip.carrier.example;user=phone>"),
        ("Privacy", "id"),
    ]


def test_identity_headers_without_number_or_pai() -> None:
    trunk = Trunk(name="t", host="h.example", username="acct", from_user="main", send_pai=False)
    assert identity_headers(CallerId(None), trunk, tag="x") == [
        ("From", "<sip:main@h.example>;tag=x")
    ]
    headers = identity_headers(CallerId("+390212345600"), trunk, tag="x")
    assert headers == [("From", "<sip:+390212345600@h.example;user=phone>;tag=x")]


def test_called_user_formats() -> None:
    assert called_user(E164("+390612345678"), TRUNK) == "0612345678"
    assert called_user(E164("+442079460000"), TRUNK) == "00442079460000"
    intl = Trunk(name="i", host="h", country="IT", number_format="international")
    assert called_user(E164("+390612345678"), intl) == "00390612345678"
    assert called_user(E164("+390612345678"), Trunk(name="e", host="h")) == "+390612345678"
    assert called_user(Emergency("112", "IT"), TRUNK) == "112"


def test_hunt_order_capacity_and_availability(settings) -> None:
    usage = TrunkUsage()
    hunt = TrunkHunt(settings, "acme.example", usage)
    assert hunt.next().name == "carrier-a"
    assert usage.active("carrier-a") == 1
    assert hunt.next().name == "carrier-b"
    assert usage.active("carrier-a") == 0 and usage.active("carrier-b") == 1
    assert hunt.next() is None and usage.active("carrier-b") == 0
    assert hunt.tried == ["carrier-a", "carrier-b"]

    full = Trunk(name="carrier-a", host="h", max_concurrent_calls=1)
    assert usage.try_acquire(full) and not usage.try_acquire(full)
    skip_a = TrunkHunt(
        settings, "acme.example", TrunkUsage(), available=lambda t: t.name != "carrier-a"
    )
    assert skip_a.next().name == "carrier-b"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(None, True), (408, True), (500, True), (503, True), (486, False), (404, False), (603, False)],
)
def test_should_try_next(status, expected) -> None:
    assert should_try_next(status) is expected


def _invite() -> Request:
    text = (
        "INVITE sip:0612345678@sip.carrier.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKfirst;rport\r\n"
        "From: <sip:0212345600@sip.carrier.example>;tag=1\r\n"
        "To: <sip:0612345678@sip.carrier.example>\r\n"
        "Call-ID: call-1\r\nCSeq: 7 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_invite_challenge_answered_as_a_new_transaction() -> None:
    invite = _invite()
    challenge = make_response(
        invite,
        407,
        extra=[
            ("Proxy-Authenticate", 'Digest realm="carrier", nonce="n1", algorithm=MD5, qop="auth"')
        ],
    )
    client = DigestClient("0212345600", "pw", cnonce=lambda: "c0ffee")
    creds = client.answer(challenge, "INVITE", str(invite.uri))
    again = with_credentials(invite, creds)
    assert again.cseq.seq == 8 and again.call_id == "call-1"
    assert again.top_via.branch != "z9hG4bKfirst" and again.top_via.has_param("rport")
    parsed = parse_credentials(again.headers.get("proxy-authorization"))
    assert (parsed.username, parsed.realm, parsed.nc, parsed.cnonce) == (
        "0212345600",
        "carrier",
        "00000001",
        "c0ffee",
    )
    reparsed = parse_message(again.to_bytes())
    assert reparsed.headers.get("proxy-authorization") == again.headers.get("proxy-authorization")
    # The carrier challenges again with a new nonce and no stale flag: a bad password.
    second = make_response(
        again, 407, extra=[("Proxy-Authenticate", 'Digest realm="carrier", nonce="n2", qop="auth"')]
    )
    failure = client.answer(second, "INVITE", str(invite.uri))
    assert isinstance(failure, AuthFailure) and "wrong username or password" in failure.reason


def test_unusable_challenge_is_a_failure() -> None:
    invite = _invite()
    basic = make_response(invite, 401, extra=[("WWW-Authenticate", 'Basic realm="x"')])
    assert isinstance(DigestClient("u", "p").answer(basic, "INVITE", "sip:x"), AuthFailure)
