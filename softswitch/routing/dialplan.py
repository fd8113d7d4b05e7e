"""The dial plan: which extension a dialled Request-URI means, inside one tenant. Pure.

The caller's tenant is the only place a target is looked up. A URI naming another
tenant's domain is "not found" exactly like a number that does not exist, so a caller
learns nothing about other companies on the same switch, and no request ever crosses
from one tenant to another.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from softswitch.config import Conference, Extension, Tenant
from softswitch.sip.uri import Uri

# Visual separators people and phones put in dialled numbers (RFC 3966 section 5.1.1).
_SEPARATORS = str.maketrans("", "", "-.() ")


@dataclass(frozen=True, slots=True)
class ExtensionRoute:
    """Ring the registered contacts of ``extension`` of ``tenant``."""

    tenant: Tenant
    extension: Extension


@dataclass(frozen=True, slots=True)
class ConferenceRoute:
    """Answer the call and put the caller in ``conference`` of ``tenant``."""

    tenant: Tenant
    conference: Conference


@dataclass(frozen=True, slots=True)
class NotFound:
    """Nothing in the caller's tenant answers to this; ``detail`` is for the logs only."""

    detail: str


Route = ExtensionRoute | ConferenceRoute | NotFound


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def dialled_user(uri: Uri) -> str | None:
    """The dialled string of a Request-URI: the user part (tel: number) unescaped,
    without visual separators or ``;`` parameters."""
    user = uri.user_unescaped if uri.is_sip else uri.user
    if not user:
        return None
    user = user.split(";", 1)[0]
    stripped = user.translate(_SEPARATORS)
    # Separators are only noise in numbers; a SIP user name keeps its dots.
    return stripped if stripped.lstrip("+").isdigit() else user


def route(tenant: Tenant, uri: Uri) -> Route:
    """Where a call from an extension of ``tenant`` to ``uri`` goes.

    ``sip:201@acme.example`` and ``sip:201@<our address>`` (phones often dial the
    server's address) and ``tel:201`` all mean extension 201 of the caller's tenant.
    """
    user = dialled_user(uri)
    if user is None:
        return NotFound("no user part")
    if uri.is_sip:
        host = uri.host.lower().rstrip(".")
        if host != tenant.domain and not _is_ip(host):
            return NotFound(f"domain {host} is not the caller's")
    elif uri.scheme != "tel":
        return NotFound(f"scheme {uri.scheme}")
    extension = tenant.extension(user)
    if extension is None:
        conference = tenant.conference(user)
        if conference is not None:
            return ConferenceRoute(tenant, conference)
        return NotFound(f"no extension {user}")
    return ExtensionRoute(tenant, extension)


# What a phone may dial toward the outside: digits, a leading +, and the * and # of
# service and privacy codes (#31#0612345678).
_EXTERNAL_CHARS = frozenset("0123456789*#")


def external_number(tenant: Tenant, uri: Uri) -> str | None:
    """The dialled string when ``uri`` (which named no extension of ``tenant``) may be a
    number outside the switch; None for names, other domains and other schemes, which
    stay "not found". Whether the tenant may call it is the outbound guard's decision.
    """
    user = dialled_user(uri)
    if user is None:
        return None
    if uri.is_sip:
        host = uri.host.lower().rstrip(".")
        if host != tenant.domain and not _is_ip(host):
            return None
    elif uri.scheme != "tel":
        return None
    digits = user[1:] if user.startswith("+") else user
    if not digits or not set(digits) <= _EXTERNAL_CHARS or not any(d.isdigit() for d in digits):
        return None
    if tenant.extension(user) is not None:
        return None
    return user
