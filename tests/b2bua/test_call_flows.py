"""Call flows through the real server routing, transaction layer and call manager, on a
manual clock: what each phone receives, what the media engine is told, the CDR."""

from __future__ import annotations

from softswitch.media.controller import Direction, MediaTimeout
from softswitch.sip.message import Request, Response
from tests.b2bua.harness import (
    ACME,
    Phone,
    Switch,
    answer_sdp,
    establish,
    offer_sdp,
    place_call,
)


def test_answered_call_and_caller_hangs_up_with_exact_cdr() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    start = sw.clock.wall()
    out = place_call(alice, "202")
    assert alice.statuses() == [100]
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    bob.reply(inv, 180, tag="b1")
    assert alice.statuses() == [100, 180]
    sw.advance(3.0)
    bob.reply(inv, 200, tag="b1", body=answer_sdp(inv.body, bob.rtp_port))
    ok = alice.one(200)
    assert isinstance(ok, Response)
    out.to_tag = ok.to.tag
    out.ack(ok)
    sw.advance(10.2)
    out.in_dialog("BYE")
    assert alice.statuses()[-1] == 200
    bye = bob.one("BYE")
    bob.reply(bye, 200)
    (cdr,) = sw.cdrs_written
    assert (cdr.tenant, cdr.caller, cdr.callee) == (ACME, "201", "202")
    assert cdr.start_time == start
    assert cdr.answer_time == start + 3.0
    assert cdr.end_time == start + 13.2
    assert cdr.billable_seconds == 11  # 10.2 s, rounded up
    assert (cdr.disposition, cdr.hangup_cause, cdr.hangup_side) == (
        "answered",
        "normal_clearing",
        "caller",
    )
    assert cdr.caller_call_id == out.call_id
    assert sw.call_manager.active_count() == 0
    assert sw.fake_media.released == [cdr.id]


def test_legs_share_nothing_of_each_others_topology() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    out = place_call(alice, "202", headers=[("Record-Route", "<sip:10.9.9.9;lr>")])
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    text = inv.to_bytes().decode()
    assert inv.call_id != out.call_id
    assert out.from_tag not in text
    assert f":{alice.port}" not in text  # not in Via, Contact or anywhere
    assert f"m=audio {alice.rtp_port} " not in text  # the SDP carries the switch's port
    assert "10.9.9.9" not in text and "Record-Route" not in text
    assert "o=- 4242" not in text
    assert len(inv.vias) == 1 and inv.vias[0].port == 5060
    assert inv.headers.get("contact") == "<sip:127.0.0.1:5060;transport=udp>"
    assert inv.uri.port == bob.port
    bob.reply(inv, 200, tag="b1", body=answer_sdp(inv.body, bob.rtp_port))
    ok = alice.one(200)
    assert isinstance(ok, Response)
    reply_text = ok.to_bytes().decode()
    assert f":{bob.port}" not in reply_text and f"m=audio {bob.rtp_port} " not in reply_text
    assert ok.to.tag != "b1"  # our own tag, not the callee's (a random hex tag may contain "b1")
    # Each leg's media goes to its own phone's SDP address.
    media = sw.fake_media.connected[next(iter(sw.fake_media.connected))]
    assert media["a"].remote_port == alice.rtp_port
    assert media["b"].remote_port == bob.rtp_port


def test_callee_hangs_up() -> None:
    e = establish()
    e.switch.advance(5)
    e.bob_request("BYE")
    assert e.bob.statuses() == [200]
    bye = e.alice.one("BYE")
    assert isinstance(bye, Request)
    assert bye.call_id == e.out.call_id and bye.to.tag == e.out.from_tag
    assert bye.from_.tag == e.ok.to.tag
    e.alice.reply(bye, 200)
    (cdr,) = e.switch.cdrs_written
    assert (cdr.disposition, cdr.hangup_side, cdr.billable_seconds) == ("answered", "callee", 5)


