"""TransactionLayer: matching (RFC 3261 17.1.3, 17.2.3), the table, and the timer heap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tx_support import (
    TCP,
    UDP,
    answer_with,
    kinds,
    request,
    response,
    sent,
    uac_uas_pair,
    wire,
)

from softswitch.sip.message import Request
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    AckReceived,
    ClientKey,
    InviteClientTransaction,
    InviteServerTransaction,
    LegacyServerKey,
    NonInviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    ServerKey,
    State,
    StrayAck,
    StrayResponse,
    TransactionError,
    TransactionKey,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    build_ack,
    new_branch,
)


def layer(**kwargs: object) -> TransactionLayer:
    kwargs.setdefault("trying_after", None)
    return TransactionLayer(**kwargs)  # type: ignore[arg-type]


# -- server side matching --------------------------------------------------------------


def test_new_request_creates_a_server_transaction() -> None:
    tl = layer()
    invite = request("INVITE", sent_by="Client.Example.com:5060")
    out = tl.receive(invite, UDP, 0.0)
    key = ServerKey("z9hG4bKabc123", "client.example.com:5060", "INVITE")
    assert out == [RequestReceived(key, invite, UDP)]
    assert len(tl) == 1
    assert isinstance(tl.get(key), InviteServerTransaction)


def test_retransmission_is_absorbed_by_branch_sent_by_and_method() -> None:
    tl = layer()
    invite = request("INVITE")
    tl.receive(invite, UDP, 0.0)
    assert tl.receive(wire(invite), UDP, 0.5) == []
    assert len(tl) == 1
    # Same branch from another host, or with another method, is another transaction.
    other_host = request("INVITE", sent_by="other.example.com:5060")
    assert kinds(tl.receive(other_host, UDP, 0.6)) == ["RequestReceived"]
    options = request("OPTIONS")
    out = tl.receive(options, UDP, 0.7)
    assert kinds(out) == ["RequestReceived"]
    assert isinstance(tl.get(out[0].key), NonInviteServerTransaction)
    assert len(tl) == 3


def test_retransmission_gets_the_last_response_again() -> None:
    tl = layer()
    register = request("REGISTER")
    (received,) = tl.receive(register, UDP, 0.0)
    ok = response(register, 200)
    assert tl.send_response(received.key, ok, 0.1) == [SendMessage(ok, UDP)]
    assert tl.receive(register, UDP, 0.5) == [SendMessage(ok, UDP)]


def test_ack_for_non_2xx_matches_the_invite_transaction() -> None:
    tl = layer()
    invite = request("INVITE")
    (received,) = tl.receive(invite, UDP, 0.0)
    busy = response(invite, 486)
    tl.send_response(received.key, busy, 0.0)
    assert tl.receive(build_ack(invite, busy), UDP, 0.2) == []
    tx = tl.get(received.key)
    assert tx is not None and tx.state is State.CONFIRMED
    assert tl.next_deadline() == 5.2
    assert tl.handle_timers(5.2) == [TransactionTerminated(received.key)]
    assert len(tl) == 0


def test_ack_for_2xx_has_its_own_branch_and_is_stray() -> None:
    tl = layer()
    invite = request("INVITE")
    (received,) = tl.receive(invite, UDP, 0.0)
    tl.send_response(received.key, response(invite, 200), 0.0)
    ack = request("ACK", branch=new_branch(), to_tag="tt1")
    assert tl.receive(ack, UDP, 0.1) == [StrayAck(ack, UDP)]
    # An ACK reusing the INVITE's branch does match, and goes to the TU (RFC 6026).
    same_branch_ack = request("ACK", to_tag="tt1")
    assert tl.receive(same_branch_ack, UDP, 0.2) == [
        AckReceived(received.key, same_branch_ack, UDP)
    ]


def test_cancel_is_its_own_transaction_and_finds_its_invite() -> None:
    tl = layer()
    invite = request("INVITE")
    (inv,) = tl.receive(invite, UDP, 0.0)
    cancel = request("CANCEL")
    out = tl.receive(cancel, UDP, 1.0)
    assert kinds(out) == ["RequestReceived"]
    assert out[0].key == ServerKey("z9hG4bKabc123", "client.example.com:5060", "CANCEL")
    assert out[0].key != inv.key
    assert len(tl) == 2
    target = tl.find_server_transaction_for_cancel(cancel)
    assert target is tl.get(inv.key)
    assert target is not None and target.request is invite
    # The TU answers both: 200 to the CANCEL, 487 to the INVITE.
    tl.send_response(out[0].key, response(cancel, 200), 1.0)
    tl.send_response(inv.key, response(invite, 487), 1.0)
    assert tl.find_server_transaction_for_cancel(request("CANCEL", branch=new_branch())) is None


def test_rfc2543_requests_match_on_the_whole_request() -> None:
    tl = layer()
    invite = request("INVITE", branch=None)
    (received,) = tl.receive(invite, UDP, 0.0)
    assert isinstance(received.key, LegacyServerKey)
    assert tl.receive(request("INVITE", branch=None), UDP, 0.5) == []
    # Another CSeq is another request.
    assert kinds(tl.receive(request("INVITE", branch=None, cseq=2), UDP, 0.6)) == [
        "RequestReceived"
    ]
    busy = response(invite, 486, to_tag="ourtag")
    tl.send_response(received.key, busy, 1.0)
    # The ACK carries our To tag, which the INVITE lacked: it still matches.
    wrong_tag = request("ACK", branch=None, to_tag="other")
    assert tl.receive(wrong_tag, UDP, 1.1) == [StrayAck(wrong_tag, UDP)]
    assert tl.receive(request("ACK", branch=None, to_tag="ourtag"), UDP, 1.2) == []
    tx = tl.get(received.key)
    assert tx is not None and tx.state is State.CONFIRMED


def test_rfc2543_ack_before_any_response_is_stray() -> None:
    tl = layer()
    tl.receive(request("INVITE", branch="old-style-1"), UDP, 0.0)
    ack = request("ACK", branch="old-style-1", to_tag="x")
    assert tl.receive(ack, UDP, 0.1) == [StrayAck(ack, UDP)]
    untagged = request("ACK", branch="old-style-1")
    assert tl.receive(untagged, UDP, 0.1) == []  # same key as the INVITE: absorbed


def test_rfc2543_in_dialog_reinvite_and_its_ack() -> None:
    tl = layer()
    reinvite = request("INVITE", branch=None, to_tag="dlg", cseq=5)
    (received,) = tl.receive(reinvite, UDP, 0.0)
    tl.send_response(received.key, response(reinvite, 491, to_tag="dlg"), 0.0)
    assert tl.receive(request("ACK", branch=None, to_tag="dlg", cseq=5), UDP, 0.1) == []
    tx = tl.get(received.key)
    assert tx is not None and tx.state is State.CONFIRMED


def test_rfc2543_cancel_finds_its_invite() -> None:
    tl = layer()
    (received,) = tl.receive(request("INVITE", branch=None), UDP, 0.0)
    cancel = request("CANCEL", branch=None)
    assert kinds(tl.receive(cancel, UDP, 0.1)) == ["RequestReceived"]
    assert tl.find_server_transaction_for_cancel(cancel) is tl.get(received.key)


def test_automatic_100_trying() -> None:
    tl = TransactionLayer()
    invite = request("INVITE")
    tl.receive(invite, UDP, 0.0)
    assert tl.next_deadline() == 0.2
    out = tl.handle_timers(0.2)
    assert [m.message.status for m in sent(out)] == [100]
    immediate = TransactionLayer(trying_after=0.0)
    assert kinds(immediate.receive(invite, UDP, 0.0)) == ["SendMessage", "RequestReceived"]
    # Non-INVITE requests never get an automatic 100.
    assert kinds(immediate.receive(request("OPTIONS"), UDP, 0.0)) == ["RequestReceived"]


def test_send_response_on_a_gone_transaction_raises() -> None:
    tl = layer()
    with pytest.raises(TransactionError):
        tl.send_response(ServerKey("z9hG4bKx", "h", "INVITE"), response(request(), 200), 0.0)


def test_reliable_non_invite_is_removed_on_its_final() -> None:
    tl = layer()
    register = request("REGISTER", transport="TCP")
    (received,) = tl.receive(register, TCP, 0.0)
    out = tl.send_response(received.key, response(register, 200), 0.0)
    assert kinds(out) == ["SendMessage", "TransactionTerminated"]
    assert out[0].destination == TCP
    assert len(tl) == 0
    assert tl.next_deadline() is None
    # A late copy is a new request as far as the layer knows.
    assert kinds(tl.receive(register, TCP, 0.1)) == ["RequestReceived"]


# -- client side matching --------------------------------------------------------------


def test_send_request_creates_a_client_transaction() -> None:
    tl = layer()
    invite = request("INVITE", branch=new_branch())
    key, out = tl.send_request(invite, UDP, 0.0)
    assert key == ClientKey(invite.top_via.branch, "INVITE")
    assert out == [SendMessage(invite, UDP)]
    assert isinstance(tl.get(key), InviteClientTransaction)
    assert tl.next_deadline() == 0.5


def test_responses_match_by_branch_and_cseq_method() -> None:
    tl = layer()
    branch = new_branch()
    invite = request("INVITE", branch=branch)
    inv_key, _ = tl.send_request(invite, UDP, 0.0)
    ringing = wire(response(invite, 180))
    assert tl.receive(ringing, UDP, 0.1) == [ResponseReceived(inv_key, ringing)]
    # The 200 for a CANCEL on the same branch is stray until the CANCEL is sent.
    cancel = request("CANCEL", branch=branch)
    cancel_ok = wire(response(cancel, 200))
    assert tl.receive(cancel_ok, UDP, 0.2) == [StrayResponse(cancel_ok, UDP)]
    cancel_key, _ = tl.send_request(cancel, UDP, 0.3)
    assert cancel_key == ClientKey(branch, "CANCEL")
    assert tl.receive(cancel_ok, UDP, 0.4) == [ResponseReceived(cancel_key, cancel_ok)]
    terminated = wire(response(invite, 487))
    out = tl.receive(terminated, UDP, 0.5)
    assert kinds(out) == ["SendMessage", "ResponseReceived"]
    assert out[1] == ResponseReceived(inv_key, terminated)


def test_unknown_responses_are_stray() -> None:
    tl = layer()
    unknown = response(request("INVITE", branch=new_branch()), 200)
    assert tl.receive(unknown, UDP, 0.0) == [StrayResponse(unknown, UDP)]
    no_branch = response(request("INVITE", branch=None), 200)
    assert tl.receive(no_branch, UDP, 0.0) == [StrayResponse(no_branch, UDP)]


def test_2xx_after_the_transaction_ended_is_stray() -> None:
    tl = layer()
    invite = request("INVITE", branch=new_branch())
    key, _ = tl.send_request(invite, UDP, 0.0)
    ok = response(invite, 200)
    assert tl.receive(ok, UDP, 1.0) == [ResponseReceived(key, ok)]
    assert tl.receive(ok, UDP, 2.0) == [ResponseReceived(key, ok)]
    assert tl.next_deadline() == 33.0
    assert tl.handle_timers(33.0) == [TransactionTerminated(key)]
    assert tl.receive(ok, UDP, 34.0) == [StrayResponse(ok, UDP)]


def test_send_request_rejects_ack_foreign_branches_and_duplicates() -> None:
    tl = layer()
    with pytest.raises(TransactionError):
        tl.send_request(request("ACK"), UDP, 0.0)
    with pytest.raises(ValueError):
        tl.send_request(request("INVITE", branch="1234"), UDP, 0.0)
    with pytest.raises(ValueError):
        tl.send_request(request("INVITE", branch=None), UDP, 0.0)
    tl.send_request(request("INVITE"), UDP, 0.0)
    with pytest.raises(TransactionError):
        tl.send_request(request("INVITE"), UDP, 0.0)


def test_timeouts_reach_the_tu_and_clear_the_table() -> None:
    tl = layer()
    inv_key, _ = tl.send_request(request("INVITE", branch=new_branch()), UDP, 0.0)
    opt_key, _ = tl.send_request(request("OPTIONS", branch=new_branch()), TCP, 0.0)
    register = request("REGISTER")
    (srv,) = tl.receive(register, UDP, 0.0)
    tl.send_response(srv.key, response(register, 200), 0.0)
    retransmissions = []
    while (deadline := tl.next_deadline()) is not None and deadline < 32.0:
        retransmissions += sent(tl.handle_timers(deadline))
    # Timer A fired six times for the INVITE over UDP; the OPTIONS over TCP has no E.
    assert [m.message.method for m in retransmissions] == ["INVITE"] * 6
    out = tl.handle_timers(32.0)
    assert TransactionTimedOut(inv_key) in out and TransactionTimedOut(opt_key) in out
    assert TransactionTerminated(srv.key) in out
    assert len(tl) == 0
    assert tl.next_deadline() is None


def test_transport_error_and_terminate_remove_the_transaction() -> None:
    tl = layer()
    key, _ = tl.send_request(request("INVITE", branch=new_branch()), UDP, 0.0)
    assert kinds(tl.transport_error(key, 0.1)) == ["TransportError", "TransactionTerminated"]
    assert len(tl) == 0 and tl.next_deadline() is None
    assert tl.transport_error(key, 0.2) == []
    (srv,) = tl.receive(request("INVITE"), UDP, 0.0)
    assert tl.terminate(srv.key) == [TransactionTerminated(srv.key)]
    assert tl.terminate(srv.key) == []
    assert len(tl) == 0


# -- timers over many transactions ------------------------------------------------------


def test_next_deadline_over_many_transactions() -> None:
    tl = layer()
    n, half = 10_000, 5_000
    keys = []
    for i in range(n):
        key, _ = tl.send_request(request("OPTIONS", branch=new_branch()), UDP, i * 0.002)
        keys.append(key)
    assert len(tl) == n
    assert tl.next_deadline() == 0.5
    # Answer the first half: their Timer E stops and Timer K (T4) takes over.
    for i, key in enumerate(keys[:half]):
        tx = tl.get(key)
        assert tx is not None
        tl.receive(response(tx.request, 200), UDP, 0.4 + i * 0.0001)
    assert tl.next_deadline() == 0.4 + 5.0
    out = tl.handle_timers(0.4 + (half - 1) * 0.0001 + 5.0)
    assert kinds(out) == ["TransactionTerminated"] * half
    assert len(tl) == n - half
    assert tl.next_deadline() == half * 0.002 + 0.5
    out = tl.handle_timers(100.0)
    assert kinds(out).count("TransactionTimedOut") == n - half
    assert len(tl) == 0
    assert tl.next_deadline() is None


def test_stale_heap_entries_are_purged() -> None:
    tl = layer()
    for _ in range(3000):
        invite = request("INVITE", branch=new_branch())
        tl.send_request(invite, UDP, 0.0)
        # Each 180 moves the deadline: the old heap entries go stale.
        tl.receive(response(invite, 180), UDP, 0.1)
        tl.receive(response(invite, 486), UDP, 0.2)
    assert len(tl) == 3000
    assert len(tl._heap) <= 2 * len(tl) + 1024
    assert tl.next_deadline() == 32.2


def test_scaled_config_scales_every_t1_timer() -> None:
    tl = layer(config=TimerConfig(t1=0.01))
    inv_key, _ = tl.send_request(request("INVITE", branch=new_branch()), UDP, 0.0)
    assert tl.next_deadline() == 0.01
    tl.handle_timers(0.01)
    assert tl.next_deadline() == 0.03
    register = request("REGISTER")
    (srv,) = tl.receive(register, UDP, 0.0)
    tl.send_response(srv.key, response(register, 200), 0.0)
    out = tl.handle_timers(0.64)
    assert TransactionTimedOut(inv_key) in out
    assert TransactionTerminated(srv.key) in out
    assert len(tl) == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["invite", "options", "in-invite", "in-register", "resp", "tick"]),
            st.integers(0, 9),
            st.sampled_from([100, 180, 200, 486]),
            st.floats(0.0, 3.0),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_next_deadline_is_always_the_earliest_live_timer(
    ops: list[tuple[str, int, int, float, bool]],
) -> None:
    tl = layer(trying_after=0.2)
    now = 0.0
    clients: list[tuple[ClientKey, Request]] = []
    servers: list[tuple[TransactionKey, Request]] = []
    for op, pick, status, step, reliable in ops:
        dest = TCP if reliable else UDP
        transport = "TCP" if reliable else "UDP"
        if op in ("invite", "options"):
            method = "INVITE" if op == "invite" else "OPTIONS"
            req = request(method, branch=new_branch())
            key, _ = tl.send_request(req, dest, now)
            clients.append((key, req))
        elif op in ("in-invite", "in-register"):
            method = "INVITE" if op == "in-invite" else "REGISTER"
            req = request(method, branch=new_branch(), transport=transport)
            for event in tl.receive(req, dest, now):
                if isinstance(event, RequestReceived):
                    servers.append((event.key, req))
        elif op == "resp" and clients:
            _, req = clients[pick % len(clients)]
            tl.receive(response(req, status), dest, now)
        elif op == "resp" and servers:
            key, req = servers[pick % len(servers)]
            if tl.get(key) is not None:
                try:
                    tl.send_response(key, response(req, status), now)
                except TransactionError:
                    pass
        else:
            now += step
            tl.handle_timers(now)
        live = [tl.get(k) for k, _ in clients + servers]
        live = [tx for tx in live if tx is not None]
        assert len(live) == len(tl)
        assert all(tx.state is not State.TERMINATED for tx in live)
        deadlines = [d for tx in live if (d := tx.next_deadline()) is not None]
        assert tl.next_deadline() == (min(deadlines) if deadlines else None)
        if op == "tick":
            assert all(d > now for d in deadlines)


# -- an in-memory UAC <-> UAS pair over a lossy network -----------------------------------


def test_invite_rejected_over_a_lossy_network() -> None:
    # Two INVITE copies and two 486 copies are lost; the ACK gets through.
    pair = uac_uas_pair(answer_with(486), loss_to_uas=[True, True], loss_to_uac=[True, True])
    invite = request("INVITE", branch=new_branch())
    key, out = pair.uac.send_request(invite, UDP, 0.0)
    pair.dispatch(pair.uac, out, 0.0)
    end = pair.run()
    to_uas, to_uac = pair.uac_to_uas, pair.uas_to_uac
    # INVITE at 0.0 (lost), 0.5 (lost), 1.5 (arrives); the UAS answers 486 at once,
    # Timer G resends it at 2.0 (lost) and 3.0 (arrives), and the UAC ACKs.
    assert [m.method for m in to_uas.dropped] == ["INVITE", "INVITE"]
    assert [m.method for m in to_uas.carried] == ["INVITE", "ACK"]
    assert [m.status for m in to_uac.dropped + to_uac.carried] == [486, 486, 486]
    assert kinds(pair.uas_events) == ["RequestReceived", "TransactionTerminated"]
    assert pair.uac_events[0] == ResponseReceived(key, pair.uac_events[0].response)
    assert pair.uac_events[0].response.status == 486
    assert kinds(pair.uac_events) == ["ResponseReceived", "TransactionTerminated"]
    # The UAS dies on Timer I (3.0 + T4), the UAC on Timer D (3.0 + 64*T1).
    assert end == 3.0 + 32.0
    assert len(pair.uac) == 0 and len(pair.uas) == 0


def test_non_invite_over_a_lossy_network() -> None:
    pair = uac_uas_pair(answer_with(200), loss_to_uas=[True, True], loss_to_uac=[True, True])
    options = request("OPTIONS", branch=new_branch())
    key, out = pair.uac.send_request(options, UDP, 0.0)
    pair.dispatch(pair.uac, out, 0.0)
    end = pair.run()
    # OPTIONS at 0.0 and 0.5 are lost, 1.5 arrives and is answered (lost); the copy at
    # 3.5 gets the cached 200 again (lost); the copy at 7.5 gets it through.
    assert len(pair.uac_to_uas.dropped) == 2
    assert len(pair.uac_to_uas.carried) == 3
    assert [m.status for m in pair.uas_to_uac.dropped + pair.uas_to_uac.carried] == [200] * 3
    assert kinds(pair.uas_events) == ["RequestReceived", "TransactionTerminated"]
    assert kinds(pair.uac_events) == ["ResponseReceived", "TransactionTerminated"]
    assert pair.uac_events[0] == ResponseReceived(key, pair.uac_events[0].response)
    # UAS: Timer J from the first 200 at 1.5; UAC: Timer K from 7.5.
    assert end == 1.5 + 32.0


def test_invite_answered_over_a_lossy_network_with_scaled_timers() -> None:
    config = TimerConfig(t1=0.01, t2=0.04)
    pair = uac_uas_pair(
        answer_with(200), loss_to_uas=[True, True], loss_to_uac=[True], config=config
    )
    invite = request("INVITE", branch=new_branch())
    key, out = pair.uac.send_request(invite, UDP, 0.0)
    pair.dispatch(pair.uac, out, 0.0)
    end = pair.run()
    # The 2xx is lost and the transaction does not retransmit it (the TU would):
    # the UAC keeps retransmitting its INVITE, which the UAS absorbs in Accepted.
    assert [m.method for m in pair.uac_to_uas.carried][:1] == ["INVITE"]
    assert len(pair.uas_to_uac.dropped) == 1 and not pair.uas_to_uac.carried
    assert kinds(pair.uas_events) == ["RequestReceived", "TransactionTerminated"]
    assert kinds(pair.uac_events) == ["TransactionTimedOut", "TransactionTerminated"]
    assert end == pytest.approx(0.64 + 0.03)
    assert key not in pair.uac._clients
