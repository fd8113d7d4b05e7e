"""Dialled strings to E.164 and tariff classes, per country."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.trunks.numbering import (
    COUNTRIES,
    E164,
    Emergency,
    Invalid,
    NumberClass,
    classify,
    display_number,
    is_international,
    make_plan,
    national_format,
    normalise,
)

N, M, F, S, P, X, INTL, EM = (
    NumberClass.NATIONAL,
    NumberClass.MOBILE,
    NumberClass.TOLLFREE,
    NumberClass.SHARED_COST,
    NumberClass.PREMIUM,
    NumberClass.SPECIAL,
    NumberClass.INTERNATIONAL,
    NumberClass.EMERGENCY,
)

CASES = [
    # Italy: closed plan, the 0 of geographic numbers stays; mobiles start with 3.
    ("IT", "02 1234 5678", "+390212345678", N),
    ("IT", "06-1234-5678", "+390612345678", N),
    ("IT", "347 123 4567", "+393471234567", M),
    ("IT", "+39 02 1234 5678", "+390212345678", N),
    ("IT", "0039 02 1234 5678", "+390212345678", N),
    ("IT", "800 123 456", "+39800123456", F),
    ("IT", "848 123 456", "+39848123456", S),
    ("IT", "899 123 456", "+39899123456", P),
    ("IT", "187", "+39187", X),
    ("IT", "1254", "+391254", P),  # directory enquiries
    ("IT", "0044 20 7946 0000", "+442079460000", INTL),
    ("IT", "0044 909 879 0000", "+449098790000", P),  # UK premium, seen from Italy
    ("IT", "00 881 631 234567", "+881631234567", P),  # satellite
    # United Kingdom: trunk prefix 0 is dropped in E.164.
    ("GB", "020 7946 0000", "+442079460000", N),
    ("GB", "0161 496 0000", "+441614960000", N),
    ("GB", "0300 123 4567", "+443001234567", N),
    ("GB", "07700 900123", "+447700900123", M),
    ("GB", "070 1234 5678", "+447012345678", P),
    ("GB", "0800 123 4567", "+448001234567", F),
    ("GB", "0845 123 4567", "+448451234567", S),
    ("GB", "0909 879 0000", "+449098790000", P),
    ("GB", "+44 (0)20 7946 0000", "+442079460000", N),
    ("GB", "00 39 02 1234 5678", "+390212345678", INTL),
    # NANP: 1 + 10 digits or 10 digits; 011 international; Caribbean NPAs are abroad.
    ("US", "(212) 555-1234", "+12125551234", N),
    ("US", "1-212-555-1234", "+12125551234", N),
    ("US", "1 800 555 1234", "+18005551234", F),
    ("US", "1 900 555 1234", "+19005551234", P),
    ("US", "1 876 555 1234", "+18765551234", INTL),
    ("US", "011 44 20 7946 0000", "+442079460000", INTL),
    ("US", "411", "+1411", X),
    ("CA", "416 555 1234", "+14165551234", N),
    # Germany
    ("DE", "030 1234567", "+49301234567", N),
    ("DE", "0151 12345678", "+4915112345678", M),
    ("DE", "0800 1234567", "+498001234567", F),
    ("DE", "0180 1234567", "+491801234567", S),
    ("DE", "0900 1234567", "+499001234567", P),
    ("DE", "0137 1234567", "+491371234567", P),
    # France
    ("FR", "01 23 45 67 89", "+33123456789", N),
    ("FR", "06 12 34 56 78", "+33612345678", M),
    ("FR", "09 12 34 56 78", "+33912345678", N),
    ("FR", "0800 12 34 56", "+33800123456", F),
    ("FR", "0820 12 34 56", "+33820123456", S),
    ("FR", "0899 12 34 56", "+33899123456", P),
    ("FR", "3949", "+333949", X),
    # Spain: closed, nine digits.
    ("ES", "912 345 678", "+34912345678", N),
    ("ES", "612 345 678", "+34612345678", M),
    ("ES", "900 123 456", "+34900123456", F),
    ("ES", "902 123 456", "+34902123456", S),
    ("ES", "806 123 456", "+34806123456", P),
]


@pytest.mark.parametrize(("country", "dialled", "e164", "cls"), CASES)
def test_normalise_and_classify(country: str, dialled: str, e164: str, cls: NumberClass) -> None:
    plan = make_plan(country)
    number = normalise(dialled, plan)
    assert number == E164(e164)
    assert classify(number, plan) is cls


@pytest.mark.parametrize(
    ("country", "dialled"),
    [
        ("IT", "112"),
        ("IT", "113"),
        ("IT", "115"),
        ("IT", "118"),
        ("IT", "1530"),
        ("GB", "999"),
        ("GB", "112"),
        ("US", "911"),
        ("CA", "911"),
        ("DE", "110"),
        ("DE", "112"),
        ("FR", "15"),
        ("FR", "17"),
        ("FR", "18"),
        ("FR", "112"),
        ("ES", "112"),
        ("ES", "091"),
    ],
)
def test_emergency_numbers(country: str, dialled: str) -> None:
    plan = make_plan(country)
    number = normalise(dialled, plan)
    assert number == Emergency(dialled, country)
    assert classify(number, plan) is EM


def test_emergency_through_outside_line_prefix() -> None:
    plan = make_plan("US", outside_prefix="9")
    assert normalise("9-911", plan) == Emergency("911", "US")
    assert normalise("911", plan) == Emergency("911", "US")
    assert normalise("9 1 212 555 1234", plan) == E164("+12125551234")


def test_configured_emergency_and_overrides() -> None:
    plan = make_plan(
        "IT",
        extra_emergency=["1500"],
        overrides={"+39848": P, "+4420": S, "+393": X},
    )
    assert normalise("1500", plan) == Emergency("1500", "IT")
    assert classify(E164("+39848123456"), plan) is P
    assert classify(E164("+393471234567"), plan) is X
    assert classify(E164("+442079460000"), plan) is S  # override wins, still international
    assert is_international(E164("+442079460000"), plan)


@pytest.mark.parametrize(
    ("country", "dialled", "reason"),
    [
        ("IT", "", "empty"),
        ("IT", "02 12", "too short for a national number"),
        ("IT", "021234567890123", "too long for a national number"),
        ("IT", "sip:alice", "not a phone number"),
        ("IT", "+39abc", "only digits may follow +"),
        ("IT", "+0123", "a country code cannot start with 0"),
        ("GB", "2079460000", "national numbers start with the trunk prefix 0"),
        ("US", "1 112 555 1234", "not a valid national number"),
        ("IT", "+1234", "too short for an international number"),
    ],
)
def test_invalid(country: str, dialled: str, reason: str) -> None:
    result = normalise(dialled, make_plan(country))
    assert isinstance(result, Invalid) and result.reason == reason


def test_international_prefix_override() -> None:
    plan = make_plan("IT", international_prefix="000")
    assert normalise("000 44 20 7946 0000", plan) == E164("+442079460000")


def test_presentation_formats() -> None:
    it = make_plan("IT")
    gb = make_plan("GB")
    assert national_format(E164("+390212345678"), it) == "0212345678"
    assert national_format(E164("+442079460000"), gb) == "02079460000"
    assert national_format(E164("+442079460000"), it) is None
    assert display_number(E164("+442079460000"), it) == "00442079460000"
    assert display_number(E164("+39187"), it) == "187"
    assert display_number(E164("+12125551234"), make_plan("US")) == "12125551234"


def test_nanp_caribbean_is_international_only_for_nanp() -> None:
    assert is_international(E164("+18765551234"), make_plan("US"))
    assert not is_international(E164("+12125551234"), make_plan("CA"))


plans = st.sampled_from([make_plan(c) for c in COUNTRIES] + [make_plan("US", outside_prefix="9")])
dialled_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789+ -.()#*", max_size=24),
    st.from_regex(r"\+?(00|011)?[0-9]{1,16}", fullmatch=True),
)


@settings(max_examples=400, deadline=None)
@given(dialled_text, plans)
def test_normalise_never_raises_and_is_idempotent_on_e164(dialled: str, plan) -> None:
    result = normalise(dialled, plan)
    assert isinstance(result, E164 | Emergency | Invalid)
    if isinstance(result, E164):
        assert result.number[0] == "+" and result.digits.isdigit()
        assert len(result.digits) <= 15
        assert normalise(result.number, plan) == result
        assert isinstance(classify(result, plan), NumberClass)
