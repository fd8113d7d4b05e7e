"""INVITE client transaction: RFC 3261 17.1.1 with RFC 6026's Accepted state."""

from __future__ import annotations

from test_tx_support import TCP, UDP, kinds, request, response, sent

from softswitch.sip.message import Request
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    ClientKey,
    InviteClientTransaction,
    ResponseReceived,
    SendMessage,
    State,
    TransactionTerminated,
    TransactionTimedOut,
    TransportError,
)

KEY = ClientKey("z9hG4bKabc123", "INVITE")


def make(
    reliable: bool = False, invite: Request | None = None, config: TimerConfig | None = None
) -> tuple[InviteClientTransaction, Request]:
    invite = invite or request("INVITE")
    dest = TCP if reliable else UDP
    tx = InviteClientTransaction(KEY, invite, dest, config or TimerConfig(), reliable)
    return tx, invite


def test_timer_a_doubles_until_timer_b() -> None:
    tx, invite = make()
    assert tx.start(0.0) == [SendMessage(invite, UDP)]
    assert tx.state is State.CALLING
    fired = []
    for expected in (0.5, 1.5, 3.5, 7.5, 15.5, 31.5):
        assert tx.next_deadline() == expected
        out = tx.handle_timer(expected)
        assert out == [SendMessage(invite, UDP)]
        fired.append(expected)
    assert tx.next_deadline() == 32.0
    assert tx.handle_timer(32.0) == [TransactionTimedOut(KEY), TransactionTerminated(KEY)]
    assert tx.state is State.TERMINATED
    assert tx.next_deadline() is None
    assert len(fired) == 6
    assert tx.history == [State.CALLING, State.TERMINATED]


def test_timer_fired_early_does_nothing() -> None:
    tx, _ = make()
    tx.start(0.0)
    assert tx.handle_timer(0.49) == []
    assert tx.next_deadline() == 0.5


def test_late_tick_with_both_timers_due_only_times_out() -> None:
    tx, _ = make()
    tx.start(0.0)
    assert kinds(tx.handle_timer(40.0)) == ["TransactionTimedOut", "TransactionTerminated"]


def test_provisional_stops_retransmissions_and_timer_b() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.handle_timer(0.5)
    ringing = response(invite, 180)
    assert tx.receive_response(ringing, 0.7) == [ResponseReceived(KEY, ringing)]
    assert tx.state is State.PROCEEDING
    # No timer runs in Proceeding: the TU's CANCEL or Timer C ends a call that rings on.
    assert tx.next_deadline() is None
    trying = response(invite, 100)
    assert tx.receive_response(trying, 0.8) == [ResponseReceived(KEY, trying)]
    assert tx.history == [State.CALLING, State.PROCEEDING]


def test_non_2xx_final_is_acked_and_timer_d_absorbs_retransmissions() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.receive_response(response(invite, 180), 0.2)
    busy = response(invite, 486)
    out = tx.receive_response(busy, 1.0)
    assert kinds(out) == ["SendMessage", "ResponseReceived"]
    ack = out[0].message
    assert out[0].destination == UDP
    assert out[1] == ResponseReceived(KEY, busy)
    assert tx.state is State.COMPLETED
    assert tx.next_deadline() == 33.0
    # The final came again: our ACK was lost; resend it, do not bother the TU.
    assert tx.receive_response(busy, 2.0) == [SendMessage(ack, UDP)]
    assert tx.receive_response(response(invite, 180), 2.5) == []
    assert tx.handle_timer(33.0) == [TransactionTerminated(KEY)]
    assert tx.history == [State.CALLING, State.PROCEEDING, State.COMPLETED, State.TERMINATED]


def test_timer_d_is_32_seconds_with_default_t1() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.receive_response(response(invite, 404), 0.0)
    assert tx.next_deadline() == 32.0


def test_timer_d_can_be_set_apart_from_t1() -> None:
    tx, invite = make(config=TimerConfig(timer_d=40.0))
    tx.start(0.0)
    tx.receive_response(response(invite, 404), 1.0)
    assert tx.next_deadline() == 41.0


