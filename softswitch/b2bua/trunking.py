"""Calls to and from carriers: the leg toward a trunk, and how the CallManager starts
outbound and inbound trunk calls. Sans-I/O.

An outbound call is one `TrunkLeg` that walks the tenant's trunks itself: a 5xx, a 408
or no 18x within the trunk's ``setup_timeout`` moves it to the next trunk with a fresh
dialog, so the Call above it sees one callee branch that rings, answers or fails once.
A carrier's digest challenge (401 or 407) is answered on the same trunk.

The toll-fraud guard counts a call from its permit until the Call ends, whatever the
way it ends; the trunk's slot is held for as long.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from softswitch.b2bua.call import Call, CallState
from softswitch.b2bua.events import Cause
from softswitch.b2bua.leg import (
    AUDIO_NAMES,
    MEDIA_CODECS,
    SDP,
    CalleeLeg,
    LegHost,
    LegState,
    LocalAddress,
    ServerTxKey,
    codec_order,
)
from softswitch.config import Extension, Tenant
from softswitch.logs import get_logger
from softswitch.sip.dialog import Dialog, new_call_id
from softswitch.sip.flow import Flow
from softswitch.sip.headers import Headers, NameAddr
from softswitch.sip.ids import new_tag, random_hex
from softswitch.sip.message import Request, Response, make_response
from softswitch.sip.sdp import SdpError, SessionDescription, parse_sdp
from softswitch.sip.transaction.events import Destination
from softswitch.sip.transaction.keys import ClientKey
from softswitch.sip.uri import parse_uri
from softswitch.trunks.callerid import (
    CallerId,
    called_user,
    identity_headers,
    select_caller_id,
    strip_privacy_prefix,
)
from softswitch.trunks.digest import AuthFailure, DigestClient, with_credentials
from softswitch.trunks.hunt import TrunkHunt, TrunkUsage, should_try_next
from softswitch.trunks.inbound import (
    InboundRefusal,
    NotFromTrunk,
    RegistrationView,
    inbound_decision,
)
from softswitch.trunks.model import Trunk, TrunkSettings
from softswitch.trunks.numbering import E164, Emergency, Invalid, normalise
from softswitch.trunks.policy import Denial, OutboundGuard, Permit
from softswitch.trunks.registration import RegState

if TYPE_CHECKING:
    from softswitch.b2bua.manager import CallManager

log = get_logger("softswitch.trunks")
security_log = get_logger("softswitch.security")

_REASONS = {403: "Forbidden", 484: "Address Incomplete", 503: "Service Unavailable"}


def hostport(host: str, port: int) -> str:
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return bracketed if port == 5060 else f"{bracketed}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class TrunkLeg(CalleeLeg):
    """Our UAC leg toward the carriers of one outbound call, one trunk at a time."""

    def __init__(
        self,
        host: LegHost,
        call: Call,
        hunt: TrunkHunt,
        number: E164 | Emergency,
        caller_id: CallerId,
        local: LocalAddress,
        resolve: Callable[[Trunk], Destination | None],
        prefer: list[str],
    ) -> None:
        super().__init__(host, call, None, local, Destination("UDP", "0.0.0.0", 0), 0)
        self.hunt = hunt
        self.number = number
        self.caller_id = caller_id
        self._resolve = resolve
        self._prefer = prefer
        self.trunk: Trunk | None = None
        self._auth: DigestClient | None = None
        self._ruri = ""
        self._identity: list[tuple[str, str]] = []
        self._provisional = False
        # Attempts we walked away from (setup timeout): their late answers are not ours.
        self._abandoned: dict[ClientKey, Request | None] = {}

    def __repr__(self) -> str:
        name = self.trunk.name if self.trunk else "-"
        return f"<TrunkLeg {self.call.id} {name} {self.state.value}>"

    # -- attempts --------------------------------------------------------------------

    def start_next(self, trunk: Trunk | None = None) -> bool:
        """INVITE the next trunk (or ``trunk``); False when none is left."""
        while True:
            if trunk is None:
                trunk = self.hunt.next()
            if trunk is None:
                return False
            dest = self._resolve(trunk)
            if dest is not None:
                break
            log.warning("trunk_unreachable", call=self.call.id, trunk=trunk.name)
            trunk = None
        self._reset_attempt()
        self.trunk, self.dest = trunk, dest
        self._auth = DigestClient(trunk.digest_user, trunk.password)
        self._provisional = False
        assert self.endpoint is not None
        ours = {n.lower() for n in AUDIO_NAMES}
        allowed = [c for c in trunk.codecs if c.lower() in ours]
        order = [c for c in self._prefer if c.lower() in {a.lower() for a in allowed}]
        order += [c for c in allowed if c not in order]
        self.offer = self.sdp.offer(MEDIA_CODECS, self.endpoint, codecs=order or None)
        user = called_user(self.number, trunk)
        identity = identity_headers(self.caller_id, trunk, tag=new_tag())
        from_ = identity[0][1]
        self._identity = identity[1:]
        self._ruri = f"sip:{user}@{hostport(trunk.host, trunk.port)}"
        to = f"<sip:{user}@{trunk.domain}>"
        self.host.timers.schedule(self, "setup", self.host.now + trunk.setup_timeout)
        log.info("trunk_attempt", call=self.call.id, trunk=trunk.name, number=user)
        self._send_invite(
            new_call_id(self.local.host), from_, to, 1, self.host.settings.session_expires
        )
        return True

    def _reset_attempt(self) -> None:
        self._stop_timers()
        if self.dialog is not None:
            self.dialog.terminate()
            self.host.drop_dialog(self)
            self.dialog = None
        self._set_state(LegState.CALLING)
        self.invite = None
        self.invite_key = None
        self.early_media = None
        self.media = None
        self._ack = None
        self._cancel_key = None
        self._retried_422 = False

    def _send_invite(self, call_id: str, from_: str, to: str, cseq: int, interval: int) -> None:
        assert self.offer is not None and self.trunk is not None and self._auth is not None
        trunk = self.trunk
        body = self.offer.to_bytes()
        self._asked_interval = interval
        lines: list[tuple[str, str]] = [
            ("Via", self.host.via(self.local)),
            ("Max-Forwards", "70"),
        ]
        if trunk.outbound_proxy is not None:
            lines.append(("Route", f"<sip:{hostport(*trunk.outbound_proxy)};lr>"))
        lines += [
            ("From", from_),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", self.local.contact),
            *self._dialog_headers(),
            ("Session-Expires", f"{interval};refresher=uac"),
            ("Min-SE", str(min(interval, self.host.settings.min_se))),
            *self._identity,
        ]
        # A re-sent INVITE (422) keeps the credentials the carrier took.
        credentials = self._auth.preemptive("INVITE", self._ruri)
        if credentials is not None:
            lines.append((credentials.header, credentials.value))
        lines += [("Content-Type", SDP), ("Content-Length", str(len(body)))]
        self.invite = Request("INVITE", parse_uri(self._ruri), Headers(lines), body)
        self.invite_key = self.host.send_request(self, self.invite, self.dest)

    # -- answers ---------------------------------------------------------------------

    def on_response(self, key: ClientKey, response: Response) -> None:
        if key in self._abandoned:
            invite = self._abandoned[key]
            if invite is not None and 200 <= response.status < 300:
                # The trunk we gave up on answered after all: end that session.
                stray = Dialog.as_uac(invite, response, self.local.contact)
                via = self.host.via(self.local)
                self.host.send(stray.create_request("ACK", via, cseq=invite.cseq.seq), self.dest)
                self.host.send_request(
                    self, stray.create_request("BYE", self.host.via(self.local)), self.dest
                )
            return
        super().on_response(key, response)

    def _on_provisional(self, response: Response) -> None:
        if response.status > 100 and not self._provisional:
            self._provisional = True
            self.host.timers.cancel(self, "setup")
        super()._on_provisional(response)

    def _on_failure(self, status: int, reason: str, response: Response | None) -> None:
        if self.state in (LegState.FAILED, LegState.TERMINATED, LegState.CONFIRMED):
            return
        giving_up = (
            self._cancel_wanted
            or self.state is LegState.CANCELLING
            or self.call.state is not CallState.RINGING
        )
        if not giving_up and status in (401, 407) and response is not None:
            if self._answer_challenge(response):
                return
            status, reason = 503, "Trunk Authentication Failed"
        if not giving_up and should_try_next(status) and self.trunk is not None:
            log.info(
                "trunk_failed",
                call=self.call.id,
                trunk=self.trunk.name,
                status=status,
                reason=reason,
            )
            if self.start_next():
                return
        super()._on_failure(status, reason, response)

    def _answer_challenge(self, response: Response) -> bool:
        assert self._auth is not None and self.invite is not None and self.trunk is not None
        credentials = self._auth.answer(response, "INVITE", self._ruri)
        if isinstance(credentials, AuthFailure):
            log.warning(
                "trunk_auth_failed",
                call=self.call.id,
                trunk=self.trunk.name,
                reason=credentials.reason,
            )
            return False
        self.invite = with_credentials(self.invite, credentials)
        self.invite_key = self.host.send_request(self, self.invite, self.dest)
        return True

    def on_transaction_failed(self, key: ClientKey, status: int) -> None:
        if self._abandoned.pop(key, 0) != 0:
            return
        super().on_transaction_failed(key, status)

    def _on_own_timer(self, kind: str) -> None:
        if kind != "setup":
            super()._on_own_timer(kind)
            return
        if self._provisional or self.state not in (LegState.CALLING, LegState.PROCEEDING):
            return
        assert self.trunk is not None
        log.info("trunk_setup_timeout", call=self.call.id, trunk=self.trunk.name)
        self._abandon()
        if self._cancel_wanted or self.call.state is not CallState.RINGING:
            CalleeLeg._on_failure(self, 487, "Request Terminated", None)
        elif not self.start_next():
            CalleeLeg._on_failure(self, 408, "Request Timeout", None)

    def _abandon(self) -> None:
        """Walk away from the current INVITE: CANCEL it once the carrier has said
        anything (RFC 3261 9.1), else just forget the transaction."""
        key, invite = self.invite_key, self.invite
        if key is None or invite is None:
            return
        self._abandoned[key] = invite
        if self.state is not LegState.PROCEEDING:
            self.host.terminate_transaction(key)
            return
        lines: list[tuple[str, str]] = [("Via", invite.headers.values("via")[0])]
        lines.append(("Max-Forwards", "70"))
        lines.extend(("Route", r) for r in invite.headers.values("route"))
        lines += [
            ("From", invite.headers.get("from") or ""),
            ("To", invite.headers.get("to") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} CANCEL"),
            ("Content-Length", "0"),
        ]
        cancel_key = self.host.send_request(
            self, Request("CANCEL", invite.uri, Headers(lines)), self.dest
        )
        self._abandoned[cancel_key] = None


class TrunkCalls:
    """The CallManager's trunk side: the guard, trunk usage, what the driver knows of
    registrations and resolved carrier addresses."""

    def __init__(self, manager: CallManager, settings: TrunkSettings) -> None:
        self.manager = manager
        self.guard = OutboundGuard(settings)
        self.usage = TrunkUsage()
        # Filled by the driver: registrations by trunk name, carrier host -> IP.
        self.registrations: Mapping[str, RegistrationView] = {}
        self.resolved: dict[str, str] = {}
        self._live: dict[str, tuple[Permit, TrunkHunt]] = {}

    def reload(self, settings: TrunkSettings) -> None:
        """New trunks and policies apply to calls that start from now on; calls in
        progress keep counting against the caps."""
        self.guard.update(settings)

    def destination(self, trunk: Trunk) -> Destination | None:
        """Where requests for ``trunk`` go, or None (name not resolved yet, or a
        transport we cannot originate)."""
        if trunk.transport != "udp":
            return None
        host, port = trunk.next_hop
        host = host.strip("[]")
        if not _is_ip(host):
            resolved = self.resolved.get(host)
            if resolved is None:
                return None
            host = resolved
        return Destination("UDP", host, port)

    def _available(self, trunk: Trunk) -> bool:
        if self.destination(trunk) is None:
            return False
        registration = self.registrations.get(trunk.name)
        return getattr(registration, "state", None) is not RegState.FAILED

    def handles(self, tenant: str) -> bool:
        trunking = self.manager.config.trunking.tenant(tenant)
        return trunking is not None and trunking.plan is not None

    # -- outbound --------------------------------------------------------------------

    def outbound(
        self,
        call: Call,
        key: ServerTxKey,
        invite: Request,
        flow: Flow,
        offer: SessionDescription | None,
        caller: Extension,
        dialled: str,
    ) -> None:
        """An authenticated extension dialled ``dialled``, no extension of its tenant."""
        m = self.manager
        settings = m.config.trunking
        trunking = settings.tenant(call.tenant)
        assert trunking is not None and trunking.plan is not None
        text, private = strip_privacy_prefix(dialled, trunking.privacy_prefixes)
        number = normalise(text, trunking.plan)
        if not isinstance(number, Invalid):
            call.callee = str(number)  # the CDR shows the number the carrier would get
        decision = self.guard.start_call(call.tenant, caller.user, number, m.now)
        if isinstance(decision, Denial):
            (security_log.warning if decision.security_event else log.info)(
                "outbound_refused",
                tenant=call.tenant,
                caller=caller.user,
                dialled=dialled,
                code=decision.code,
                reason=decision.reason,
                source=str(flow),
            )
            status = decision.status
            m._refuse(
                call, key, invite, flow, status, _REASONS.get(status, "Forbidden"), Cause.REJECTED
            )
            return
        permit = decision
        if permit.emergency:
            # Any trunk that can be reached at all, registered or not.
            hunt = TrunkHunt(
                settings,
                call.tenant,
                self.usage,
                available=lambda t: self.destination(t) is not None,
            )
        else:
            hunt = TrunkHunt(settings, call.tenant, self.usage, available=self._available)
        self._live[call.id] = (permit, hunt)
        first = hunt.next()
        if first is None:
            log.warning("no_trunk_available", call=call.id, tenant=call.tenant, tried=hunt.tried)
            m._refuse(call, key, invite, flow, 503, "Service Unavailable", Cause.UNAVAILABLE)
            return
        endpoints = m._allocate_media(call, key, invite, flow, offer)
        if endpoints is None:
            return
        a_ep, b_ep = endpoints
        a = m._caller_leg(call, key, invite, flow, offer, a_ep)
        if a is None:
            return
        caller_id = select_caller_id(
            trunking,
            caller.user,
            display=caller.name or None,
            privacy_requested=private,
            emergency=permit.emergency,
        )
        local = m._default_local.get("udp") or next(iter(m._default_local.values()))
        b = TrunkLeg(
            m,
            call,
            hunt,
            permit.number,
            caller_id,
            local,
            self.destination,
            codec_order(None, offer),
        )
        b.endpoint = b_ep
        call.branches.append(b)
        log.info(
            "call_started",
            call=call.id,
            tenant=call.tenant,
            caller=caller.user,
            callee=call.callee,
            number_class=permit.number_class.value,
            private=caller_id.private,
        )
        b.start_next(first)
        if call.state is CallState.RINGING:
            call.ring(m.settings.ring_timeout)

    def call_ended(self, call_id: str) -> None:
        live = self._live.pop(call_id, None)
        if live is not None:
            permit, hunt = live
            self.guard.end_call(permit)
            hunt.release()

    # -- inbound ---------------------------------------------------------------------

    def inbound(self, key: ServerTxKey, invite: Request, flow: Flow) -> bool:
        """Take the INVITE if a trunk sent it (True: it is answered or ringing)."""
        m = self.manager
        settings = m.config.trunking
        if not settings.trunks:
            return False
        decision = inbound_decision(invite, flow.host, flow.port, settings, self.registrations)
        if isinstance(decision, NotFromTrunk):
            return False
        if isinstance(decision, InboundRefusal):
            log.info(
                "inbound_refused",
                trunk=decision.trunk.name,
                status=decision.status,
                reason=decision.reason,
                source=str(flow),
            )
            m.respond(key, make_response(invite, decision.status, to_tag=new_tag()))
            return True
        did = decision.did
        tenant: Tenant | None = m.config.tenant(did.tenant)
        trunking = settings.tenant(did.tenant)
        shown = decision.caller.shown(trunking.plan if trunking is not None else None)
        call = Call(m, random_hex(8), did.tenant, shown, str(did.destination), m.now, m.wall())
        callee = tenant.extension(did.destination.user) if tenant is not None else None
        try:
            offer = parse_sdp(invite.body) if invite.body else None
        except SdpError as exc:
            m._refuse(call, key, invite, flow, exc.status, "Not Acceptable Here", Cause.FAILED)
            return True
        if tenant is None or callee is None:
            m._refuse(call, key, invite, flow, 404, "Not Found", Cause.NOT_FOUND)
            return True
        if shown == "anonymous":
            identity = NameAddr(parse_uri("sip:anonymous@anonymous.invalid"), "Anonymous")
        else:
            user = shown.replace(" ", "")
            identity = NameAddr(parse_uri(f"sip:{user}@{tenant.domain}"), decision.caller.display)
        log.info(
            "inbound_call",
            call=call.id,
            trunk=decision.trunk.name,
            did=did.number,
            tenant=tenant.domain,
            destination=callee.user,
        )
        m._ring_extension(call, key, invite, flow, offer, tenant, callee, identity)
        return True
