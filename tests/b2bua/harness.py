"""Calls through the real SipServer routing, with no sockets: a manual clock, sends
captured and parsed, scripted phones that answer what reaches their address, a fake
media controller that records what it was told."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from softswitch.clock import ManualClock
from softswitch.config import build_config
from softswitch.media.controller import LegMedia, MediaEndpoint, MediaEvent
from softswitch.server import SipServer
from softswitch.services.location import Binding
from softswitch.sip.flow import Flow
from softswitch.sip.message import Message, Request, Response, parse_message
from softswitch.sip.transaction.events import Destination
from softswitch.store.cdr import MemoryCdrSink
from tests.support.sipmsg import (
    DigestChallenge,
    digest_authorization,
    new_branch,
    new_call_id,
    new_tag,
)

SWITCH = ("127.0.0.1", 5060)
LOCAL = "udp:127.0.0.1:5060"
ACME = "acme.example"
BETA = "beta.example"


def offer_sdp(
    port: int,
    codecs: tuple[str, ...] = ("PCMU", "PCMA"),
    direction: str = "sendrecv",
    version: int = 1,
    host: str = "127.0.0.1",
) -> bytes:
    pts = {"PCMU": 0, "PCMA": 8}
    fmts = [str(pts[c]) for c in codecs] + ["101"]
    lines = [
        "v=0",
        f"o=- 4242 {version} IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(fmts)}",
        *[f"a=rtpmap:{pts[c]} {c}/8000" for c in codecs],
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def answer_sdp(
    offer: bytes, port: int, codec: str | None = None, direction: str = "sendrecv", version: int = 1
) -> bytes:
    """A phone's answer: the first (or the named) G.711 codec of the offer."""
    text = offer.decode()
    names = [
        line.split()[1].split("/")[0]
        for line in text.splitlines()
        if line.startswith("a=rtpmap:") and "telephone-event" not in line
    ]
    chosen = codec or names[0]
    return offer_sdp(port, (chosen,), direction, version)


@dataclass
class FakeMedia:
    ports: itertools.count = field(default_factory=lambda: itertools.count(30000, 2))
    allocated: dict[tuple[str, str], MediaEndpoint] = field(default_factory=dict)
    connected: dict[str, dict[str, LegMedia]] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    handler: object = None

    def allocate(self, session_id: str, leg: str) -> MediaEndpoint:
        key = (session_id, leg)
        if key not in self.allocated:
            self.allocated[key] = MediaEndpoint("127.0.0.1", next(self.ports))
        return self.allocated[key]

    def connect(self, session_id: str, legs: dict[str, LegMedia]) -> None:
        self.connected.setdefault(session_id, {}).update(legs)

    def update(self, session_id: str, leg: str, media: LegMedia) -> None:
        self.connected.setdefault(session_id, {})[leg] = media

    def release(self, session_id: str) -> None:
        self.released.append(session_id)

    def set_event_handler(self, handler) -> None:  # type: ignore[no-untyped-def]
        self.handler = handler

    def fire(self, event: MediaEvent) -> None:
        self.handler(event)  # type: ignore[operator]


class MemoryLocation:
    def __init__(self) -> None:
        self.bindings: dict[tuple[str, str], list[Binding]] = {}

    def lookup(self, tenant: str, user: str, now: float) -> list[Binding]:
        return [b for b in self.bindings.get((tenant, user), []) if b.is_valid(now)]

    def save(self, tenant, user, updates, removals) -> None:  # type: ignore[no-untyped-def]
        current = {b.contact: b for b in self.bindings.get((tenant, user), [])}
        for c in removals:
            current.pop(c, None)
        for b in updates:
            current[b.contact] = b
        self.bindings[(tenant, user)] = list(current.values())

    def remove_all(self, tenant: str, user: str) -> None:
        self.bindings.pop((tenant, user), None)

    def purge_expired(self, now: float) -> int:
        return 0

    def all_bindings(self, now: float) -> list[Binding]:
        return [b for bs in self.bindings.values() for b in bs if b.is_valid(now)]

    def close(self) -> None:
        pass


