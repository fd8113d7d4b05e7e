"""A real phone (baresip) registers with digest auth; the binding survives a restart."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.interop

DOMAIN = "acme.example"
REGINT = 12  # short, so the phone refreshes within the test


def binding_lines(listing: str, user: str, contact_hostport: str) -> list[str]:
    """Lines of ``softswitch registrations`` naming ``user`` with that contact address."""
    user_re = re.compile(rf"(?<![\w.@-]){re.escape(user)}(?![\w.-])")
    return [
        line for line in listing.splitlines() if contact_hostport in line and user_re.search(line)
    ]


@pytest.mark.timeout(120)
def test_baresip_registers_and_binding_survives_restart(softswitch, phones) -> None:
    daemon = softswitch(
        {DOMAIN: [("201", "secret201", "Alice Rossi"), ("202", "secret202", "Bruno Bianchi")]},
        min_expires=10,
        t1=0.05,
        ban_failures=1000,
    )
    host, port = daemon.address
    phone = phones(None, f"sip:201@{DOMAIN}", "201", "secret201", host, port, regint=REGINT)
    contact = f"127.0.0.1:{phone.sip_port}"

    assert phone.registered(10), "phone did not register\n" + phone.log_tail()
    listing = daemon.registrations()
    assert DOMAIN in listing, listing
    assert binding_lines(listing, "201", contact), listing
    assert not binding_lines(listing, "202", contact), listing

    # Restart right after a refresh, so the next one is a whole interval away and the
    # listing below can only come from the stored state.
    phone.wait_event("REGISTER_OK", REGINT + 5)
    refreshes_before = phone.register_ok_count()
    assert daemon.stop() == 0, daemon.log_tail()
    daemon.start()
    listing = daemon.registrations()
    assert phone.register_ok_count() == refreshes_before, "phone refreshed during restart"
    assert binding_lines(listing, "201", contact), "binding lost on restart:\n" + listing

    phone.wait_event("REGISTER_OK", REGINT + 5)
    listing = daemon.registrations()
    assert binding_lines(listing, "201", contact), listing
    assert phone.alive()
