"""Non-INVITE client transaction: RFC 3261 17.1.2."""

from __future__ import annotations

import pytest
from test_tx_support import TCP, UDP, kinds, request, response

from softswitch.sip.message import Request
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    ClientKey,
    NonInviteClientTransaction,
    ResponseReceived,
    SendMessage,
    State,
    TransactionTerminated,
    TransactionTimedOut,
)

KEY = ClientKey("z9hG4bKabc123", "OPTIONS")


def make(
    reliable: bool = False, config: TimerConfig | None = None
) -> tuple[NonInviteClientTransaction, Request]:
    options = request("OPTIONS")
    dest = TCP if reliable else UDP
    tx = NonInviteClientTransaction(KEY, options, dest, config or TimerConfig(), reliable)
    return tx, options


def fire_until_quiet(tx: NonInviteClientTransaction, until: float) -> list[float]:
    """Fire each deadline up to ``until``; returns the times a retransmission went out."""
    times = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        if kinds(tx.handle_timer(deadline)) == ["SendMessage"]:
            times.append(deadline)
    return times


def test_timer_e_doubles_to_t2_then_timer_f_times_out() -> None:
    tx, options = make()
    assert tx.start(0.0) == [SendMessage(options, UDP)]
    assert tx.state is State.TRYING
    assert tx.next_deadline() == 0.5
    times = fire_until_quiet(tx, 31.9)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tx.next_deadline() == 32.0
    assert tx.handle_timer(32.0) == [TransactionTimedOut(KEY), TransactionTerminated(KEY)]
    assert tx.history == [State.TRYING, State.TERMINATED]


def test_provisional_moves_to_proceeding_where_e_fires_every_t2() -> None:
    tx, options = make()
    tx.start(0.0)
    tx.handle_timer(0.5)
    trying = response(options, 100)
    assert tx.receive_response(trying, 1.0) == [ResponseReceived(KEY, trying)]
    assert tx.state is State.PROCEEDING
    # The pending Timer E keeps its deadline; from then on it fires every T2.
    assert tx.next_deadline() == 1.5
    assert fire_until_quiet(tx, 20.0) == [1.5, 5.5, 9.5, 13.5, 17.5]
    assert tx.receive_response(trying, 20.0) == [ResponseReceived(KEY, trying)]
    assert tx.state is State.PROCEEDING
    assert kinds(tx.handle_timer(32.0)) == ["TransactionTimedOut", "TransactionTerminated"]
    assert tx.history == [State.TRYING, State.PROCEEDING, State.TERMINATED]


def test_final_response_completes_with_timer_k() -> None:
    tx, options = make()
    tx.start(0.0)
    ok = response(options, 200)
    assert tx.receive_response(ok, 0.7) == [ResponseReceived(KEY, ok)]
    assert tx.state is State.COMPLETED
    assert tx.next_deadline() == 0.7 + 5.0  # Timer K = T4
    assert tx.receive_response(ok, 1.0) == []
    assert tx.receive_response(response(options, 100), 1.0) == []
    assert tx.handle_timer(5.7) == [TransactionTerminated(KEY)]
    assert tx.history == [State.TRYING, State.COMPLETED, State.TERMINATED]


def test_final_after_provisional() -> None:
    tx, options = make()
    tx.start(0.0)
    tx.receive_response(response(options, 180), 0.1)
    forbidden = response(options, 403)
    assert tx.receive_response(forbidden, 0.2) == [ResponseReceived(KEY, forbidden)]
    assert tx.history == [State.TRYING, State.PROCEEDING, State.COMPLETED]
    assert tx.next_deadline() == 5.2


def test_reliable_transport_has_no_timer_e_and_zero_timer_k() -> None:
    tx, options = make(reliable=True)
    assert tx.start(0.0) == [SendMessage(options, TCP)]
    assert tx.next_deadline() == 32.0
    ok = response(options, 200)
    assert tx.receive_response(ok, 1.0) == [ResponseReceived(KEY, ok), TransactionTerminated(KEY)]
    assert tx.history == [State.TRYING, State.COMPLETED, State.TERMINATED]


def test_reliable_transport_timer_f() -> None:
    tx, _ = make(reliable=True)
    tx.start(0.0)
    tx.receive_response(response(request("OPTIONS"), 100), 1.0)
    assert kinds(tx.handle_timer(32.0)) == ["TransactionTimedOut", "TransactionTerminated"]


def test_transport_error() -> None:
    tx, _ = make()
    tx.start(0.0)
    assert kinds(tx.transport_error(0.0)) == ["TransportError", "TransactionTerminated"]


def test_scaled_t1_scales_e_and_f() -> None:
    tx, options = make(config=TimerConfig(t1=0.01, t2=0.04))
    tx.start(0.0)
    assert fire_until_quiet(tx, 0.2) == pytest.approx([0.01, 0.03, 0.07, 0.11, 0.15, 0.19])
    tx2, options2 = make(config=TimerConfig(t1=0.01))
    tx2.start(0.0)
    assert tx2.next_deadline() == 0.01
    tx2.receive_response(response(options2, 100), 0.005)
    assert kinds(tx2.handle_timer(0.64)) == ["TransactionTimedOut", "TransactionTerminated"]