def test_forking_first_answer_wins_and_the_other_branch_is_cancelled() -> None:
    sw = Switch()
    alice = Phone(sw, "201", "secret201")
    desk, mobile = Phone(sw, "202", "secret202"), Phone(sw, "202", "secret202")
    sw.register("202", desk.port, contact_user="desk")
    sw.register("202", mobile.port, contact_user="mobile")
    place_call(alice, "202")
    inv_desk, inv_mobile = desk.one("INVITE"), mobile.one("INVITE")
    assert isinstance(inv_desk, Request) and isinstance(inv_mobile, Request)
    assert inv_desk.call_id != inv_mobile.call_id
    desk.reply(inv_desk, 180, tag="d")
    mobile.reply(inv_mobile, 180, tag="m")
    assert alice.statuses().count(180) == 1  # one ringing is enough for the caller
    mobile.reply(inv_mobile, 200, tag="m", body=answer_sdp(inv_mobile.body, mobile.rtp_port))
    assert mobile.take("ACK")
    cancel = desk.one("CANCEL")
    assert isinstance(cancel, Request)
    assert cancel.vias[0].branch == inv_desk.vias[0].branch
    desk.reply(cancel, 200)
    desk.reply(inv_desk, 487, tag="d")
    assert desk.take("ACK")  # the transaction layer acknowledges the 487
    assert alice.statuses()[-1] == 200
    assert sw.call_manager.active_count() == 1


def test_no_cancel_before_a_provisional_then_late_2xx_gets_ack_and_bye() -> None:
    sw = Switch()
    alice = Phone(sw, "201", "secret201")
    fast, slow = Phone(sw, "202", "secret202"), Phone(sw, "202", "secret202")
    sw.register("202", fast.port, contact_user="fast")
    sw.register("202", slow.port, contact_user="slow")
    place_call(alice, "202")
    inv_fast, inv_slow = fast.one("INVITE"), slow.one("INVITE")
    assert isinstance(inv_fast, Request) and isinstance(inv_slow, Request)
    fast.reply(inv_fast, 200, tag="f", body=answer_sdp(inv_fast.body, fast.rtp_port))
    # RFC 3261 9.1: the slow contact sent nothing yet, so it gets no CANCEL yet.
    assert not slow.take("CANCEL")
    slow.reply(inv_slow, 200, tag="s", body=answer_sdp(inv_slow.body, slow.rtp_port))
    assert slow.take("ACK")
    bye = slow.one("BYE")
    assert isinstance(bye, Request) and bye.to.tag == "s"
    slow.reply(bye, 200)
    assert alice.statuses().count(200) == 1


def test_cancel_sent_once_the_late_branch_rings() -> None:
    sw = Switch()
    alice = Phone(sw, "201", "secret201")
    fast, slow = Phone(sw, "202", "secret202"), Phone(sw, "202", "secret202")
    sw.register("202", fast.port, contact_user="fast")
    sw.register("202", slow.port, contact_user="slow")
    place_call(alice, "202")
    inv_fast, inv_slow = fast.one("INVITE"), slow.one("INVITE")
    assert isinstance(inv_fast, Request) and isinstance(inv_slow, Request)
    fast.reply(inv_fast, 200, tag="f", body=answer_sdp(inv_fast.body, fast.rtp_port))
    slow.reply(inv_slow, 180, tag="s")
    assert slow.one("CANCEL")


def test_ring_timeout_gives_480_and_cancels() -> None:
    sw = Switch({"ring_timeout": 20})
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    place_call(alice, "202")
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    bob.reply(inv, 180, tag="b")
    sw.advance(19.9)
    assert 480 not in alice.statuses()
    sw.advance(0.2)
    assert alice.statuses()[-1] == 480
    cancel = bob.one("CANCEL")
    assert isinstance(cancel, Request)
    bob.reply(cancel, 200)
    bob.reply(inv, 487, tag="b")
    (cdr,) = sw.cdrs_written
    assert (cdr.disposition, cdr.hangup_cause, cdr.hangup_side, cdr.sip_status) == (
        "no_answer",
        "no_answer",
        "switch",
        480,
    )
    assert cdr.answer_time is None and cdr.billable_seconds == 0


