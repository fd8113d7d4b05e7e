"""INVITE server transaction: RFC 3261 17.2.1 with RFC 6026's Accepted state."""

from __future__ import annotations

import pytest
from test_tx_support import TCP, UDP, kinds, request, response

from softswitch.sip.message import Request, Response
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    AckReceived,
    Destination,
    InviteServerTransaction,
    RequestReceived,
    SendMessage,
    ServerKey,
    State,
    TransactionError,
    TransactionTerminated,
    TransactionTimedOut,
    build_ack,
)

KEY = ServerKey("z9hG4bKabc123", "client.example.com:5060", "INVITE")


def make(
    reliable: bool = False,
    trying_after: float | None = None,
    config: TimerConfig | None = None,
) -> tuple[InviteServerTransaction, Request]:
    invite = request("INVITE")
    source = TCP if reliable else UDP
    tx = InviteServerTransaction(
        KEY, invite, source, config or TimerConfig(), reliable, trying_after
    )
    return tx, invite


def test_new_invite_goes_to_the_tu_in_proceeding() -> None:
    tx, invite = make()
    assert tx.start(0.0) == [RequestReceived(KEY, invite, UDP)]
    assert tx.state is State.PROCEEDING
    assert tx.next_deadline() is None


def test_100_trying_after_200_ms_when_the_tu_is_silent() -> None:
    tx, invite = make(trying_after=0.2)
    assert tx.start(0.0) == [RequestReceived(KEY, invite, UDP)]
    assert tx.next_deadline() == 0.2
    out = tx.handle_timer(0.2)
    assert kinds(out) == ["SendMessage"]
    trying = out[0].message
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to.tag is None  # RFC 3261 17.2.1: no To tag on the 100
    assert trying.top_via == invite.top_via
    assert tx.next_deadline() is None
    # A retransmitted INVITE gets the 100 again.
    assert tx.receive_request(invite, 0.3) == [SendMessage(trying, UDP)]


def test_100_trying_at_once() -> None:
    tx, invite = make(trying_after=0.0)
    out = tx.start(0.0)
    assert kinds(out) == ["SendMessage", "RequestReceived"]
    assert out[0].message.status == 100
    assert tx.next_deadline() is None


def test_tu_response_within_200_ms_cancels_the_automatic_100() -> None:
    tx, invite = make(trying_after=0.2)
    tx.start(0.0)
    ringing = response(invite, 180)
    assert tx.send_response(ringing, 0.1) == [SendMessage(ringing, UDP)]
    assert tx.next_deadline() is None


def test_retransmitted_invite_resends_the_latest_provisional() -> None:
    tx, invite = make()
    tx.start(0.0)
    assert tx.receive_request(invite, 0.5) == []  # nothing sent yet, nothing to repeat
    tx.send_response(response(invite, 100), 0.6)
    ringing = response(invite, 180)
    tx.send_response(ringing, 0.7)
    assert tx.receive_request(invite, 1.5) == [SendMessage(ringing, UDP)]
    assert tx.receive_request(build_ack(invite, ringing), 1.6) == []
    assert tx.state is State.PROCEEDING


def test_non_2xx_final_is_retransmitted_on_timer_g_until_timer_h() -> None:
    tx, invite = make()
    tx.start(0.0)
    busy = response(invite, 486)
    assert tx.send_response(busy, 0.0) == [SendMessage(busy, UDP)]
    assert tx.state is State.COMPLETED
    times = []
    while (deadline := tx.next_deadline()) is not None and deadline < 32.0:
        assert tx.handle_timer(deadline) == [SendMessage(busy, UDP)]
        times.append(deadline)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tx.next_deadline() == 32.0
    assert tx.handle_timer(32.0) == [TransactionTimedOut(KEY), TransactionTerminated(KEY)]
    assert tx.history == [State.PROCEEDING, State.COMPLETED, State.TERMINATED]


def test_retransmitted_invite_in_completed_resends_the_final() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.send_response(response(invite, 180), 0.1)
    busy = response(invite, 486)
    tx.send_response(busy, 0.2)
    assert tx.receive_request(invite, 0.3) == [SendMessage(busy, UDP)]
    assert tx.next_deadline() == 0.7  # Timer G unchanged by the retransmission


