"""The vocabulary of the transaction layer: where messages go, what states a transaction
passes through, and the typed outputs handed to the transport and to the TU.

Outputs come back as a list from every call into the layer (aioquic's events, returned
rather than queued). Those addressed to the transport are SendMessage; everything else is
for the transaction user.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from softswitch.sip.message import Message, Request, Response
from softswitch.sip.transaction.keys import ClientKey, LegacyServerKey, ServerKey, TransactionKey

RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a message goes or came from; opaque to the transaction layer except for
    whether its transport is reliable (which switches retransmissions off)."""

    transport: str
    """The Via transport token, upper case: UDP, TCP, TLS, WS, WSS, SCTP."""
    host: str
    port: int
    connection_id: int | None = None
    """The stream connection a message arrived on, so responses can go back on it."""

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class TransactionError(ValueError):
    """The TU asked for something the transaction cannot do in its state (a response on
    a finished transaction, a second transaction on one branch). A bug in the caller."""


class Event:
    """Base of every output of the transaction layer."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SendMessage(Event):
    """For the transport: put this message on the wire."""

    message: Message
    destination: Destination


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A request that started a new server transaction; the TU answers it through
    ``TransactionLayer.send_response(key, ...)``."""

    key: ServerKey | LegacyServerKey
    request: Request
    source: Destination


@dataclass(frozen=True, slots=True)
class AckReceived(Event):
    """An ACK that matched an INVITE server transaction in Accepted state (RFC 6026): it
    acknowledges our 2xx, which is the TU's business."""

    key: ServerKey | LegacyServerKey
    request: Request
    source: Destination


@dataclass(frozen=True, slots=True)
class StrayAck(Event):
    """An ACK that matched no transaction: normally the ACK for a 2xx, which carries its
    own branch and belongs to the dialog (RFC 3261 17.2.3, 13.3.1.4)."""

    request: Request
    source: Destination


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response for a client transaction. In Accepted state these are retransmitted
    2xx responses, passed up so the TU can ACK them again (RFC 6026)."""

    key: ClientKey
    response: Response


@dataclass(frozen=True, slots=True)
class StrayResponse(Event):
    """A response that matched no client transaction (RFC 3261 18.1.2): a proxy or
    B2BUA may still need it, e.g. a 2xx from a second fork."""

    response: Response
    source: Destination


@dataclass(frozen=True, slots=True)
class TransactionTimedOut(Event):
    """Timer B, F or H fired: the TU treats it as a 408 (RFC 3261 8.1.3.1) or, for H, as a
    final response that was never acknowledged."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class TransportError(Event):
    """The transport could not deliver a message of this transaction (RFC 3261 17.1.4,
    17.2.4); the TU treats a client one as a 503."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class TransactionTerminated(Event):
    """The transaction is gone; its key is free and any per-key TU state can go too."""

    key: TransactionKey
