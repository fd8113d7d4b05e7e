"""Validation of [[trunks]] and the trunk keys of [[tenants]]: faults named by key path."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path

from softswitch.trunks.model import ExtensionTarget
from softswitch.trunks.numbering import NumberClass
from tests.trunks.trunk_fixtures import BASE, load, load_raw

DOCS = Path(__file__).resolve().parents[2] / "docs" / "trunks.md"


def test_base_config_builds(settings) -> None:
    a = settings.trunk("carrier-a")
    assert a.register and a.tenants == ("*",) and a.number_format == "national"
    assert a.domain == "192.0.2.10" and a.next_hop == ("192.0.2.10", 5060)
    b = settings.trunk("carrier-b")
    assert b.inbound_addresses == (ipaddress.ip_network("198.51.100.0/28"),)
    assert b.did_from == "to" and not b.register
    acme = settings.tenant("ACME.example")
    assert acme.plan.country == "IT" and acme.plan.country_code == "39"
    assert [t.name for t in settings.trunks_for("acme.example")] == ["carrier-a", "carrier-b"]
    assert [t.name for t in settings.trunks_for("beta.example")] == ["carrier-a"]
    did = settings.did("+390212345600")
    assert did.tenant == "acme.example" and did.destination == ExtensionTarget("201")
    assert did.caller_id_for == ("201", "202")
    assert settings.did("+390212345602").caller_id_for == ("202",)  # its destination
    assert acme.outbound.allow == frozenset(
        {NumberClass.NATIONAL, NumberClass.MOBILE, NumberClass.TOLLFREE, NumberClass.EMERGENCY}
    )
    assert acme.outbound.extension("203").external is False
    assert acme.outbound.extension_caps("201") == (2, None)


def test_docs_example_is_valid() -> None:
    text = DOCS.read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    raw = tomllib.loads(block)
    settings, errors = load_raw(raw)
    assert errors == []
    assert len(settings.trunks) == 2
    assert settings.tenant("studio-rossi.example").plan.country == "IT"


def test_no_trunk_keys_means_empty_settings() -> None:
    settings, errors = load_raw({"tenants": [{"domain": "a.example"}]})
    assert errors == [] and settings.trunks == () and settings.tenants == ()


def _errors(extra: str, base: str = BASE) -> list[str]:
    return load(base + extra)[1]


def test_trunk_faults_are_named_by_key_path() -> None:
    errors = _errors(
        """