def test_ack_confirms_and_timer_i_absorbs_ack_copies() -> None:
    tx, invite = make()
    tx.start(0.0)
    busy = response(invite, 486)
    tx.send_response(busy, 0.0)
    tx.handle_timer(0.5)
    ack = build_ack(invite, busy)
    assert tx.receive_request(ack, 1.0) == []
    assert tx.state is State.CONFIRMED
    assert tx.next_deadline() == 6.0  # Timer I = T4; G and H stopped
    assert tx.receive_request(ack, 2.0) == []
    assert tx.receive_request(invite, 2.0) == []
    assert tx.handle_timer(6.0) == [TransactionTerminated(KEY)]
    assert tx.history == [State.PROCEEDING, State.COMPLETED, State.CONFIRMED, State.TERMINATED]


def test_reliable_transport_has_no_timer_g_and_zero_timer_i() -> None:
    tx, invite = make(reliable=True)
    tx.start(0.0)
    busy = response(invite, 486)
    assert tx.send_response(busy, 0.0) == [SendMessage(busy, TCP)]
    assert tx.next_deadline() == 32.0  # only Timer H
    assert tx.receive_request(build_ack(invite, busy), 0.1) == [TransactionTerminated(KEY)]
    assert tx.history == [State.PROCEEDING, State.COMPLETED, State.CONFIRMED, State.TERMINATED]


def test_reliable_transport_timer_h() -> None:
    tx, invite = make(reliable=True)
    tx.start(0.0)
    tx.send_response(response(invite, 486), 0.0)
    assert kinds(tx.handle_timer(32.0)) == ["TransactionTimedOut", "TransactionTerminated"]


def test_2xx_enters_accepted_with_timer_l() -> None:
    tx, invite = make()
    tx.start(0.0)
    ok = response(invite, 200)
    assert tx.send_response(ok, 1.0) == [SendMessage(ok, UDP)]
    assert tx.state is State.ACCEPTED
    assert tx.next_deadline() == 33.0  # Timer L = 64*T1; no Timer G for a 2xx
    # INVITE copies are absorbed; the TU retransmits its 2xx itself.
    assert tx.receive_request(invite, 1.5) == []
    assert tx.send_response(ok, 1.5) == [SendMessage(ok, UDP)]
    ack = build_ack(invite, ok)
    assert tx.receive_request(ack, 2.0) == [AckReceived(KEY, ack, UDP)]
    assert tx.receive_request(ack, 2.1) == [AckReceived(KEY, ack, UDP)]
    with pytest.raises(TransactionError):
        tx.send_response(response(invite, 486), 3.0)
    with pytest.raises(TransactionError):
        tx.send_response(response(invite, 180), 3.0)
    assert tx.handle_timer(33.0) == [TransactionTerminated(KEY)]
    assert tx.history == [State.PROCEEDING, State.ACCEPTED, State.TERMINATED]


def test_timer_l_on_reliable_transport() -> None:
    tx, invite = make(reliable=True)
    tx.start(0.0)
    tx.send_response(response(invite, 200), 0.0)
    assert tx.next_deadline() == 32.0


def test_tu_cannot_respond_after_a_non_2xx_final() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.send_response(response(invite, 486), 0.0)
    with pytest.raises(TransactionError):
        tx.send_response(response(invite, 200), 0.1)
    tx.receive_request(build_ack(invite, response(invite, 486)), 0.2)
    with pytest.raises(TransactionError):
        tx.send_response(response(invite, 486), 0.3)


def test_responses_follow_a_destination_chosen_by_the_tu() -> None:
    tx, invite = make()
    tx.start(0.0)
    elsewhere = Destination("UDP", "203.0.113.9", 5062)
    busy = response(invite, 486)
    assert tx.send_response(busy, 0.0, elsewhere) == [SendMessage(busy, elsewhere)]
    assert tx.handle_timer(0.5) == [SendMessage(busy, elsewhere)]


def test_transport_error_terminates() -> None:
    tx, invite = make()
    tx.start(0.0)
    tx.send_response(response(invite, 486), 0.0)
    assert kinds(tx.transport_error(0.0)) == ["TransportError", "TransactionTerminated"]
    assert tx.next_deadline() is None


def test_scaled_t1_scales_g_h_l() -> None:
    tx, invite = make(config=TimerConfig(t1=0.01))
    tx.start(0.0)
    tx.send_response(response(invite, 500), 0.0)
    assert tx.next_deadline() == 0.01
    tx.handle_timer(0.01)
    assert tx.next_deadline() == 0.03
    assert kinds(tx.handle_timer(0.64)) == ["TransactionTimedOut", "TransactionTerminated"]
    tx2, invite2 = make(config=TimerConfig(t1=0.01))
    tx2.start(0.0)
    tx2.send_response(response(invite2, 200), 0.0)
    assert tx2.next_deadline() == 0.64
