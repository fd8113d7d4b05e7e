"""The signalling driver: sockets in, transactions and services in the middle, sockets out.

Everything here is glue. Parsing, transactions, authentication, registration and calls
are sans-I/O objects; this module feeds them bytes with the time and sends what they
return, arming one timer for the transaction layer and the call manager together.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from softswitch import wiring
from softswitch.b2bua.call import CallState
from softswitch.b2bua.conference import SNAPSHOT_NAME
from softswitch.b2bua.events import Cause
from softswitch.b2bua.manager import CallManager
from softswitch.clock import Clock
from softswitch.config import Config, Tenant
from softswitch.logs import get_logger
from softswitch.media.controller import MediaController, MediaEvent
from softswitch.services.authn import Authenticator
from softswitch.services.bans import AuthFailureTracker
from softswitch.services.location import LocationStore
from softswitch.services.registrar import Registrar
from softswitch.sip.auth import DigestAlgorithm, DigestServer, NonceManager
from softswitch.sip.errors import SipParseError
from softswitch.sip.flow import Flow
from softswitch.sip.ids import new_tag
from softswitch.sip.message import (
    BadMessage,
    Request,
    Response,
    make_error_response,
    make_response,
    parse_message,
)
from softswitch.sip.transaction.events import (
    AckReceived,
    Destination,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    StrayAck,
    StrayResponse,
    TransactionTerminated,
    TransactionTimedOut,
    TransportError,
)
from softswitch.sip.transaction.keys import ClientKey
from softswitch.sip.transaction.layer import TransactionLayer
from softswitch.store.cdr import CdrSink
from softswitch.transport.tcp import TcpTransport
from softswitch.transport.udp import UdpTransport
from softswitch.trunk_service import TrunkRegistrations, status_path

log = get_logger("softswitch.sip")
security_log = get_logger("softswitch.security")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REGISTER"
ACCEPT = "application/sdp"
SUPPORTED = "path, timer"
SUPPORTED_SET = frozenset({"path", "timer"})
ACCEPTED_BODIES = frozenset({"application/sdp"})
# Methods we recognise; those we do not serve yet get 405 with Allow, others 501
# (RFC 3261 section 8.2.1).
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "REGISTER",
        "SUBSCRIBE",
        "NOTIFY",
        "MESSAGE",
        "INFO",
        "UPDATE",
        "PRACK",
        "REFER",
        "PUBLISH",
    }
)
SERVED_METHODS = frozenset({"OPTIONS", "REGISTER", "INVITE", "ACK", "CANCEL", "BYE", "UPDATE"})
# Requests the call manager takes even without a To tag; any other request with a To tag
# belongs to a dialog (RFC 3261 12.2.2), REGISTER aside.
CALL_METHODS = frozenset({"INVITE", "CANCEL", "BYE", "UPDATE"})
# How often buffered CDRs are written to the database.
CDR_FLUSH_INTERVAL = 0.25
# How long after a change in the conference rooms their snapshot file is rewritten.
CONFERENCE_WRITE_DELAY = 0.1


@dataclass
class Counters:
    received: int = 0
    sent: int = 0
    parse_errors: int = 0
    dropped_banned: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActiveCall:
    """One call in progress as the admin side shows it (admin.sources.CallSummary)."""

    id: str
    tenant: str
    caller: str
    callee: str
    state: str
    started_at: float
    answered_at: float | None = None
    codec: str | None = None


class ServerCalls:
    """The calls of a running server for the service edges (admin.sources.CallControl):
    counting them, listing them and ending them, with what that sends actually sent."""

    def __init__(self, server: SipServer) -> None:
        self._server = server

    def active_count(self) -> int:
        return self._server.call_manager.active_count()

    def active_calls(self) -> Sequence[ActiveCall]:
        out = []
        for call in self._server.call_manager.calls.values():
            a = call.a
            codec = a.media.codec.name if a is not None and a.media is not None else None
            out.append(
                ActiveCall(
                    call.id,
                    call.tenant,
                    call.caller,
                    call.callee,
                    call.state.value,
                    call.start_wall,
                    call.answer_wall,
                    codec,
                )
            )
        return out

    def hangup(self, call_id: str, reason: str) -> bool:
        call = self._server.call_manager.calls.get(call_id)
        if call is None or call.state is CallState.ENDED:
            return False
        cause = _cause_of(reason)
        self._server._run_calls(
            lambda now: self._server.call_manager.hangup_one(call_id, cause, now)
        )
        return True

    def hangup_all(self, reason: str) -> int:
        count = self.active_count()
        manager = self._server.call_manager
        cause = _cause_of(reason)
        self._server._run_calls(lambda now: manager.hangup_all(now, cause))
        return count


def _cause_of(reason: str) -> Cause:
    return Cause.SHUTDOWN if reason == "shutdown" else Cause.ADMIN


class SipServer:
    """Owns the transports, the transaction layer and the call manager; answers OPTIONS
    and REGISTER and hands calls to the B2BUA."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        location: LocationStore,
        nonce_secret: bytes,
        *,
        media: MediaController | None = None,
        cdrs: CdrSink | None = None,
    ) -> None:
        """``media`` and ``cdrs``: injected, or (None) created at start from the config:
        the in-process media engine and the CDR table of the state database."""
        self.config = config
        self.clock = clock
        self.location = location
        self.tx = TransactionLayer(config.sip.timers)
        self.bans = AuthFailureTracker(
            config.security.ban_failures, config.security.ban_window, config.security.ban_time
        )
        # started_at: nonce-counts of nonces issued before this process are unknown, so
        # those nonces are answered stale rather than trusted from nc=1 again.
        digest = DigestServer(
            NonceManager(nonce_secret, config.sip.nonce_lifetime),
            tuple(DigestAlgorithm.from_token(a) for a in config.sip.digest_algorithms),
            started_at=clock.wall(),
        )
        self.auth = Authenticator(digest, self.bans, config.sip.md5_only_user_agents)
        self.registrar = Registrar(self._tenant_map(config), location, self.auth, config.sip)
        self.udp: list[UdpTransport] = []
        self.tcp: list[TcpTransport] = []
        self.counters = Counters()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._purge_task: asyncio.Task[None] | None = None
        # Set when the daemon is stopping: new calls are refused with 503 + Retry-After.
        self.draining_retry_after: int | None = None
        self.media: MediaController | None = media
        self._owns_media = media is None
        self.cdrs: CdrSink | None = cdrs
        self._owns_cdrs = cdrs is None
        self._cdr_task: asyncio.Task[None] | None = None
        self._conference_file: Path | None = None
        self._conference_write: asyncio.TimerHandle | None = None
        self.call_manager = CallManager(
            self.tx,
            config,
            self.auth,
            location,
            _NoMedia() if media is None else media,
            _PendingCdrs() if cdrs is None else cdrs,
            wall_offset=clock.wall() - clock.now(),
        )
        self.calls = ServerCalls(self)
        self.trunks = TrunkRegistrations(
            self._send_trunk_request,
            self.call_manager.trunks.destination,
            status_path(config),
            wall_offset=lambda: self.clock.wall() - self.clock.now(),
            user_agent=config.sip.server_header,
        )
        # Inbound calls are recognised by the addresses the carriers answered from.
        self.call_manager.trunks.registrations = self.trunks.by_name
        self._resolve_task: asyncio.Task[None] | None = None

    @staticmethod
    def _tenant_map(config: Config) -> dict[str, Tenant]:
        return {t.domain: t for t in config.tenants}

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.cdrs is None:
            self.cdrs = wiring.open_cdr_store(self.config)
            self.call_manager.cdrs = self.cdrs
            self._cdr_task = asyncio.create_task(self._flush_cdrs())
        if self.media is None:
            try:
                self.media = await wiring.start_media(self.config)
            except OSError:
                self.close()
                raise
        self.call_manager.media = self.media
        self.media.set_event_handler(self._on_media_event)
        self._conference_file = self.config.state_dir / SNAPSHOT_NAME
        self.call_manager.conferences.on_change = self._conferences_changed
        self._write_conferences()
        try:
            for listen in self.config.listen:
                if listen.transport == "udp":
                    self.udp.append(await UdpTransport.start(listen, self.on_datagram))
                else:
                    self.tcp.append(
                        await TcpTransport.start(
                            listen,
                            self.on_datagram,
                            self._reject_unparsable,
                            self.config.sip.tcp_idle_timeout,
                        )
                    )
        except OSError:
            self.close()
            raise
        self._purge_task = asyncio.create_task(self._purge_expired())
        log.info("listening", addresses=[str(a) for a in self.config.listen])
        self._start_trunks()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._conference_file is not None:
            self._write_conferences(running=False)
            self._conference_file = None
        if self._purge_task is not None:
            self._purge_task.cancel()
        if self._resolve_task is not None:
            self._resolve_task.cancel()
        if self._cdr_task is not None:
            self._cdr_task.cancel()
        for t in self.udp:
            t.close()
        for t in self.tcp:
            t.close()
        if self._owns_media and self.media is not None:
            wiring.run_to_completion(wiring.stop_media(self.media))
            self.media = None
        if self._owns_cdrs and self.cdrs is not None:
            close = getattr(self.cdrs, "close", None)
            if close is not None:
                close()
            self.cdrs = None

    async def aclose(self) -> None:
        """close(), waiting for the media controller to stop (worker processes to
        exit) rather than abandoning a stop that has to wait."""
        if self._owns_media and self.media is not None:
            media, self.media = self.media, None
            await wiring.stop_media(media)
        self.close()

    async def _flush_cdrs(self) -> None:
        while True:
            await asyncio.sleep(CDR_FLUSH_INTERVAL)
            flush = getattr(self.cdrs, "flush", None)
            if flush is not None:
                try:
                    flush()
                except Exception as exc:  # a full disk must not stop the calls
                    log.error("cdr_write_failed", error=repr(exc))

    def start_draining(self, retry_after: int) -> None:
        """Refuse new calls from now on (503 with Retry-After); all else carries on."""
        self.draining_retry_after = retry_after

    def reload(self, config: Config) -> list[str]:
        """Take a new config without dropping anything in flight.

        Tenants, extensions, passwords and SIP/security settings change at once;
        transactions, registrations of extensions that still exist and the ban list stay.
        Listen addresses are bound at start only; a change to them is returned as a
        warning for the caller to log. Registrations of extensions that no longer exist
        are removed, so a deleted desk cannot keep receiving calls.
        """
        warnings: list[str] = []
        if set(config.listen) != set(self.config.listen):
            warnings.append("listen addresses change only on restart")
        old, new = self.config.calls, config.calls
        if (old.rtp_port_min, old.rtp_port_max, old.media_timeout, old.media_address) != (
            new.rtp_port_min,
            new.rtp_port_max,
            new.media_timeout,
            new.media_address,
        ):
            warnings.append("RTP ports, media_timeout and media_address change only on restart")
        self.config = config
        self.call_manager.reload(config)
        if self._loop is not None:
            self._start_trunks()
        self.registrar.tenants = self._tenant_map(config)
        self.registrar.settings = config.sip
        self.auth.md5_only_user_agents = config.sip.md5_only_user_agents
        self.bans.reconfigure(
            config.security.ban_failures, config.security.ban_window, config.security.ban_time
        )
        now = self.clock.wall()
        for binding in self.location.all_bindings(now):
            tenant = config.tenant(binding.tenant)
            if tenant is None or tenant.extension(binding.user) is None:
                self.location.remove_all(binding.tenant, binding.user)
        return warnings

    async def _purge_expired(self) -> None:
        while True:
            await asyncio.sleep(30.0)
            removed = self.location.purge_expired(self.clock.wall())
            if removed:
                log.info("bindings_expired", count=removed)

    # -- receive path -----------------------------------------------------------------

    def on_datagram(self, data: bytes, flow: Flow) -> None:
        """Every message from any transport enters here."""
        now = self.clock.now()
        self.call_manager.wall_offset = self.clock.wall() - now
        if self.bans.is_banned(flow.host, now):
            self.counters.dropped_banned += 1
            return
        self.counters.received += 1
        try:
            message = parse_message(data, datagram=flow.transport == "udp")
        except BadMessage as exc:
            self._reject_unparsable(exc, flow)
            return
        try:
            if isinstance(message, Request):
                self._on_request(message, flow, now)
            else:
                self._emit(self.tx.receive(message, self._destination(flow), now), now, flow)
        except SipParseError as exc:
            # A header nobody looked at before turned out broken; answer like the parser.
            if isinstance(message, Request):
                self._reply_stateless(message, flow, exc.status, exc.reason)
        self._arm_timer()

    def _on_request(self, request: Request, flow: Flow, now: float) -> None:
        self.counters.by_method[request.method] = self.counters.by_method.get(request.method, 0) + 1
        request = self._stamp_via(request, flow)
        reply_to = self._reply_destination(request, flow)
        outputs = self.tx.receive(request, reply_to, now)
        self._emit(outputs, now, flow)

    def _emit(self, outputs: list, now: float, flow: Flow | None = None) -> None:
        calls = self.call_manager
        for out in outputs:
            if isinstance(out, SendMessage):
                self._send(out.message.to_bytes(), out.destination)
            elif isinstance(out, RequestReceived):
                request = out.request
                if flow is not None and self._is_call_request(request):
                    refusal = self._refuse_call_request(request)
                    if refusal is None:
                        self._emit(calls.on_request(out.key, request, flow, now), now)
                        continue
                    response: Response | None = refusal
                else:
                    response = self._handle_request(request, flow, now)
                if response is not None:
                    self._emit(self.tx.send_response(out.key, response, now), now)
            elif isinstance(out, ResponseReceived):
                if self.trunks.owns(out.key):
                    source = flow.host if flow is not None else None
                    self.trunks.on_response(out.key, out.response, source, now)
                else:
                    self._emit(calls.on_response(out.key, out.response, now), now)
            elif isinstance(out, (StrayAck, AckReceived)):
                self._emit(calls.on_ack(out.request, now), now)
            elif isinstance(out, StrayResponse):
                self._emit(calls.on_stray_response(out.response, now), now)
            elif isinstance(out, TransactionTerminated):
                calls.on_transaction_terminated(out.key)
                self.trunks.forget(out.key)
            elif isinstance(out, (TransactionTimedOut, TransportError)):
                log.debug("transaction_failed", key=str(out.key), kind=type(out).__name__)
                if self.trunks.owns(out.key):
                    timeout = isinstance(out, TransactionTimedOut)
                    self.trunks.on_failure(out.key, now, timeout=timeout)
                elif isinstance(out.key, ClientKey):
                    timeout = isinstance(out, TransactionTimedOut)
                    self._emit(calls.on_transaction_failed(out.key, now, timeout=timeout), now)

    @staticmethod
    def _is_call_request(request: Request) -> bool:
        if request.method in CALL_METHODS:
            return True
        return request.method != "REGISTER" and request.to.tag is not None

    def _refuse_call_request(self, request: Request) -> Response | None:
        """The RFC 3261 8.2 checks, and 503 for new calls while draining."""
        refusal = self._inspect(request)
        if refusal is not None:
            return refusal
        if (
            request.method == "INVITE"
            and request.to.tag is None
            and self.draining_retry_after is not None
        ):
            return self._response(
                request,
                503,
                "Service Unavailable",
                [("Retry-After", str(self.draining_retry_after))],
            )
        return None

    def _run_calls(self, step) -> None:  # type: ignore[no-untyped-def]
        """Run a call-manager step outside the receive path and send what it returns."""
        now = self.clock.now()
        self.call_manager.wall_offset = self.clock.wall() - now
        self._emit(step(now), now)
        self._arm_timer()

    def _conferences_changed(self) -> None:
        # Joins and leaves come in bursts (a room ending sends everyone away): one
        # write for the burst.
        if self._conference_write is None and self._loop is not None:
            self._conference_write = self._loop.call_later(
                CONFERENCE_WRITE_DELAY, self._write_conferences
            )

    def _write_conferences(self, running: bool = True) -> None:
        """Rewrite the snapshot that ``softswitch conferences`` reads, atomically."""
        if self._conference_write is not None:
            self._conference_write.cancel()
            self._conference_write = None
        path = self._conference_file
        if path is None:
            return
        data = self.call_manager.conferences.snapshot(self.clock.wall())
        data["pid"] = os.getpid() if running else None
        if not running:
            data["rooms"], data["waiting"] = [], []
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("conference_snapshot_write_failed", path=str(path), error=str(exc))

    def _on_media_event(self, event: MediaEvent) -> None:
        self._run_calls(lambda now: self.call_manager.on_media_event(event, now))

    # -- the transaction user ------------------------------------------------------------

    def _handle_request(self, request: Request, flow: Flow | None, now: float) -> Response | None:
        method = request.method
        if method == "ACK":
            return None
        if method not in KNOWN_METHODS:
            return self._response(request, 501, "Not Implemented", [("Allow", ALLOW)])
        if method == "REGISTER":
            assert flow is not None
            outcome = self.registrar.handle(request, flow, self.clock.wall(), now)
            if outcome.security:
                security_log.warning(
                    "auth_failed",
                    source=str(flow),
                    tenant=outcome.tenant,
                    user=outcome.user,
                    reason=outcome.detail,
                    method=method,
                )
                if "banned" in outcome.detail:
                    security_log.warning(
                        "source_banned", source=flow.host, seconds=self.config.security.ban_time
                    )
            else:
                log.debug(
                    "register",
                    outcome=outcome.event,
                    tenant=outcome.tenant,
                    user=outcome.user,
                    source=str(flow),
                    detail=outcome.detail,
                )
            return outcome.response
        refusal = self._inspect(request)
        if refusal is not None:
            return refusal
        if method == "OPTIONS":
            return self._response(
                request,
                200,
                "OK",
                [
                    ("Allow", ALLOW),
                    ("Accept", ACCEPT),
                    ("Accept-Encoding", "identity"),
                    ("Accept-Language", "en"),
                    ("Supported", SUPPORTED),
                ],
            )
        return self._response(request, 405, "Method Not Allowed", [("Allow", ALLOW)])

    def _inspect(self, request: Request) -> Response | None:
        """The checks of RFC 3261 section 8.2 that every non-REGISTER request passes, in
        the RFC's order: addressee, required extensions, hops, then the body."""
        method = request.method
        if not self._domain_is_ours(request):
            # One answer for every domain we do not serve.
            return self._response(request, 403, "Forbidden")
        if method not in ("CANCEL", "ACK"):
            unsupported = [
                v for v in request.headers.values("require") if v.lower() not in SUPPORTED_SET
            ]
            if unsupported:
                return self._response(
                    request, 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))]
                )
        # A request for a user is passed on toward that user's phones (RFC 3261 16.3
        # step 2): with no hops left it ends here.
        if request.uri.user and request.max_forwards == 0:
            return self._response(request, 483, "Too Many Hops")
        if request.body:
            content_type = request.content_type
            if content_type is not None and content_type not in ACCEPTED_BODIES:
                return self._response(request, 415, "Unsupported Media Type", [("Accept", ACCEPT)])
            encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
            if encoding != "identity":
                return self._response(
                    request, 415, "Unsupported Media Type", [("Accept-Encoding", "identity")]
                )
        if method == "INVITE" and not self._accepts_sdp(request):
            # Our answer would carry SDP, which the caller says it cannot take.
            return self._response(request, 406, "Not Acceptable")
        return None

    @staticmethod
    def _accepts_sdp(request: Request) -> bool:
        values = request.headers.values("accept")
        if not values:
            return True
        for value in values:
            media = value.split(";", 1)[0].strip().lower()
            if media in ("application/sdp", "application/*", "*/*"):
                return True
        return False

    def _domain_is_ours(self, request: Request) -> bool:
        uri = request.uri
        if not uri.is_sip:
            return False
        host = uri.host.strip("[]")
        try:
            ipaddress.ip_address(host)
            return True  # addressed to an IP: to this server, whichever of its addresses
        except ValueError:
            pass
        return self.config.tenant(host) is not None

    def _response(
        self, request: Request, status: int, reason: str, extra: list | None = None
    ) -> Response:
        headers = list(extra or [])
        if self.config.sip.server_header:
            headers.append(("Server", self.config.sip.server_header))
        return make_response(request, status, reason, to_tag=new_tag(), extra=headers)

    # -- errors before a transaction exists -------------------------------------------

    def _reject_unparsable(self, exc: BadMessage, flow: Flow) -> None:
        self.counters.parse_errors += 1
        partial = exc.partial
        response = None
        if partial is not None and partial.method != "ACK":
            response = make_error_response(exc, to_tag=new_tag())
        if response is None or partial is None or partial.top_via is None:
            # RFC 3261 section 18.2.1: a fault in a response, or a request whose top Via
            # cannot be read, cannot be answered: no response could be routed.
            log.debug("dropped_unparsable", source=str(flow), reason=exc.reason)
            return
        self._send(response.to_bytes(), self._reply_destination_from_via(partial.top_via, flow))
        log.debug("rejected_unparsable", source=str(flow), status=exc.status, reason=exc.reason)

    def _reply_stateless(self, request: Request, flow: Flow, status: int, reason: str) -> None:
        try:
            response = make_response(request, status, reason)
            dest = self._reply_destination(request, flow)
        except SipParseError:
            return
        self._send(response.to_bytes(), dest)

    # -- addressing -------------------------------------------------------------------

    @staticmethod
    def _stamp_via(request: Request, flow: Flow) -> Request:
        """RFC 3261 18.2.1 ``received`` and RFC 3581 ``rport``: tell the phone (and
        ourselves, when the response goes out) where the request really came from."""
        top = request.top_via
        changes: dict[str, str | None] = {}
        if top.host.strip("[]") != flow.host:
            changes["received"] = flow.host
        if top.has_param("rport"):
            changes["rport"] = str(flow.port)
            changes.setdefault("received", flow.host)
        if not changes:
            return request
        stamped = top.with_params(**changes)
        headers = request.headers.remove_first("via").prepend("Via", str(stamped))
        # Everything parsed so far still holds; only the top Via changed.
        cache = dict(request._cache)
        cache["via"] = (stamped, *request.vias[1:])
        return request.replace(headers=headers, _cache=cache)

    def _reply_destination(self, request: Request, flow: Flow) -> Destination:
        return self._reply_destination_from_via(request.top_via, flow)

    @staticmethod
    def _reply_destination_from_via(via, flow: Flow) -> Destination:  # type: ignore[no-untyped-def]
        if flow.transport != "udp":
            return Destination(flow.transport.upper(), flow.host, flow.port, flow.connection_id)
        # RFC 3581: with rport, back to the source port; otherwise to the sent-by port at
        # the source address (RFC 3261 18.2.2).
        if via.has_param("rport"):
            return Destination("UDP", flow.host, flow.port)
        return Destination("UDP", flow.host, via.port or 5060)

    @staticmethod
    def _destination(flow: Flow) -> Destination:
        return Destination(flow.transport.upper(), flow.host, flow.port, flow.connection_id)

    def _send(self, data: bytes, dest: Destination) -> None:
        self.counters.sent += 1
        v6 = ":" in dest.host
        if dest.transport == "UDP":
            for t in self.udp:
                if t.listen.family_v6 == v6:
                    t.send(data, dest.host, dest.port)
                    return
            log.debug("no_udp_socket", destination=dest.host)
            return
        for t in self.tcp:
            if t.send(data, dest.connection_id):
                return
        log.debug("tcp_connection_gone", destination=f"{dest.host}:{dest.port}")

    # -- timers -----------------------------------------------------------------------

    def _arm_timer(self) -> None:
        deadline = self.tx.next_deadline()
        calls_deadline = self.call_manager.next_deadline()
        if calls_deadline is not None and (deadline is None or calls_deadline < deadline):
            deadline = calls_deadline
        trunks_deadline = self.trunks.next_deadline()
        if trunks_deadline is not None and (deadline is None or trunks_deadline < deadline):
            deadline = trunks_deadline
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is None or self._loop is None:
            return
        delay = max(0.0, deadline - self.clock.now())
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        at = self._timer_at or 0.0
        self._timer_at = None
        # Never act before the deadline even if the loop woke a little early.
        now = max(at, self.clock.now())
        self.call_manager.wall_offset = self.clock.wall() - self.clock.now()
        self._emit(self.tx.handle_timers(now), now)
        self._emit(self.call_manager.handle_timers(now), now)
        self.trunks.tick(now)
        self._arm_timer()

    # -- trunks -----------------------------------------------------------------------

    def _send_trunk_request(self, request: Request, dest: Destination, now: float) -> ClientKey:
        key, out = self.tx.send_request(request, dest, now)
        self._emit(out, now)
        return key

    def _start_trunks(self) -> None:
        """(Re)create the carrier registrations of the current config, and look up the
        carriers named by host name."""
        self.trunks.configure(self.config, self.clock.now())
        named = any(
            not _is_ip(t.next_hop[0]) for t in self.config.trunking.trunks if t.transport == "udp"
        )
        if named and self._resolve_task is None:
            self._resolve_task = asyncio.create_task(self._resolve_trunks())
        self._arm_timer()

    async def _resolve_trunks(self) -> None:
        """Carrier host names to addresses at start and every few minutes: a carrier
        that moves its SBC is followed without a restart."""
        loop = asyncio.get_running_loop()
        resolved = self.call_manager.trunks.resolved
        while True:
            for trunk in self.config.trunking.trunks:
                host, port = trunk.next_hop
                if _is_ip(host):
                    continue
                try:
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
                except OSError as exc:
                    log.warning("trunk_dns_failed", trunk=trunk.name, host=host, error=str(exc))
                    continue
                v6 = any(t.listen.family_v6 for t in self.udp)
                v4 = any(not t.listen.family_v6 for t in self.udp)
                for family, _type, _proto, _name, sockaddr in infos:
                    if (family == socket.AF_INET and v4) or (family == socket.AF_INET6 and v6):
                        resolved[host] = str(sockaddr[0])
                        break
            self.trunks.tick(self.clock.now())
            self._arm_timer()
            await asyncio.sleep(300.0)

    def stop_trunks(self) -> None:
        """Unregister from every carrier (the daemon is stopping)."""
        self.trunks.stop(self.clock.now())
        self._arm_timer()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class _NoMedia:
    """Stands in until start() has the real media controller."""

    def allocate(self, session_id: str, leg: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("media not started")

    def connect(self, session_id, legs) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("media not started")

    def update(self, session_id, leg, media) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("media not started")

    def release(self, session_id: str) -> None:
        pass

    def set_event_handler(self, handler) -> None:  # type: ignore[no-untyped-def]
        pass


class _PendingCdrs:
    """Keeps records made before start() opened the store (there are none in practice)."""

    def __init__(self) -> None:
        self.records: list = []

    def add(self, record) -> None:  # type: ignore[no-untyped-def]
        self.records.append(record)
