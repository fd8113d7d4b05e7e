"""Client transactions: RFC 3261 17.1.1 (INVITE, with RFC 6026's Accepted state) and
17.1.2 (non-INVITE).

Rules for this file (h11's _state.py discipline):
1. Everything that decides a client transaction's state and timers lives here; the
   layer only routes messages in and schedules the deadlines these objects report.
2. No I/O and no clock reads: every input carries ``now`` and every effect is returned
   as an output event.
3. No TU policy: this file never decides whether to CANCEL, fork, retry or ACK a 2xx.
   It knows only what RFC 3261 section 17 says a transaction does.

Each transaction has two timer slots (PJSIP): a retransmit slot (A or E) and a timeout
slot (B, D, F, K or M). Which RFC timer a slot holds follows from the state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from softswitch.sip.headers import Headers, header_key
from softswitch.sip.message import Request, Response
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction.base import TransactionBase
from softswitch.sip.transaction.events import (
    Destination,
    Event,
    ResponseReceived,
    SendMessage,
    State,
    TransactionTimedOut,
)
from softswitch.sip.transaction.keys import ClientKey


class ClientTransaction(TransactionBase):
    __slots__ = ("destination",)

    _response_handlers: ClassVar[dict[State, Callable[..., list[Event]]]]

    def __init__(
        self,
        key: ClientKey,
        request: Request,
        destination: Destination,
        config: TimerConfig,
        reliable: bool,
    ) -> None:
        super().__init__(key, request, config, reliable)
        self.destination = destination

    def receive_response(self, response: Response, now: float) -> list[Event]:
        return self._response_handlers[self.state](self, response, now)

    def _send_request(self) -> SendMessage:
        return SendMessage(self.request, self.destination)

    def _ignore(self, response: Response, now: float) -> list[Event]:
        return []


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 figure 5 as amended by RFC 6026 figure 3: Calling -> Proceeding ->
    Completed (non-2xx, ACKed here) or Accepted (2xx, ACKed by the TU) -> Terminated."""

    __slots__ = ("_ack",)
    _initial_state = State.CALLING

    def __init__(
        self,
        key: ClientKey,
        request: Request,
        destination: Destination,
        config: TimerConfig,
        reliable: bool,
    ) -> None:
        super().__init__(key, request, destination, config, reliable)
        self._ack: Request | None = None

    def start(self, now: float) -> list[Event]:
        if not self.reliable:
            self._interval = self.config.timer_a
            self._retransmit_at = now + self._interval
        self._timeout_at = now + self.config.timer_b
        return [self._send_request()]

    @property
    def ack(self) -> Request | None:
        """The ACK this transaction built for a non-2xx final response, once it has one."""
        return self._ack

    def _on_retransmit(self, now: float) -> list[Event]:
        # Timer A doubles without a cap: Timer B ends the sequence after seven sends.
        self._interval *= 2
        self._retransmit_at = now + self._interval
        return [self._send_request()]

    def _on_timeout(self) -> list[Event]:
        if self.state is State.CALLING:
            return [TransactionTimedOut(self.key), *self._terminate()]
        return self._terminate()

    def _calling_or_proceeding(self, response: Response, now: float) -> list[Event]:
        status = response.status
        if status < 200:
            if self.state is State.CALLING:
                # A 1xx proves the INVITE arrived: no more retransmissions, and Timer B
                # no longer applies; from here on the TU's Timer C or CANCEL decides.
                self._retransmit_at = self._timeout_at = None
                self._set_state(State.PROCEEDING)
            return [ResponseReceived(self.key, response)]
        self._retransmit_at = None
        if status < 300:
            self._timeout_at = now + self.config.timer_m
            self._set_state(State.ACCEPTED)
            return [ResponseReceived(self.key, response)]
        self._ack = build_ack(self.request, response)
        out: list[Event] = [
            SendMessage(self._ack, self.destination),
            ResponseReceived(self.key, response),
        ]
        self._set_state(State.COMPLETED)
        wait = self.config.timer_d_for(self.reliable)
        if wait > 0:
            self._timeout_at = now + wait
        else:
            out.extend(self._terminate())
        return out

    def _completed(self, response: Response, now: float) -> list[Event]:
        # A retransmitted final means our ACK was lost: send it again, tell nobody.
        if response.status >= 300 and self._ack is not None:
            return [SendMessage(self._ack, self.destination)]
        return []

    def _accepted(self, response: Response, now: float) -> list[Event]:
        # Each 2xx copy goes up so the TU can re-send its ACK (RFC 6026 section 8.4).
        if 200 <= response.status < 300:
            return [ResponseReceived(self.key, response)]
        return []


