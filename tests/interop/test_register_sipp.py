"""Digest REGISTER at volume with SIPp, and what a wrong password reveals."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.sipmsg import (
    SipResponse,
    SipUdpClient,
    digest_authorization,
    new_call_id,
    new_tag,
    parse_auth_params,
    parse_challenges,
    pick_challenge,
)
from tests.support.sipp import (
    auth_field,
    received_messages,
    register_rows,
    run_sipp,
    write_injection_csv,
)

pytestmark = pytest.mark.interop

TENANTS = ("acme.example", "beta.example")
USERS = [str(u) for u in range(2000, 2500)]  # the same numbers in both tenants


def password(user: str, domain: str) -> str:
    return f"pw{user}{domain.split('.')[0]}"


def tenants() -> dict[str, list[tuple[str, str]]]:
    return {d: [(u, password(u, d)) for u in USERS] for d in TENANTS}


# Per-source banning would otherwise stop these tests, which all come from 127.0.0.1.
NO_BAN = {"ban_failures": 1_000_000, "ban_window": 60, "ban_time": 1}
# SIPp 3.6 answers only MD5 and aborts the whole run on any SHA-256 challenge.
SIPP_DIGEST = {"digest_algorithms": ["MD5"]}


@pytest.mark.timeout(180)
def test_thousand_users_two_tenants_register(softswitch, sipp_bin, tmp_path: Path) -> None:
    daemon = softswitch(tenants(), t1=0.05, **NO_BAN, **SIPP_DIGEST)
    # Interleave tenants so both are exercised from the first second.
    rows = [(u, password(u, d), d) for u in USERS for d in TENANTS]
    inf = write_injection_csv(tmp_path / "users.csv", register_rows(rows))
    sipp_port = free_port(tcp=False)
    target = daemon.address
    res = run_sipp(
        "register_auth",
        target,
        workdir=tmp_path,
        calls=len(rows),
        rate=200,
        limit=100,
        inf=inf,
        local_port=sipp_port,
        timeout=90,
    )
    assert res.returncode == 0, res.describe()
    assert (res.successful, res.failed) == (1000, 0), res.describe()

    listing = daemon.registrations()
    bound = [line for line in listing.splitlines() if f"@127.0.0.1:{sipp_port}" in line]
    assert len(bound) == 1000, listing[:3000]
    for domain in TENANTS:
        assert domain in listing


@pytest.mark.timeout(120)
def test_bad_credentials_refused_via_sipp(softswitch, sipp_bin, tmp_path: Path) -> None:
    daemon = softswitch(tenants(), t1=0.05, **NO_BAN, **SIPP_DIGEST)
    wrong = [(u, auth_field(u, "not-" + password(u, d)), d) for u in USERS[:10] for d in TENANTS]
    # Right password of the other tenant: credentials must be scoped by realm.
    crossed = [(u, auth_field(u, password(u, TENANTS[1])), TENANTS[0]) for u in USERS[10:15]]
    unknown = [(u, auth_field(u, "whatever"), TENANTS[0]) for u in ("3999", "alice", "0")]
    rows = wrong + crossed + unknown
    inf = write_injection_csv(tmp_path / "bad.csv", rows)
    sipp_port = free_port(tcp=False)
    target = daemon.address
    res = run_sipp(
        "register_wrong_password",
        target,
        workdir=tmp_path,
        calls=len(rows),
        rate=50,
        limit=20,
        inf=inf,
        local_port=sipp_port,
        timeout=60,
        trace_msg=True,
    )
    assert res.message_path is not None
    statuses = [m.split(b" ", 2)[1] for m in received_messages(res.message_path)]
    assert b"200" not in statuses, res.describe()
    assert res.returncode == 0, res.describe()
    assert (res.successful, res.failed) == (len(rows), 0), res.describe()


def _attempt(
    client: SipUdpClient, user: str, domain: str, pw: str
) -> tuple[SipResponse, SipResponse]:
    """Unauthenticated REGISTER, then one answering its MD5 challenge with ``pw``."""
    call_id, tag = new_call_id(), new_tag()
    first = client.request(
        client.register_request(user, domain, call_id=call_id, cseq=1, from_tag=tag)
    )
    assert first is not None and first.status == 401, first
    challenge = pick_challenge(parse_challenges(first), "MD5")
    auth = digest_authorization(
        challenge, method="REGISTER", uri=f"sip:{domain}", username=user, password=pw
    )
    second = client.request(
        client.register_request(
            user, domain, call_id=call_id, cseq=2, from_tag=tag, authorization=auth
        )
    )
    assert second is not None, "no answer to an authenticated REGISTER"
    return first, second


def _shape(resp: SipResponse) -> tuple[int, list[str], list[tuple[str, ...]]]:
    """What may not differ between an unknown user and a wrong password."""
    challenge_params = [
        tuple(sorted(parse_auth_params(v)[1]))
        for v in resp.get_all("www-authenticate") + resp.get_all("proxy-authenticate")
    ]
    return resp.status, resp.header_names(), challenge_params


@pytest.mark.timeout(60)
def test_unknown_user_indistinguishable_from_wrong_password(softswitch) -> None:
    daemon = softswitch(tenants(), t1=0.05, **NO_BAN, **SIPP_DIGEST)
    domain = TENANTS[0]
    with SipUdpClient(daemon.address) as client:
        ch_wrong, wrong = _attempt(client, USERS[0], domain, "not-the-password")
        ch_unknown, unknown = _attempt(client, "3999", domain, "not-the-password")
        _, good = _attempt(client, USERS[1], domain, password(USERS[1], domain))
    assert wrong.status in (401, 403), wrong.raw
    assert good.status == 200, good.raw
    assert _shape(ch_unknown) == _shape(ch_wrong)
    assert _shape(unknown) == _shape(wrong)
