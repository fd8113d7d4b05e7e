"""The dial plan: extensions of the caller's own tenant only."""

from __future__ import annotations

from softswitch.config import Extension, Tenant
from softswitch.routing.dialplan import ExtensionRoute, NotFound, dialled_user, route
from softswitch.sip.uri import parse_uri

ACME = Tenant("acme.example", "Acme", (Extension("201", "pw-201-xx"), Extension("j.doe", "pw")))
BETA = Tenant("beta.example", "Beta", (Extension("300", "pw-300-xx"),))


def target(uri: str) -> str | None:
    r = route(ACME, parse_uri(uri))
    return r.extension.user if isinstance(r, ExtensionRoute) else None


def test_extension_by_number_domain_or_our_address() -> None:
    assert target("sip:201@acme.example") == "201"
    assert target("sip:201@ACME.example") == "201"
    assert target("sip:201@127.0.0.1:5060") == "201"
    assert target("sip:201@[::1]") == "201"
    assert target("tel:201") == "201"
    assert target("sip:2-0-1@acme.example") == "201"  # visual separators
    assert target("sip:j.doe@acme.example") == "j.doe"
    assert target("sip:%32%30%31@acme.example") == "201"


def test_nothing_else_is_found() -> None:
    assert target("sip:999@acme.example") is None
    assert target("sip:acme.example") is None
    assert isinstance(route(ACME, parse_uri("sip:300@beta.example")), NotFound)
    assert isinstance(route(ACME, parse_uri("sip:201@beta.example")), NotFound)
    assert isinstance(route(ACME, parse_uri("sip:201@elsewhere.example")), NotFound)


def test_no_request_crosses_tenants() -> None:
    # The same number in both tenants always resolves inside the caller's.
    both = Tenant("beta.example", "Beta", (Extension("201", "pw-201-yy"),))
    r = route(both, parse_uri("sip:201@acme.example"))
    assert isinstance(r, NotFound)
    r = route(both, parse_uri("sip:201@127.0.0.1"))
    assert isinstance(r, ExtensionRoute) and r.tenant is both


def test_dialled_user() -> None:
    assert dialled_user(parse_uri("sip:+39 02-1234@x.example".replace(" ", "%20"))) == "+39021234"
    assert dialled_user(parse_uri("tel:+39-02-1234;phone-context=x")) == "+39021234"
    assert dialled_user(parse_uri("sip:x.example")) is None
