"""Transaction identity: branch generation and the matching keys of RFC 3261 17.1.3 and
17.2.3, turned into tuples so that matching a message is one dict look-up.
"""

from __future__ import annotations

from typing import NamedTuple

from softswitch.sip.ids import random_hex
from softswitch.sip.message import Request, Response

MAGIC_COOKIE = "z9hG4bK"
"""Marks a branch as globally unique per RFC 3261 (section 8.1.1.7); without it the
sender is an RFC 2543 element and matching falls back to comparing the whole request."""


def new_branch() -> str:
    """A fresh RFC 3261 branch. 80 random bits keep collisions out of reach across every
    transaction this node and its peers will ever create."""
    return MAGIC_COOKIE + random_hex(10)


class ClientKey(NamedTuple):
    """RFC 3261 17.1.3: a response belongs to the client transaction whose request had the
    same top Via branch and CSeq method (so a CANCEL and its INVITE stay apart)."""

    branch: str
    method: str


class ServerKey(NamedTuple):
    """RFC 3261 17.2.3: branch and sent-by of the top Via, and the method, where an ACK
    counts as the INVITE it acknowledges. The branch is compared exactly, the host part
    of sent-by without regard to case."""

    branch: str
    sent_by: str
    method: str


class LegacyServerKey(NamedTuple):
    """RFC 3261 17.2.3 for requests from RFC 2543 elements, whose branch is not unique.

    An ACK's To tag is the one our response added, so it differs from the INVITE's; the
    layer looks an ACK up without that tag and checks it against the response sent.
    """

    request_uri: str
    to_tag: str | None
    from_tag: str | None
    call_id: str
    cseq: int
    top_via: str
    method: str


TransactionKey = ClientKey | ServerKey | LegacyServerKey


def _sent_by(request: Request) -> str:
    via = request.top_via
    host = via.host.lower()
    return host if via.port is None else f"{host}:{via.port}"


def client_key(request: Request) -> ClientKey:
    """The key of a request we are about to send. We only send RFC 3261 branches."""
    branch = request.top_via.branch
    if not branch or not branch.startswith(MAGIC_COOKIE):
        raise ValueError("an outgoing request needs a top Via branch from new_branch()")
    return ClientKey(branch, request.method)


def response_key(response: Response) -> ClientKey | None:
    """The client key a response answers, or None when its top Via has no branch."""
    branch = response.top_via.branch
    if not branch:
        return None
    return ClientKey(branch, response.cseq.method)


def server_key(request: Request) -> ServerKey | LegacyServerKey:
    method = "INVITE" if request.method == "ACK" else request.method
    via = request.top_via
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return ServerKey(branch, _sent_by(request), method)
    return LegacyServerKey(
        str(request.uri),
        request.to.tag,
        request.from_.tag,
        request.call_id,
        request.cseq.seq,
        str(via),
        method,
    )


def invite_key_for_cancel(cancel: Request) -> ServerKey | LegacyServerKey:
    """The key of the INVITE server transaction a CANCEL targets (RFC 3261 9.2): the
    CANCEL carries the INVITE's top Via, Request-URI, tags, Call-ID and CSeq number."""
    return server_key(cancel)._replace(method="INVITE")
