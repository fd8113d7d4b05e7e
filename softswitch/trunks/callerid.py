"""Who an outbound call says it is from: caller ID, P-Asserted-Identity, Privacy. Pure.

A tenant may only present numbers it owns (the config refuses anything else), and the
choice is: the extension's configured number, else a DID that lists the extension in
``caller_id_for`` (by default a DID presents for its destination extension), else the
tenant's main number (``outbound.caller_id``, else its first DID).

Privacy follows RFC 3323 and RFC 3325: the carrier, which is in our trust domain, still
gets the real number in P-Asserted-Identity with ``Privacy: id`` and withholds it from
the callee; From becomes the anonymous URI RFC 3323 section 4.1.1.3 recommends. An
emergency call never withholds the number: the services must be able to call back.

Privacy prefixes default to ``#31#`` (the GSM code for "withhold my number on this
call") and ``*67`` (its North American equivalent). ``*31#`` is *not* a default: in GSM
it means the opposite, "show my number".
"""

from __future__ import annotations

from dataclasses import dataclass

from softswitch.trunks.model import TenantTrunking, Trunk
from softswitch.trunks.numbering import (
    E164,
    Emergency,
    display_number,
    make_plan,
    national_format,
)

__all__ = [
    "ANONYMOUS_FROM",
    "CallerId",
    "called_user",
    "identity_headers",
    "select_caller_id",
    "strip_privacy_prefix",
]

ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'


@dataclass(frozen=True, slots=True)
class CallerId:
    number: str | None  # E.164, None when the tenant has no number to present
    display: str | None = None
    private: bool = False


def strip_privacy_prefix(dialled: str, prefixes: tuple[str, ...]) -> tuple[str, bool]:
    """(the number without a privacy prefix, whether one was there)."""
    text = dialled.strip()
    for prefix in sorted(prefixes, key=len, reverse=True):
        if prefix and text.startswith(prefix) and len(text) > len(prefix):
            return text[len(prefix) :].lstrip(), True
    return text, False


def select_caller_id(
    tenant: TenantTrunking,
    extension: str,
    *,
    display: str | None = None,
    privacy_requested: bool = False,
    emergency: bool = False,
) -> CallerId:
    """The identity an outbound call of ``extension`` presents."""
    policy = tenant.outbound
    ext = policy.extension(extension)
    number = ext.caller_id
    if number is None:
        for did in tenant.numbers:
            if extension in did.caller_id_for:
                number = did.number
                break
    if number is None:
        number = policy.caller_id or (tenant.numbers[0].number if tenant.numbers else None)
    private = (privacy_requested or ext.privacy) and not emergency
    return CallerId(number, display, private)


def called_user(number: E164 | Emergency, trunk: Trunk) -> str:
    """The Request-URI user to send ``number`` to ``trunk`` as, in the trunk's format."""
    if isinstance(number, Emergency):
        return number.number  # carriers route short emergency codes as dialled
    if trunk.number_format == "e164" or not trunk.country:
        return number.number
    plan = make_plan(trunk.country)
    if trunk.number_format == "national":
        return national_format(number, plan) or (plan.international_prefix + number.digits)
    return plan.international_prefix + number.digits


def _user_for(number: str, trunk: Trunk) -> str:
    if trunk.number_format == "e164" or not trunk.country:
        return number
    plan = make_plan(trunk.country)
    e164 = E164(number)
    if trunk.number_format == "national":
        return display_number(e164, plan)
    return plan.international_prefix + e164.digits


def _quote(display: str) -> str:
    clean = "".join(ch for ch in display if ch.isprintable())
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def identity_headers(caller: CallerId, trunk: Trunk, *, tag: str) -> list[tuple[str, str]]:
    """From, and when there is a number to assert, P-Asserted-Identity and Privacy.

    Without a number of its own the call goes out as the trunk account (``from_user``,
    else ``username``), which carriers accept and map to the account's main number.
    """
    domain = trunk.domain
    if caller.number is None:
        user = trunk.from_user or trunk.username or "anonymous"
        return [("From", f"<sip:{user}@{domain}>;tag={tag}")]
    user = _user_for(caller.number, trunk)
    asserted = f"<sip:{caller.number}@{domain};user=phone>"
    if caller.private:
        headers = [("From", f"{ANONYMOUS_FROM};tag={tag}")]
        if trunk.send_pai:
            headers.append(("P-Asserted-Identity", asserted))
        headers.append(("Privacy", "id"))
        return headers
    name = f"{_quote(caller.display)} " if caller.display else ""
    headers = [("From", f"{name}<sip:{user}@{domain};user=phone>;tag={tag}")]
    if trunk.send_pai:
        if caller.display:
            asserted = f"{_quote(caller.display)} {asserted}"
        headers.append(("P-Asserted-Identity", asserted))
    return headers
