"""The RFC 3261 section 17 transaction layer, with the RFC 6026 corrections; sans-I/O.

Start from TransactionLayer: feed it messages, TU requests and timer ticks with ``now``,
and act on the events it returns.
"""

from softswitch.sip.transaction.client import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
    build_ack,
)
from softswitch.sip.transaction.events import (
    AckReceived,
    Destination,
    Event,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    State,
    StrayAck,
    StrayResponse,
    TransactionError,
    TransactionTerminated,
    TransactionTimedOut,
    TransportError,
)
from softswitch.sip.transaction.keys import (
    MAGIC_COOKIE,
    ClientKey,
    LegacyServerKey,
    ServerKey,
    TransactionKey,
    new_branch,
)
from softswitch.sip.transaction.layer import Transaction, TransactionLayer
from softswitch.sip.transaction.server import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "ClientKey",
    "ClientTransaction",
    "Destination",
    "Event",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "LegacyServerKey",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "RequestReceived",
    "ResponseReceived",
    "SendMessage",
    "ServerKey",
    "ServerTransaction",
    "State",
    "StrayAck",
    "StrayResponse",
    "Transaction",
    "TransactionError",
    "TransactionKey",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportError",
    "build_ack",
    "new_branch",
]