def test_cancel_given_up_64_t1_after_it_is_unanswered() -> None:
    sw = Switch({"ring_timeout": 5})
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    place_call(alice, "202")
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    bob.reply(inv, 180, tag="b")
    sw.advance(5)
    assert bob.take("CANCEL")
    sw.advance(64 * 0.5 + 1)  # the phone never answers the INVITE
    assert sw.call_manager._client_keys == {}


def test_busy_passed_on_and_cdr() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    out = place_call(alice, "202")
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    bob.reply(inv, 486, tag="b")
    busy = alice.one(486)
    assert isinstance(busy, Response)
    out.ack(busy)
    (cdr,) = sw.cdrs_written
    assert (cdr.disposition, cdr.hangup_cause, cdr.sip_status) == ("busy", "user_busy", 486)


def test_busy_everywhere_ends_the_attempt_at_once() -> None:
    sw = Switch()
    alice = Phone(sw, "201", "secret201")
    one, two = Phone(sw, "202", "secret202"), Phone(sw, "202", "secret202")
    sw.register("202", one.port, contact_user="one")
    sw.register("202", two.port, contact_user="two")
    place_call(alice, "202")
    inv_one, inv_two = one.one("INVITE"), two.one("INVITE")
    assert isinstance(inv_one, Request) and isinstance(inv_two, Request)
    two.reply(inv_two, 180, tag="t")
    one.reply(inv_one, 600, tag="o")
    assert alice.statuses()[-1] == 600
    assert two.one("CANCEL")


def test_best_failure_busy_over_others() -> None:
    sw = Switch()
    alice = Phone(sw, "201", "secret201")
    one, two = Phone(sw, "202", "secret202"), Phone(sw, "202", "secret202")
    sw.register("202", one.port, contact_user="one")
    sw.register("202", two.port, contact_user="two")
    place_call(alice, "202")
    inv_one, inv_two = one.one("INVITE"), two.one("INVITE")
    assert isinstance(inv_one, Request) and isinstance(inv_two, Request)
    one.reply(inv_one, 503, tag="o")
    assert alice.statuses() == [100]
    two.reply(inv_two, 486, tag="t")
    assert alice.statuses()[-1] == 486


def test_unreachable_contact_times_out_to_480() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    place_call(alice, "202")
    sw.advance(64 * 0.5 + 1)  # Timer B on the silent contact
    assert alice.statuses()[-1] == 480


def test_unknown_number_404_unregistered_480_and_tenants_never_cross() -> None:
    sw = Switch()
    alice = Phone(sw, "201", "secret201")
    beta = Phone(sw, "300", "betasecret300", domain="beta.example")
    sw.register("300", beta.port, domain="beta.example")
    place_call(alice, "999")
    assert alice.statuses()[-1] == 404
    alice.take()
    place_call(alice, "203")  # exists, not registered
    assert alice.statuses()[-1] == 480
    alice.take()
    place_call(alice, "sip:300@beta.example")  # another tenant's phone
    assert alice.statuses()[-1] == 404
    assert beta.take() == []
    cdrs = sw.cdrs_written
    assert [(c.callee, c.disposition, c.hangup_cause, c.sip_status) for c in cdrs] == [
        ("999", "failed", "not_found", 404),
        ("203", "failed", "unavailable", 480),
        ("300", "failed", "not_found", 404),
    ]


def test_caller_is_challenged_and_wrong_password_refused_without_cdr() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    first = alice.request(
        "INVITE",
        f"sip:202@{ACME}",
        call_id="c1",
        from_tag="t1",
        to=f"sip:202@{ACME}",
        body=offer_sdp(alice.rtp_port),
    )
    alice.send(first)
    challenge = alice.one(407)
    assert isinstance(challenge, Response)
    assert 'realm="acme.example"' in (challenge.headers.get("proxy-authenticate") or "")
    place_call(alice, "202", password="wrong-password")
    assert alice.statuses()[-1] == 403
    assert bob.take() == []
    assert sw.cdrs_written == []


