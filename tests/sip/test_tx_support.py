"""Message builders and an in-memory UAC<->UAS pair for the transaction tests, plus the
tests of keys and branches they rely on.

Messages are written as text and parsed, so the transactions see what a transport
would hand them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from softswitch.sip.message import Request, Response, make_response, parse_message
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    MAGIC_COOKIE,
    ClientKey,
    Destination,
    Event,
    LegacyServerKey,
    RequestReceived,
    SendMessage,
    ServerKey,
    TransactionLayer,
    new_branch,
)
from softswitch.sip.transaction.keys import invite_key_for_cancel, response_key, server_key

UDP = Destination("UDP", "192.0.2.10", 5060)
TCP = Destination("TCP", "192.0.2.10", 5060, connection_id=7)
UAC_ADDR = Destination("UDP", "198.51.100.1", 5060)
UAS_ADDR = Destination("UDP", "198.51.100.2", 5060)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKabc123",
    sent_by: str = "client.example.com:5060",
    transport: str = "UDP",
    cseq: int = 1,
    call_id: str = "call-1@client.example.com",
    from_tag: str = "ft1",
    to_tag: str | None = None,
    uri: str = "sip:bob@example.com",
    extra: Iterable[str] = (),
) -> Request:
    via = f"SIP/2.0/{transport} {sent_by}"
    if branch is not None:
        via += f";branch={branch}"
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: Alice <sip:alice@example.com>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *extra,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def response(req: Request, status: int, to_tag: str | None = "tt1") -> Response:
    return make_response(req, status, to_tag=to_tag)


def sent(events: Iterable[Event]) -> list[SendMessage]:
    return [e for e in events if isinstance(e, SendMessage)]


def kinds(events: Iterable[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def wire(message: Request | Response) -> Request | Response:
    """What the peer parses after the message crossed the network."""
    return parse_message(message.to_bytes())


# -- an in-memory pair of layers (aioquic's client_and_server/roundtrip) --------------


@dataclass
class Link:
    """One direction of a lossy network: message n is dropped when loss_pattern[n]."""

    loss_pattern: list[bool] = field(default_factory=list)
    carried: list[Request | Response] = field(default_factory=list)
    dropped: list[Request | Response] = field(default_factory=list)

    def passes(self, message: Request | Response) -> bool:
        n = len(self.carried) + len(self.dropped)
        lost = n < len(self.loss_pattern) and self.loss_pattern[n]
        (self.dropped if lost else self.carried).append(message)
        return not lost


TU = Callable[[TransactionLayer, Event, float], list[Event]]


@dataclass
class Pair:
    uac: TransactionLayer
    uas: TransactionLayer
    uas_tu: TU
    uac_to_uas: Link
    uas_to_uac: Link
    uac_events: list[Event] = field(default_factory=list)
    uas_events: list[Event] = field(default_factory=list)

    def dispatch(self, layer: TransactionLayer, events: list[Event], now: float) -> None:
        for event in events:
            if isinstance(event, SendMessage):
                self._transfer(layer, event, now)
            elif layer is self.uas:
                self.uas_events.append(event)
                self.dispatch(layer, self.uas_tu(layer, event, now), now)
            else:
                self.uac_events.append(event)

    def _transfer(self, layer: TransactionLayer, event: SendMessage, now: float) -> None:
        if layer is self.uac:
            link, peer, source = self.uac_to_uas, self.uas, UAC_ADDR
        else:
            link, peer, source = self.uas_to_uac, self.uac, UAS_ADDR
        if link.passes(event.message):
            self.dispatch(peer, peer.receive(wire(event.message), source, now), now)

    def run(self, limit: float = 1000.0) -> float:
        """Fire timers in deadline order until neither layer has one; returns the time."""
        now = 0.0
        for _ in range(10_000):
            pending = (self.uac.next_deadline(), self.uas.next_deadline())
            deadlines = [d for d in pending if d is not None]
            if not deadlines:
                return now
            now = min(deadlines)
            assert now <= limit
            for layer in (self.uac, self.uas):
                self.dispatch(layer, layer.handle_timers(now), now)
        raise AssertionError("the pair never went quiet")


def uac_uas_pair(
    uas_tu: TU,
    *,
    loss_to_uas: list[bool] | None = None,
    loss_to_uac: list[bool] | None = None,
    config: TimerConfig | None = None,
) -> Pair:
    return Pair(
        TransactionLayer(config, trying_after=None),
        TransactionLayer(config, trying_after=None),
        uas_tu,
        Link(loss_to_uas or []),
        Link(loss_to_uac or []),
    )


def answer_with(status: int) -> TU:
    """A UAS TU that answers every new request with ``status`` at once."""

    def tu(layer: TransactionLayer, event: Event, now: float) -> list[Event]:
        if isinstance(event, RequestReceived) and event.request.method != "ACK":
            return layer.send_response(event.key, response(event.request, status), now)
        return []

    return tu


# -- keys ------------------------------------------------------------------------------


def test_new_branch_has_the_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith(MAGIC_COOKIE) and len(b) > len(MAGIC_COOKIE) + 16 for b in branches)


def test_server_key_counts_ack_as_invite_and_lowercases_host() -> None:
    invite = request("INVITE", sent_by="Client.Example.COM:5060")
    assert server_key(invite) == ServerKey("z9hG4bKabc123", "client.example.com:5060", "INVITE")
    assert server_key(request("ACK")) == server_key(request("INVITE"))
    assert server_key(request("CANCEL")).method == "CANCEL"
    assert invite_key_for_cancel(request("CANCEL")) == server_key(request("INVITE"))


def test_server_key_without_cookie_falls_back_to_rfc2543() -> None:
    key = server_key(request("INVITE", branch="1234", to_tag=None))
    assert isinstance(key, LegacyServerKey)
    assert key.request_uri == "sip:bob@example.com"
    assert (key.from_tag, key.to_tag, key.cseq, key.method) == ("ft1", None, 1, "INVITE")
    assert isinstance(server_key(request("OPTIONS", branch=None)), LegacyServerKey)


def test_response_key_uses_branch_and_cseq_method() -> None:
    assert response_key(response(request("CANCEL"), 200)) == ClientKey("z9hG4bKabc123", "CANCEL")
