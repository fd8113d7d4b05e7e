"""The CallManager: the transaction user for calls. Sans-I/O.

The signalling driver hands it INVITE, CANCEL, ACK and in-dialog requests, the
responses and failures of client transactions it started, media events and timer
ticks, each with ``now``; every call returns the messages to put on the wire (the
transaction layer's SendMessage outputs, plus ACKs and 2xx retransmissions that belong
to no transaction). Timers are pulled: ``next_deadline()`` / ``handle_timers(now)``, as
with the transaction layer, so tests run calls on a manual clock.

Look-ups are dictionaries: dialogs by ``(Call-ID, our tag)``, client transactions by
key, INVITE server transactions by key (for CANCEL), calls by id. Nothing scans the
set of calls except ``hangup_all`` at shutdown.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from softswitch.b2bua.call import Call, CallState
from softswitch.b2bua.conference import Conferences
from softswitch.b2bua.events import Cause, Side
from softswitch.b2bua.leg import (
    MEDIA_CODECS,
    CalleeLeg,
    CallerLeg,
    Leg,
    LocalAddress,
    ServerTxKey,
    codec_order,
)
from softswitch.b2bua.timers import TimerQueue
from softswitch.b2bua.trunking import TrunkCalls
from softswitch.config import Config, Extension, Tenant, parse_listen
from softswitch.logs import get_logger
from softswitch.media.controller import MediaController, MediaEndpoint, MediaEvent, MediaTimeout
from softswitch.routing import dialplan
from softswitch.services.authn import Authenticator, AuthKind
from softswitch.services.location import Binding, LocationStore
from softswitch.sip.flow import Flow
from softswitch.sip.headers import NameAddr
from softswitch.sip.ids import new_tag, random_hex
from softswitch.sip.message import Message, Request, Response, make_response
from softswitch.sip.sdp import SdpError, SessionDescription, parse_sdp
from softswitch.sip.transaction.events import Destination, Event, SendMessage, TransactionError
from softswitch.sip.transaction.keys import ClientKey, new_branch
from softswitch.sip.transaction.layer import TransactionLayer
from softswitch.sip.uri import parse_uri
from softswitch.store.cdr import CallRecord, CdrSink

log = get_logger("softswitch.calls")
security_log = get_logger("softswitch.security")


def flow_destination(flow: Flow) -> Destination:
    return Destination(flow.transport.upper(), flow.host, flow.port, flow.connection_id)


class CallManager:
    def __init__(
        self,
        tx: TransactionLayer,
        config: Config,
        auth: Authenticator,
        location: LocationStore,
        media: MediaController,
        cdrs: CdrSink,
        *,
        rng: random.Random | None = None,
        wall_offset: float = 0.0,
    ) -> None:
        self.tx = tx
        self.auth = auth
        self.location = location
        self.media = media
        self.cdrs = cdrs
        self.rng = rng or random.Random()
        self.wall_offset = wall_offset
        """Wall-clock minus monotonic time, kept current by the driver (CDR times)."""
        self.timers = TimerQueue()
        self.now = 0.0
        self.calls: dict[str, Call] = {}
        self.ended_calls = 0
        self._dialogs: dict[tuple[str, str], Leg] = {}
        self._client_keys: dict[ClientKey, Leg] = {}
        self._invites: dict[ServerTxKey, CallerLeg] = {}
        self._locals: dict[str, LocalAddress] = {}
        self._out: list[Event] = []
        self.on_call_ended: Callable[[CallRecord], None] | None = None
        self.trunks = TrunkCalls(self, config.trunking)
        self.reload(config)
        self.conferences = Conferences(self)

    def reload(self, config: Config) -> None:
        """New tenants and call settings apply to calls that start from now on."""
        self.config = config
        self.trunks.reload(config.trunking)
        self.settings = config.calls
        self.timer_config = config.sip.timers
        self._locals.clear()
        self._default_local: dict[str, LocalAddress] = {}
        for listen in config.listen:
            self._default_local.setdefault(
                listen.transport, LocalAddress(listen.transport.upper(), listen.host, listen.port)
            )

    # -- what legs use (LegHost) -------------------------------------------------------------

    def wall(self) -> float:
        return self.now + self.wall_offset

    def send_request(self, leg: Leg, request: Request, dest: Destination) -> ClientKey:
        key, out = self.tx.send_request(request, dest, self.now)
        self._client_keys[key] = leg
        self._out.extend(out)
        return key

    def respond(self, key: ServerTxKey, response: Response) -> None:
        try:
            self._out.extend(self.tx.send_response(key, response, self.now))
        except TransactionError as exc:
            # The transaction ended under us (a transport error, Timer L): nothing to do.
            log.debug("response_dropped", status=response.status, reason=str(exc))

    def send(self, message: Message, dest: Destination) -> None:
        self._out.append(SendMessage(message, dest))

    def via(self, local: LocalAddress) -> str:
        return f"SIP/2.0/{local.transport} {local.hostport};branch={new_branch()};rport"

    def add_dialog(self, leg: Leg) -> None:
        assert leg.dialog is not None
        self._dialogs[leg.dialog.key] = leg

    def drop_dialog(self, leg: Leg) -> None:
        if leg.dialog is not None and self._dialogs.get(leg.dialog.key) is leg:
            del self._dialogs[leg.dialog.key]

    def terminate_transaction(self, key: ClientKey) -> None:
        self._out.extend(self.tx.terminate(key))

    def call_ended(self, call: Call, record: CallRecord) -> None:
        self.calls.pop(call.id, None)
        self.trunks.call_ended(call.id)
        self.ended_calls += 1
        try:
            self.media.release(call.id)
        except Exception as exc:  # the media side must never keep a call record from us
            log.warning("media_release_failed", call=call.id, error=str(exc))
        self.cdrs.add(record)
        log.info(
            "call_ended",
            call=call.id,
            tenant=record.tenant,
            caller=record.caller,
            callee=record.callee,
            disposition=record.disposition,
            cause=record.hangup_cause,
            side=record.hangup_side,
            billable=record.billable_seconds,
        )
        if self.on_call_ended is not None:
            self.on_call_ended(record)

    # -- inputs ---------------------------------------------------------------------------

    def _begin(self, now: float) -> list[Event]:
        self.now = now
        out, self._out = self._out, []
        return out

    def _done(self) -> list[Event]:
        out, self._out = self._out, []
        return out

    def on_request(self, key: ServerTxKey, request: Request, flow: Flow, now: float) -> list[Event]:
        """A request that opened a server transaction: INVITE, CANCEL or anything with
        a To tag (in-dialog)."""
        self._begin(now)
        method = request.method
        try:
            if method == "CANCEL":
                self._on_cancel(key, request)
            elif request.to.tag is not None:
                self._in_dialog(key, request)
            elif method == "INVITE":
                self._new_call(key, request, flow)
            else:
                self.respond(key, _reply(request, 481))
        except Exception:
            self._failed("request", method=method, call_id=request.call_id)
            self.respond(key, _reply(request, 500))
        return self._done()

    def _failed(self, what: str, **context: object) -> None:
        # A fault in one call must not stop the others: log it with its traceback and
        # send what was produced so far.
        log.exception("call_handling_failed", input=what, **context)

    def on_ack(self, request: Request, now: float) -> list[Event]:
        """An ACK outside any transaction: the ACK for a 2xx of ours."""
        self._begin(now)
        tag = request.to.tag
        if tag is not None:
            leg = self._dialogs.get((request.call_id, tag))
            if leg is not None:
                try:
                    leg.on_ack(request)
                except Exception:
                    self._failed("ack", call_id=request.call_id)
        return self._done()

    def on_response(self, key: ClientKey, response: Response, now: float) -> list[Event]:
        self._begin(now)
        leg = self._client_keys.get(key)
        if leg is not None:
            try:
                leg.on_response(key, response)
            except Exception:
                self._failed("response", status=response.status, call_id=response.call_id)
        return self._done()

    def on_stray_response(self, response: Response, now: float) -> list[Event]:
        """A response whose transaction is gone: a 2xx retransmitted after Timer M, which
        needs our ACK again (RFC 6026)."""
        self._begin(now)
        if 200 <= response.status < 300 and response.cseq.method == "INVITE":
            tag = response.from_.tag
            leg = self._dialogs.get((response.call_id, tag or ""))
            if isinstance(leg, CalleeLeg) and leg.invite_key is not None:
                if response.cseq.seq == (leg.invite.cseq.seq if leg.invite else -1):
                    leg.on_response(leg.invite_key, response)
        return self._done()

    def on_transaction_failed(self, key: ClientKey, now: float, *, timeout: bool) -> list[Event]:
        """Timer B/F fired (``timeout``) or the transport failed for one of our requests."""
        self._begin(now)
        leg = self._client_keys.pop(key, None)
        if leg is not None:
            try:
                leg.on_transaction_failed(key, 408 if timeout else 503)
            except Exception:
                self._failed("transaction_failed", key=str(key))
        return self._done()

    def on_transaction_terminated(self, key: object) -> None:
        """The transaction layer forgot a transaction: so do we."""
        if isinstance(key, ClientKey):
            self._client_keys.pop(key, None)
        else:
            self._invites.pop(key, None)  # type: ignore[call-overload]

    def on_media_event(self, event: MediaEvent, now: float) -> list[Event]:
        self._begin(now)
        if isinstance(event, MediaTimeout):
            call = self.calls.get(event.session_id)
            if call is not None:
                log.info("media_timeout", call=call.id, leg=event.leg)
                call.on_media_timeout()
        else:
            try:
                self.conferences.on_media_event(event)
            except Exception:
                self._failed("media_event", event=type(event).__name__)
        return self._done()

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def handle_timers(self, now: float) -> list[Event]:
        self._begin(now)
        for owner, kind in self.timers.pop_due(now):
            try:
                owner.on_timer(kind, now)
            except Exception:
                self._failed("timer", kind=kind)
        return self._done()

    def active_count(self) -> int:
        return len(self.calls)

    def hangup_one(self, call_id: str, cause: Cause, now: float) -> list[Event]:
        self._begin(now)
        call = self.calls.get(call_id)
        if call is not None:
            call.hangup(cause)
        return self._done()

    def hangup_all(self, now: float, cause: Cause = Cause.SHUTDOWN) -> list[Event]:
        """End every call: BYE on both legs of answered ones, CANCEL and 503 for ringing
        ones; each gets its CDR."""
        self._begin(now)
        for call in list(self.calls.values()):
            call.hangup(cause)
        return self._done()

    # -- requests ---------------------------------------------------------------------------

    def _on_cancel(self, key: ServerTxKey, cancel: Request) -> None:
        invite_tx = self.tx.find_server_transaction_for_cancel(cancel)
        if invite_tx is None:
            self.respond(key, _reply(cancel, 481))
            return
        leg = self._invites.get(invite_tx.key)
        if leg is None:
            # An INVITE we already answered (a challenge, a refusal): RFC 3261 9.2 says
            # the CANCEL still gets its 200 and changes nothing.
            self.respond(key, _reply(cancel, 200))
            return
        leg.cancelled(key, cancel)

    def _in_dialog(self, key: ServerTxKey, request: Request) -> None:
        leg = self._dialogs.get((request.call_id, request.to.tag or ""))
        if leg is None:
            self.respond(key, _reply(request, 481))
            return
        leg.on_request(key, request)

    def _local_for(self, flow: Flow) -> LocalAddress:
        name = flow.local
        local = self._locals.get(name)
        if local is None:
            try:
                listen = parse_listen(name)
                local = LocalAddress(listen.transport.upper(), listen.host, listen.port)
            except ValueError:
                local = self._default_local.get(flow.transport) or next(
                    iter(self._default_local.values())
                )
            if name:
                self._locals[name] = local
        return local

    def _new_call(self, key: ServerTxKey, invite: Request, flow: Flow) -> None:
        # A carrier's call is known by its source address; everything else must
        # authenticate as an extension first.
        if self.trunks.inbound(key, invite, flow):
            return
        caller_uri = invite.from_.uri
        tenant = self.config.tenant(caller_uri.host) if caller_uri.is_sip else None
        if tenant is None or not caller_uri.user:
            self.respond(key, _reply(invite, 403))
            return
        outcome = self.auth.check(
            invite, AuthKind.PROXY, tenant, caller_uri.user, flow.host, self.wall(), self.now
        )
        if outcome.extension is None:
            self.respond(
                key,
                _reply(invite, outcome.status, outcome.reason or None, list(outcome.headers)),
            )
            if outcome.failure:
                security_log.warning(
                    "auth_failed",
                    source=str(flow),
                    tenant=tenant.domain,
                    user=caller_uri.user,
                    reason=outcome.log_reason,
                    method="INVITE",
                    banned=outcome.banned_now,
                )
            return
        caller = outcome.extension
        dialled = dialplan.dialled_user(invite.uri) or ""
        call = Call(
            self,
            random_hex(8),
            tenant.domain,
            caller.user,
            dialled,
            self.now,
            self.wall(),
        )
        # The caller's leg exists from here on, so every refusal below is answered and
        # recorded the same way.
        try:
            offer = _offer_of(invite)
        except SdpError as exc:
            self._refuse(call, key, invite, flow, exc.status, "Not Acceptable Here", Cause.FAILED)
            return
        route = dialplan.route(tenant, invite.uri)
        if isinstance(route, dialplan.NotFound):
            external = dialplan.external_number(tenant, invite.uri)
            if external is not None and self.trunks.handles(tenant.domain):
                self.trunks.outbound(call, key, invite, flow, offer, caller, external)
                return
            log.info("not_found", tenant=tenant.domain, caller=caller.user, detail=route.detail)
            self._refuse(call, key, invite, flow, 404, "Not Found", Cause.NOT_FOUND)
            return
        if isinstance(route, dialplan.ConferenceRoute):
            local, dest = self._local_for(flow), flow_destination(flow)
            conf_call = self.conferences.new_call(
                call, route.conference, key, invite, offer, local, dest
            )
            if conf_call is not None and conf_call.state is not CallState.ENDED:
                assert conf_call.a is not None
                self.calls[conf_call.id] = conf_call
                self._invites[key] = conf_call.a
            return
        callee = route.extension
        display = invite.from_.display or caller.name or None
        identity = NameAddr(parse_uri(f"sip:{caller.user}@{tenant.domain}"), display)
        self._ring_extension(call, key, invite, flow, offer, tenant, callee, identity)

    def _ring_extension(
        self,
        call: Call,
        key: ServerTxKey,
        invite: Request,
        flow: Flow,
        offer: SessionDescription | None,
        tenant: Tenant,
        callee: Extension,
        identity: NameAddr,
    ) -> None:
        """Ring every registered contact of ``callee``, presenting ``identity``."""
        bindings = [
            b
            for b in self.location.lookup(tenant.domain, callee.user, self.wall())
            if b.flow.transport == "udp" or b.flow.connection_id is not None
        ]
        if not bindings:
            self._refuse(call, key, invite, flow, 480, "Temporarily Unavailable", Cause.UNAVAILABLE)
            return
        endpoints = self._allocate_media(call, key, invite, flow, offer)
        if endpoints is None:
            return
        a_ep, b_ep = endpoints
        if self._caller_leg(call, key, invite, flow, offer, a_ep) is None:
            return
        aor = NameAddr(parse_uri(f"sip:{callee.user}@{tenant.domain}"), callee.name or None)
        log.info(
            "call_started",
            call=call.id,
            tenant=tenant.domain,
            caller=call.caller,
            callee=callee.user,
            contacts=len(bindings),
        )
        for index, binding in enumerate(bindings):
            b = self._branch(call, binding, index)
            b.endpoint = b_ep
            call.branches.append(b)
        for b in call.branches:
            offer_b = b.sdp.offer(MEDIA_CODECS, b_ep, codecs=codec_order(None, offer))
            b.start(offer_b, identity, aor)
        if call.state is CallState.RINGING:
            call.ring(self.settings.ring_timeout)

    def _allocate_media(
        self,
        call: Call,
        key: ServerTxKey,
        invite: Request,
        flow: Flow,
        offer: SessionDescription | None,
    ) -> tuple[MediaEndpoint, MediaEndpoint] | None:
        """The call's two media endpoints, or None when the caller has been refused."""
        try:
            a_ep = self.media.allocate(call.id, "a")
            b_ep = self.media.allocate(call.id, "b")
        except Exception as exc:  # ports exhausted or cannot bind: the caller must know
            log.warning("media_allocate_failed", call=call.id, error=str(exc))
            self._refuse(call, key, invite, flow, 503, "Service Unavailable", Cause.MEDIA_FAILED)
            return None
        if offer is not None and not _has_common_codec(offer):
            # Checked now, so a caller with no codec of ours is told before any phone
            # rings; the full negotiation happens once, when the callee's codec is known.
            self._refuse(call, key, invite, flow, 488, "Not Acceptable Here", Cause.FAILED)
            return None
        return a_ep, b_ep

    def _caller_leg(
        self,
        call: Call,
        key: ServerTxKey,
        invite: Request,
        flow: Flow,
        offer: SessionDescription | None,
        endpoint: MediaEndpoint,
    ) -> CallerLeg | None:
        """The caller's leg, taken on as a call in progress; None if it was refused."""
        a = CallerLeg(self, call, key, invite, offer, self._local_for(flow), flow_destination(flow))
        a.endpoint = endpoint
        call.a = a
        refusal = a.start()
        if refusal is not None:
            # 422: the caller retries with a longer session interval; not a call attempt.
            self.respond(key, refusal)
            self.media.release(call.id)
            return None
        self.calls[call.id] = call
        self._invites[key] = a
        return a

    def _branch(self, call: Call, binding: Binding, index: int) -> CalleeLeg:
        return CalleeLeg(
            self,
            call,
            binding,
            self._local_for(binding.flow),
            flow_destination(binding.flow),
            index,
        )

    def _refuse(
        self,
        call: Call,
        key: ServerTxKey,
        invite: Request,
        flow: Flow,
        status: int,
        reason: str,
        cause: Cause,
    ) -> None:
        """Answer a call attempt that will not ring anybody, and record it."""
        a = CallerLeg(self, call, key, invite, None, self._local_for(flow), flow_destination(flow))
        call.a = a
        self.respond(key, a._response(invite, status, reason))
        call.end(cause, Side.SWITCH, status, disposition="failed")


_AUDIO = frozenset((c.name.lower(), c.clock_rate) for c in MEDIA_CODECS if not c.is_telephone_event)


def _has_common_codec(offer: SessionDescription) -> bool:
    for m in offer.media:
        if m.media == "audio" and m.port != 0 and m.is_rtp:
            if any((name.lower(), rate) in _AUDIO for name, rate, _ch in m.rtpmap().values()):
                return True
    return False


def _offer_of(invite: Request) -> SessionDescription | None:
    if not invite.body:
        return None
    return parse_sdp(invite.body)


def _reply(
    request: Request,
    status: int,
    reason: str | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    return make_response(request, status, reason, to_tag=new_tag(), extra=extra or [])