def test_caller_from_another_domain_is_refused() -> None:
    sw = Switch()
    stranger = Phone(sw, "201", "secret201", domain="evil.example")
    req = stranger.request(
        "INVITE",
        f"sip:202@{ACME}",
        call_id="c",
        from_tag="t",
        to=f"sip:202@{ACME}",
        body=offer_sdp(1000),
    )
    stranger.send(req)
    assert stranger.statuses() == [403]


def test_caller_cancels_while_ringing() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    out = place_call(alice, "202")
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    bob.reply(inv, 180, tag="b")
    via = out.invite.headers.get("via") or ""
    branch = via.split("branch=")[1].split(";")[0]
    cancel = alice.request(
        "CANCEL",
        out.to,
        call_id=out.call_id,
        from_tag=out.from_tag,
        to=out.to,
        cseq=out.invite.cseq.seq,
        branch=branch,
    )
    alice.send(cancel)
    assert alice.statuses()[-2:] == [200, 487]
    bob_cancel = bob.one("CANCEL")
    assert isinstance(bob_cancel, Request)
    bob.reply(bob_cancel, 200)
    bob.reply(inv, 487, tag="b")
    (cdr,) = sw.cdrs_written
    assert (cdr.disposition, cdr.hangup_cause, cdr.hangup_side, cdr.sip_status) == (
        "cancelled",
        "cancelled",
        "caller",
        487,
    )


def test_cancel_of_unknown_transaction_is_481() -> None:
    sw = Switch()
    alice = Phone(sw, "201", "secret201")
    alice.send(
        alice.request("CANCEL", f"sip:202@{ACME}", call_id="x", from_tag="y", to=f"sip:202@{ACME}")
    )
    assert alice.statuses() == [481]


def test_requests_for_unknown_dialogs_get_481_and_out_of_order_cseq_500() -> None:
    e = establish()
    e.alice.send(
        e.alice.request(
            "BYE",
            "sip:127.0.0.1:5060",
            call_id="nope",
            from_tag="a",
            to=f"sip:202@{ACME}",
            to_tag="b",
        )
    )
    assert e.alice.statuses() == [481]
    e.alice.take()
    e.alice.send(
        e.alice.request(
            "OPTIONS",
            "sip:127.0.0.1:5060",
            call_id=e.out.call_id,
            from_tag=e.out.from_tag,
            to=e.out.to,
            to_tag=e.out.to_tag,
            cseq=1,
        )
    )
    assert e.alice.statuses() == [500]
    e.alice.take()
    e.out.in_dialog("OPTIONS")
    ok = e.alice.one(200)
    assert isinstance(ok, Response)
    assert "UPDATE" in (ok.headers.get("allow") or "")


def test_hold_and_resume_pass_through_as_reinvites() -> None:
    e = establish()
    media = e.switch.fake_media.connected[e.call.id]
    e.out.in_dialog("INVITE", offer_sdp(e.alice.rtp_port, direction="sendonly", version=2))
    ok = e.alice.one(200)
    assert isinstance(ok, Response)
    assert b"a=recvonly" in ok.body  # answered at once by the switch
    e.out.ack(ok)
    assert media["a"].direction is Direction.SENDONLY  # the phone's own view
    hold = e.bob.one("INVITE")
    assert isinstance(hold, Request)
    assert hold.call_id == e.bob_invite.call_id and b"a=sendonly" in hold.body
    assert b"o=- " in hold.body and f"m=audio {e.alice.rtp_port} ".encode() not in hold.body
    e.bob.reply(hold, 200, body=answer_sdp(hold.body, e.bob.rtp_port, direction="recvonly"))
    assert e.bob.take("ACK")
    assert media["b"].direction is Direction.RECVONLY
    # Resume.
    e.out.in_dialog("INVITE", offer_sdp(e.alice.rtp_port, direction="sendrecv", version=3))
    ok = e.alice.one(200)
    assert isinstance(ok, Response) and b"a=sendrecv" in ok.body
    e.out.ack(ok)
    resume = e.bob.one("INVITE")
    assert isinstance(resume, Request) and b"a=sendrecv" in resume.body
    assert resume.cseq.seq > hold.cseq.seq
    e.bob.reply(resume, 200, body=answer_sdp(resume.body, e.bob.rtp_port))
    assert media["a"].direction is Direction.SENDRECV
    assert media["b"].direction is Direction.SENDRECV


