"""Calls from carriers: source-address identification, DID lookup, caller number."""

from __future__ import annotations

from dataclasses import dataclass

from softswitch.sip.message import Request, parse_message
from softswitch.trunks.inbound import (
    CallerInfo,
    InboundCall,
    InboundRefusal,
    NotFromTrunk,
    caller_info,
    did_candidates,
    identify_trunk,
    inbound_decision,
    lookup_did,
)
from softswitch.trunks.model import Trunk
from softswitch.trunks.numbering import make_plan


@dataclass
class Reg:
    peer_addresses: frozenset[str]
    contact_user: str | None = None


def invite(
    ruri: str, to: str | None = None, extra: str = "", from_: str = "<sip:+393471234567@carrier>"
) -> Request:
    text = (
        f"INVITE {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKabc\r\n"
        f"From: {from_};tag=1\r\n"
        f"To: <{to or ruri}>\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_identify_by_configured_addresses(settings) -> None:
    trunks = settings.trunks
    assert identify_trunk("192.0.2.10", 5060, trunks, {}).name == "carrier-a"
    assert identify_trunk("198.51.100.14", 40000, trunks, {}).name == "carrier-b"
    assert identify_trunk("::ffff:198.51.100.1", 5060, trunks, {}).name == "carrier-b"
    assert identify_trunk("198.51.100.16", 5060, trunks, {}) is None
    assert identify_trunk("not-an-ip", 5060, trunks, {}) is None


def test_identify_by_registration_learned_address() -> None:
    trunk = Trunk(name="reg", host="sip.carrier.example", username="u", password="p", register=True)
    regs = {"reg": Reg(frozenset({"203.0.113.9"}))}
    assert identify_trunk("203.0.113.9", 5060, [trunk], regs) is trunk
    assert identify_trunk("203.0.113.9", 5060, [trunk], {}) is None


def test_two_accounts_at_one_carrier_are_told_apart_by_contact_user() -> None:
    a = Trunk(name="a", host="192.0.2.10", tenants=("*",))
    b = Trunk(name="b", host="192.0.2.10", tenants=("*",))
    regs = {"a": Reg(frozenset(), "acct-a"), "b": Reg(frozenset(), "acct-b")}
    assert identify_trunk("192.0.2.10", 5060, [a, b], regs, contact_user="acct-b") is b
    assert identify_trunk("192.0.2.10", 5060, [a, b], regs, contact_user="other") is a


def test_did_candidates_cover_carrier_habits() -> None:
    it = Trunk(name="t", host="h.example", country="IT")
    for written in ("+390212345678", "00390212345678", "390212345678", "0212345678"):
        assert "+390212345678" in did_candidates(written, it), written
    gb = Trunk(name="g", host="h.example", country="GB")
    for written in ("+442079460000", "00442079460000", "442079460000", "02079460000", "2079460000"):
        assert "+442079460000" in did_candidates(written, gb), written
    assert did_candidates("+39 02-1234-5678;npdi", Trunk(name="x", host="h")) == ["+390212345678"]
    assert did_candidates("alice", it) == []


def test_lookup_did_respects_trunk_tenants(settings) -> None:
    a = settings.trunk("carrier-a")
    b = settings.trunk("carrier-b")
    assert lookup_did("0212345600", settings.dids, a).destination.user == "201"
    assert lookup_did("+442079460000", settings.dids, a).tenant == "beta.example"
    # carrier-b carries only acme.example: a beta DID through it is not ours to ring.
    assert lookup_did("+442079460000", settings.dids, b) is None
    assert lookup_did("+390299999999", settings.dids, a) is None


def test_decision_from_trunk_by_request_uri(settings) -> None:
    request = invite(
        "sip:0212345600@203.0.113.5", extra="P-Asserted-Identity: <sip:+390612345678@carrier>\r\n"
    )
    decision = inbound_decision(request, "192.0.2.10", 5060, settings, {})
    assert isinstance(decision, InboundCall)
    assert decision.trunk.name == "carrier-a" and decision.did.destination.user == "201"
    assert decision.caller == CallerInfo("+390612345678", None, False)
    assert decision.caller.shown(make_plan("IT")) == "0612345678"


def test_decision_from_trunk_by_to(settings) -> None:
    request = invite("sip:acme-contact@203.0.113.5", to="sip:+390212345602@acme.example")
    decision = inbound_decision(request, "198.51.100.3", 5060, settings, {})
    assert isinstance(decision, InboundCall) and decision.did.destination.user == "202"


def test_unknown_did_from_trunk_is_404_never_relayed(settings) -> None:
    request = invite("sip:+4930123456@203.0.113.5")
    decision = inbound_decision(request, "192.0.2.10", 5060, settings, {})
    assert isinstance(decision, InboundRefusal) and decision.status == 404


def test_headers_never_make_a_trunk(settings) -> None:
    request = invite(
        "sip:0212345600@203.0.113.5",
        extra="P-Asserted-Identity: <sip:+390612345678@192.0.2.10>\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10\r\n",
    )
    assert isinstance(inbound_decision(request, "203.0.113.200", 5060, settings, {}), NotFromTrunk)


def test_caller_privacy_and_anonymous() -> None:
    trunk = Trunk(name="t", host="h.example", country="IT")
    hidden = invite("sip:x@h", extra="Privacy: id\r\n", from_='"Mario" <sip:3471234567@carrier>')
    info = caller_info(hidden, trunk)
    assert info.private and info.number == "+393471234567" and info.shown(None) == "anonymous"
    anonymous = invite("sip:x@h", from_='"Anonymous" <sip:anonymous@anonymous.invalid>')
    assert caller_info(anonymous, trunk) == CallerInfo(None, None, True)
    named = invite("sip:x@h", from_='"Mario Rossi" <sip:00442079460000@carrier>')
    info = caller_info(named, trunk)
    assert info == CallerInfo("+442079460000", "Mario Rossi", False)
    assert info.shown(make_plan("IT")) == "00442079460000"
