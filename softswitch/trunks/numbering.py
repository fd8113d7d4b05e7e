"""Dialled strings to E.164, and E.164 numbers to a tariff class. Pure and table-driven.

The tables give the first digits of national significant numbers (NSN, the number after
the country code) per country, longest prefix wins. They are deliberately coarse: their
job is to keep an office from running up premium-rate and satellite bills, not to rate
calls. An operator can add or override any prefix per tenant from the config
(``[tenants.dialplan] premium_prefixes = ["+39899"]`` and the other ``*_prefixes`` keys).

Sources, as consulted when the tables were written (check them when a regulator
reallocates a range):

* ITU-T E.164 and its Annex to ITU Operational Bulletin (country codes, +979 premium,
  +870/+881/+882/+883 global and satellite services).
* Italy: AGCOM national numbering plan, delibera 8/15/CIR and its predecessors 26/08/CIR,
  9/03/CIR (first digit: 0 geographic, 1 short codes and premium, 3 mobile, 4 network
  internal, 5 nomadic VoIP, 7 internet access, 8 free / shared cost / premium).
* United Kingdom: Ofcom National Telephone Numbering Plan (01/02 geographic, 03 UK-wide,
  07 mobile with 070 personal numbering and 076 pagers, 080 freephone, 084/087 service
  numbers, 09 premium rate, 118 directory enquiries).
* United States and Canada: NANPA (NPA-NXX-XXXX; 8XX toll-free, 900 premium; the
  Caribbean and Atlantic NPAs are other countries and are rated as international).
* Germany: Bundesnetzagentur Nummernplan (015/016/017 mobile, 0800 free, 0180 shared
  cost, 0137 and 0900 premium, 0700 personal, 118xy directory).
* France: ARCEP plan de numerotation (01-05 geographic, 06/07 mobile, 09 non-geographic,
  080 free, 081/082 shared cost, 089 premium, 118xyz directory, 3xyz service codes).
* Spain: CNMC plan nacional de numeracion (closed plan, 9 digits; 6 and 71-74 mobile,
  8/9 geographic, 800/900 free, 901/902 shared cost, 803/806/807/905 premium).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "COUNTRIES",
    "E164",
    "Emergency",
    "Invalid",
    "NumberClass",
    "NumberingPlan",
    "Normalised",
    "classify",
    "display_number",
    "e164_re",
    "is_international",
    "make_plan",
    "national_format",
    "normalise",
]


class NumberClass(enum.Enum):
    NATIONAL = "national"  # geographic, and non-geographic numbers charged like them
    MOBILE = "mobile"
    TOLLFREE = "tollfree"
    SHARED_COST = "shared_cost"
    PREMIUM = "premium"  # premium rate, personal numbering, satellite and the like
    SPECIAL = "special"  # short codes and ranges nobody should need from an office
    INTERNATIONAL = "international"
    EMERGENCY = "emergency"


@dataclass(frozen=True, slots=True)
class E164:
    """An E.164 number, ``+`` and digits (``+390212345678``)."""

    number: str

    @property
    def digits(self) -> str:
        return self.number[1:]

    def __str__(self) -> str:
        return self.number


@dataclass(frozen=True, slots=True)
class Emergency:
    """A short emergency number as dialled (``112``), in the caller's country."""

    number: str
    country: str

    def __str__(self) -> str:
        return self.number


@dataclass(frozen=True, slots=True)
class Invalid:
    dialled: str
    reason: str


Normalised = E164 | Emergency | Invalid

_E164 = re.compile(r"\+[1-9][0-9]{5,14}")


def e164_re() -> re.Pattern[str]:
    """The shape every configured number must have: ``+``, no leading 0, 6 to 15 digits."""
    return _E164


# --------------------------------------------------------------------------------------
# Country data


@dataclass(frozen=True, slots=True)
class _Country:
    iso: str
    country_code: str
    trunk_prefix: str  # "" for closed plans where the 0 (IT) or 9 (ES) is part of the number
    international_prefix: str
    nsn_min: int
    nsn_max: int
    emergency: frozenset[str]
    ranges: Mapping[str, NumberClass]
    default: NumberClass
    # Service and short codes that are dialled as they are, without any trunk prefix.
    short: re.Pattern[str] | None = None
    # NSNs that must match this to be valid (NANP: NXX-NXX-XXXX).
    nsn_pattern: re.Pattern[str] | None = None
    # Subscribers may omit the trunk prefix for full national numbers (NANP 10-digit).
    national_without_prefix: bool = False
    # NSN prefixes that share the country code but are other countries (NANP Caribbean).
    foreign: frozenset[str] = frozenset()