def test_codec_change_stays_on_its_leg() -> None:
    e = establish()
    e.out.in_dialog("INVITE", offer_sdp(e.alice.rtp_port, codecs=("PCMA",), version=2))
    ok = e.alice.one(200)
    assert isinstance(ok, Response) and b"PCMA" in ok.body
    e.out.ack(ok)
    assert e.bob.take("INVITE") == []  # media is anchored: the engine transcodes
    media = e.switch.fake_media.connected[e.call.id]
    assert (media["a"].codec.name, media["b"].codec.name) == ("PCMA", "PCMU")


def test_glare_491_both_ways_and_retry() -> None:
    e = establish()
    e.out.in_dialog("INVITE", offer_sdp(e.alice.rtp_port, direction="sendonly", version=2))
    e.alice.take()
    hold = e.bob.one("INVITE")
    assert isinstance(hold, Request)
    # Bob offers at the same time: our re-INVITE is pending on his dialog.
    e.bob_request("INVITE", offer_sdp(e.bob.rtp_port, version=2))
    assert e.bob.statuses() == [491]
    e.bob.take()
    # And he refuses ours the same way; we own the Call-ID, so we retry in 2.1 to 4 s.
    e.bob.reply(hold, 491)
    assert e.bob.take("ACK")
    e.switch.advance(2.0)
    assert e.bob.take("INVITE") == []
    e.switch.advance(2.1)
    retries = e.bob.take("INVITE")  # the retry, perhaps with a Timer A copy
    assert retries and len({r.cseq.seq for r in retries}) == 1
    assert retries[0].cseq.seq > hold.cseq.seq and b"a=sendonly" in retries[0].body


def test_second_reinvite_before_ack_gets_500() -> None:
    e = establish()
    e.out.in_dialog("INVITE", offer_sdp(e.alice.rtp_port, version=2))
    e.alice.take()
    e.out.in_dialog("INVITE", offer_sdp(e.alice.rtp_port, version=3))
    assert e.alice.statuses() == [500]


def test_update_without_sdp_is_a_refresh() -> None:
    e = establish()
    e.out.in_dialog(
        "UPDATE", headers=[("Session-Expires", "600;refresher=uac"), ("Supported", "timer")]
    )
    ok = e.alice.one(200)
    assert isinstance(ok, Response)
    assert ok.headers.get("session-expires") == "600;refresher=uac"
    assert e.bob.take() == []


def test_unanswered_offer_in_reinvite_without_sdp_is_answered_in_ack() -> None:
    e = establish()
    e.out.in_dialog("INVITE")
    ok = e.alice.one(200)
    assert isinstance(ok, Response) and b"m=audio" in ok.body
    ack = e.alice.request(
        "ACK",
        e.out.remote_target,
        call_id=e.out.call_id,
        from_tag=e.out.from_tag,
        to=e.out.to,
        to_tag=e.out.to_tag,
        cseq=ok.cseq.seq,
        body=answer_sdp(ok.body, e.alice.rtp_port + 2, "PCMA"),
    )
    e.alice.send(ack)
    media = e.switch.fake_media.connected[e.call.id]
    assert media["a"].remote_port == e.alice.rtp_port + 2
    assert media["a"].codec.name == "PCMA"


def test_early_media_answer_is_repeated_in_the_2xx() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    place_call(alice, "202")
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    bob.reply(inv, 183, tag="b", body=answer_sdp(inv.body, bob.rtp_port))
    progress = alice.one(183)
    assert isinstance(progress, Response) and b"m=audio" in progress.body
    assert sw.fake_media.connected  # early media flows
    bob.reply(inv, 200, tag="b", body=answer_sdp(inv.body, bob.rtp_port))
    ok = alice.one(200)
    assert isinstance(ok, Response)
    assert ok.body == progress.body  # same answer, same o= version


