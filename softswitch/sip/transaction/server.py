"""Server transactions: RFC 3261 17.2.1 (INVITE, with RFC 6026's Accepted state) and
17.2.2 (non-INVITE).

Rules for this file (h11's _state.py discipline):
1. Everything that decides a server transaction's state and timers lives here; the
   layer only routes messages in and schedules the deadlines these objects report.
2. No I/O and no clock reads: every input carries ``now`` and every effect is returned
   as an output event.
3. No TU policy: this file never chooses a response. The one response it makes itself,
   the automatic 100 Trying, is required of it by RFC 3261 17.2.1.

Each transaction has two timer slots (PJSIP): a retransmit slot (G, or the 100 Trying
delay while Proceeding) and a timeout slot (H, I, J or L).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from softswitch.sip.message import Request, Response, make_response
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction.base import TransactionBase
from softswitch.sip.transaction.events import (
    AckReceived,
    Destination,
    Event,
    RequestReceived,
    SendMessage,
    State,
    TransactionError,
    TransactionTimedOut,
)
from softswitch.sip.transaction.keys import LegacyServerKey, ServerKey

_Handler = Callable[..., list[Event]]


class ServerTransaction(TransactionBase):
    __slots__ = ("source", "last_response", "_response_destination")

    _request_handlers: ClassVar[dict[State, _Handler]]
    _response_handlers: ClassVar[dict[State, _Handler]]

    def __init__(
        self,
        key: ServerKey | LegacyServerKey,
        request: Request,
        source: Destination,
        config: TimerConfig,
        reliable: bool,
    ) -> None:
        super().__init__(key, request, config, reliable)
        self.source = source
        self.last_response: Response | None = None
        self._response_destination = source

    def start(self, now: float) -> list[Event]:
        return [RequestReceived(self.key, self.request, self.source)]

    def receive_request(self, request: Request, now: float) -> list[Event]:
        """A request matched to this transaction: a retransmission, or an ACK."""
        return self._request_handlers[self.state](self, request, now)

    def send_response(
        self, response: Response, now: float, destination: Destination | None = None
    ) -> list[Event]:
        """Send a response from the TU. ``destination`` overrides where it goes (the
        transport may route by Via, RFC 3261 18.2.2); retransmissions follow it."""
        handler = self._response_handlers.get(self.state)
        if handler is None:
            raise TransactionError(
                f"cannot send {response.status} on {type(self).__name__} in {self.state.value}"
            )
        if destination is not None:
            self._response_destination = destination
        return handler(self, response, now)

    def _send(self, response: Response) -> SendMessage:
        self.last_response = response
        return SendMessage(response, self._response_destination)

    def _resend_last(self, request: Request, now: float) -> list[Event]:
        if self.last_response is None:
            return []
        return [SendMessage(self.last_response, self._response_destination)]

    def _absorb(self, request: Request, now: float) -> list[Event]:
        return []


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 figure 7 as amended by RFC 6026 figure 5: Proceeding -> Completed ->
    Confirmed (non-2xx) or Accepted (2xx) -> Terminated."""

    __slots__ = ("_trying_after",)
    _initial_state = State.PROCEEDING

    def __init__(
        self,
        key: ServerKey | LegacyServerKey,
        request: Request,
        source: Destination,
        config: TimerConfig,
        reliable: bool,
        trying_after: float | None = 0.2,
    ) -> None:
        """``trying_after``: seconds after which the transaction answers 100 Trying if
        the TU has sent nothing (RFC 3261 17.2.1: 200 ms); 0 sends it at once, None
        leaves it to the TU."""
        super().__init__(key, request, source, config, reliable)
        self._trying_after = trying_after

    def start(self, now: float) -> list[Event]:
        received = RequestReceived(self.key, self.request, self.source)
        if self._trying_after is None:
            return [received]
        if self._trying_after <= 0:
            return [self._send(make_response(self.request, 100)), received]
        # The retransmit slot is idle while Proceeding, so it holds the 100 delay.
        self._retransmit_at = now + self._trying_after
        return [received]

    def _on_retransmit(self, now: float) -> list[Event]:
        if self.state is State.PROCEEDING:
            # The 100 Trying delay: any TU response would have cleared it.
            self._retransmit_at = None
            return [self._send(make_response(self.request, 100))]
        # Timer G: resend the non-2xx final, backing off up to T2.
        self._interval = min(self._interval * 2, self.config.t2)
        self._retransmit_at = now + self._interval
        return self._resend_last(self.request, now)

    def _on_timeout(self) -> list[Event]:
        if self.state is State.COMPLETED:
            # Timer H: the ACK never came.
            return [TransactionTimedOut(self.key), *self._terminate()]
        return self._terminate()

    # -- requests matched to the transaction --

    def _completed_request(self, request: Request, now: float) -> list[Event]:
        if request.method != "ACK":
            return self._resend_last(request, now)
        self._retransmit_at = self._timeout_at = None
        self._set_state(State.CONFIRMED)
        wait = self.config.timer_i_for(self.reliable)
        if wait > 0:
            self._timeout_at = now + wait
            return []
        return self._terminate()

    def _proceeding_request(self, request: Request, now: float) -> list[Event]:
        if request.method == "ACK":
            return []
        return self._resend_last(request, now)

    def _accepted_request(self, request: Request, now: float) -> list[Event]:
        # RFC 6026 section 8.7: INVITE copies are absorbed, an ACK is the TU's.
        if request.method == "ACK":
            return [AckReceived(self.key, request, self.source)]
        return []

    # -- responses from the TU --

    def _proceeding_response(self, response: Response, now: float) -> list[Event]:
        status = response.status
        self._retransmit_at = None
        out: list[Event] = [self._send(response)]
        if status < 200:
            return out
        if status < 300:
            # The TU retransmits a 2xx until the ACK comes (RFC 3261 13.3.1.4); the
            # transaction lingers only to absorb INVITE copies and pass ACKs up.
            self._timeout_at = now + self.config.timer_l
            self._set_state(State.ACCEPTED)
            return out
        if not self.reliable:
            self._interval = self.config.timer_g
            self._retransmit_at = now + self._interval
        self._timeout_at = now + self.config.timer_h
        self._set_state(State.COMPLETED)
        return out

    def _accepted_response(self, response: Response, now: float) -> list[Event]:
        # Only the TU's own 2xx retransmissions (or a 2xx from another fork of a
        # proxied INVITE) may follow a 2xx.
        if not 200 <= response.status < 300:
            raise TransactionError(f"cannot send {response.status} after a 2xx")
        return [self._send(response)]


