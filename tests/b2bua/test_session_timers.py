"""RFC 4028 session timers on both legs: who refreshes, with what, and dead calls end."""

from __future__ import annotations

from softswitch.sip.message import Request, Response
from tests.b2bua.harness import Phone, Switch, answer_sdp, establish, offer_sdp, place_call

SHORT = {"session_expires": 120, "min_se": 90}


def answer_refresh(phone: Phone, request: Request, status: int = 200) -> None:
    body = answer_sdp(request.body, phone.rtp_port) if request.body and status == 200 else b""
    phone.reply(request, status, body=body)


def test_switch_refreshes_both_legs_when_the_phones_do_not_do_timers() -> None:
    e = establish(Switch(SHORT))
    assert e.ok.headers.get("session-expires") == "120;refresher=uas"
    assert e.ok.headers.get("require") is None  # Alice never said she supports it
    e.switch.advance(59.9)
    assert e.bob.take("INVITE") == [] and e.alice.take("INVITE") == []
    e.switch.advance(0.2)
    to_bob, to_alice = e.bob.one("INVITE"), e.alice.one("INVITE")
    assert isinstance(to_bob, Request) and isinstance(to_alice, Request)
    # A refresh re-sends the last SDP: same o= version (RFC 3264 section 8).
    assert to_bob.body == e.bob_invite.body
    assert to_alice.body == e.ok.body
    assert to_bob.headers.get("session-expires") == "120;refresher=uac"
    answer_refresh(e.bob, to_bob)
    answer_refresh(e.alice, to_alice)
    assert e.bob.take("ACK") and e.alice.take("ACK")
    e.switch.advance(60.1)
    again = e.bob.one("INVITE")
    assert isinstance(again, Request)
    e.alice.take()
    # The phone no longer knows the call: the call is over, on both sides.
    answer_refresh(e.bob, again, 481)
    assert e.alice.take("BYE")
    (cdr,) = e.switch.cdrs_written
    assert (cdr.hangup_cause, cdr.hangup_side) == ("session_timer_expired", "switch")


def answer_all(phone: Phone) -> None:
    for request in phone.take("INVITE") + phone.take("UPDATE"):
        assert isinstance(request, Request)
        answer_refresh(phone, request)
    phone.take()


def test_refresh_by_update_when_the_phone_allows_it() -> None:
    e = establish(Switch(SHORT), bob_headers=[("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")])
    e.switch.advance(60.1)
    update = e.bob.one("UPDATE")
    assert isinstance(update, Request) and update.body == b""
    answer_all(e.alice)
    e.switch.advance(64 * 0.5 + 1)  # never answered: Timer F
    assert e.alice.take("BYE")
    assert e.bob.take("BYE")  # sent anyway, in case only the UPDATE was lost
    assert e.switch.cdrs_written[0].hangup_cause == "session_timer_expired"


def test_phone_as_refresher_must_refresh_in_time() -> None:
    e = establish(
        Switch(SHORT),
        alice_headers=[("Supported", "timer"), ("Session-Expires", "100;refresher=uac")],
    )
    assert e.ok.headers.get("session-expires") == "100;refresher=uac"
    assert e.ok.headers.get("require") == "timer"
    e.switch.advance(50)
    e.out.in_dialog(
        "UPDATE", headers=[("Session-Expires", "100;refresher=uac"), ("Supported", "timer")]
    )
    assert e.alice.statuses()[-1] == 200
    e.alice.take()
    e.switch.advance(10.1)
    answer_all(e.bob)  # the switch refreshes Bob's leg meanwhile
    e.switch.advance(56.9)  # 100 - 32 after Alice's refresh: not yet
    assert e.alice.take("BYE") == []
    e.switch.advance(1.5)
    assert e.alice.take("BYE")
    assert e.switch.cdrs_written[0].hangup_cause == "session_timer_expired"


def test_interval_below_min_se() -> None:
    sw = Switch(SHORT)
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    place_call(alice, "202", headers=[("Supported", "timer"), ("Session-Expires", "30")])
    too_small = alice.one(422)
    assert isinstance(too_small, Response) and too_small.headers.get("min-se") == "90"
    assert bob.take() == [] and sw.cdrs_written == []
    # Without the extension the interval is raised instead (RFC 4028 section 9).
    e = establish(sw, alice_headers=[("Session-Expires", "30")])
    assert e.ok.headers.get("session-expires") == "90;refresher=uas"


def test_callee_asks_for_a_longer_interval_with_422() -> None:
    sw = Switch(SHORT)
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    place_call(alice, "202")
    first = bob.one("INVITE")
    assert isinstance(first, Request)
    bob.reply(first, 422, tag="b", headers=[("Min-SE", "600")])
    second = bob.one("INVITE")
    assert isinstance(second, Request)
    assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
    assert second.cseq.seq == first.cseq.seq + 1
    assert second.headers.get("session-expires") == "600;refresher=uac"
    bob.reply(
        second,
        200,
        tag="b2",
        body=answer_sdp(second.body, bob.rtp_port),
        headers=[("Session-Expires", "600;refresher=uac"), ("Require", "timer")],
    )
    assert alice.statuses()[-1] == 200


def test_reinvite_from_phone_rearms_the_timer() -> None:
    e = establish(
        Switch(SHORT),
        alice_headers=[("Supported", "timer"), ("Session-Expires", "100;refresher=uac")],
    )
    e.switch.advance(60)
    answer_all(e.bob)
    e.out.in_dialog(
        "INVITE",
        offer_sdp(e.alice.rtp_port, version=2),
        headers=[("Session-Expires", "100;refresher=uac"), ("Supported", "timer")],
    )
    ok = e.alice.one(200)
    assert isinstance(ok, Response)
    e.out.ack(ok)
    e.switch.advance(60)  # 120 s since the answer, 60 since Alice's refresh
    answer_all(e.bob)
    assert e.alice.take("BYE") == []
    assert e.switch.call_manager.active_count() == 1