class Switch(SipServer):
    """A SipServer whose sends land in ``wire`` and whose time is a ManualClock."""

    def __init__(
        self,
        calls: dict | None = None,
        *,
        t1: float = 0.5,
        tenants: dict | None = None,
        md5: bool = True,
    ) -> None:
        tenants = tenants or {
            ACME: [("201", "secret201"), ("202", "secret202"), ("203", "secret203")],
            BETA: [("201", "betasecret201"), ("300", "betasecret300")],
        }
        raw = {
            "listen": [LOCAL, "tcp:127.0.0.1:5060"],
            "sip": {"t1": t1, "digest_algorithms": ["MD5"] if md5 else ["SHA-256", "MD5"]},
            "security": {"ban_failures": 1000},
            "calls": calls or {},
            "tenants": [
                {"domain": d, "extensions": [{"user": u, "password": p} for u, p in exts]}
                for d, exts in tenants.items()
            ],
        }
        self.clock = ManualClock()
        self.fake_media = FakeMedia()
        self.cdr_sink = MemoryCdrSink()
        self.locations = MemoryLocation()
        config = build_config(raw, Path("/nonexistent/softswitch.toml"))
        super().__init__(
            config, self.clock, self.locations, b"k" * 32, media=self.fake_media, cdrs=self.cdr_sink
        )
        self.fake_media.set_event_handler(self._on_media_event)
        # Nonces issued in the very second the digest server started count as from a
        # previous process (stale): let time move first.
        self.clock.advance(1.0)
        self.wire: list[tuple[Message, Destination]] = []

    @property
    def cdrs_written(self):  # type: ignore[no-untyped-def]
        return self.cdr_sink.records

    def _send(self, data: bytes, dest: Destination) -> None:
        self.counters.sent += 1
        self.wire.append((parse_message(data), dest))

    def deliver(self, message: Message, source: tuple[str, int]) -> None:
        self.on_datagram(message.to_bytes(), Flow("udp", source[0], source[1], LOCAL))

    def deadline(self) -> float | None:
        ds = [
            d for d in (self.tx.next_deadline(), self.call_manager.next_deadline()) if d is not None
        ]
        return min(ds) if ds else None

    def advance(self, seconds: float) -> None:
        """Move time on, firing every timer due on the way, in order."""
        target = self.clock.now() + seconds
        while True:
            d = self.deadline()
            if d is None or d > target:
                break
            self.clock.set(max(d, self.clock.now()))
            now = self.clock.now()
            self._emit(self.tx.handle_timers(now), now)
            self._emit(self.call_manager.handle_timers(now), now)
        self.clock.set(target)

    def register(
        self,
        user: str,
        port: int,
        domain: str = ACME,
        contact_user: str | None = None,
        transport: str = "udp",
    ) -> Binding:
        contact = f"sip:{contact_user or user}@127.0.0.1:{port}"
        binding = Binding(
            domain,
            user,
            contact,
            self.clock.wall() + 3600,
            new_call_id(),
            1,
            Flow(transport, "127.0.0.1", port, LOCAL),
            registered_at=self.clock.wall(),
        )
        self.locations.save(domain, user, [binding], [])
        return binding


