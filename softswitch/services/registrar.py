"""The registrar (RFC 3261 section 10.3), one location service per tenant.

Pure decisions: a REGISTER, where it came from and the time go in; a response and the
store's changes come out. No sockets and no clock reads: ``now_wall`` stamps bindings
(they outlive a restart), ``now_mono`` drives ban windows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from softswitch.config import SipSettings, Tenant
from softswitch.services.authn import Authenticator, AuthKind
from softswitch.services.location import Binding, LocationStore
from softswitch.sip.errors import SipParseError
from softswitch.sip.flow import Flow
from softswitch.sip.headers import ContactValue, parse_contacts
from softswitch.sip.ids import new_tag
from softswitch.sip.message import Request, Response, make_response

# Extensions a REGISTER may require of us (RFC 3327 Path; RFC 5626 outbound is not
# offered, so a phone that requires it learns so with 420).
SUPPORTED_EXTENSIONS = frozenset({"path"})


class RegistrarError(enum.Enum):
    """Each refusal and the response it gets (Kamailio's rerrno/reply table idea)."""

    UNKNOWN_DOMAIN = (403, "Forbidden")
    BAD_EXTENSION = (420, "Bad Extension")
    INTERVAL_TOO_BRIEF = (423, "Interval Too Brief")
    WILDCARD_WITH_CONTACTS = (400, "Wildcard Contact with other Contacts")
    WILDCARD_NONZERO_EXPIRES = (400, "Wildcard Contact needs Expires: 0")
    BAD_CONTACT = (400, "Bad Contact header")
    BAD_EXPIRES = (400, "Bad Expires header")
    OUT_OF_ORDER = (400, "Out of order CSeq")
    TOO_MANY_CONTACTS = (403, "Too many contacts")
    NOT_SIP_AOR = (400, "Bad To header")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def reason(self) -> str:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """The response to send (None: send nothing, the source is banned) and what happened,
    for the logs: ``event`` is a short name, ``security`` marks what an operator must see."""

    response: Response | None
    event: str
    tenant: str = ""
    user: str = ""
    security: bool = False
    detail: str = ""


def _tag() -> str:
    return new_tag()


class Registrar:
    def __init__(
        self,
        tenants: dict[str, Tenant],
        location: LocationStore,
        auth: Authenticator,
        settings: SipSettings,
    ) -> None:
        self.tenants = tenants
        self.location = location
        self.auth = auth
        self.settings = settings

    def handle(
        self, request: Request, flow: Flow, now_wall: float, now_mono: float
    ) -> RegisterOutcome:
        aor = request.to.uri
        if not aor.is_sip or not aor.user:
            return self._refuse(request, RegistrarError.NOT_SIP_AOR)
        tenant = self.tenants.get(aor.host.lower())
        if tenant is None:
            # Same answer for every domain we do not serve, whatever the user part.
            return self._refuse(request, RegistrarError.UNKNOWN_DOMAIN, event="unknown_domain")
        user = aor.user

        unsupported = self._unsupported(request)
        if unsupported:
            return self._refuse(
                request, RegistrarError.BAD_EXTENSION, extra=(("Unsupported", unsupported),)
            )

        # A malformed Contact is a malformed request: 400 before any challenge, so that
        # a phone is not asked for credentials only to be refused afterwards.
        try:
            contacts = parse_contacts(request.headers)
        except SipParseError:
            return self._refuse(request, RegistrarError.BAD_CONTACT)

        outcome = self.auth.check(
            request, AuthKind.WWW, tenant, user, flow.host, now_wall, now_mono
        )
        if outcome.extension is None:
            response = make_response(
                request,
                outcome.status,
                outcome.reason or None,
                to_tag=_tag(),
                extra=self._server(outcome.headers),
            )
            if outcome.failure:
                return RegisterOutcome(
                    response,
                    "auth_failed",
                    tenant.domain,
                    user,
                    True,
                    outcome.log_reason + ("; source banned" if outcome.banned_now else ""),
                )
            return RegisterOutcome(response, "challenge", tenant.domain, user)

        try:
            return self._save(request, contacts, flow, tenant, user, now_wall)
        except SipParseError:
            return self._refuse(request, RegistrarError.BAD_CONTACT)

    def _save(
        self,
        request: Request,
        contacts: list[ContactValue],
        flow: Flow,
        tenant: Tenant,
        user: str,
        now: float,
    ) -> RegisterOutcome:
        header_expires = self._expires_header(request)
        if header_expires is RegistrarError.BAD_EXPIRES:
            return self._refuse(request, RegistrarError.BAD_EXPIRES)
        existing = {b.contact: b for b in self.location.lookup(tenant.domain, user, now)}
        call_id, cseq = request.call_id, request.cseq.seq

        if any(c.wildcard for c in contacts):
            if len(contacts) > 1:
                return self._refuse(request, RegistrarError.WILDCARD_WITH_CONTACTS)
            if header_expires != 0:
                return self._refuse(request, RegistrarError.WILDCARD_NONZERO_EXPIRES)
            for b in existing.values():
                if b.call_id == call_id and cseq <= b.cseq:
                    return self._refuse(request, RegistrarError.OUT_OF_ORDER)
            self.location.remove_all(tenant.domain, user)
            return self._ok(request, tenant, user, [], now, "unregistered_all")

        updates: list[Binding] = []
        removals: list[str] = []
        path = tuple(request.headers.values("path"))
        user_agent = request.headers.get("user-agent", "") or ""
        for contact in contacts:
            expires = self._contact_expires(contact, header_expires)
            if expires is None:
                return self._refuse(request, RegistrarError.BAD_EXPIRES)
            if 0 < expires < self.settings.min_expires:
                return self._refuse(
                    request,
                    RegistrarError.INTERVAL_TOO_BRIEF,
                    extra=(("Min-Expires", str(self.settings.min_expires)),),
                )
            expires = min(expires, self.settings.max_expires)
            assert contact.address is not None
            uri = str(contact.address.uri)
            old = existing.get(uri)
            # RFC 3261 10.3 step 7: within one Call-ID the CSeq must grow.
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return self._refuse(request, RegistrarError.OUT_OF_ORDER)
            if expires == 0:
                if old is not None:
                    removals.append(uri)
                continue
            updates.append(
                Binding(
                    tenant=tenant.domain,
                    user=user,
                    contact=uri,
                    expires_at=now + expires,
                    call_id=call_id,
                    cseq=cseq,
                    flow=flow,
                    q=_q(contact),
                    path=path,
                    user_agent=user_agent[:200],
                    instance=contact.address.param("+sip.instance") or "",
                    reg_id=_int_or_none(contact.address.param("reg-id")),
                    registered_at=now,
                )
            )
        remaining = set(existing) - set(removals) | {b.contact for b in updates}
        if len(remaining) > self.settings.max_contacts:
            return self._refuse(request, RegistrarError.TOO_MANY_CONTACTS)
        if updates or removals:
            self.location.save(tenant.domain, user, updates, removals)
        event = "registered" if updates else ("unregistered" if removals else "queried")
        return self._ok(request, tenant, user, path, now, event)

    def _ok(
        self,
        request: Request,
        tenant: Tenant,
        user: str,
        path: tuple[str, ...] | list[str],
        now: float,
        event: str,
    ) -> RegisterOutcome:
        extra: list[tuple[str, str]] = []
        for b in self.location.lookup(tenant.domain, user, now):
            extra.append(("Contact", f"<{b.contact}>;expires={b.expires_in(now)}"))
        # RFC 3327 section 5.3: echo Path only to a UA that said it supports it.
        if path and "path" in self._supported(request):
            extra.extend(("Path", p) for p in path)
        response = make_response(request, 200, to_tag=_tag(), extra=self._server(extra))
        return RegisterOutcome(response, event, tenant.domain, user)

    def _refuse(
        self,
        request: Request,
        error: RegistrarError,
        *,
        extra: tuple[tuple[str, str], ...] = (),
        event: str = "refused",
    ) -> RegisterOutcome:
        response = make_response(
            request, error.status, error.reason, to_tag=_tag(), extra=self._server(extra)
        )
        return RegisterOutcome(response, event, detail=error.name.lower())

    def _server(
        self, extra: tuple[tuple[str, str], ...] | list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        out = list(extra)
        if self.settings.server_header:
            out.append(("Server", self.settings.server_header))
        return out

    @staticmethod
    def _supported(request: Request) -> set[str]:
        return {v.lower() for v in request.headers.values("supported")}

    @staticmethod
    def _unsupported(request: Request) -> str:
        required = [v for v in request.headers.values("require")]
        return ", ".join(v for v in required if v.lower() not in SUPPORTED_EXTENSIONS)

    def _expires_header(self, request: Request) -> int | None | RegistrarError:
        value = request.headers.get("expires")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit():
            return RegistrarError.BAD_EXPIRES
        # RFC 3261 20.19: values above 2**32-1 are treated as that maximum.
        return min(int(value), 2**32 - 1)

    def _contact_expires(self, contact: ContactValue, header_expires: int | None) -> int | None:
        try:
            value = contact.expires
        except SipParseError:
            return None
        if value is not None:
            return min(value, 2**32 - 1)
        if isinstance(header_expires, int):
            return header_expires
        return self.settings.default_expires


def _q(contact: ContactValue) -> float | None:
    if contact.address is None:
        return None
    value = contact.address.param("q")
    if not value:
        return None
    try:
        q = float(value)
    except ValueError:
        return None
    return q if 0.0 <= q <= 1.0 else None


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