InviteServerTransaction._request_handlers = {
    State.PROCEEDING: InviteServerTransaction._proceeding_request,
    State.COMPLETED: InviteServerTransaction._completed_request,
    State.CONFIRMED: ServerTransaction._absorb,
    State.ACCEPTED: InviteServerTransaction._accepted_request,
    State.TERMINATED: ServerTransaction._absorb,
}
InviteServerTransaction._response_handlers = {
    State.PROCEEDING: InviteServerTransaction._proceeding_response,
    State.ACCEPTED: InviteServerTransaction._accepted_response,
}


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 figure 8: Trying -> Proceeding -> Completed -> Terminated."""

    __slots__ = ()
    _initial_state = State.TRYING

    def _on_timeout(self) -> list[Event]:
        return self._terminate()

    def _trying_or_proceeding_response(self, response: Response, now: float) -> list[Event]:
        out: list[Event] = [self._send(response)]
        if response.status < 200:
            if self.state is State.TRYING:
                self._set_state(State.PROCEEDING)
            return out
        self._set_state(State.COMPLETED)
        wait = self.config.timer_j_for(self.reliable)
        if wait > 0:
            self._timeout_at = now + wait
        else:
            out.extend(self._terminate())
        return out


NonInviteServerTransaction._request_handlers = {
    # In Trying the TU has not answered yet, so there is nothing to repeat.
    State.TRYING: ServerTransaction._absorb,
    State.PROCEEDING: ServerTransaction._resend_last,
    State.COMPLETED: ServerTransaction._resend_last,
    State.TERMINATED: ServerTransaction._absorb,
}
NonInviteServerTransaction._response_handlers = {
    State.TRYING: NonInviteServerTransaction._trying_or_proceeding_response,
    State.PROCEEDING: NonInviteServerTransaction._trying_or_proceeding_response,
}
