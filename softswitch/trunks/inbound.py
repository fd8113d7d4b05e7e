"""Calls from carriers: which trunk sent this, which DID it is for, who is calling. Pure.

A request is from a trunk only because of where it came from: the trunk's configured
addresses and networks, an IP-literal host or outbound proxy, or the addresses the
carrier answered our REGISTERs from. Nothing a request says about itself (Via, From,
Contact, P-Asserted-Identity, a "trusted" header) counts, since anyone can write it. A
request that is not from a trunk is a phone's, and must authenticate like one before
it may reach anything outside the switch: the switch is never an open relay.

Source ports are not compared: carriers send from pools of ports, and over TCP from
ephemeral ones. Where two trunks share a carrier's addresses (two accounts at one
carrier), the Request-URI user tells them apart when each registration uses its own
Contact user; that is only a tie-break between trunks the source already proved.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from softswitch.sip.errors import SipParseError
from softswitch.sip.headers import NameAddr, parse_name_addr
from softswitch.sip.message import Request
from softswitch.sip.uri import Uri
from softswitch.trunks.model import Did, Trunk, TrunkSettings
from softswitch.trunks.numbering import E164, NumberingPlan, display_number, e164_re, make_plan

__all__ = [
    "CallerInfo",
    "InboundCall",
    "InboundRefusal",
    "NotFromTrunk",
    "RegistrationView",
    "caller_info",
    "did_candidates",
    "dialled_user",
    "identify_trunk",
    "inbound_decision",
    "lookup_did",
]

_SEPARATORS = str.maketrans("", "", " -.()")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RegistrationView(Protocol):
    """What inbound identification needs of a `TrunkRegistration`."""

    @property
    def peer_addresses(self) -> frozenset[str]: ...

    @property
    def contact_user(self) -> str | None: ...


def _ip(text: str) -> IPAddress | None:
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _from_trunk(addr: IPAddress, trunk: Trunk, registration: RegistrationView | None) -> bool:
    if any(addr in net for net in trunk.inbound_addresses):
        return True
    for host in (trunk.host, trunk.outbound_proxy[0] if trunk.outbound_proxy else None):
        if host is not None and _ip(host) == addr:
            return True
    if registration is not None:
        return any(_ip(a) == addr for a in registration.peer_addresses)
    return False


def identify_trunk(
    source_ip: str,
    source_port: int,
    trunks: Sequence[Trunk],
    registrations: Mapping[str, RegistrationView],
    *,
    contact_user: str | None = None,
) -> Trunk | None:
    """The trunk a request from ``source_ip`` came through, or None (a phone, or anyone).

    ``source_port`` is accepted for the record but not matched (see the module notes);
    ``contact_user`` (the Request-URI user) only breaks ties between matching trunks.
    """
    del source_port
    addr = _ip(source_ip)
    if addr is None:
        return None
    matches = [t for t in trunks if _from_trunk(addr, t, registrations.get(t.name))]
    if len(matches) > 1 and contact_user is not None:
        for trunk in matches:
            registration = registrations.get(trunk.name)
            if registration is not None and registration.contact_user == contact_user:
                return trunk
    return matches[0] if matches else None


def _trunk_plan(trunk: Trunk) -> NumberingPlan | None:
    return make_plan(trunk.country) if trunk.country else None


def did_candidates(user: str, trunk: Trunk) -> list[str]:
    """The E.164 numbers ``user`` may mean as written by ``trunk``'s carrier, in order:
    ``+39...``, ``0039...``, ``39...`` and national forms of the trunk's country."""
    text = user.split(";", 1)[0].translate(_SEPARATORS)
    out: list[str] = []

    def add(number: str) -> None:
        if e164_re().fullmatch(number) and number not in out:
            out.append(number)

    if text.startswith("+"):
        add(text)
        return out
    if not (text.isascii() and text.isdigit()):
        return out
    plan = _trunk_plan(trunk)
    if plan is not None:
        ip = plan.international_prefix
        if text.startswith(ip):
            add("+" + text[len(ip) :])
        tp = plan.trunk_prefix
        if tp and text.startswith(tp):
            add("+" + plan.country_code + text[len(tp) :])
        if not tp:
            add("+" + plan.country_code + text)
    if not text.startswith("0"):
        add("+" + text)  # E.164 without the plus, a common carrier habit
    if plan is not None and plan.trunk_prefix:
        add("+" + plan.country_code + text)  # national number with the trunk prefix dropped
    return out


