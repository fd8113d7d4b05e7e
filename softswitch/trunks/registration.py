"""Registering the switch with a carrier (RFC 3261 section 10.2, client side). Pure.

The driver owns the transactions: it sends every Request this machine returns as a
non-INVITE client transaction, feeds back the final response (`on_response`), a
transaction timeout (`on_timeout`) or a transport error, and calls `handle_timer` at
`next_deadline()`. Only the newest REGISTER matters: a late answer to an older one is
ignored, so the driver never has to cancel anything.

Timing:

* refresh at ``expires - max(5 s, 10 %)`` after the 200, never later than half-way, so
  one lost refresh still has time to be retried by the transaction before expiry;
* on failure, retry after 30 s, 60 s, 120 s ... capped at 600 s, each shortened by up to
  25 % of jitter from an injected ``random.Random`` so a fleet of switches restarted
  together does not hammer the carrier in step; a ``Retry-After`` is honoured when longer.
"""

from __future__ import annotations

import enum
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from softswitch.sip.errors import SipParseError
from softswitch.sip.headers import Headers, parse_contacts, parse_int_header
from softswitch.sip.message import Request, Response
from softswitch.sip.transaction.keys import new_branch
from softswitch.sip.uri import Uri, parse_uri
from softswitch.trunks.digest import AuthFailure, Credentials, DigestClient
from softswitch.trunks.model import Trunk

__all__ = [
    "RegState",
    "RegistrationTimers",
    "StateChange",
    "TrunkRegistration",
    "TrunkStatus",
]

_ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"
# A carrier asking for more than a day between refreshes is misconfigured; following it
# would leave the trunk silently unregistered for that long after any glitch.
_MAX_MIN_EXPIRES = 86400


class RegState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"


@dataclass(frozen=True, slots=True)
class RegistrationTimers:
    retry_base: float = 30.0
    retry_max: float = 600.0
    jitter: float = 0.25  # fraction of the delay that may be taken off at random
    refresh_min_margin: float = 5.0
    refresh_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.retry_base <= self.retry_max:
            raise ValueError("need 0 < retry_base <= retry_max")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class StateChange:
    """For the logs: a trunk's registration moved to ``state`` (``reason`` says why)."""

    trunk: str
    state: RegState
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class TrunkStatus:
    """A snapshot for ``softswitch trunks`` and the admin page; times are epoch seconds."""

    trunk: str
    state: str
    reason: str
    registered_until: float | None
    next_attempt: float | None
    failures: int
    last_status: int | None
    public_address: str | None

    def to_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrunkStatus:
        return cls(**{name: data.get(name) for name in cls.__slots__})  # type: ignore[arg-type]


def _token() -> str:
    return secrets.token_hex(8)