InviteClientTransaction._response_handlers = {
    State.CALLING: InviteClientTransaction._calling_or_proceeding,
    State.PROCEEDING: InviteClientTransaction._calling_or_proceeding,
    State.COMPLETED: InviteClientTransaction._completed,
    State.ACCEPTED: InviteClientTransaction._accepted,
    State.TERMINATED: ClientTransaction._ignore,
}


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 figure 6: Trying -> Proceeding -> Completed -> Terminated."""

    __slots__ = ()
    _initial_state = State.TRYING

    def start(self, now: float) -> list[Event]:
        if not self.reliable:
            self._interval = self.config.timer_e
            self._retransmit_at = now + self._interval
        self._timeout_at = now + self.config.timer_f
        return [self._send_request()]

    def _on_retransmit(self, now: float) -> list[Event]:
        # Trying backs off from T1 up to T2; once a 1xx arrives the peer is known to be
        # working on it, so Proceeding keeps a steady T2 (RFC 3261 17.1.2.2).
        if self.state is State.TRYING:
            self._interval = min(self._interval * 2, self.config.t2)
        else:
            self._interval = self.config.t2
        self._retransmit_at = now + self._interval
        return [self._send_request()]

    def _on_timeout(self) -> list[Event]:
        if self.state is State.COMPLETED:
            return self._terminate()
        return [TransactionTimedOut(self.key), *self._terminate()]

    def _trying_or_proceeding(self, response: Response, now: float) -> list[Event]:
        out: list[Event] = [ResponseReceived(self.key, response)]
        if response.status < 200:
            if self.state is State.TRYING:
                self._set_state(State.PROCEEDING)
            return out
        self._retransmit_at = self._timeout_at = None
        self._set_state(State.COMPLETED)
        wait = self.config.timer_k_for(self.reliable)
        if wait > 0:
            self._timeout_at = now + wait
        else:
            out.extend(self._terminate())
        return out


NonInviteClientTransaction._response_handlers = {
    State.TRYING: NonInviteClientTransaction._trying_or_proceeding,
    State.PROCEEDING: NonInviteClientTransaction._trying_or_proceeding,
    # Completed only absorbs retransmitted finals (Timer K).
    State.COMPLETED: ClientTransaction._ignore,
    State.TERMINATED: ClientTransaction._ignore,
}


_ACK_COPIED = frozenset({"via", "route", "max-forwards", "from", "to", "call-id", "cseq"})


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (RFC 3261 17.1.1.3): the INVITE's
    Request-URI, Call-ID, From, CSeq number, top Via and Route set, the response's To.

    Header names keep the INVITE's spelling and order; Max-Forwards is carried over, or
    added, because every request needs one (RFC 3261 8.1.1.6).
    """
    to_value = response.headers.get("to") or ""
    cseq = f"{invite.cseq.seq} ACK"
    lines: list[tuple[str, str]] = []
    have_via = have_max_forwards = False
    for name, value in invite.headers:
        key = header_key(name)
        if key not in _ACK_COPIED:
            continue
        if key == "via":
            if have_via:
                continue
            have_via = True
            # Only the first element of a possibly comma-joined Via line is ours.
            value = invite.headers.values("via")[0]
        elif key == "to":
            value = to_value
        elif key == "cseq":
            value = cseq
        elif key == "max-forwards":
            have_max_forwards = True
        lines.append((name, value))
    if not have_max_forwards:
        lines.append(("Max-Forwards", "70"))
    return Request("ACK", invite.uri, Headers(lines))