N, M, F, S, P, X = (
    NumberClass.NATIONAL,
    NumberClass.MOBILE,
    NumberClass.TOLLFREE,
    NumberClass.SHARED_COST,
    NumberClass.PREMIUM,
    NumberClass.SPECIAL,
)

_IT = _Country(
    iso="IT",
    country_code="39",
    trunk_prefix="",
    international_prefix="00",
    nsn_min=6,
    nsn_max=11,
    emergency=frozenset({"112", "113", "114", "115", "117", "118", "1515", "1522", "1530"}),
    ranges={
        "0": N,
        "3": M,
        "55": N,  # nomadic VoIP, charged as geographic
        "800": F,
        "803": F,
        "116": F,  # European harmonised numbers of social value, free to call
        "840": S,
        "848": S,
        "89": P,
        "178": P,
        "12": P,  # directory enquiries 12xy
        "4": X,
        "7": X,
    },
    default=X,
    short=re.compile(r"1[0-9]{2,5}"),
)

_GB = _Country(
    iso="GB",
    country_code="44",
    trunk_prefix="0",
    international_prefix="00",
    nsn_min=7,
    nsn_max=10,
    emergency=frozenset({"999", "112"}),
    ranges={
        "1": N,
        "2": N,
        "3": N,  # 03: UK-wide numbers charged as geographic
        "56": N,  # location-independent VoIP
        "7": M,
        "70": P,  # personal numbering: a classic fraud vector, priced like premium
        "76": X,  # pagers
        "800": F,
        "808": F,
        "116": F,
        "84": S,
        "87": S,
        "9": P,
        "118": P,
    },
    default=X,
    short=re.compile(r"1[0-9]{2,5}"),
)

# NANP NPAs that belong to other countries: calls to them are international in price
# and a classic toll-fraud target, although they dial like national numbers.
_NANP_FOREIGN = frozenset(
    "242 246 264 268 284 345 441 473 649 658 664 721 758 767 784 809 829 849 868 869 876".split()
)

_NANP_RANGES: dict[str, NumberClass] = {
    **dict.fromkeys(("800", "833", "844", "855", "866", "877", "888"), F),
    "900": P,
    "976": P,
    **dict.fromkeys(("500", "521", "522", "533", "544", "566", "577", "588"), X),
    "700": X,
    "710": X,
}


def _nanp(iso: str) -> _Country:
    return _Country(
        iso=iso,
        country_code="1",
        trunk_prefix="1",
        international_prefix="011",
        nsn_min=10,
        nsn_max=10,
        emergency=frozenset({"911"}),
        ranges=_NANP_RANGES,
        default=N,
        short=re.compile(r"[2-9]11"),
        nsn_pattern=re.compile(r"[2-9][0-9]{2}[2-9][0-9]{6}|[2-9]11"),
        national_without_prefix=True,
        foreign=_NANP_FOREIGN,
    )


_DE = _Country(
    iso="DE",
    country_code="49",
    trunk_prefix="0",
    international_prefix="00",
    nsn_min=5,
    nsn_max=13,
    emergency=frozenset({"110", "112"}),
    ranges={
        **dict.fromkeys("23456789", N),
        "15": M,
        "16": M,
        "17": M,
        "700": P,  # personal numbers, freely redirectable
        "800": F,
        "116": F,
        "180": S,
        "137": P,
        "900": P,
        "118": P,
        "1": X,
    },
    default=X,
    short=re.compile(r"1[0-9]{2,5}"),
)

_FR = _Country(
    iso="FR",
    country_code="33",
    trunk_prefix="0",
    international_prefix="00",
    nsn_min=9,
    nsn_max=9,
    emergency=frozenset({"112", "15", "17", "18", "114", "115", "119", "191", "196", "197"}),
    ranges={
        **dict.fromkeys("12345", N),
        "6": M,
        "7": M,
        "9": N,  # non-geographic VoIP, charged as geographic
        "80": F,
        "81": S,
        "82": S,
        "8": S,
        "89": P,
        "116": F,
        "118": P,
    },
    default=X,
    short=re.compile(r"1[0-9]{1,5}|3[0-9]{3}"),
)

_ES = _Country(
    iso="ES",
    country_code="34",
    trunk_prefix="",
    international_prefix="00",
    nsn_min=9,
    nsn_max=9,
    emergency=frozenset({"112", "061", "062", "080", "085", "091", "092"}),
    ranges={
        "6": M,
        "7": M,
        "70": P,  # personal numbering
        "8": N,
        "9": N,
        "800": F,
        "900": F,
        "116": F,
        "901": S,
        "902": S,
        "803": P,
        "806": P,
        "807": P,
        "905": P,
        "908": X,
        "909": X,
        "118": P,
        "5": X,
    },
    default=X,
    short=re.compile(r"0[0-9]{2}|1[0-9]{2,5}"),
)