def lookup_did(user: str, numbers: Mapping[str, Did], trunk: Trunk) -> Did | None:
    """The DID ``user`` (from the Request-URI or To, per the trunk) names, if any, and
    only if ``trunk`` carries that DID's tenant."""
    for number in did_candidates(user, trunk):
        did = numbers.get(number)
        if did is not None:
            return did if trunk.allows_tenant(did.tenant) else None
    return None


def dialled_user(request: Request, trunk: Trunk) -> str | None:
    """The user part the trunk puts the dialled number in (Request-URI or To)."""
    try:
        uri = request.uri if trunk.did_from == "ruri" else request.to.uri
    except SipParseError:
        return None
    return _user(uri)


def _user(uri: Uri) -> str | None:
    if uri.scheme == "tel":
        return uri.user
    return uri.user_unescaped if uri.is_sip else None


@dataclass(frozen=True, slots=True)
class CallerInfo:
    """The calling party as the callee's phone should show it."""

    number: str | None  # E.164 when it could be understood, else as sent (or None)
    display: str | None
    private: bool

    def shown(self, plan: NumberingPlan | None) -> str:
        """The number in the callee's national format, so that call-back works."""
        if self.private or self.number is None:
            return "anonymous"
        if plan is not None and e164_re().fullmatch(self.number):
            return display_number(E164(self.number), plan)
        return self.number


def caller_info(request: Request, trunk: Trunk) -> CallerInfo:
    """Who is calling, from a request already known to come from ``trunk``.

    The carrier is trusted (RFC 3325 trust domain) once the source address proved it, so
    its P-Asserted-Identity is preferred over From; ``Privacy: id`` or an anonymous From
    hides the number.
    """
    privacy = {p.strip().lower() for p in ",".join(request.headers.get_all("privacy")).split(";")}
    private = "id" in privacy or "user" in privacy
    addresses: list[NameAddr] = []
    for value in request.headers.values("p-asserted-identity"):
        try:
            addresses.append(parse_name_addr(value))
        except SipParseError:
            continue
    try:
        addresses.append(request.from_)
    except SipParseError:
        pass
    for addr in addresses:
        user = _user(addr.uri)
        if user and not user.lower().startswith("anonymous"):
            break
    else:
        return CallerInfo(None, None, True)
    numbers = did_candidates(user, trunk)
    display = addr.display
    if display is not None and display.strip().lower() in ("anonymous", "unknown", ""):
        display = None
    return CallerInfo(numbers[0] if numbers else user, display, private)


@dataclass(frozen=True, slots=True)
class InboundCall:
    trunk: Trunk
    did: Did
    caller: CallerInfo


@dataclass(frozen=True, slots=True)
class NotFromTrunk:
    """Not from any trunk: handle as a phone's request (authenticate it; anything it
    asks for outside the switch then goes through `OutboundGuard`)."""


@dataclass(frozen=True, slots=True)
class InboundRefusal:
    status: int
    reason: str
    trunk: Trunk


def inbound_decision(
    request: Request,
    source_ip: str,
    source_port: int,
    settings: TrunkSettings,
    registrations: Mapping[str, RegistrationView],
) -> InboundCall | NotFromTrunk | InboundRefusal:
    """Where an INVITE goes, as far as trunks are concerned."""
    trunk = identify_trunk(
        source_ip,
        source_port,
        settings.trunks,
        registrations,
        contact_user=_user(request.uri),
    )
    if trunk is None:
        return NotFromTrunk()
    user = dialled_user(request, trunk)
    did = lookup_did(user, settings.dids, trunk) if user else None
    if did is None:
        # Never relay a carrier's call onwards: what is not our DID does not exist.
        return InboundRefusal(404, f"{user or 'no number'} is not a number of this switch", trunk)
    return InboundCall(trunk, did, caller_info(request, trunk))
