"""The two kinds of call leg: the UAS leg toward the caller and a UAC leg toward each
contact of the callee. Sans-I/O.

A leg owns one dialog of its own (Call-ID, tags, CSeq, Contact, route set) and one SDP
session of its own (``o=`` line, the switch's media address for that leg). It turns the
SIP it receives into call events for its Call, and the events the Call hands it into
SIP on its own dialog. It never sees a message of the other leg.

Everything a leg sends goes through its ``host`` (the CallManager): client requests
through the transaction layer, responses on their server transaction, ACKs for 2xx and
2xx retransmissions straight to the transport. Timers go into the host's TimerQueue.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from softswitch.b2bua.events import (
    Answer,
    CallEvent,
    Cause,
    Fail,
    Hangup,
    Hold,
    Progress,
    Resume,
    Side,
    Update,
)
from softswitch.b2bua.timers import TimerQueue
from softswitch.config import CallSettings
from softswitch.media.controller import MediaEndpoint
from softswitch.sip.dialog import (
    Dialog,
    DialogError,
    new_call_id,
    parse_contact_uri,
)
from softswitch.sip.headers import Headers, NameAddr
from softswitch.sip.ids import new_tag
from softswitch.sip.message import Message, Request, Response, make_response
from softswitch.sip.sdp import (
    SUPPORTED,
    Codec,
    LocalSdpState,
    MediaDirection,
    NegotiatedMedia,
    SdpError,
    SessionDescription,
    apply_answer,
    parse_sdp,
)
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction.events import Destination
from softswitch.sip.transaction.keys import ClientKey, LegacyServerKey, ServerKey

if TYPE_CHECKING:
    from softswitch.b2bua.call import Call
    from softswitch.services.location import Binding

log = logging.getLogger("softswitch.b2bua")

# The local media engine relays and transcodes G.711 and passes RFC 4733 events; Opus
# is left out of our SDP until the engine can carry it.
MEDIA_CODECS = tuple(c for c in SUPPORTED if c.name.lower() != "opus")
AUDIO_NAMES = tuple(c.name for c in MEDIA_CODECS if not c.is_telephone_event)
_KNOWN_AUDIO = tuple(c.name for c in SUPPORTED if not c.is_telephone_event)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"
SUPPORTED_EXTENSIONS = "timer"
SDP = "application/sdp"

ServerTxKey = ServerKey | LegacyServerKey


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """The listen socket a leg uses: what goes in our Via and Contact on that leg."""

    transport: str  # "UDP" | "TCP"
    host: str
    port: int

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def contact(self) -> str:
        return f"<sip:{self.hostport};transport={self.transport.lower()}>"


class LegHost(Protocol):
    """What a leg needs from the CallManager."""

    now: float
    timers: TimerQueue
    timer_config: TimerConfig
    settings: CallSettings
    rng: random.Random

    def send_request(self, leg: Leg, request: Request, dest: Destination) -> ClientKey: ...

    def respond(self, key: ServerTxKey, response: Response) -> None: ...

    def send(self, message: Message, dest: Destination) -> None: ...

    def via(self, local: LocalAddress) -> str: ...

    def add_dialog(self, leg: Leg) -> None: ...

    def drop_dialog(self, leg: Leg) -> None: ...

    def terminate_transaction(self, key: ClientKey) -> None: ...


class LegState(enum.Enum):
    CALLING = "calling"  # UAC: INVITE sent, nothing back yet
    PROCEEDING = "proceeding"  # a provisional response went out / came in
    CANCELLING = "cancelling"  # UAC: CANCEL sent, waiting for the INVITE's final
    ACCEPTED = "accepted"  # UAS: 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"  # BYE sent
    TERMINATED = "terminated"
    FAILED = "failed"  # the INVITE got a final non-2xx


_LIVE = frozenset({LegState.ACCEPTED, LegState.CONFIRMED})


# -- small header helpers ----------------------------------------------------------------


def _session_expires(message: Message) -> tuple[int, str | None] | None:
    value = message.headers.get("session-expires")
    if value is None:
        return None
    number, _, params = value.partition(";")
    number = number.strip()
    if not (number.isascii() and number.isdigit()):
        return None
    refresher = None
    for part in params.split(";"):
        name, _, pvalue = part.partition("=")
        if name.strip().lower() == "refresher":
            refresher = pvalue.strip().lower() or None
    return int(number[:10]), refresher


def _int_header(message: Message, name: str) -> int:
    value = (message.headers.get(name) or "").split(";", 1)[0].strip()
    return int(value[:10]) if value.isascii() and value.isdigit() else 0


def _tokens(message: Message, name: str) -> set[str]:
    return {v.strip().lower() for v in message.headers.values(name)}


def _sdp_body(message: Message) -> SessionDescription | None:
    """The SDP of a message, or None when it carries none. Raises SdpError."""
    if not message.body:
        return None
    content_type = message.content_type
    if content_type is not None and content_type != SDP:
        raise SdpError(f"body of type {content_type} is not SDP")
    return parse_sdp(message.body)


def offered_direction(sdp: SessionDescription) -> MediaDirection:
    """The direction a phone states for its first audio stream, RFC 2543 hold
    (c=0.0.0.0) included."""
    for m in sdp.media:
        if m.media == "audio" and m.port != 0:
            direction = m.direction(sdp)
            conn = m.effective_connection(sdp)
            if conn is not None and conn.is_unspecified:
                direction = direction & MediaDirection.SENDONLY
            return direction
    return MediaDirection.INACTIVE


def _is_hold(direction: MediaDirection) -> bool:
    return not direction.receives


def codec_order(first: str | None, offer: SessionDescription | None = None) -> list[str]:
    """Our audio codecs, those a phone offered first (in its order), ``first`` before
    all: the other leg then tends to pick the same codec, and media is relayed rather
    than transcoded."""
    order: list[str] = []
    if first:
        order.append(first)
    if offer is not None:
        for m in offer.media:
            if m.media == "audio" and m.port != 0:
                order.extend(name for _pt, (name, _r, _c) in m.rtpmap().items())
                break
    # Every codec the SDP layer knows: make_offer and negotiate_answer keep only those
    # of the leg's own list, so a call leg never offers what its engine path lacks.
    order.extend(_KNOWN_AUDIO)
    known = {n.lower() for n in _KNOWN_AUDIO}
    seen: dict[str, str] = {}
    for name in order:
        if name.lower() in known:
            seen.setdefault(name.lower(), name)
    return list(seen.values())


# -- the common part: a leg with a dialog ------------------------------------------------


class Leg:
    """What both kinds of leg do once a dialog exists: in-dialog requests, re-offers,
    session timers (RFC 4028), 2xx retransmission and BYE."""

    side: Side
    media_name: str
    # What this leg offers and accepts; a leg toward a conference room takes more,
    # because the room decodes everything anyway.
    codecs: tuple[Codec, ...] = MEDIA_CODECS

    def __init__(self, host: LegHost, call: Call, local: LocalAddress, dest: Destination) -> None:
        self.host = host
        self.call = call
        self.local = local
        self.dest = dest
        self.state = LegState.PROCEEDING
        self.dialog: Dialog | None = None
        self.timers: dict[str, int] = {}
        self.sdp = LocalSdpState(host.rng.getrandbits(62))
        self.endpoint: MediaEndpoint | None = None
        self.media: NegotiatedMedia | None = None
        # The direction this leg's phone last asked for, and the one the other phone
        # leaves us on this leg (what the switch may do here).
        self.phone_direction = MediaDirection.SENDRECV
        self.peer_direction = MediaDirection.SENDRECV
        # RFC 4028 state.
        self.session_interval = 0
        self.we_refresh = False
        self.peer_allows_update = False
        self.peer_supports_timer = False
        # Our re-INVITE/UPDATE in flight: key, method, offer, whether it is a refresh.
        self._out_key: ClientKey | None = None
        self._out_method = ""
        self._out_offer: SessionDescription | None = None
        self._out_refresh = False
        self._out_ack: Request | None = None
        self._acked_key: ClientKey | None = None
        self._reoffer_wanted = False
        # Our 2xx awaiting its ACK, and the offer we made in it (answer in the ACK).
        self._pending_2xx: Response | None = None
        self._pending_cseq = 0
        self._retransmit_interval = 0.0
        self._offer_in_2xx: SessionDescription | None = None
        self._bye_key: ClientKey | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call.id} {self.state.value}>"

    # -- helpers --------------------------------------------------------------------

    def _set_state(self, state: LegState) -> None:
        if state is self.state:
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%r -> %s", self, state.value)
        self.state = state

    def _emit(self, event: CallEvent) -> None:
        self.call.on_event(self, event)

    @property
    def live(self) -> bool:
        """The leg has an established session (2xx sent or received, no BYE yet)."""
        return self.state in _LIVE

    def _response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        tag = self.dialog.local_tag if self.dialog is not None else new_tag()
        return make_response(
            request,
            status,
            reason,
            to_tag=tag,
            extra=extra or [],
            body=body,
            content_type=SDP if body else None,
        )

    def _session_headers(self) -> list[tuple[str, str]]:
        """Session-Expires for a request of ours: who refreshes, in the RFC 4028
        vocabulary of that request (we are its UAC)."""
        if self.session_interval <= 0:
            return []
        refresher = "uac" if self.we_refresh else "uas"
        return [("Session-Expires", f"{self.session_interval};refresher={refresher}")]

    def _arm_session_timer(self) -> None:
        timers = self.host.timers
        timers.cancel(self, "refresh")
        timers.cancel(self, "expire")
        interval = self.session_interval
        if interval <= 0 or not self.live:
            return
        now = self.host.now
        if self.we_refresh:
            timers.schedule(self, "refresh", now + interval / 2)
        else:
            # RFC 4028 section 10: the other side gets until min(32, SE/3) before expiry.
            timers.schedule(self, "expire", now + interval - min(32.0, interval / 3))

    def _timer_as_uas(self, request: Request) -> list[tuple[str, str]] | Response:
        """Session timer of a request we answer (RFC 4028 section 9): the headers for
        our 2xx, or a 422 response when the interval asked for is too short."""
        settings = self.host.settings
        supports = "timer" in _tokens(request, "supported")
        self.peer_supports_timer = self.peer_supports_timer or supports
        asked = _session_expires(request)
        floor = max(settings.min_se, _int_header(request, "min-se"))
        if asked is None:
            interval = max(settings.session_expires, floor)
            refresher = "uas"
        else:
            value, refresher = asked
            if value < settings.min_se:
                if supports:
                    return self._response(
                        request, 422, "Session Interval Too Small", [("Min-SE", str(floor))]
                    )
                value = floor
            interval = max(min(value, settings.session_expires), floor)
            refresher = refresher if refresher in ("uac", "uas") else "uas"
        if refresher == "uac" and not supports:
            refresher = "uas"  # a UAC without the extension cannot be the refresher
        self.session_interval = interval
        self.we_refresh = refresher == "uas"
        headers = [("Session-Expires", f"{interval};refresher={refresher}")]
        if supports:
            headers.append(("Require", "timer"))
        return headers

    def _timer_as_uac(self, response: Response, asked: int) -> None:
        """Session timer from the 2xx to a request of ours (RFC 4028 section 7.2). A
        peer without the extension leaves the refreshing to us."""
        got = _session_expires(response)
        if got is None:
            self.session_interval = asked
            self.we_refresh = True
        else:
            value, refresher = got
            self.session_interval = max(value, 1)
            self.we_refresh = refresher != "uas"
            self.peer_supports_timer = True

    def _note_allow(self, message: Message) -> None:
        allow = message.headers.values("allow")
        if allow:
            self.peer_allows_update = any(v.strip().upper() == "UPDATE" for v in allow)

    def _dialog_headers(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Supported", SUPPORTED_EXTENSIONS)]

    # -- 2xx reliability (RFC 3261 13.3.1.4) --------------------------------------------

    def _send_2xx(self, key: ServerTxKey, response: Response) -> None:
        self.host.respond(key, response)
        self._pending_2xx = response
        self._pending_cseq = response.cseq.seq
        timers, t1 = self.host.timers, self.host.timer_config.t1
        if not self.dest.reliable:
            self._retransmit_interval = t1
            timers.schedule(self, "2xx", self.host.now + t1)
        timers.schedule(self, "no_ack", self.host.now + 64 * t1)

    def _retransmit_2xx(self) -> None:
        if self._pending_2xx is None:
            return
        self.host.send(self._pending_2xx, self.dest)
        self._retransmit_interval = min(2 * self._retransmit_interval, self.host.timer_config.t2)
        self.host.timers.schedule(self, "2xx", self.host.now + self._retransmit_interval)

    def on_ack(self, request: Request) -> None:
        """An ACK for a 2xx of ours (it is never a transaction of its own)."""
        if self._pending_2xx is None or request.cseq.seq != self._pending_cseq:
            return
        self._pending_2xx = None
        self.host.timers.cancel(self, "2xx")
        self.host.timers.cancel(self, "no_ack")
        if self.state is LegState.ACCEPTED:
            self._set_state(LegState.CONFIRMED)
        offer, self._offer_in_2xx = self._offer_in_2xx, None
        if offer is not None:
            self._answer_in_ack(offer, request)
        self._after_acked()

    def _after_acked(self) -> None:
        self._arm_session_timer()
        if self._reoffer_wanted:
            self._send_reoffer()

    def _answer_in_ack(self, offer: SessionDescription, ack: Request) -> None:
        try:
            answer = _sdp_body(ack)
            if answer is None:
                raise SdpError("the ACK carries no answer")
            media = apply_answer(offer, answer)
        except SdpError as exc:
            log.info("bad answer in ACK on %r: %s", self, exc)
            self._lost(Cause.MEDIA_FAILED)
            return
        self._took_phone_media(media, offered_direction(answer))

    # -- requests inside the dialog -------------------------------------------------------

    def on_request(self, key: ServerTxKey, request: Request) -> None:
        """A request of the peer inside our dialog (the manager found us by tags)."""
        dialog = self.dialog
        assert dialog is not None
        method = request.method
        if method == "BYE" and self.state is LegState.TERMINATING:
            # Both ends hung up at once: agree, the BYE of ours will end on its own.
            self.host.respond(key, self._response(request, 200))
            return
        try:
            dialog.receive_request(request)
        except DialogError as exc:
            self.host.respond(key, self._response(request, exc.status, exc.reason))
            return
        if method == "BYE":
            self.host.respond(key, self._response(request, 200))
            self._ended_by_peer()
            return
        if method in ("INVITE", "UPDATE"):
            self._on_offer_request(key, request)
            return
        if method == "OPTIONS":
            extra = [*self._dialog_headers(), ("Accept", SDP)]
            self.host.respond(key, self._response(request, 200, extra=extra))
            return
        self.host.respond(key, self._response(request, 405, extra=[("Allow", ALLOW)]))

    def _ended_by_peer(self) -> None:
        self._finish()
        self._emit(Hangup(Cause.NORMAL, self.side))

    def _on_offer_request(self, key: ServerTxKey, request: Request) -> None:
        """re-INVITE or UPDATE: hold/resume, codec or address change, session refresh."""
        method = request.method
        if not self.live:
            # An early-dialog UPDATE or a re-INVITE racing our own 2xx.
            self.host.respond(key, self._response(request, 491))
            return
        if self._pending_2xx is not None and method == "INVITE":
            # RFC 3261 14.2: a second INVITE before the first one's final response.
            self.host.respond(key, self._response(request, 500, extra=[("Retry-After", "1")]))
            return
        if self._out_key is not None and (method == "INVITE" or request.body):
            # Glare (RFC 3261 14.1): our own offer is in flight on this dialog.
            self.host.respond(key, self._response(request, 491))
            return
        try:
            offer = _sdp_body(request)
        except SdpError as exc:
            self.host.respond(key, self._response(request, exc.status, "Not Acceptable Here"))
            return
        timer = self._timer_as_uas(request)
        if isinstance(timer, Response):
            self.host.respond(key, timer)
            return
        self._note_allow(request)
        assert self.dialog is not None
        self.dialog.local_contact = self.local.contact
        extra = [("Contact", self.local.contact), *self._dialog_headers(), *timer]
        if offer is None:
            if method == "UPDATE":
                # A session refresh without an offer.
                self.host.respond(key, self._response(request, 200, extra=extra))
                self._arm_session_timer()
                return
            # A re-INVITE without SDP asks us to offer; the answer comes in the ACK.
            ours = self._make_offer(self.peer_direction)
            self._offer_in_2xx = ours
            response = self._response(request, 200, extra=extra, body=ours.to_bytes())
            self._send_2xx(key, response)
            return
        assert self.endpoint is not None
        current = self.media.codec.name if self.media is not None else None
        try:
            answer, media = self.sdp.answer(
                offer,
                self.codecs,
                self.endpoint,
                prefer=codec_order(current),
                direction=self.peer_direction,
            )
        except SdpError as exc:
            self.host.respond(key, self._response(request, exc.status, "Not Acceptable Here"))
            return
        response = self._response(request, 200, extra=extra, body=answer.to_bytes())
        if method == "INVITE":
            self._send_2xx(key, response)
        else:
            self.host.respond(key, response)
            self._arm_session_timer()
        self._took_phone_media(media, offered_direction(offer))

    def _took_phone_media(self, media: NegotiatedMedia, direction: MediaDirection) -> None:
        """This leg's phone renegotiated; tell the call, as hold/resume when the phone's
        direction changed between sending-and-receiving and not."""
        self.media = media
        before, self.phone_direction = self.phone_direction, direction
        if _is_hold(direction) and (not _is_hold(before) or direction is not before):
            self._emit(Hold(direction))
        elif _is_hold(before) and not _is_hold(direction):
            self._emit(Resume())
        else:
            self._emit(Update(media))

    # -- offers of ours -------------------------------------------------------------------

    def _make_offer(self, direction: MediaDirection) -> SessionDescription:
        assert self.endpoint is not None
        current = self.media.codec.name if self.media is not None else None
        return self.sdp.offer(
            self.codecs, self.endpoint, direction=direction, codecs=codec_order(current)
        )

    def reoffer(self, direction: MediaDirection) -> None:
        """The other phone changed its hold state: offer ``direction`` to this phone."""
        self.peer_direction = direction
        self._reoffer_wanted = True
        if self.live and self._out_key is None and self._pending_2xx is None:
            self._send_reoffer()

    def _send_reoffer(self, *, refresh: bool = False) -> None:
        """Send our re-INVITE (or, for a plain refresh, an UPDATE when the peer takes
        it). Only one is in flight per dialog; a wish that comes meanwhile waits."""
        if self.dialog is None or not self.live or self._out_key is not None:
            return
        self.host.timers.cancel(self, "retry")
        if refresh and not self._reoffer_wanted and self.peer_allows_update:
            method, offer = "UPDATE", None
        else:
            method = "INVITE"
            if self._reoffer_wanted or self.sdp.last is None:
                offer = self._make_offer(self.peer_direction)
            else:
                offer = self.sdp.last
            refresh = refresh and not self._reoffer_wanted
        self._reoffer_wanted = False
        headers = [*self._dialog_headers(), *self._session_headers()]
        if self.session_interval:
            headers.append(("Min-SE", str(self.host.settings.min_se)))
        body = offer.to_bytes() if offer is not None else b""
        request = self.dialog.create_request(
            method,
            self.host.via(self.local),
            headers=headers,
            body=body,
            content_type=SDP if body else None,
        )
        self._out_method, self._out_offer, self._out_refresh = method, offer, refresh
        self._out_key = self.host.send_request(self, request, self.dest)

    def _on_reoffer_response(self, key: ClientKey, response: Response) -> None:
        status = response.status
        if key != self._out_key:
            if 200 <= status < 300 and key == self._acked_key and self._out_ack is not None:
                self.host.send(self._out_ack, self.dest)  # a 2xx copy: our ACK was lost
            return
        if status < 200:
            return
        method, offer, refresh = self._out_method, self._out_offer, self._out_refresh
        self._out_key = None
        self._out_offer = None
        if status < 300:
            assert self.dialog is not None
            self.dialog.refresh_target(response)
            self._note_allow(response)
            if method == "INVITE":
                self._out_ack = self.dialog.create_request(
                    "ACK", self.host.via(self.local), cseq=response.cseq.seq
                )
                self._acked_key = key
                self.host.send(self._out_ack, self.dest)
            self._timer_as_uac(
                response, self.session_interval or self.host.settings.session_expires
            )
            if offer is not None and response.body:
                try:
                    answer = _sdp_body(response)
                    assert answer is not None
                    self.media = apply_answer(offer, answer)
                    self._emit(Update(self.media))
                except SdpError as exc:
                    # RFC 3264 offers no way back from a broken answer but a new offer;
                    # keep the media as it was and say so.
                    log.info("bad answer to re-offer on %r: %s", self, exc)
            self._arm_session_timer()
        elif status == 491:
            # RFC 3261 14.1: retry after a random time; the owner of the Call-ID waits
            # longer, so the two ends do not collide again.
            self._reoffer_wanted = self._reoffer_wanted or not refresh
            low, high = (2.1, 4.0) if self.owns_call_id else (0.0, 2.0)
            delay = self.host.rng.uniform(low, high)
            self.host.timers.schedule(self, "retry", self.host.now + delay)
            return
        elif status in (408, 481):
            # RFC 4028 section 10 and RFC 3261 12.2.1.2: the dialog is gone.
            self._lost(Cause.SESSION_TIMER if refresh else Cause.FAILED)
            return
        else:
            # The offer was refused: the session stays as it was (RFC 3261 14.1).
            self._arm_session_timer()
        if self._reoffer_wanted:
            self._send_reoffer()

    @property
    def owns_call_id(self) -> bool:
        return False

    def _lost(self, cause: Cause) -> None:
        """A request in the dialog timed out or got 408/481: the session is over. The
        BYE still goes out (RFC 4028 section 10), for a peer that only lost our request."""
        self.send_bye()
        self._emit(Hangup(cause, Side.SWITCH))

    # -- ending ---------------------------------------------------------------------------

    def send_bye(self) -> None:
        if self.dialog is None or self.state in (LegState.TERMINATING, LegState.TERMINATED):
            return
        self._stop_timers()
        request = self.dialog.create_request("BYE", self.host.via(self.local))
        self._set_state(LegState.TERMINATING)
        self._bye_key = self.host.send_request(self, request, self.dest)

    def _stop_timers(self) -> None:
        self.host.timers.cancel_all(self)
        self._pending_2xx = None

    def _finish(self) -> None:
        """The dialog is over: stop everything, forget the dialog."""
        self._stop_timers()
        self._set_state(LegState.TERMINATED)
        if self.dialog is not None:
            self.dialog.terminate()
            self.host.drop_dialog(self)

    # -- inputs from the manager ------------------------------------------------------------

    def on_response(self, key: ClientKey, response: Response) -> None:
        if key == self._bye_key:
            if response.status >= 200:
                self._bye_key = None
                self._finish()
            return
        if key.method in ("INVITE", "UPDATE") and key != self._initial_key():
            self._on_reoffer_response(key, response)

    def on_transaction_failed(self, key: ClientKey, status: int) -> None:
        """A client transaction of ours timed out (408) or could not be sent (503)."""
        if key == self._bye_key:
            self._bye_key = None
            self._finish()
            return
        if key == self._out_key:
            refresh = self._out_refresh
            self._out_key = None
            self._lost(Cause.SESSION_TIMER if refresh else Cause.FAILED)

    def _initial_key(self) -> ClientKey | None:
        return None

    def on_timer(self, kind: str, now: float) -> None:
        if kind == "2xx":
            self._retransmit_2xx()
        elif kind == "no_ack":
            # RFC 3261 13.3.1.4: no ACK for 64*T1, the session ends with a BYE.
            self._pending_2xx = None
            self.host.timers.cancel(self, "2xx")
            self.send_bye()
            self._emit(Hangup(Cause.NO_ACK, Side.SWITCH))
        elif kind == "refresh":
            if self._out_key is None:
                self._send_reoffer(refresh=True)
            else:
                self._arm_session_timer()
        elif kind == "expire":
            self.send_bye()
            self._emit(Hangup(Cause.SESSION_TIMER, Side.SWITCH))
        elif kind == "retry":
            self._reoffer_wanted = True
            self._send_reoffer()
        else:
            self._on_own_timer(kind)

    def _on_own_timer(self, kind: str) -> None:
        pass

    def handle(self, event: CallEvent) -> None:
        """An event from the other side of the call."""
        raise NotImplementedError


# -- the caller's leg: we are its UAS ---------------------------------------------------


class CallerLeg(Leg):
    side = Side.CALLER
    media_name = "a"

    def __init__(
        self,
        host: LegHost,
        call: Call,
        key: ServerTxKey,
        invite: Request,
        offer: SessionDescription | None,
        local: LocalAddress,
        dest: Destination,
    ) -> None:
        super().__init__(host, call, local, dest)
        self.server_key = key
        self.invite = invite
        self.offer = offer
        self.dialog = Dialog.as_uas(invite, new_tag(), local.contact)
        self._timer_headers: list[tuple[str, str]] = []
        self._sent_progress: set[int] = set()
        self._answered_early = False
        if offer is not None:
            self.phone_direction = offered_direction(offer)

    def start(self) -> Response | None:
        """Take the INVITE: None to go on, or the refusal (422) to send instead."""
        timer = self._timer_as_uas(self.invite)
        if isinstance(timer, Response):
            return timer
        self._timer_headers = timer
        self._note_allow(self.invite)
        self.host.add_dialog(self)
        self.host.respond(self.server_key, make_response(self.invite, 100))
        return None

    def _answer_offer(self, prefer: str | None) -> NegotiatedMedia | None:
        """Our answer to the caller's offer, made once (in a 18x or the 2xx)."""
        if self.offer is None or self._answered_early or self.sdp.last is not None:
            return self.media
        assert self.endpoint is not None
        _sdp, self.media = self.sdp.answer(
            self.offer,
            self.codecs,
            self.endpoint,
            prefer=codec_order(prefer, self.offer),
            direction=self.peer_direction,
        )
        return self.media

    def handle(self, event: CallEvent) -> None:
        if isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, Answer):
            self._answer(event)
        elif isinstance(event, Fail):
            self.reject(event.status, event.reason)
        elif isinstance(event, Hold):
            self.reoffer(event.direction)
        elif isinstance(event, Resume):
            self.reoffer(MediaDirection.SENDRECV)
        elif isinstance(event, Hangup):
            if self.state is LegState.PROCEEDING:
                status, reason = (503, "Service Unavailable")
                if event.cause is Cause.CANCELLED:
                    status, reason = 487, "Request Terminated"
                elif event.cause is Cause.NO_ANSWER:
                    status, reason = 480, "Temporarily Unavailable"
                self.reject(status, reason)
            else:
                self.send_bye()

    def _progress(self, event: Progress) -> None:
        if self.state is not LegState.PROCEEDING:
            return
        body = b""
        if event.media is not None and self.offer is not None and not self._answered_early:
            try:
                media = self._answer_offer(event.media.codec.name)
            except SdpError:
                media = None
            if media is not None and self.sdp.last is not None:
                self._answered_early = True
                body = self.sdp.last.to_bytes()
                self.call.media_changed(self)
        if not body and event.status in self._sent_progress:
            return  # every ringing fork would otherwise repeat the same 180
        self._sent_progress.add(event.status)
        status = event.status if event.status in (180, 181, 182, 183) else 183
        extra = [("Contact", self.local.contact), *self._dialog_headers()]
        self.host.respond(
            self.server_key, self._response(self.invite, status, extra=extra, body=body)
        )

    def _answer(self, event: Answer) -> None:
        if self.state is not LegState.PROCEEDING:
            return
        b_codec = event.media.codec.name if event.media is not None else None
        if self.offer is not None:
            try:
                self._answer_offer(b_codec)
            except SdpError as exc:
                # The caller's offer was checked on arrival; a failure here means the
                # callee's codec choice left nothing, which is ours to report.
                log.info("cannot answer the caller on %r: %s", self, exc)
                self.reject(488, "Not Acceptable Here")
                self._emit(Hangup(Cause.MEDIA_FAILED, Side.SWITCH))
                return
            assert self.sdp.last is not None
            body = self.sdp.last.to_bytes()
        else:
            assert self.endpoint is not None
            offer = self.sdp.offer(self.codecs, self.endpoint, codecs=codec_order(b_codec))
            self._offer_in_2xx = offer
            body = offer.to_bytes()
        extra = [("Contact", self.local.contact), *self._dialog_headers(), *self._timer_headers]
        response = self._response(self.invite, 200, extra=extra, body=body)
        assert self.dialog is not None
        self.dialog.confirm()
        self._set_state(LegState.ACCEPTED)
        self._send_2xx(self.server_key, response)

    def reject(self, status: int, reason: str) -> None:
        """A final non-2xx to the caller's INVITE."""
        if self.state is not LegState.PROCEEDING:
            return
        self.host.respond(self.server_key, self._response(self.invite, status, reason))
        self._set_state(LegState.FAILED)
        self._stop_timers()
        if self.dialog is not None:
            self.dialog.terminate()
            self.host.drop_dialog(self)

    def cancelled(self, cancel_key: ServerTxKey, cancel: Request) -> None:
        """The caller CANCELled its INVITE (RFC 3261 9.2)."""
        self.host.respond(cancel_key, make_response(cancel, 200))
        if self.state is LegState.PROCEEDING:
            self.reject(487, "Request Terminated")
            self._emit(Hangup(Cause.CANCELLED, Side.CALLER))

    def on_request(self, key: ServerTxKey, request: Request) -> None:
        if self.state is LegState.PROCEEDING and request.method == "BYE":
            # RFC 3261 15: a caller may end an early dialog with BYE.
            assert self.dialog is not None
            try:
                self.dialog.receive_request(request)
            except DialogError as exc:
                self.host.respond(key, self._response(request, exc.status, exc.reason))
                return
            self.host.respond(key, self._response(request, 200))
            self.reject(487, "Request Terminated")
            self._emit(Hangup(Cause.CANCELLED, Side.CALLER))
            return
        super().on_request(key, request)