COUNTRIES: Mapping[str, _Country] = {
    c.iso: c for c in (_IT, _GB, _nanp("US"), _nanp("CA"), _DE, _FR, _ES)
}
"""The built-in plans by ISO 3166 code."""

# Codes that cost a fortune from anywhere: international premium rate and the
# satellite / international networks (Inmarsat, Iridium, Thuraya, IoT ranges).
_GLOBAL_PREMIUM = ("979", "870", "881", "882", "883")


def _global_premium_table() -> dict[str, NumberClass]:
    table = dict.fromkeys(_GLOBAL_PREMIUM, P)
    for country in COUNTRIES.values():
        for prefix, cls in country.ranges.items():
            if cls is P:
                table[country.country_code + prefix] = P
    return table


_FOREIGN_PREMIUM = _global_premium_table()


# --------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True, slots=True)
class NumberingPlan:
    """How one tenant dials: its country's rules plus the operator's overrides."""

    country: str
    country_code: str
    trunk_prefix: str
    international_prefix: str
    outside_prefix: str = ""
    emergency: frozenset[str] = frozenset()
    # E.164 digit prefixes (country code included) set by the operator; beat the tables.
    overrides: Mapping[str, NumberClass] = field(default_factory=dict)

    @property
    def _data(self) -> _Country:
        return COUNTRIES[self.country]


def make_plan(
    country: str,
    *,
    country_code: str | None = None,
    trunk_prefix: str | None = None,
    international_prefix: str | None = None,
    outside_prefix: str = "",
    extra_emergency: Iterable[str] = (),
    overrides: Mapping[str, NumberClass] | None = None,
) -> NumberingPlan:
    """The plan of a built-in country (``IT``, ``GB``, ``US``, ``CA``, ``DE``, ``FR``,
    ``ES``) with optional overrides; ``overrides`` keys are E.164 prefixes (``+39899``)."""
    data = COUNTRIES[country.upper()]
    table = {p.lstrip("+"): cls for p, cls in (overrides or {}).items()}
    return NumberingPlan(
        country=data.iso,
        country_code=data.country_code if country_code is None else country_code,
        trunk_prefix=data.trunk_prefix if trunk_prefix is None else trunk_prefix,
        international_prefix=(
            data.international_prefix if international_prefix is None else international_prefix
        ),
        outside_prefix=outside_prefix,
        emergency=data.emergency | frozenset(extra_emergency),
        overrides=table,
    )


# --------------------------------------------------------------------------------------
# Normalisation

# Visual separators of RFC 3966 section 5.1.1 plus the ones people type.
_SEPARATORS = str.maketrans("", "", " \t-.()/")
_MAX_INPUT = 64  # anything longer is not a phone number, and no table scan should see it


def normalise(dialled: str, plan: NumberingPlan) -> Normalised:
    """What ``dialled`` means for a caller of ``plan``. Never raises.

    Order matters: emergency numbers first (with and without the outside-line prefix,
    because people dial 9-911 out of habit), then ``+``, the international prefix, and
    national forms.
    """
    if not isinstance(dialled, str):
        return Invalid(repr(dialled), "not text")
    if len(dialled) > _MAX_INPUT:
        return Invalid(dialled[:_MAX_INPUT], "too long")
    s = dialled.strip().translate(_SEPARATORS)
    if not s:
        return Invalid(dialled, "empty")
    if s in plan.emergency:
        return Emergency(s, plan.country)
    op = plan.outside_prefix
    if op and s.startswith(op) and len(s) > len(op):
        s = s[len(op) :]
        if s in plan.emergency:
            return Emergency(s, plan.country)
    if s[0] == "+":
        rest = s[1:]
        if not _digits(rest):
            return Invalid(dialled, "only digits may follow +")
        return _international(rest, plan, dialled)
    if not _digits(s):
        return Invalid(dialled, "not a phone number")
    ip = plan.international_prefix
    if ip and s.startswith(ip) and len(s) > len(ip):
        return _international(s[len(ip) :], plan, dialled)
    data = plan._data
    tp = plan.trunk_prefix
    if not tp:
        return _national(s, plan, dialled)
    if s.startswith(tp) and len(s) > len(tp):
        nsn = s[len(tp) :]
        # A short code that happens to start with the trunk prefix (NANP has none, but an
        # operator may set "0" on a closed plan) is still a short code.
        if data.short is not None and data.short.fullmatch(s) and not _national_ok(nsn, data):
            return E164("+" + plan.country_code + s)
        return _national(nsn, plan, dialled)
    if data.national_without_prefix and data.nsn_min <= len(s) <= data.nsn_max:
        return _national(s, plan, dialled)
    if data.short is not None and data.short.fullmatch(s):
        return E164("+" + plan.country_code + s)
    return Invalid(dialled, f"national numbers start with the trunk prefix {tp}")


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _national_ok(nsn: str, data: _Country) -> bool:
    if not data.nsn_min <= len(nsn) <= data.nsn_max:
        return False
    return data.nsn_pattern is None or data.nsn_pattern.fullmatch(nsn) is not None