def test_lost_ack_2xx_retransmitted_then_bye() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    place_call(alice, "202")
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    bob.reply(inv, 200, tag="b", body=answer_sdp(inv.body, bob.rtp_port))
    assert alice.statuses() == [100, 200]
    sw.advance(0.5)
    assert alice.statuses() == [100, 200, 200]
    sw.advance(1.0)
    assert alice.statuses().count(200) == 3
    sw.advance(64 * 0.5)
    assert bob.take("BYE")
    assert alice.take("BYE")
    (cdr,) = sw.cdrs_written
    assert (cdr.hangup_cause, cdr.hangup_side) == ("ack_timeout", "switch")


def test_callee_2xx_retransmission_is_acked_again() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    place_call(alice, "202")
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    body = answer_sdp(inv.body, bob.rtp_port)
    bob.reply(inv, 200, tag="b", body=body)
    first = bob.one("ACK")
    bob.reply(inv, 200, tag="b", body=body)
    again = bob.one("ACK")
    assert first.to_bytes() == again.to_bytes()
    assert alice.statuses().count(200) == 1


def test_maximum_call_length() -> None:
    e = establish(Switch({"max_call_seconds": 60}))
    e.switch.advance(59.9)
    assert e.bob.take("BYE") == []
    e.switch.advance(0.2)
    assert e.bob.take("BYE") and e.alice.take("BYE")
    (cdr,) = e.switch.cdrs_written
    assert (cdr.hangup_cause, cdr.hangup_side, cdr.billable_seconds) == (
        "max_duration",
        "switch",
        60,
    )


def test_media_timeout_ends_the_call() -> None:
    e = establish()
    e.switch.fake_media.fire(MediaTimeout(e.call.id, "b"))
    assert e.bob.take("BYE") and e.alice.take("BYE")
    (cdr,) = e.switch.cdrs_written
    assert cdr.hangup_cause == "media_timeout"


def test_draining_refuses_new_calls_and_hangup_all_ends_the_rest() -> None:
    e = establish()
    e.switch.start_draining(30)
    carol = Phone(e.switch, "203", "secret203")
    carol.send(
        carol.request(
            "INVITE",
            f"sip:202@{ACME}",
            call_id="c",
            from_tag="t",
            to=f"sip:202@{ACME}",
            body=offer_sdp(carol.rtp_port),
        )
    )
    refusal = carol.one(503)
    assert isinstance(refusal, Response) and refusal.headers.get("retry-after") == "30"
    assert e.switch.calls.active_count() == 1
    assert e.switch.calls.hangup_all("shutdown") == 1
    assert e.bob.take("BYE") and e.alice.take("BYE")
    assert e.switch.calls.active_count() == 0
    (cdr,) = e.switch.cdrs_written
    assert (cdr.hangup_cause, cdr.hangup_side) == ("shutdown", "switch")