# -- a leg toward one contact of the callee: we are its UAC ------------------------------


class CalleeLeg(Leg):
    side = Side.CALLEE
    media_name = "b"

    def __init__(
        self,
        host: LegHost,
        call: Call,
        binding: Binding | None,
        local: LocalAddress,
        dest: Destination,
        index: int,
    ) -> None:
        super().__init__(host, call, local, dest)
        # None for a leg toward a carrier, which is no registered contact.
        self.binding = binding
        self.index = index
        self.state = LegState.CALLING
        self.invite: Request | None = None
        self.invite_key: ClientKey | None = None
        self.offer: SessionDescription | None = None
        self.early_media: NegotiatedMedia | None = None
        self._cancel_wanted = False
        self._cancel_key: ClientKey | None = None
        self._ack: Request | None = None
        self._asked_interval = 0
        self._retried_422 = False

    def __repr__(self) -> str:
        return f"<CalleeLeg {self.call.id}/{self.index} {self.state.value}>"

    @property
    def owns_call_id(self) -> bool:
        return True

    def _initial_key(self) -> ClientKey | None:
        return self.invite_key

    def start(self, offer: SessionDescription, caller: NameAddr, callee: NameAddr) -> None:
        """Send the INVITE to this contact, over the flow it registered from."""
        self.offer = offer
        call_id = new_call_id(self.local.host)
        from_ = caller.with_param("tag", new_tag())
        self._send_invite(call_id, str(from_), str(callee), 1, self.host.settings.session_expires)

    def _send_invite(self, call_id: str, from_: str, to: str, cseq: int, interval: int) -> None:
        assert self.offer is not None and self.binding is not None
        body = self.offer.to_bytes()
        self._asked_interval = interval
        lines: list[tuple[str, str]] = [
            ("Via", self.host.via(self.local)),
            ("Max-Forwards", "70"),
        ]
        # RFC 3327: the Path recorded at registration becomes our route to the phone.
        lines.extend(("Route", p) for p in self.binding.path)
        lines += [
            ("From", from_),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", self.local.contact),
            *self._dialog_headers(),
            ("Session-Expires", f"{interval};refresher=uac"),
            ("Min-SE", str(min(interval, self.host.settings.min_se))),
            ("Content-Type", SDP),
            ("Content-Length", str(len(body))),
        ]
        uri = parse_contact_uri(self.binding.contact)
        self.invite = Request("INVITE", uri, Headers(lines), body)
        self.invite_key = self.host.send_request(self, self.invite, self.dest)

    # -- the INVITE's responses --------------------------------------------------------

    def on_response(self, key: ClientKey, response: Response) -> None:
        if key == self.invite_key:
            self._on_invite_response(response)
        elif key == self._cancel_key:
            pass  # the 487 of the INVITE is what matters
        else:
            super().on_response(key, response)

    def _on_invite_response(self, response: Response) -> None:
        status = response.status
        if status < 200:
            self._on_provisional(response)
        elif status < 300:
            self._on_2xx(response)
        else:
            self._on_failure(response.status, response.reason, response)

    def _on_provisional(self, response: Response) -> None:
        if self.state is LegState.CALLING:
            self._set_state(LegState.PROCEEDING)
        if self._cancel_wanted:
            self._send_cancel()
            return
        if self.state is not LegState.PROCEEDING or response.status == 100:
            return
        tag = response.to.tag
        if tag and self.dialog is None:
            assert self.invite is not None
            self.dialog = Dialog.as_uac(self.invite, response, self.local.contact)
            self.host.add_dialog(self)
        media = None
        if self.early_media is None and response.body:
            try:
                answer = _sdp_body(response)
                assert self.offer is not None and answer is not None
                media = self.early_media = apply_answer(self.offer, answer)
            except SdpError as exc:
                log.info("bad early SDP on %r: %s", self, exc)
        self._emit(Progress(response.status, response.reason, media))

    def _on_2xx(self, response: Response) -> None:
        tag = response.to.tag
        dialog = self.dialog
        if self._ack is not None and dialog is not None:
            if tag == dialog.remote_tag:
                self.host.send(self._ack, self.dest)  # our ACK was lost
            else:
                self._ack_and_bye(response)  # a second fork beyond the phone answered
            return
        assert self.invite is not None
        if dialog is None or dialog.remote_tag != tag:
            if dialog is not None:
                self.host.drop_dialog(self)
            dialog = self.dialog = Dialog.as_uac(self.invite, response, self.local.contact)
            self.host.add_dialog(self)
        else:
            dialog.confirm(response)
        self._ack = dialog.create_request(
            "ACK", self.host.via(self.local), cseq=self.invite.cseq.seq
        )
        self.host.send(self._ack, self.dest)
        self.host.timers.cancel(self, "cancel_giveup")
        self._note_allow(response)
        self._timer_as_uac(response, self._asked_interval)
        self._set_state(LegState.CONFIRMED)
        media = self.early_media
        try:
            answer = _sdp_body(response)
            if answer is not None:
                assert self.offer is not None
                media = apply_answer(self.offer, answer)
        except SdpError as exc:
            log.info("bad SDP in 2xx on %r: %s", self, exc)
            media = None
        if media is None:
            self.send_bye()
            self._emit(Fail(502, "Bad Gateway"))
            return
        self.media = media
        self.phone_direction = MediaDirection.SENDRECV
        self._arm_session_timer()
        self._emit(Answer(media))

    def _ack_and_bye(self, response: Response) -> None:
        assert self.invite is not None
        stray = Dialog.as_uac(self.invite, response, self.local.contact)
        via = self.host.via(self.local)
        self.host.send(stray.create_request("ACK", via, cseq=self.invite.cseq.seq), self.dest)
        self.host.send_request(
            self, stray.create_request("BYE", self.host.via(self.local)), self.dest
        )

    def _on_failure(self, status: int, reason: str, response: Response | None) -> None:
        if self.state in (LegState.FAILED, LegState.TERMINATED, LegState.CONFIRMED):
            return
        if (
            status == 422
            and response is not None
            and not self._retried_422
            and not self._cancel_wanted
            and self.state is not LegState.CANCELLING
        ):
            wanted = _int_header(response, "min-se")
            if wanted > self._asked_interval:
                # RFC 4028 section 7.4: try again with the interval the callee asks for.
                self._retried_422 = True
                assert self.invite is not None
                inv = self.invite
                self._send_invite(
                    inv.call_id,
                    inv.headers.get("from") or "",
                    inv.headers.get("to") or "",
                    inv.cseq.seq + 1,
                    wanted,
                )
                return
        self._set_state(LegState.FAILED)
        self._stop_timers()
        if self.dialog is not None:
            self.dialog.terminate()
            self.host.drop_dialog(self)
        self._emit(Fail(status, reason))

    def on_transaction_failed(self, key: ClientKey, status: int) -> None:
        if key == self.invite_key:
            self._on_failure(status, "Request Timeout" if status == 408 else "Unreachable", None)
        elif key == self._cancel_key:
            pass
        else:
            super().on_transaction_failed(key, status)

    # -- cancelling ---------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop ringing this contact. RFC 3261 9.1: no CANCEL before a provisional
        response; until one comes the wish is kept and acted on then."""
        if self.state is LegState.CALLING:
            self._cancel_wanted = True
        elif self.state is LegState.PROCEEDING:
            self._send_cancel()

    def _send_cancel(self) -> None:
        assert self.invite is not None
        self._cancel_wanted = False
        inv = self.invite
        lines: list[tuple[str, str]] = [("Via", inv.headers.values("via")[0])]
        lines.append(("Max-Forwards", "70"))
        lines.extend(("Route", r) for r in inv.headers.values("route"))
        lines += [
            ("From", inv.headers.get("from") or ""),
            ("To", inv.headers.get("to") or ""),
            ("Call-ID", inv.call_id),
            ("CSeq", f"{inv.cseq.seq} CANCEL"),
            ("Content-Length", "0"),
        ]
        self._set_state(LegState.CANCELLING)
        self._cancel_key = self.host.send_request(
            self, Request("CANCEL", inv.uri, Headers(lines)), self.dest
        )
        self.host.timers.schedule(
            self, "cancel_giveup", self.host.now + 64 * self.host.timer_config.t1
        )

    def _on_own_timer(self, kind: str) -> None:
        if kind == "cancel_giveup" and self.state is LegState.CANCELLING:
            # RFC 3261 9.1: no final response 64*T1 after the CANCEL; give up on it.
            if self.invite_key is not None:
                self.host.terminate_transaction(self.invite_key)
            self._on_failure(487, "Request Terminated", None)

    def handle(self, event: CallEvent) -> None:
        if isinstance(event, Hold):
            self.reoffer(event.direction)
        elif isinstance(event, Resume):
            self.reoffer(MediaDirection.SENDRECV)
        elif isinstance(event, Hangup):
            if self.state in (LegState.CALLING, LegState.PROCEEDING):
                self.cancel()
            elif self.live:
                self.send_bye()