def _national(nsn: str, plan: NumberingPlan, dialled: str) -> Normalised:
    data = plan._data
    if data.short is not None and data.short.fullmatch(nsn) and len(nsn) < data.nsn_min:
        return E164("+" + plan.country_code + nsn)
    if len(nsn) < data.nsn_min:
        return Invalid(dialled, "too short for a national number")
    if len(nsn) > data.nsn_max:
        return Invalid(dialled, "too long for a national number")
    if data.nsn_pattern is not None and not data.nsn_pattern.fullmatch(nsn):
        return Invalid(dialled, "not a valid national number")
    number = "+" + plan.country_code + nsn
    if len(number) > 16:
        return Invalid(dialled, "longer than 15 digits")
    return E164(number)


def _international(rest: str, plan: NumberingPlan, dialled: str) -> Normalised:
    if not rest or rest[0] == "0":
        return Invalid(dialled, "a country code cannot start with 0")
    if rest.startswith(plan.country_code):
        # Our own country written internationally: same checks as dialled nationally, so
        # that normalising an E.164 result again gives it back unchanged.
        nsn = rest[len(plan.country_code) :]
        if plan.trunk_prefix and nsn.startswith(plan.trunk_prefix) and plan.trunk_prefix != "1":
            # "+44 (0)20..." is common on business cards; the (0) is not dialled.
            nsn = nsn[len(plan.trunk_prefix) :]
        return _national(nsn, plan, dialled)
    if len(rest) > 15:
        return Invalid(dialled, "longer than 15 digits")
    if len(rest) < 6:
        return Invalid(dialled, "too short for an international number")
    return E164("+" + rest)


# --------------------------------------------------------------------------------------
# Classification


def _longest(table: Mapping[str, NumberClass], digits: str) -> NumberClass | None:
    for end in range(len(digits), 0, -1):
        cls = table.get(digits[:end])
        if cls is not None:
            return cls
    return None


def is_international(number: E164, plan: NumberingPlan) -> bool:
    """True when ``number`` leaves the caller's country (by tariff, not only by code)."""
    digits = number.digits
    if not digits.startswith(plan.country_code):
        return True
    nsn = digits[len(plan.country_code) :]
    foreign = plan._data.foreign if plan.country_code == plan._data.country_code else ()
    return any(nsn.startswith(p) for p in foreign)


def classify(number: E164 | Emergency, plan: NumberingPlan) -> NumberClass:
    """The tariff class of ``number`` as seen by a caller of ``plan``.

    A foreign number is INTERNATIONAL, unless it is premium rate in its own country
    (where we know the country) or a global premium / satellite code: then PREMIUM, and
    the policy wants both permissions for it.
    """
    if isinstance(number, Emergency):
        return NumberClass.EMERGENCY
    digits = number.digits
    override = _longest(plan.overrides, digits)
    if override is not None:
        return override
    if is_international(number, plan):
        return _longest(_FOREIGN_PREMIUM, digits) or NumberClass.INTERNATIONAL
    data = plan._data
    nsn = digits[len(plan.country_code) :]
    cls = _longest(data.ranges, nsn) or data.default
    if len(nsn) < data.nsn_min and cls not in (P, F, S):
        return X
    return cls


# --------------------------------------------------------------------------------------
# Presentation


def national_format(number: E164, plan: NumberingPlan) -> str | None:
    """``number`` as dialled inside the plan's country (``0212345678``, ``02079460000``),
    or None if it is foreign."""
    digits = number.digits
    if not digits.startswith(plan.country_code):
        return None
    nsn = digits[len(plan.country_code) :]
    data = plan._data
    if len(nsn) < data.nsn_min:
        return nsn  # short codes are dialled bare
    return plan.trunk_prefix + nsn


def display_number(number: E164, plan: NumberingPlan) -> str:
    """How a phone of ``plan`` should show ``number`` so that pressing call-back works."""
    national = national_format(number, plan)
    if national is not None:
        return national
    return plan.international_prefix + number.digits
