"""``[[trunks]]`` and the trunk-related keys of ``[[tenants]]``: validation and building.

`softswitch.config.build_config` calls `load_trunks` with the raw TOML and its collector,
so every fault is reported with the rest, named by key path (``trunks[1].port``,
``tenants[0].numbers[2].number``), and the file is refused as a whole.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from softswitch.config import DOMAIN_RE, USER_RE, _Collector, _get, _unknown_keys
from softswitch.sip.errors import SipParseError
from softswitch.sip.sdp import SUPPORTED
from softswitch.sip.uri import split_hostport
from softswitch.trunks.model import (
    TENANT_KEYS,
    Did,
    ExtensionPolicy,
    ExtensionTarget,
    IPNetwork,
    OutboundPolicy,
    TenantTrunking,
    Trunk,
    TrunkSettings,
)
from softswitch.trunks.numbering import (
    COUNTRIES,
    NumberClass,
    NumberingPlan,
    e164_re,
    make_plan,
)

__all__ = ["TENANT_KEYS", "load_trunks"]

TRUNK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_DIGITS_RE = re.compile(r"^[0-9]{0,4}$")
_DIAL_PREFIX_RE = re.compile(r"^[0-9*#]{1,6}$")
_E164_PREFIX_RE = re.compile(r"^\+[1-9][0-9]{0,14}$")
_CODEC_NAMES = {c.name.lower(): c.name for c in SUPPORTED if c.name.lower() != "telephone-event"}

_TRUNK_KEYS = {
    "name",
    "host",
    "port",
    "transport",
    "username",
    "auth_username",
    "password",
    "register",
    "register_expires",
    "from_user",
    "from_domain",
    "codecs",
    "max_concurrent_calls",
    "outbound_proxy",
    "tenants",
    "inbound_addresses",
    "did_from",
    "country",
    "number_format",
    "send_pai",
    "setup_timeout",
}
# The classes `allow` may name; international and premium have keys of their own so that
# turning them on is a deliberate, visible line in the file.
_ALLOW_NAMES = {
    c.value: c for c in NumberClass if c not in (NumberClass.INTERNATIONAL, NumberClass.PREMIUM)
}
# Not "international_prefixes": in [tenants.outbound] that key lists allowed countries.
_PREFIX_KEYS = {
    f"{c.value}_prefixes": c
    for c in NumberClass
    if c not in (NumberClass.EMERGENCY, NumberClass.INTERNATIONAL)
}
_DIALPLAN_KEYS = {
    "country",
    "country_code",
    "trunk_prefix",
    "international_prefix",
    "outside_prefix",
    "emergency_numbers",
    "privacy_prefixes",
    *_PREFIX_KEYS,
}
_OUTBOUND_KEYS = {
    "allow",
    "international",
    "international_prefixes",
    "premium",
    "blocked_prefixes",
    "max_concurrent_external",
    "max_calls_per_hour",
    "extension_max_concurrent_external",
    "extension_max_calls_per_hour",
    "caller_id",
    "extensions",
}
_EXTENSION_KEYS = {
    "external",
    "max_concurrent_external",
    "max_calls_per_hour",
    "privacy",
    "caller_id",
}


def load_trunks(raw: dict[str, Any], c: _Collector) -> TrunkSettings:
    """Validate ``raw["trunks"]`` and the trunk keys of ``raw["tenants"]``; report faults
    to ``c`` and return what could be built (the caller refuses the file on any fault)."""
    domains = _tenant_domains(raw)
    trunks, declared = _load_trunk_list(c, raw, set(domains.values()))
    by_name = {t.name: t for t in trunks}
    tenants: list[TenantTrunking] = []
    seen_numbers: dict[str, str] = {}
    raw_tenants = raw.get("tenants")
    for i, traw in enumerate(raw_tenants if isinstance(raw_tenants, list) else []):
        if not isinstance(traw, dict) or i not in domains:
            continue
        tenant = _load_tenant(
            c, traw, f"tenants[{i}].", domains[i], by_name, declared, seen_numbers
        )
        if tenant is not None:
            tenants.append(tenant)
    return TrunkSettings(tuple(trunks), tuple(tenants))


def _tenant_domains(raw: dict[str, Any]) -> dict[int, str]:
    # Domains are validated by softswitch.config; here they only name tenants.
    out: dict[int, str] = {}
    tenants = raw.get("tenants")
    for i, traw in enumerate(tenants if isinstance(tenants, list) else []):
        if isinstance(traw, dict) and isinstance(traw.get("domain"), str):
            out[i] = traw["domain"].lower()
    return out


def _extension_users(traw: dict[str, Any]) -> set[str]:
    exts = traw.get("extensions")
    return {
        e["user"]
        for e in (exts if isinstance(exts, list) else [])
        if isinstance(e, dict) and isinstance(e.get("user"), str)
    }


# --------------------------------------------------------------------------------------
# [[trunks]]


def _load_trunk_list(
    c: _Collector, raw: dict[str, Any], domains: set[str]
) -> tuple[list[Trunk], set[str]]:
    """The valid trunks, and every name declared (a trunk with a fault of its own is
    still "declared", so tenants naming it do not get a second, misleading error)."""
    out: list[Trunk] = []
    names: set[str] = set()
    declared: set[str] = set()
    for i, traw in enumerate(_get(c, raw, "trunks", "", list, default=[]) or []):
        if isinstance(traw, dict) and isinstance(traw.get("name"), str):
            declared.add(traw["name"])
        if not isinstance(traw, dict):
            c.error(f"trunks[{i}]", "must be a table ([[trunks]])")
            continue
        trunk = _load_trunk(c, traw, f"trunks[{i}].", domains)
        if trunk is None:
            continue
        if trunk.name in names:
            c.error(f"trunks[{i}].name", f"{trunk.name!r} is already the name of another trunk")
            continue
        names.add(trunk.name)
        out.append(trunk)
    return out, declared


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(DOMAIN_RE.match(host))
    return True


def _load_trunk(c: _Collector, t: dict[str, Any], p: str, domains: set[str]) -> Trunk | None:
    _unknown_keys(c, t, _TRUNK_KEYS, p)
    before = len(c.errors)
    name = _get(c, t, "name", p, str, required=True)
    if name is not None and not TRUNK_NAME_RE.match(name):
        c.error(f"{p}name", f"{name!r} must be 1-32 of a-z, 0-9, '-' and '_'")
    host = _get(c, t, "host", p, str, required=True)
    if host is not None and not _host_ok(host):
        c.error(f"{p}host", f"{host!r} is neither a host name nor an IP address")
    transport = _get(c, t, "transport", p, str, default="udp")
    if transport not in ("udp", "tcp"):
        c.error(f"{p}transport", f"must be udp or tcp, not {transport!r}")
    port = _get(c, t, "port", p, int, default=5060)
    if port is not None and not 1 <= port <= 65535:
        c.error(f"{p}port", f"{port} is out of range (1-65535)")
    username = _get(c, t, "username", p, str, default="")
    auth_username = _get(c, t, "auth_username", p, str, default="")
    password = _get(c, t, "password", p, str, default="")
    register = _get(c, t, "register", p, bool, default=False)
    for key, value in (("username", username), ("auth_username", auth_username)):
        if value and not USER_RE.match(value):
            c.error(f"{p}{key}", f"{value!r} is not a valid SIP user name")
    if register:
        if not username:
            c.error(f"{p}username", "is required when register = true")
        if not password:
            c.error(f"{p}password", "is required when register = true")
    if password and any(ch in password for ch in "\r\n\x00"):
        c.error(f"{p}password", "must not contain line breaks or NUL")
    expires = _get(c, t, "register_expires", p, int, default=600)
    if expires is not None and not 60 <= expires <= 86400:
        c.error(f"{p}register_expires", "must be between 60 and 86400 seconds")
    from_user = _get(c, t, "from_user", p, str, default="")
    if from_user and not USER_RE.match(from_user):
        c.error(f"{p}from_user", f"{from_user!r} is not a valid SIP user name")
    from_domain = _get(c, t, "from_domain", p, str, default="")
    if from_domain and not _host_ok(from_domain):
        c.error(f"{p}from_domain", f"{from_domain!r} is neither a host name nor an IP address")
    codecs = _load_codecs(c, t, p)
    max_calls = _optional_count(c, t, "max_concurrent_calls", p)
    proxy = _load_proxy(c, t, p)
    tenants = _get(c, t, "tenants", p, list, default=[]) or []
    allowed: list[str] = []
    for j, item in enumerate(tenants):
        if not isinstance(item, str):
            c.error(f"{p}tenants[{j}]", 'must be a tenant domain or "*"')
        elif item != "*" and item.lower() not in domains:
            c.error(f"{p}tenants[{j}]", f"{item!r} is not the domain of a tenant")
        else:
            allowed.append(item.lower())
    networks = _load_networks(c, t, p)
    did_from = _get(c, t, "did_from", p, str, default="ruri")
    if did_from not in ("ruri", "to"):
        c.error(f"{p}did_from", f'must be "ruri" or "to", not {did_from!r}')
    country = _get(c, t, "country", p, str, default="")
    if country and country.upper() not in COUNTRIES:
        c.error(f"{p}country", f"{country!r} is not one of {', '.join(COUNTRIES)}")
    number_format = _get(c, t, "number_format", p, str, default="e164")
    if number_format not in ("e164", "national", "international"):
        c.error(f"{p}number_format", "must be e164, national or international")
    elif number_format != "e164" and not country:
        c.error(f"{p}number_format", f"{number_format} needs the trunk's country")
    send_pai = _get(c, t, "send_pai", p, bool, default=True)
    setup_timeout = _get(c, t, "setup_timeout", p, (int, float), default=10.0)
    if setup_timeout is not None and not 1 <= setup_timeout <= 300:
        c.error(f"{p}setup_timeout", "must be between 1 and 300 seconds")
    if len(c.errors) != before or name is None or host is None:
        return None
    return Trunk(
        name=name,
        host=host.lower(),
        port=port,
        transport=transport,
        username=username,
        password=password,
        auth_username=auth_username,
        register=register,
        register_expires=expires,
        from_user=from_user,
        from_domain=from_domain.lower(),
        codecs=codecs,
        max_concurrent_calls=max_calls,
        outbound_proxy=proxy,
        tenants=tuple(allowed),
        inbound_addresses=networks,
        did_from=did_from,
        country=country.upper(),
        number_format=number_format,
        send_pai=send_pai,
        setup_timeout=float(setup_timeout),
    )


def _load_codecs(c: _Collector, t: dict[str, Any], p: str) -> tuple[str, ...]:
    raw = _get(c, t, "codecs", p, list, default=["PCMA", "PCMU"])
    if raw is None:
        return ("PCMA", "PCMU")
    out: list[str] = []
    for j, item in enumerate(raw):
        name = _CODEC_NAMES.get(item.lower()) if isinstance(item, str) else None
        if name is None:
            c.error(f"{p}codecs[{j}]", f"{item!r} is not one of {', '.join(_CODEC_NAMES.values())}")
        elif name in out:
            c.error(f"{p}codecs[{j}]", f"{item!r} is listed twice")
        else:
            out.append(name)
    if not raw:
        c.error(f"{p}codecs", "must name at least one codec")
    return tuple(out)


def _load_proxy(c: _Collector, t: dict[str, Any], p: str) -> tuple[str, int] | None:
    text = _get(c, t, "outbound_proxy", p, str)
    if not text:
        return None
    try:
        host, port = split_hostport(text)
    except SipParseError:
        c.error(f"{p}outbound_proxy", f"{text!r} must look like HOST, HOST:PORT or [IPV6]:PORT")
        return None
    return host.strip("[]").lower(), port or 5060


def _load_networks(c: _Collector, t: dict[str, Any], p: str) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for j, item in enumerate(_get(c, t, "inbound_addresses", p, list, default=[]) or []):
        try:
            if not isinstance(item, str):
                raise ValueError
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            c.error(f"{p}inbound_addresses[{j}]", f"{item!r} is not an IP address or network")
    return tuple(out)


def _optional_count(c: _Collector, t: dict[str, Any], key: str, p: str) -> int | None:
    value = _get(c, t, key, p, int)
    if value is not None and value < 1:
        c.error(f"{p}{key}", "must be at least 1 (leave it out for no limit)")
        return None
    return value


# --------------------------------------------------------------------------------------
# [[tenants]] trunk keys


def _load_tenant(
    c: _Collector,
    t: dict[str, Any],
    p: str,
    domain: str,
    trunks: dict[str, Trunk],
    declared: set[str],
    seen_numbers: dict[str, str],
) -> TenantTrunking | None:
    if not any(k in t for k in TENANT_KEYS):
        return None
    users = _extension_users(t)
    plan_raw = _get(c, t, "dialplan", p, dict)
    plan, privacy = (None, ("#31#", "*67"))
    if plan_raw is not None:
        plan, privacy = _load_dialplan(c, plan_raw, f"{p}dialplan.", users)

    order: list[str] = []
    for j, name in enumerate(_get(c, t, "trunks", p, list, default=[]) or []):
        key = f"{p}trunks[{j}]"
        if not isinstance(name, str):
            c.error(key, "must be a trunk name")
        elif name not in trunks:
            if name not in declared:
                c.error(key, f"{name!r} is not the name of a trunk")
        elif not trunks[name].allows_tenant(domain):
            c.error(key, f'trunk {name!r} does not list {domain!r} (or "*") in its tenants')
        elif name in order:
            c.error(key, f"{name!r} is listed twice")
        else:
            order.append(name)
    if t.get("trunks") and plan_raw is None:
        c.error(f"{p}dialplan", "is required for a tenant that uses trunks (country at least)")

    numbers = _load_numbers(c, t, p, domain, users, seen_numbers)
    own_numbers = {d.number for d in numbers}
    outbound_raw = _get(c, t, "outbound", p, dict, default={}) or {}
    outbound = _load_outbound(c, outbound_raw, f"{p}outbound.", users, own_numbers)
    return TenantTrunking(
        domain=domain,
        plan=plan,
        outbound=outbound,
        trunks=tuple(order),
        numbers=numbers,
        privacy_prefixes=privacy,
    )


def _load_dialplan(
    c: _Collector, t: dict[str, Any], p: str, users: set[str]
) -> tuple[NumberingPlan | None, tuple[str, ...]]:
    _unknown_keys(c, t, _DIALPLAN_KEYS, p)
    country = _get(c, t, "country", p, str, required=True)
    if country is not None and country.upper() not in COUNTRIES:
        c.error(f"{p}country", f"{country!r} is not one of {', '.join(COUNTRIES)}")
        country = None
    codes: dict[str, str | None] = {}
    for key in ("country_code", "trunk_prefix", "international_prefix", "outside_prefix"):
        value = _get(c, t, key, p, str)
        if value is not None and not _DIGITS_RE.match(value):
            c.error(f"{p}{key}", f"{value!r} must be up to 4 digits")
            value = None
        codes[key] = value
    if codes["country_code"] == "" or (codes["country_code"] or "1")[0] == "0":
        c.error(f"{p}country_code", "must be 1 to 3 digits, not starting with 0")
    if codes["international_prefix"] == "":
        c.error(f"{p}international_prefix", 'must not be empty (e.g. "00" or "011")')
    emergency = _string_list(c, t, "emergency_numbers", p, _DIAL_PREFIX_RE, "a short number")
    privacy_raw = _string_list(c, t, "privacy_prefixes", p, _DIAL_PREFIX_RE, "like #31# or *67")
    overrides: dict[str, NumberClass] = {}
    for key, cls in _PREFIX_KEYS.items():
        for prefix in _string_list(c, t, key, p, _E164_PREFIX_RE, 'an E.164 prefix like "+39899"'):
            if prefix in overrides and overrides[prefix] is not cls:
                c.error(f"{p}{key}", f"{prefix} is already in {overrides[prefix].value}_prefixes")
            overrides[prefix] = cls
    privacy = tuple(privacy_raw) if "privacy_prefixes" in t else ("#31#", "*67")
    if country is None:
        return None, privacy
    plan = make_plan(
        country,
        country_code=codes["country_code"] or None,
        trunk_prefix=codes["trunk_prefix"],
        international_prefix=codes["international_prefix"] or None,
        outside_prefix=codes["outside_prefix"] or "",
        extra_emergency=emergency,
        overrides=overrides,
    )
    for user in sorted(users & plan.emergency):
        # A phone dialling 112 must reach the emergency services, never a colleague.
        c.error(f"{p}country", f"extension {user!r} would shadow the emergency number {user}")
    return plan, privacy


def _string_list(
    c: _Collector, t: dict[str, Any], key: str, p: str, pattern: re.Pattern[str], shape: str
) -> list[str]:
    out: list[str] = []
    for j, item in enumerate(_get(c, t, key, p, list, default=[]) or []):
        if not isinstance(item, str) or not pattern.match(item):
            c.error(f"{p}{key}[{j}]", f"{item!r} must be {shape}")
        else:
            out.append(item)
    return out


def _load_numbers(
    c: _Collector,
    t: dict[str, Any],
    p: str,
    domain: str,
    users: set[str],
    seen: dict[str, str],
) -> tuple[Did, ...]:
    out: list[Did] = []
    for j, nraw in enumerate(_get(c, t, "numbers", p, list, default=[]) or []):
        key = f"{p}numbers[{j}]."
        if not isinstance(nraw, dict):
            c.error(f"{p}numbers[{j}]", "must be a table ([[tenants.numbers]])")
            continue
        _unknown_keys(c, nraw, {"number", "destination", "caller_id_for"}, key)
        number = _get(c, nraw, "number", key, str, required=True)
        destination = _get(c, nraw, "destination", key, str, required=True)
        ok = True
        if number is not None:
            if not e164_re().fullmatch(number):
                c.error(f"{key}number", f"{number!r} is not E.164 (+ and 6 to 15 digits)")
                ok = False
            elif number in seen:
                c.error(f"{key}number", f"{number} is already a number of {seen[number]}")
                ok = False
            else:
                seen[number] = domain
        target = _destination(c, destination, f"{key}destination", users)
        callers: list[str] = []
        for k, user in enumerate(_get(c, nraw, "caller_id_for", key, list, default=[]) or []):
            if not isinstance(user, str) or user not in users:
                c.error(f"{key}caller_id_for[{k}]", f"{user!r} is not an extension of this tenant")
            else:
                callers.append(user)
        if "caller_id_for" not in nraw and target is not None:
            callers = [target.user]
        if ok and number is not None and target is not None:
            out.append(Did(number, domain, target, tuple(callers)))
    return tuple(out)


def _destination(
    c: _Collector, text: str | None, key: str, users: set[str]
) -> ExtensionTarget | None:
    if text is None:
        return None
    kind, sep, _name = text.partition(":")
    if sep:
        # Ring groups, IVRs and conferences will use "kind:name"; refuse them clearly now.
        c.error(key, f"{kind!r} destinations are not supported yet; name an extension")
        return None
    if text not in users:
        c.error(key, f"{text!r} is not an extension of this tenant")
        return None
    return ExtensionTarget(text)


def _load_outbound(
    c: _Collector, t: dict[str, Any], p: str, users: set[str], numbers: set[str]
) -> OutboundPolicy:
    _unknown_keys(c, t, _OUTBOUND_KEYS, p)
    allow: set[NumberClass] = set()
    allow_raw = _get(c, t, "allow", p, list)
    if allow_raw is None:
        allow = set(OutboundPolicy().allow)
    for j, item in enumerate(allow_raw or []):
        cls = _ALLOW_NAMES.get(item) if isinstance(item, str) else None
        if item in ("international", "premium"):
            c.error(f"{p}allow[{j}]", f"use `{item} = true` to allow {item} calls")
        elif cls is None:
            c.error(f"{p}allow[{j}]", f"{item!r} is not one of {', '.join(_ALLOW_NAMES)}")
        else:
            allow.add(cls)
    # Emergency calls are allowed whatever the list says; keeping it in the set makes
    # the policy read true.
    allow.add(NumberClass.EMERGENCY)
    international = _get(c, t, "international", p, bool, default=False)
    premium = _get(c, t, "premium", p, bool, default=False)
    shape = 'an E.164 prefix like "+41"'
    intl_prefixes = _string_list(c, t, "international_prefixes", p, _E164_PREFIX_RE, shape)
    if intl_prefixes and not international:
        c.error(f"{p}international_prefixes", "has no effect unless international = true")
    blocked = _string_list(c, t, "blocked_prefixes", p, _E164_PREFIX_RE, shape)
    caps = {
        key: _optional_count(c, t, key, p)
        for key in (
            "max_concurrent_external",
            "max_calls_per_hour",
            "extension_max_concurrent_external",
            "extension_max_calls_per_hour",
        )
    }
    caller_id = _caller_id(c, t, "caller_id", p, numbers)
    extensions: dict[str, ExtensionPolicy] = {}
    for user, eraw in (_get(c, t, "extensions", p, dict, default={}) or {}).items():
        key = f"{p}extensions.{user}."
        if user not in users:
            c.error(f"{p}extensions.{user}", f"{user!r} is not an extension of this tenant")
            continue
        if not isinstance(eraw, dict):
            c.error(f"{p}extensions.{user}", "must be a table")
            continue
        _unknown_keys(c, eraw, _EXTENSION_KEYS, key)
        extensions[user] = ExtensionPolicy(
            external=_get(c, eraw, "external", key, bool, default=True),
            max_concurrent_external=_optional_count(c, eraw, "max_concurrent_external", key),
            max_calls_per_hour=_optional_count(c, eraw, "max_calls_per_hour", key),
            privacy=_get(c, eraw, "privacy", key, bool, default=False),
            caller_id=_caller_id(c, eraw, "caller_id", key, numbers),
        )
    return OutboundPolicy(
        allow=frozenset(allow),
        international=bool(international),
        international_prefixes=tuple(intl_prefixes),
        premium=bool(premium),
        blocked_prefixes=tuple(blocked),
        max_concurrent_external=caps["max_concurrent_external"],
        max_calls_per_hour=caps["max_calls_per_hour"],
        extension_max_concurrent_external=caps["extension_max_concurrent_external"],
        extension_max_calls_per_hour=caps["extension_max_calls_per_hour"],
        caller_id=caller_id,
        extensions=extensions,
    )


def _caller_id(c: _Collector, t: dict[str, Any], key: str, p: str, numbers: set[str]) -> str | None:
    value = _get(c, t, key, p, str)
    if value is not None and value not in numbers:
        # Presenting a number the tenant does not own is spoofing; carriers reject it or,
        # worse, pass it on.
        c.error(f"{p}{key}", f"{value!r} is not one of this tenant's numbers")
        return None
    return value
