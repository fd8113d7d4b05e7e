"""Dialog state (RFC 3261 section 12): who the two ends are, in which order their
requests come, and how to build a request inside the dialog. Sans-I/O.

A dialog is identified, from our side, by the Call-ID and *our* tag: the tag we put in
To (as UAS) or From (as UAC). Our tags are random and unique, so ``(call_id,
local_tag)`` finds a dialog with one dict look-up whatever the peer's tag says; the
remote tag is then checked against the one stored.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from softswitch.sip.errors import SipError, SipParseError
from softswitch.sip.headers import Headers, NameAddr, parse_name_addr
from softswitch.sip.ids import random_hex
from softswitch.sip.message import Request, Response
from softswitch.sip.uri import Uri, parse_uri

_log = logging.getLogger("softswitch.sip.dialog")

# Requests that do not start a transaction of their own in the CSeq space: an ACK and
# a CANCEL carry the CSeq number of the INVITE they belong to (RFC 3261 12.2.1.1).
_NO_NEW_CSEQ = frozenset({"ACK", "CANCEL"})
# Requests that may change the remote target (RFC 3261 12.2, RFC 3311 UPDATE).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogError(SipError):
    """An in-dialog request we must refuse; ``status`` is the answer."""


class CallDoesNotExist(DialogError):
    status = 481
    reason = "Call/Transaction Does Not Exist"


class OutOfOrder(DialogError):
    # RFC 3261 12.2.2: a request with a lower CSeq than the last one is refused with 500.
    status = 500
    reason = "CSeq Out of Order"


def new_call_id(host: str) -> str:
    """A Call-ID of our own: random, so nothing about the other leg can be read from it."""
    return f"{random_hex(12)}@{host}"


def _without_tag(address: NameAddr) -> NameAddr:
    params = tuple((k, v) for k, v in address.params if k.lower() != "tag")
    return NameAddr(address.uri, address.display, params, True)


def _contact_uri(message: Request | Response) -> Uri | None:
    values = message.headers.values("contact")
    if not values:
        return None
    try:
        return parse_name_addr(values[0]).uri
    except SipParseError:
        return None


@dataclass(slots=True)
class Dialog:
    """One dialog as seen from our end.

    ``local_seq`` is the CSeq number of the last request we sent (0: none yet),
    ``remote_seq`` that of the last request the peer sent (None: none yet).
    ``route_set`` holds Route header values in the order they are to be sent.
    """

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_address: NameAddr
    remote_address: NameAddr
    local_seq: int
    remote_seq: int | None
    remote_target: Uri
    route_set: tuple[str, ...]
    local_contact: str
    state: DialogState = DialogState.EARLY

    # -- creation ---------------------------------------------------------------------

    @classmethod
    def as_uas(cls, request: Request, local_tag: str, local_contact: str) -> Dialog:
        """The dialog a response of ours to ``request`` creates (RFC 3261 12.1.1)."""
        target = _contact_uri(request) or request.from_.uri
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag,
            local_address=_without_tag(request.to),
            remote_address=_without_tag(request.from_),
            local_seq=0,
            remote_seq=request.cseq.seq,
            remote_target=target,
            route_set=tuple(request.headers.values("record-route")),
            local_contact=local_contact,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response, local_contact: str) -> Dialog:
        """The dialog a response to our ``request`` creates (RFC 3261 12.1.2): the route
        set is the response's Record-Route in reverse order."""
        target = _contact_uri(response) or request.uri
        state = DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag,
            local_address=_without_tag(request.from_),
            remote_address=_without_tag(request.to),
            local_seq=request.cseq.seq,
            remote_seq=None,
            remote_target=target,
            route_set=tuple(reversed(response.headers.values("record-route"))),
            local_contact=local_contact,
            state=state,
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.local_tag)

    # -- state ------------------------------------------------------------------------

    def confirm(self, response: Response | None = None) -> None:
        """A 2xx confirmed the dialog; as UAC the 2xx fixes the route set and target."""
        if self.state is DialogState.TERMINATED:
            return
        if response is not None:
            # RFC 3261 12.1.2: the route set of an early dialog is recomputed from the 2xx.
            self.route_set = tuple(reversed(response.headers.values("record-route")))
            target = _contact_uri(response)
            if target is not None:
                self.remote_target = target
        self._set_state(DialogState.CONFIRMED)

    def terminate(self) -> None:
        self._set_state(DialogState.TERMINATED)

    def _set_state(self, state: DialogState) -> None:
        if state is self.state:
            return
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("dialog %s;%s %s -> %s", self.call_id, self.local_tag, self.state, state)
        self.state = state

    # -- requests from the peer -------------------------------------------------------

    def receive_request(self, request: Request) -> None:
        """Check and account an in-dialog request (RFC 3261 12.2.2).

        Raises CallDoesNotExist when the tags do not belong to this dialog and
        OutOfOrder when the CSeq went backwards; otherwise remembers the CSeq and, for
        a target refresh, the new Contact.
        """
        tag = request.from_.tag
        if self.state is DialogState.TERMINATED or (
            self.remote_tag is not None and tag != self.remote_tag
        ):
            raise CallDoesNotExist()
        if self.remote_tag is None:
            self.remote_tag = tag
        if request.method in _NO_NEW_CSEQ:
            return
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            raise OutOfOrder()
        self.remote_seq = seq
        if request.method in TARGET_REFRESH:
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target

    def refresh_target(self, response: Response) -> None:
        """A 2xx to our own target refresh request carries the peer's current Contact."""
        target = _contact_uri(response)
        if target is not None:
            self.remote_target = target

    # -- requests of ours -------------------------------------------------------------

    def next_cseq(self) -> int:
        self.local_seq += 1
        return self.local_seq

    def create_request(
        self,
        method: str,
        via: str,
        *,
        cseq: int | None = None,
        headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A request inside the dialog (RFC 3261 12.2.1.1). ``cseq`` defaults to the
        next local number; an ACK or CANCEL passes the INVITE's."""
        if cseq is None:
            if method in _NO_NEW_CSEQ:
                raise ValueError(f"{method} needs the CSeq number of its INVITE")
            cseq = self.next_cseq()
        uri, routes = self._request_target()
        to = self.remote_address
        if self.remote_tag is not None:
            to = to.with_param("tag", self.remote_tag)
        lines: list[tuple[str, str]] = [("Via", via), ("Max-Forwards", "70")]
        lines.extend(("Route", r) for r in routes)
        lines += [
            ("From", str(self.local_address.with_param("tag", self.local_tag))),
            ("To", str(to)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if method != "ACK" or body:
            lines.append(("Contact", self.local_contact))
        lines.extend(headers)
        if content_type and body:
            lines.append(("Content-Type", content_type))
        lines.append(("Content-Length", str(len(body))))
        return Request(method, uri, Headers(lines), body)

    def _request_target(self) -> tuple[Uri, list[str]]:
        routes = list(self.route_set)
        if not routes:
            return self.remote_target, []
        try:
            first = parse_name_addr(routes[0]).uri
        except SipParseError:
            return self.remote_target, routes
        if first.param("lr") is not None:
            return self.remote_target, routes
        # Strict routing (RFC 3261 12.2.1.1): the first route becomes the Request-URI
        # and the remote target goes last in the Route header.
        return first.with_(
            params=tuple((k, v) for k, v in first.params if k.lower() != "method")
        ), [
            *routes[1:],
            f"<{self.remote_target}>",
        ]


def parse_contact_uri(text: str) -> Uri:
    """The URI of a stored Contact string such as a registration binding's."""
    return parse_uri(text.strip().strip("<>"))
