"""Non-INVITE server transaction: RFC 3261 17.2.2."""

from __future__ import annotations

import pytest
from test_tx_support import TCP, UDP, request, response

from softswitch.sip.message import Request
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    NonInviteServerTransaction,
    RequestReceived,
    SendMessage,
    ServerKey,
    State,
    TransactionError,
    TransactionTerminated,
)

KEY = ServerKey("z9hG4bKabc123", "client.example.com:5060", "REGISTER")


def make(
    reliable: bool = False, config: TimerConfig | None = None
) -> tuple[NonInviteServerTransaction, Request]:
    register = request("REGISTER")
    source = TCP if reliable else UDP
    tx = NonInviteServerTransaction(KEY, register, source, config or TimerConfig(), reliable)
    return tx, register


def test_new_request_goes_to_the_tu_in_trying() -> None:
    tx, register = make()
    assert tx.start(0.0) == [RequestReceived(KEY, register, UDP)]
    assert tx.state is State.TRYING
    assert tx.next_deadline() is None


def test_retransmission_in_trying_is_absorbed_silently() -> None:
    tx, register = make()
    tx.start(0.0)
    assert tx.receive_request(register, 0.5) == []
    assert tx.state is State.TRYING


def test_retransmission_in_proceeding_resends_the_last_provisional() -> None:
    tx, register = make()
    tx.start(0.0)
    trying = response(register, 100)
    assert tx.send_response(trying, 0.1) == [SendMessage(trying, UDP)]
    assert tx.state is State.PROCEEDING
    assert tx.receive_request(register, 0.5) == [SendMessage(trying, UDP)]
    progress = response(register, 183)
    tx.send_response(progress, 0.6)
    assert tx.receive_request(register, 1.5) == [SendMessage(progress, UDP)]
    assert tx.next_deadline() is None


def test_final_completes_with_timer_j_and_is_resent_on_retransmission() -> None:
    tx, register = make()
    tx.start(0.0)
    tx.send_response(response(register, 100), 0.1)
    ok = response(register, 200)
    assert tx.send_response(ok, 0.2) == [SendMessage(ok, UDP)]
    assert tx.state is State.COMPLETED
    assert tx.next_deadline() == 0.2 + 32.0  # Timer J = 64*T1
    assert tx.receive_request(register, 1.0) == [SendMessage(ok, UDP)]
    assert tx.receive_request(register, 30.0) == [SendMessage(ok, UDP)]
    assert tx.handle_timer(32.2) == [TransactionTerminated(KEY)]
    assert tx.history == [State.TRYING, State.PROCEEDING, State.COMPLETED, State.TERMINATED]


def test_final_straight_from_trying() -> None:
    tx, register = make()
    tx.start(0.0)
    tx.send_response(response(register, 401), 0.0)
    assert tx.history == [State.TRYING, State.COMPLETED]
    assert tx.next_deadline() == 32.0


def test_reliable_transport_terminates_on_the_final() -> None:
    tx, register = make(reliable=True)
    tx.start(0.0)
    ok = response(register, 200)
    assert tx.send_response(ok, 0.2) == [SendMessage(ok, TCP), TransactionTerminated(KEY)]
    assert tx.history == [State.TRYING, State.COMPLETED, State.TERMINATED]
    assert tx.next_deadline() is None


def test_tu_cannot_respond_twice() -> None:
    tx, register = make()
    tx.start(0.0)
    tx.send_response(response(register, 200), 0.0)
    with pytest.raises(TransactionError):
        tx.send_response(response(register, 200), 0.1)


def test_transport_error() -> None:
    tx, register = make()
    tx.start(0.0)
    tx.send_response(response(register, 200), 0.0)
    out = tx.transport_error(0.0)
    assert [type(e).__name__ for e in out] == ["TransportError", "TransactionTerminated"]


def test_scaled_t1_scales_j() -> None:
    tx, register = make(config=TimerConfig(t1=0.01))
    tx.start(0.0)
    tx.send_response(response(register, 200), 0.0)
    assert tx.next_deadline() == 0.64