[[trunks]]
name = "Bad Name"
host = "not a host"
port = 70000
transport = "sctp"
register = true
codecs = ["G729", "PCMA", "pcma"]
tenants = ["nobody.example", 5]
inbound_addresses = ["300.1.1.1"]
did_from = "from"
number_format = "national"
outbound_proxy = "a:b:c"
setup_timeout = 0
register_expires = 10
colour = "red"
"""
    )
    expected = [
        "trunks[2].colour: unknown key (a typo?)",
        "trunks[2].name: 'Bad Name' must be 1-32 of a-z, 0-9, '-' and '_'",
        "trunks[2].host: 'not a host' is neither a host name nor an IP address",
        "trunks[2].transport: must be udp or tcp, not 'sctp'",
        "trunks[2].port: 70000 is out of range (1-65535)",
        "trunks[2].username: is required when register = true",
        "trunks[2].password: is required when register = true",
        "trunks[2].register_expires: must be between 60 and 86400 seconds",
        "trunks[2].codecs[0]: 'G729' is not one of",
        "trunks[2].codecs[2]: 'pcma' is listed twice",
        "trunks[2].outbound_proxy: 'a:b:c' must look like",
        "trunks[2].tenants[0]: 'nobody.example' is not the domain of a tenant",
        'trunks[2].tenants[1]: must be a tenant domain or "*"',
        "trunks[2].inbound_addresses[0]: '300.1.1.1' is not an IP address or network",
        'trunks[2].did_from: must be "ruri" or "to", not \'from\'',
        "trunks[2].number_format: national needs the trunk's country",
        "trunks[2].setup_timeout: must be between 1 and 300 seconds",
    ]
    for want in expected:
        assert any(e.startswith(want) for e in errors), (want, errors)
    assert len(errors) == len(expected)


def test_wrong_types_are_named() -> None:
    errors = _errors('[[trunks]]\nname = "x"\nhost = "h.example"\nport = "5060"\nregister = 1\n')
    assert "trunks[2].port: must be an integer, not str" in errors
    assert "trunks[2].register: must be true or false, not int" in errors


def test_a_broken_trunk_is_reported_once() -> None:
    text = BASE.replace(
        'host = "sip.carrier-b.example"', 'host = "sip.carrier-b.example"\nport = 0'
    )
    assert load(text)[1] == ["trunks[1].port: 0 is out of range (1-65535)"]


def test_duplicate_trunk_name() -> None:
    errors = _errors('[[trunks]]\nname = "carrier-a"\nhost = "h.example"\n')
    assert errors == ["trunks[2].name: 'carrier-a' is already the name of another trunk"]


def test_tenant_faults() -> None:
    text = BASE.replace(
        'trunks = ["carrier-a"]', 'trunks = ["carrier-b", "nope", "carrier-a", "carrier-a"]'
    )
    text = text.replace(
        'number = "+442079460000"\ndestination = "100"',
        'number = "+390212345600"\ndestination = "999"\ncaller_id_for = ["555"]',
    )
    errors = load(text)[1]
    assert errors == [
        "tenants[1].trunks[0]: trunk 'carrier-b' does not list 'beta.example'"
        ' (or "*") in its tenants',
        "tenants[1].trunks[1]: 'nope' is not the name of a trunk",
        "tenants[1].trunks[3]: 'carrier-a' is listed twice",
        "tenants[1].numbers[0].number: +390212345600 is already a number of acme.example",
        "tenants[1].numbers[0].destination: '999' is not an extension of this tenant",
        "tenants[1].numbers[0].caller_id_for[0]: '555' is not an extension of this tenant",
    ]


def test_number_must_be_e164() -> None:
    for bad in ("0212345678", "+0212345678", "+39 02 1234", "+3902123456789012"):
        text = BASE.replace('number = "+390212345602"', f'number = "{bad}"')
        assert load(text)[1] == [
            f"tenants[0].numbers[1].number: {bad!r} is not E.164 (+ and 6 to 15 digits)"
        ]


def test_future_destination_kinds_are_refused_clearly() -> None:
    text = BASE.replace('destination = "202"', 'destination = "ivr:main"')
    assert load(text)[1] == [
        "tenants[0].numbers[1].destination:"
        " 'ivr' destinations are not supported yet; name an extension"
    ]


def test_dialplan_faults() -> None:
    text = BASE.replace(
        '[tenants.dialplan]\ncountry = "IT"',
        '[tenants.dialplan]\ncountry = "XX"\ntrunk_prefix = "zero"\npremium_prefixes = ["899"]\n'
        'mobile_prefixes = ["+393"]\nnational_prefixes = ["+393"]\n'
        'privacy_prefixes = [""]\nfoo = 1',
    )
    assert sorted(load(text)[1]) == sorted(
        [
            "tenants[0].dialplan.foo: unknown key (a typo?)",
            "tenants[0].dialplan.country: 'XX' is not one of IT, GB, US, CA, DE, FR, ES",
            "tenants[0].dialplan.trunk_prefix: 'zero' must be up to 4 digits",
            "tenants[0].dialplan.privacy_prefixes[0]: '' must be like #31# or *67",
            "tenants[0].dialplan.mobile_prefixes: +393 is already in national_prefixes",
            "tenants[0].dialplan.premium_prefixes[0]:"
            " '899' must be an E.164 prefix like \"+39899\"",
        ]
    )


def test_trunks_need_a_dialplan() -> None:
    text = BASE.replace('[tenants.dialplan]\ncountry = "GB"\n', "")
    assert load(text)[1] == [
        "tenants[1].dialplan: is required for a tenant that uses trunks (country at least)"
    ]


def test_extension_may_not_shadow_an_emergency_number() -> None:
    text = BASE.replace(
        '{ user = "203", password = "secret-203" },', '{ user = "112", password = "secret-112" },'
    )
    text = text.replace("[tenants.outbound.extensions.203]", "[tenants.outbound.extensions.112]")
    assert load(text)[1] == [
        "tenants[0].dialplan.country: extension '112' would shadow the emergency number 112"
    ]


def test_outbound_faults() -> None:
    text = BASE.replace(
        "max_calls_per_hour = 10\n",
        'max_calls_per_hour = 0\nallow = ["national", "premium", "lunar"]\n'
        'international_prefixes = ["+41"]\ncaller_id = "+390299999999"\n',
    ).replace(
        "[tenants.outbound.extensions.203]\nexternal = false",
        "[tenants.outbound.extensions.999]\nexternal = false",
    )
    errors = load(text)[1]
    assert errors == [
        "tenants[0].outbound.allow[1]: use `premium = true` to allow premium calls",
        "tenants[0].outbound.allow[2]: 'lunar' is not one of"
        " national, mobile, tollfree, shared_cost, special, emergency",
        "tenants[0].outbound.international_prefixes: has no effect unless international = true",
        "tenants[0].outbound.max_calls_per_hour: must be at least 1 (leave it out for no limit)",
        "tenants[0].outbound.caller_id: '+390299999999' is not one of this tenant's numbers",
        "tenants[0].outbound.extensions.999: '999' is not an extension of this tenant",
    ]


def test_extension_caller_id_must_be_own_number() -> None:
    text = BASE.replace(
        "[tenants.outbound.extensions.203]\nexternal = false",
        '[tenants.outbound.extensions.203]\ncaller_id = "+442079460000"\nprivacy = "yes"',
    )
    assert load(text)[1] == [
        "tenants[0].outbound.extensions.203.privacy: must be true or false, not str",
        "tenants[0].outbound.extensions.203.caller_id:"
        " '+442079460000' is not one of this tenant's numbers",
    ]


def test_outbound_overrides_build() -> None:
    text = BASE.replace(
        "max_calls_per_hour = 10\n",
        'max_calls_per_hour = 10\nallow = ["national", "shared_cost"]\ninternational = true\n'
        'international_prefixes = ["+41", "+33"]\nblocked_prefixes = ["+3989"]\npremium = true\n'
        'caller_id = "+390212345602"\n',
    ).replace(
        '[tenants.dialplan]\ncountry = "IT"',
        '[tenants.dialplan]\ncountry = "IT"\noutside_prefix = "0"\npremium_prefixes = ["+39848"]\n'
        'emergency_numbers = ["1500"]\nprivacy_prefixes = ["*31"]',
    )
    settings, errors = load(text)
    assert errors == []
    acme = settings.tenant("acme.example")
    out = acme.outbound
    assert out.allow == frozenset(
        {NumberClass.NATIONAL, NumberClass.SHARED_COST, NumberClass.EMERGENCY}
    )
    assert out.international and out.premium and out.international_prefixes == ("+41", "+33")
    assert out.blocked_prefixes == ("+3989",) and out.caller_id == "+390212345602"
    assert acme.plan.outside_prefix == "0" and "1500" in acme.plan.emergency
    assert acme.plan.overrides == {"39848": NumberClass.PREMIUM}
    assert acme.privacy_prefixes == ("*31",)