class TrunkRegistration:
    def __init__(
        self,
        trunk: Trunk,
        local_contact: str | Uri,
        timers: RegistrationTimers | None = None,
        *,
        rng: random.Random | None = None,
        user_agent: str | None = None,
        token: Callable[[], str] = _token,
    ) -> None:
        """``local_contact``: the URI the carrier should send calls to (our public
        address, with ``;transport=tcp`` when needed). ``token`` makes Call-ID, tag and
        cnonces; tests pass a deterministic one."""
        if not trunk.username:
            raise ValueError(f"trunk {trunk.name} has no username to register")
        self.trunk = trunk
        self.contact = parse_uri(local_contact) if isinstance(local_contact, str) else local_contact
        self.timers = timers or RegistrationTimers()
        self._rng = rng or random.Random()
        self._user_agent = user_agent
        self._token = token
        self._auth = DigestClient(trunk.digest_user, trunk.password, cnonce=token)
        self.call_id = f"{token()}@{self.contact.host.strip('[]')}"
        self._from_tag = token()
        self._cseq = 0
        self._branch: str | None = None  # branch of the REGISTER awaiting an answer
        self._expires_sent = 0
        self.requested_expires = trunk.register_expires

        self.state = RegState.UNREGISTERED
        self.reason = "not started"
        self.registered_until: float | None = None
        self.granted_expires: int | None = None
        self.failures = 0
        self.last_status: int | None = None
        self.public_address: str | None = None  # what the carrier saw (Via received/rport)
        self.peer_addresses: frozenset[str] = frozenset()
        self._deadline: float | None = None
        self._changes: list[StateChange] = []

    # -- identity --

    @property
    def aor(self) -> str:
        return f"sip:{self.trunk.username}@{self.trunk.domain}"

    @property
    def request_uri(self) -> str:
        return f"sip:{self.trunk.domain}"

    @property
    def contact_user(self) -> str | None:
        return self.contact.user

    # -- driver API --

    def start(self, now: float) -> list[Request]:
        """Begin registering (no-op if already running)."""
        if self.state not in (RegState.UNREGISTERED, RegState.FAILED):
            return []
        if self.state is RegState.FAILED and self._deadline is not None and now < self._deadline:
            return []
        self._set(RegState.REGISTERING, "sending REGISTER", now)
        return [self._register(self.requested_expires)]

    def stop(self, now: float) -> list[Request]:
        """Unregister (``Expires: 0``) if registered or on the way; otherwise just stop."""
        self._deadline = None
        if self.state in (RegState.REGISTERED, RegState.REGISTERING):
            self._set(RegState.UNREGISTERING, "stopping", now)
            self.registered_until = None
            return [self._register(0)]
        self._branch = None
        if self.state is not RegState.UNREGISTERING:
            self._set(RegState.UNREGISTERED, "stopped", now)
        return []

    def on_response(
        self, response: Response, now: float, source: str | None = None
    ) -> list[Request]:
        """Feed a response to our REGISTER; ``source`` is the IP it came from."""
        if not self._matches(response):
            return []
        if response.status < 200:
            return []
        self.last_status = response.status
        self._branch = None
        unregistering = self.state is RegState.UNREGISTERING
        if response.status in (401, 407):
            answer = self._auth.answer(response, "REGISTER", self.request_uri)
            if isinstance(answer, AuthFailure):
                if unregistering:
                    self._set(RegState.UNREGISTERED, f"unregister refused: {answer.reason}", now)
                    return []
                return self._fail(answer.reason, now)
            return [self._register(self._expires_sent, answer)]
        if response.status == 423:
            return self._interval_too_brief(response, now, unregistering)
        if 200 <= response.status < 300:
            self._auth.accepted()
            self._learn(response, source)
            if unregistering:
                self._set(RegState.UNREGISTERED, "unregistered", now)
                return []
            return self._registered(response, now)
        self._auth.accepted()
        if unregistering:
            self._set(RegState.UNREGISTERED, f"unregister answered {response.status}", now)
            return []
        reason = f"{response.status} {response.reason}".strip()
        return self._fail(reason, now, _retry_after(response.headers))

    def on_timeout(self, now: float) -> list[Request]:
        """The REGISTER transaction timed out (Timer F)."""
        return self._lost("no response from the carrier", now)

    def on_transport_error(self, now: float) -> list[Request]:
        return self._lost("transport error", now)

    def next_deadline(self) -> float | None:
        deadline = self._deadline
        if self.state is RegState.REGISTERED and self._branch is not None:
            # A refresh is in flight: the binding may run out before its answer comes.
            if self.registered_until is not None:
                deadline = (
                    self.registered_until
                    if deadline is None
                    else min(deadline, self.registered_until)
                )
        return deadline

    def handle_timer(self, now: float) -> list[Request]:
        """Refresh, retry or notice expiry when ``next_deadline()`` has passed."""
        if (
            self.state is RegState.REGISTERED
            and self.registered_until is not None
            and now >= self.registered_until
        ):
            self.registered_until = None
            self._set(RegState.REGISTERING, "registration expired while refreshing", now)
            if self._branch is not None:
                return []
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        if self.state is RegState.REGISTERED:
            return [self._register(self.requested_expires)]
        if self.state is RegState.FAILED:
            self._set(RegState.REGISTERING, f"retrying after: {self.reason}", now)
            return [self._register(self.requested_expires)]
        if self.state is RegState.REGISTERING and self._branch is None:
            return [self._register(self.requested_expires)]
        return []

    handle_timers = handle_timer  # the name the other layers use

    def pop_changes(self) -> list[StateChange]:
        """State changes since the last call, oldest first (the driver logs them)."""
        changes, self._changes = self._changes, []
        return changes

    def status(self, now: float, wall: float) -> TrunkStatus:
        """Snapshot with monotonic deadlines turned into epoch seconds."""

        def to_wall(t: float | None) -> float | None:
            return None if t is None else round(wall + (t - now), 3)

        return TrunkStatus(
            trunk=self.trunk.name,
            state=self.state.value,
            reason=self.reason,
            registered_until=to_wall(self.registered_until),
            next_attempt=to_wall(self._deadline if self.state is RegState.FAILED else None),
            failures=self.failures,
            last_status=self.last_status,
            public_address=self.public_address,
        )

    # -- internals --

    def _matches(self, response: Response) -> bool:
        if self._branch is None:
            return False
        try:
            cseq = response.cseq
            branch = response.top_via.branch
        except SipParseError:
            return False
        return cseq.method == "REGISTER" and cseq.seq == self._cseq and branch == self._branch

    def _set(self, state: RegState, reason: str, now: float) -> None:
        if state is not self.state or reason != self.reason:
            self.state, self.reason = state, reason
            self._changes.append(StateChange(self.trunk.name, state, reason, now))

    def _register(self, expires: int, credentials: Credentials | None = None) -> Request:
        """A REGISTER; without fresh ``credentials`` it carries the cached ones, if any."""
        if credentials is None:
            credentials = self._auth.preemptive("REGISTER", self.request_uri)
        self._cseq += 1
        self._branch = new_branch()
        self._expires_sent = expires
        contact = self.contact
        host = contact.host
        sent_by = host if contact.port is None else f"{host}:{contact.port}"
        lines: list[tuple[str, str]] = [
            (
                "Via",
                f"SIP/2.0/{self.trunk.transport.upper()} {sent_by};branch={self._branch};rport",
            ),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self._from_tag}"),
            ("To", f"<{self.aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", f"<{contact}>"),
            ("Expires", str(expires)),
            ("Allow", _ALLOW),
        ]
        if self._user_agent:
            lines.append(("User-Agent", self._user_agent))
        if credentials is not None:
            lines.append((credentials.header, credentials.value))
        lines.append(("Content-Length", "0"))
        return Request("REGISTER", parse_uri(self.request_uri), Headers(lines))

    def _registered(self, response: Response, now: float) -> list[Request]:
        expires = self._granted(response)
        if expires is None or expires <= 0:
            return self._fail("200 OK without our Contact or with no time granted", now)
        self.granted_expires = expires
        self.failures = 0
        self.registered_until = now + expires
        margin = max(self.timers.refresh_min_margin, self.timers.refresh_fraction * expires)
        self._deadline = now + expires - min(margin, expires / 2)
        self._set(RegState.REGISTERED, f"registered for {expires} s", now)
        return []

    def _granted(self, response: Response) -> int | None:
        try:
            contacts = parse_contacts(response.headers)
            header = parse_int_header(response.headers, "expires")
        except SipParseError:
            return None
        ours = [
            c for c in contacts if c.address is not None and _same_uri(c.address.uri, self.contact)
        ]
        for contact in ours:
            try:
                value = contact.expires
            except SipParseError:
                value = None
            if value is not None:
                return value
        if ours or not contacts:
            return header if header is not None else self._expires_sent
        # Our Contact is missing (a registrar that rewrote it behind NAT): trust the
        # Expires header, else the single binding it reports.
        if header is not None:
            return header
        if len(contacts) == 1:
            try:
                return contacts[0].expires
            except SipParseError:
                return None
        return None

    def _learn(self, response: Response, source: str | None) -> None:
        if source:
            self.peer_addresses = self.peer_addresses | {source}
        try:
            via = response.top_via
        except SipParseError:
            return
        received = via.param("received")
        rport = via.param("rport")
        if received or rport:
            host = received or via.host
            self.public_address = f"{host}:{rport}" if rport else host

    def _interval_too_brief(
        self, response: Response, now: float, unregistering: bool
    ) -> list[Request]:
        try:
            minimum = parse_int_header(response.headers, "min-expires")
        except SipParseError:
            minimum = None
        if unregistering:
            self._set(RegState.UNREGISTERED, "unregister answered 423", now)
            return []
        if minimum is None or minimum <= self._expires_sent or minimum > _MAX_MIN_EXPIRES:
            return self._fail(f"423 with unusable Min-Expires {minimum}", now)
        self.requested_expires = minimum
        return [self._register(minimum)]

    def _lost(self, reason: str, now: float) -> list[Request]:
        if self._branch is None:
            return []
        self._branch = None
        if self.state is RegState.UNREGISTERING:
            self._set(RegState.UNREGISTERED, f"unregister: {reason}", now)
            return []
        return self._fail(reason, now)

    def _fail(self, reason: str, now: float, retry_after: int | None = None) -> list[Request]:
        self.failures += 1
        self.registered_until = None
        delay = min(self.timers.retry_max, self.timers.retry_base * 2 ** (self.failures - 1))
        delay *= 1 - self.timers.jitter * self._rng.random()
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        self._deadline = now + delay
        self._set(RegState.FAILED, reason, now)
        return []


def _retry_after(headers: Headers) -> int | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    head = value.split(";", 1)[0].split("(", 1)[0].strip()
    return int(head) if head.isascii() and head.isdigit() and len(head) < 8 else None


def _same_uri(a: Uri, b: Uri) -> bool:
    # RFC 3261 19.1.4 in the parts that matter here: user exact, host case-insensitive,
    # port with 5060 as the default (5061 for sips).
    default = 5061 if b.scheme == "sips" else 5060
    return (
        a.scheme == b.scheme
        and a.user == b.user
        and a.host.lower() == b.host.lower()
        and (a.port or default) == (b.port or default)
    )