class Phone:
    """A scripted phone: reads what the switch sent to its port, sends what a test says."""

    _ports = itertools.count(40000, 10)

    def __init__(
        self, switch: Switch, user: str, password: str, domain: str = ACME, port: int | None = None
    ) -> None:
        self.switch = switch
        self.user, self.password, self.domain = user, password, domain
        self.port = port or next(self._ports)
        self.address = ("127.0.0.1", self.port)
        self.rtp_port = self.port + 1000
        self.inbox: list[Message] = []
        self.cseq = itertools.count(1)

    # -- reading ----------------------------------------------------------------------

    def collect(self) -> list[Message]:
        keep = []
        for msg, dest in self.switch.wire:
            if (dest.host, dest.port) == self.address:
                self.inbox.append(msg)
            else:
                keep.append((msg, dest))
        self.switch.wire[:] = keep
        return self.inbox

    def take(self, kind: str | int | None = None) -> list[Message]:
        """Remove and return received messages: requests of a method, responses of a
        status, or everything."""
        self.collect()
        got, rest = [], []
        for m in self.inbox:
            match = (
                kind is None
                or (isinstance(kind, int) and isinstance(m, Response) and m.status == kind)
                or (isinstance(kind, str) and isinstance(m, Request) and m.method == kind)
            )
            (got if match else rest).append(m)
        self.inbox = rest
        return got

    def one(self, kind: str | int) -> Message:
        got = self.take(kind)
        assert len(got) == 1, (
            f"{self.user}: expected one {kind}, got {len(got)}; inbox {self.inbox}"
        )
        return got[0]

    def statuses(self) -> list[int]:
        return [m.status for m in self.collect() if isinstance(m, Response)]

    # -- sending ----------------------------------------------------------------------

    def send(self, message: Message) -> None:
        self.switch.deliver(message, self.address)

    def request(
        self,
        method: str,
        uri: str,
        *,
        call_id: str,
        from_tag: str,
        to: str,
        to_tag: str | None = None,
        cseq: int | None = None,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        branch: str | None = None,
        from_uri: str | None = None,
    ) -> Request:
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch={branch or new_branch()}",
            "Max-Forwards: 70",
            f"From: <{from_uri or f'sip:{self.user}@{self.domain}'}>;tag={from_tag}",
            f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq if cseq is not None else next(self.cseq)} {method}",
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>",
        ]
        lines += [f"{n}: {v}" for n, v in headers or []]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        msg = parse_message(raw)
        assert isinstance(msg, Request)
        return msg

    def reply(
        self,
        request: Request,
        status: int,
        *,
        tag: str | None = None,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        lines = [f"SIP/2.0 {status} Whatever"]
        for name, value in request.headers:
            key = name.lower()
            if key in ("via", "from", "call-id", "cseq", "record-route"):
                lines.append(f"{name}: {value}")
            elif key == "to":
                if tag and "tag=" not in value:
                    value += f";tag={tag}"
                lines.append(f"{name}: {value}")
        if status < 300 or (100 < status < 200):
            lines.append(f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>")
        lines += [f"{n}: {v}" for n, v in headers or []]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        msg = parse_message(raw)
        assert isinstance(msg, Response)
        self.send(msg)
        return msg


@dataclass
class Outgoing:
    """A call the phone placed: what it needs to go on in its dialog."""

    phone: Phone
    invite: Request
    call_id: str
    from_tag: str
    to: str
    to_tag: str | None = None
    remote_target: str = "sip:127.0.0.1:5060"

    def ack(self, response: Response) -> None:
        via = self.invite.headers.get("via")
        assert via is not None
        if response.status >= 300:
            return  # the switch's transaction absorbs ours; ACK on the same branch
        self.phone.send(
            self.phone.request(
                "ACK",
                self.remote_target,
                call_id=self.call_id,
                from_tag=self.from_tag,
                to=self.to,
                to_tag=self.to_tag,
                cseq=response.cseq.seq,
            )
        )

    def in_dialog(self, method: str, body: bytes = b"", headers=None) -> Request:  # type: ignore[no-untyped-def]
        req = self.phone.request(
            method,
            self.remote_target,
            call_id=self.call_id,
            from_tag=self.from_tag,
            to=self.to,
            to_tag=self.to_tag,
            body=body,
            headers=headers,
        )
        self.phone.send(req)
        return req


def place_call(
    phone: Phone,
    target: str,
    *,
    body: bytes | None = None,
    password: str | None = None,
    headers: list | None = None,
) -> Outgoing:
    """INVITE with the 407 round trip done: returns once the authenticated INVITE is sent."""
    call_id, tag = new_call_id(), new_tag()
    to = target if target.startswith("sip:") else f"sip:{target}@{phone.domain}"
    sdp = offer_sdp(phone.rtp_port) if body is None else body
    first = phone.request(
        "INVITE", to, call_id=call_id, from_tag=tag, to=to, body=sdp, headers=headers
    )
    phone.send(first)
    challenge_resp = phone.one(407)
    assert isinstance(challenge_resp, Response)
    ack_lines = first.headers  # the ACK for a non-2xx reuses the INVITE's branch
    via = ack_lines.get("via") or ""
    branch = via.split("branch=")[1].split(";")[0]
    phone.send(
        phone.request(
            "ACK",
            to,
            call_id=call_id,
            from_tag=tag,
            to=to,
            to_tag=challenge_resp.to.tag,
            cseq=first.cseq.seq,
            branch=branch,
        )
    )
    value = challenge_resp.headers.get("proxy-authenticate") or ""
    params = dict(p.strip().split("=", 1) for p in value.split(" ", 1)[1].split(","))
    params = {k: v.strip('"') for k, v in params.items()}
    challenge = DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5"),
        qop=tuple(params.get("qop", "").split(",")) if params.get("qop") else (),
        opaque=params.get("opaque"),
    )
    auth = digest_authorization(
        challenge, method="INVITE", uri=to, username=phone.user, password=password or phone.password
    )
    invite = phone.request(
        "INVITE",
        to,
        call_id=call_id,
        from_tag=tag,
        to=to,
        body=sdp,
        headers=[("Proxy-Authorization", auth), *(headers or [])],
    )
    phone.send(invite)
    return Outgoing(phone, invite, call_id, tag, to)


@dataclass
class Established:
    switch: Switch
    alice: Phone
    bob: Phone
    out: Outgoing
    bob_invite: Request
    bob_tag: str
    ok: Response

    def bob_request(self, method: str, body: bytes = b"", headers=None) -> Request:  # type: ignore[no-untyped-def]
        """A request from Bob inside his dialog with the switch."""
        inv = self.bob_invite
        contact = inv.headers.get("contact") or ""
        target = contact.strip("<>").split(">")[0]
        msg = self.bob.request(
            method,
            target,
            call_id=inv.call_id,
            from_tag=self.bob_tag,
            from_uri=str(inv.to.uri),
            to=str(inv.from_.uri),
            to_tag=inv.from_.tag,
            body=body,
            headers=headers,
            cseq=next(self.bob.cseq) + 100,
        )
        self.bob.send(msg)
        return msg

    @property
    def call(self):  # type: ignore[no-untyped-def]
        (call,) = self.switch.call_manager.calls.values()
        return call


def establish(
    switch: Switch | None = None,
    *,
    bob_headers=None,
    alice_headers=None,  # type: ignore[no-untyped-def]
    alice_codecs=("PCMU", "PCMA"),
    bob_codec: str | None = None,
) -> Established:
    """Alice (201) calls Bob (202), Bob answers, Alice ACKs."""
    sw = switch or Switch()
    alice = Phone(sw, "201", "secret201")
    bob = Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    out = place_call(
        alice, "202", body=offer_sdp(alice.rtp_port, alice_codecs), headers=alice_headers
    )
    inv = bob.one("INVITE")
    assert isinstance(inv, Request)
    bob.reply(inv, 180, tag="bobtag")
    bob.reply(
        inv,
        200,
        tag="bobtag",
        body=answer_sdp(inv.body, bob.rtp_port, bob_codec),
        headers=bob_headers,
    )
    assert bob.take("ACK")
    ok = alice.one(200)
    assert isinstance(ok, Response)
    out.to_tag = ok.to.tag
    out.ack(ok)
    alice.take()
    bob.take()
    return Established(sw, alice, bob, out, inv, "bobtag", ok)