def test_ack_for_non_2xx_follows_rfc3261_17_1_1_3() -> None:
    invite = request(
        "INVITE",
        cseq=7,
        extra=[
            "Route: <sip:p1.example.com;lr>",
            "Contact: <sip:alice@198.51.100.1>",
            "route: <sip:p2.example.com;lr>",
            "Content-Type: application/sdp",
        ],
    )
    tx, _ = make(invite=invite)
    tx.start(0.0)
    rejected = response(invite, 603, to_tag="bobtag")
    ack = sent(tx.receive_response(rejected, 0.1))[0].message
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.call_id == invite.call_id
    assert ack.headers.get("from") == invite.headers.get("from")
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert ack.to.tag == "bobtag"
    assert ack.headers.get_all("via") == [invite.headers.get("via")]
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.headers.get_all("route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert ack.headers.raw_names("route") == ["Route", "route"]
    assert ack.max_forwards == 70
    assert "contact" not in ack.headers and "content-type" not in ack.headers
    assert ack.body == b""
    assert tx.ack is ack


def test_ack_gets_max_forwards_when_the_invite_had_none() -> None:
    invite = request("INVITE")
    invite = invite.replace(headers=invite.headers.remove("max-forwards"))
    tx, _ = make(invite=invite)
    tx.start(0.0)
    ack = sent(tx.receive_response(response(invite, 500), 0.1))[0].message
    assert isinstance(ack, Request) and ack.max_forwards == 70


def test_reliable_transport_has_no_timer_a_and_zero_timer_d() -> None:
    tx, invite = make(reliable=True)
    assert tx.start(0.0) == [SendMessage(invite, TCP)]
    assert tx.next_deadline() == 32.0
    out = tx.receive_response(response(invite, 486), 3.0)
    assert kinds(out) == ["SendMessage", "ResponseReceived", "TransactionTerminated"]
    assert out[0].destination == TCP
    assert tx.history == [State.CALLING, State.COMPLETED, State.TERMINATED]
    assert tx.next_deadline() is None


def test_reliable_transport_timer_b_still_fires() -> None:
    tx, _ = make(reliable=True)
    tx.start(0.0)
    assert kinds(tx.handle_timer(32.0)) == ["TransactionTimedOut", "TransactionTerminated"]


def test_2xx_enters_accepted_and_passes_retransmissions_up() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.receive_response(response(invite, 180), 0.3)
    ok = response(invite, 200)
    assert tx.receive_response(ok, 2.0) == [ResponseReceived(KEY, ok)]
    assert tx.state is State.ACCEPTED
    assert tx.next_deadline() == 2.0 + 32.0  # Timer M = 64*T1
    # RFC 6026: each 2xx copy goes to the TU, which ACKs it; the transaction never does.
    assert tx.receive_response(ok, 2.5) == [ResponseReceived(KEY, ok)]
    ok_other_fork = response(invite, 200, to_tag="fork2")
    assert tx.receive_response(ok_other_fork, 2.6) == [ResponseReceived(KEY, ok_other_fork)]
    assert tx.receive_response(response(invite, 180), 2.7) == []
    assert tx.receive_response(response(invite, 486), 2.8) == []
    assert tx.handle_timer(34.0) == [TransactionTerminated(KEY)]
    assert tx.history == [State.CALLING, State.PROCEEDING, State.ACCEPTED, State.TERMINATED]
    assert tx.receive_response(ok, 35.0) == []


def test_2xx_in_calling_stops_timer_a() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.receive_response(response(invite, 200), 0.1)
    assert tx.state is State.ACCEPTED
    assert tx.next_deadline() == 0.1 + 32.0


def test_timer_m_is_the_same_on_reliable_transports() -> None:
    tx, invite = make(reliable=True)
    tx.start(0.0)
    tx.receive_response(response(invite, 200), 1.0)
    assert tx.next_deadline() == 33.0


def test_transport_error_informs_tu_and_terminates() -> None:
    tx, _ = make()
    tx.start(0.0)
    assert tx.transport_error(0.1) == [TransportError(KEY), TransactionTerminated(KEY)]
    assert tx.next_deadline() is None
    assert tx.transport_error(0.2) == []


def test_transport_error_while_acking_terminates() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.receive_response(response(invite, 486), 0.1)
    assert kinds(tx.transport_error(0.1)) == ["TransportError", "TransactionTerminated"]


def test_terminate_on_request() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.receive_response(response(invite, 180), 0.1)
    assert tx.terminate() == [TransactionTerminated(KEY)]
    assert tx.terminate() == []


def test_scaled_t1_scales_a_b_d_m() -> None:
    config = TimerConfig(t1=0.01)
    tx, invite = make(config=config)
    tx.start(0.0)
    assert tx.next_deadline() == 0.01
    tx.handle_timer(0.01)
    assert tx.next_deadline() == 0.03
    tx.receive_response(response(invite, 404), 0.1)
    assert tx.next_deadline() == 0.1 + 0.64
    tx2, invite2 = make(config=config)
    tx2.start(0.0)
    tx2.receive_response(response(invite2, 200), 0.1)
    assert tx2.next_deadline() == 0.1 + 0.64