def test_bad_sdp_and_no_common_codec() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    place_call(alice, "202", body=b"v=0\r\nthis is not sdp\r\n")
    assert alice.statuses()[-1] == 400
    alice.take()
    g729 = (
        offer_sdp(alice.rtp_port)
        .replace(b"RTP/AVP 0 8 101", b"RTP/AVP 18")
        .replace(b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", b"a=rtpmap:18 G729/8000\r\n")
    )
    place_call(alice, "202", body=g729)
    assert alice.statuses()[-1] == 488
    assert bob.take() == []


def test_caller_without_sdp_gets_our_offer_and_answers_in_the_ack() -> None:
    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    out = place_call(alice, "202", body=b"")
    inv = bob.one("INVITE")
    assert isinstance(inv, Request) and b"m=audio" in inv.body
    bob.reply(inv, 200, tag="b", body=answer_sdp(inv.body, bob.rtp_port, "PCMA"))
    ok = alice.one(200)
    assert isinstance(ok, Response)
    assert b"RTP/AVP 8 0 101" in ok.body  # the callee's codec first: no transcoding
    ack = alice.request(
        "ACK",
        out.remote_target,
        call_id=out.call_id,
        from_tag=out.from_tag,
        to=out.to,
        to_tag=ok.to.tag,
        cseq=ok.cseq.seq,
        body=answer_sdp(ok.body, alice.rtp_port, "PCMA"),
    )
    alice.send(ack)
    media = sw.fake_media.connected[next(iter(sw.fake_media.connected))]
    assert media["a"].codec.name == media["b"].codec.name == "PCMA"
    assert media["a"].remote_port == alice.rtp_port


def test_nothing_is_left_behind() -> None:
    sw = Switch({"ring_timeout": 5})
    test_flows = [
        lambda: establish(sw),
        lambda: place_call(Phone(sw, "201", "secret201"), "999"),
    ]
    e = test_flows[0]()
    e.out.in_dialog("BYE")
    bye = e.bob.one("BYE")
    assert isinstance(bye, Request)
    e.bob.reply(bye, 200)
    test_flows[1]()
    # A call nobody answers, and one whose callee hangs up.
    carol = Phone(sw, "203", "secret203")
    place_call(carol, "202")
    e.bob.take()
    e2 = establish(sw)
    e2.bob_request("BYE")
    bye = e2.alice.one("BYE")
    assert isinstance(bye, Request)
    e2.alice.reply(bye, 200)
    sw.advance(200)
    m = sw.call_manager
    assert (m.calls, m._dialogs, m._client_keys, m._invites) == ({}, {}, {}, {})
    assert len(m.timers) == 0 and len(sw.tx) == 0
    assert len(sw.cdrs_written) == 4


def test_reoffer_2xx_copy_is_acked_again_and_not_taken_for_a_newer_answer() -> None:
    e = establish()
    e.out.in_dialog("INVITE", offer_sdp(e.alice.rtp_port, direction="sendonly", version=2))
    ok = e.alice.one(200)
    assert isinstance(ok, Response)
    e.out.ack(ok)
    hold = e.bob.one("INVITE")
    assert isinstance(hold, Request)
    held = answer_sdp(hold.body, e.bob.rtp_port, direction="recvonly")
    e.bob.reply(hold, 200, body=held)
    first_ack = e.bob.one("ACK")
    e.out.in_dialog("INVITE", offer_sdp(e.alice.rtp_port, version=3))  # resume
    resume = e.bob.one("INVITE")
    assert isinstance(resume, Request)
    e.bob.reply(hold, 200, body=held)  # a late copy of the hold's 2xx
    assert e.bob.one("ACK").to_bytes() == first_ack.to_bytes()
    media = e.switch.fake_media.connected[e.call.id]
    assert media["b"].direction is Direction.RECVONLY  # still waiting for the resume
    e.bob.reply(resume, 200, body=answer_sdp(resume.body, e.bob.rtp_port))
    assert media["b"].direction is Direction.SENDRECV


def test_callee_reached_over_its_tcp_connection_and_through_its_path() -> None:
    from dataclasses import replace

    from softswitch.sip.flow import Flow

    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    binding = sw.register("202", bob.port)
    tcp = replace(
        binding,
        flow=Flow("tcp", "127.0.0.1", bob.port, "tcp:127.0.0.1:5060", 7),
        path=("<sip:edge.example;lr>",),
    )
    sw.locations.save(ACME, "202", [tcp], [])
    place_call(alice, "202")
    ((invite, dest),) = [(m, d) for m, d in sw.wire if isinstance(m, Request)]
    assert (dest.transport, dest.connection_id) == ("TCP", 7)
    assert invite.vias[0].transport == "TCP"
    assert invite.headers.get_all("route") == ["<sip:edge.example;lr>"]
    assert invite.headers.get("contact") == "<sip:127.0.0.1:5060;transport=tcp>"


def test_tcp_binding_without_its_connection_is_unreachable() -> None:
    from dataclasses import replace

    from softswitch.sip.flow import Flow

    sw = Switch()
    alice, bob = Phone(sw, "201", "secret201"), Phone(sw, "202", "secret202")
    binding = sw.register("202", bob.port)
    # After a restart a TCP binding has no connection: the phone must come back first.
    stale = replace(binding, flow=Flow("tcp", "127.0.0.1", bob.port, "tcp:127.0.0.1:5060"))
    sw.locations.save(ACME, "202", [stale], [])
    place_call(alice, "202")
    assert alice.statuses()[-1] == 480
