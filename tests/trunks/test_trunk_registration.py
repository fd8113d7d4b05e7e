"""The REGISTER client against a fake carrier, on a manual clock with seeded jitter."""

from __future__ import annotations

import itertools
import random

import pytest

from softswitch.sip.auth import (
    AuthResult,
    DigestAlgorithm,
    DigestServer,
    NonceManager,
    parse_credentials,
)
from softswitch.sip.message import Request, Response, make_response, parse_message
from softswitch.trunks.model import Trunk
from softswitch.trunks.registration import (
    RegistrationTimers,
    RegState,
    TrunkRegistration,
)

CONTACT = "sip:acme-trunk@203.0.113.5:5060"
TRUNK = Trunk(
    name="carrier",
    host="sip.carrier.example",
    username="0212345600",
    password="right-password",
    register=True,
    register_expires=600,
)


class FakeCarrier:
    """A registrar that challenges with the given algorithms and checks the answers."""

    def __init__(
        self,
        algorithms=(DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
        password: str = "right-password",
        grant: int | None = None,
        min_expires: int | None = None,
        proxy: bool = False,
        realm: str = "carrier.example",
    ) -> None:
        self.server = DigestServer(NonceManager(b"k" * 32, 300.0), algorithms)
        self.password = password
        self.grant = grant
        self.min_expires = min_expires
        self.proxy = proxy
        self.realm = realm
        self.seen: list[Request] = []
        self.now = 1_800_000_000.0

    def handle(self, request: Request) -> Response:
        # Round-trip through bytes: what we send must parse as a peer would read it.
        request = parse_message(request.to_bytes())
        assert isinstance(request, Request)
        self.seen.append(request)
        name = "proxy-authorization" if self.proxy else "authorization"
        value = request.headers.get(name)
        expires = int(request.headers.get("expires"))
        if value is None:
            return self._challenge(request)
        creds = parse_credentials(value)
        result = self.server.verify("REGISTER", creds, self.realm, self.password, self.now)
        if result is AuthResult.STALE:
            return self._challenge(request, stale=True)
        if result is not AuthResult.OK:
            return self._challenge(request)
        if self.min_expires and 0 < expires < self.min_expires:
            return make_response(request, 423, extra=[("Min-Expires", str(self.min_expires))])
        granted = expires if self.grant is None or expires == 0 else self.grant
        contact = request.headers.get("contact")
        return make_response(
            request,
            200,
            to_tag="reg",
            extra=[("Contact", f"{contact};expires={granted}")] if granted else [],
        )

    def _challenge(self, request: Request, stale: bool = False) -> Response:
        status, header = (407, "Proxy-Authenticate") if self.proxy else (401, "WWW-Authenticate")
        values = self.server.challenge_values(self.realm, self.now, stale=stale)
        return make_response(request, status, to_tag="ch", extra=[(header, v) for v in values])


def make_reg(timers: RegistrationTimers | None = None, seed: int = 7, trunk: Trunk = TRUNK):
    counter = itertools.count()
    return TrunkRegistration(
        trunk,
        CONTACT,
        timers,
        rng=random.Random(seed),
        user_agent="softswitch",
        token=lambda: f"tok{next(counter)}",
    )


def run(reg: TrunkRegistration, carrier: FakeCarrier, requests: list[Request], now: float):
    """Answer requests until the machine stops sending; return how many went out."""
    sent = 0
    while requests:
        sent += len(requests)
        (request,) = requests
        requests = reg.on_response(carrier.handle(request), now, source="192.0.2.10")
    return sent


@pytest.mark.parametrize(
    ("algorithms", "expected"),
    [
        ((DigestAlgorithm.SHA256, DigestAlgorithm.MD5), "SHA-256"),
        ((DigestAlgorithm.MD5, DigestAlgorithm.SHA256), "SHA-256"),
        ((DigestAlgorithm.MD5,), "MD5"),
        ((DigestAlgorithm.SHA256,), "SHA-256"),
    ],
)
def test_registers_answering_the_strongest_challenge(algorithms, expected) -> None:
    carrier = FakeCarrier(algorithms)
    reg = make_reg()
    assert run(reg, carrier, reg.start(0.0), 0.0) == 2
    assert reg.state is RegState.REGISTERED
    assert reg.registered_until == 600.0
    creds = parse_credentials(carrier.seen[1].headers.get("authorization"))
    assert creds.algorithm == expected
    assert creds.nc == "00000001"
    assert creds.uri == "sip:sip.carrier.example"
    assert creds.username == "0212345600"
    assert reg.peer_addresses == frozenset({"192.0.2.10"})


def test_request_shape() -> None:
    reg = make_reg()
    (request,) = reg.start(0.0)
    assert request.method == "REGISTER"
    assert str(request.uri) == "sip:sip.carrier.example"
    via = request.top_via
    assert via.branch.startswith("z9hG4bK") and via.has_param("rport")
    assert via.sent_by == "203.0.113.5:5060" and via.transport == "UDP"
    assert str(request.from_.uri) == "sip:0212345600@sip.carrier.example"
    assert request.from_.tag
    assert str(request.to.uri) == str(request.from_.uri) and request.to.tag is None
    assert request.headers.get("contact") == f"<{CONTACT}>"
    assert request.headers.get("expires") == "600"
    assert request.cseq.seq == 1 and request.cseq.method == "REGISTER"
    assert request.headers.get("user-agent") == "softswitch"
    assert request.max_forwards == 70


def test_call_id_constant_cseq_increasing_branch_fresh() -> None:
    carrier = FakeCarrier()
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    refresh = reg.handle_timer(reg.next_deadline())
    run(reg, carrier, refresh, reg.next_deadline() or 540.0)
    ids = {r.call_id for r in carrier.seen}
    assert len(ids) == 1
    seqs = [r.cseq.seq for r in carrier.seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len({r.top_via.branch for r in carrier.seen}) == len(carrier.seen)
    assert len({r.from_.tag for r in carrier.seen}) == 1


def test_proxy_authenticate_is_answered_with_proxy_authorization() -> None:
    carrier = FakeCarrier(proxy=True)
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    assert reg.state is RegState.REGISTERED
    assert carrier.seen[1].headers.get("proxy-authorization") is not None
    assert carrier.seen[1].headers.get("authorization") is None


def test_wrong_password_fails_after_one_answer_and_backs_off() -> None:
    carrier = FakeCarrier(password="another-password")
    reg = make_reg(RegistrationTimers(jitter=0.0))
    assert run(reg, carrier, reg.start(0.0), 0.0) == 2  # never a third try in a row
    assert reg.state is RegState.FAILED
    assert "wrong username or password" in reg.reason
    assert reg.next_deadline() == 30.0
    assert reg.failures == 1


def test_same_nonce_rechallenge_is_a_credentials_failure() -> None:
    reg = make_reg()
    carrier = FakeCarrier()
    (first,) = reg.start(0.0)
    challenge = carrier.handle(first)
    (second,) = reg.on_response(challenge, 0.0)
    # The carrier repeats the very same challenge (same nonce, no stale=true).
    again = make_response(
        second,
        401,
        extra=[("WWW-Authenticate", v) for v in challenge.headers.get_all("www-authenticate")],
    )
    assert reg.on_response(again, 0.0) == []
    assert reg.state is RegState.FAILED
    assert "same nonce" in reg.reason


def test_stale_nonce_is_answered_again_not_a_failure() -> None:
    carrier = FakeCarrier()
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    # Much later the carrier's nonce is stale: the pre-emptive refresh gets stale=true.
    carrier.now += 10_000
    deadline = reg.next_deadline()
    refresh = reg.handle_timer(deadline)
    assert refresh[0].headers.get("authorization") is not None  # pre-emptive
    run(reg, carrier, refresh, deadline)
    assert reg.state is RegState.REGISTERED
    assert reg.failures == 0


def test_refresh_reuses_nonce_with_counting_nc() -> None:
    carrier = FakeCarrier()
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    deadline = reg.next_deadline()
    run(reg, carrier, reg.handle_timer(deadline), deadline)
    refresh = carrier.seen[-1]
    creds = parse_credentials(refresh.headers.get("authorization"))
    first = parse_credentials(carrier.seen[1].headers.get("authorization"))
    assert creds.nonce == first.nonce
    assert creds.nc == "00000002"
    assert creds.cnonce != first.cnonce
    assert len(carrier.seen) == 3  # one round trip for the refresh


@pytest.mark.parametrize(
    ("expires", "refresh_at"),
    [(600, 540.0), (3600, 3240.0), (60, 54.0), (30, 25.0), (8, 4.0)],
)
def test_refresh_timing(expires: int, refresh_at: float) -> None:
    carrier = FakeCarrier(grant=expires)
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    assert reg.granted_expires == expires
    assert reg.next_deadline() == refresh_at
    assert reg.handle_timer(refresh_at - 0.001) == []
    assert len(reg.handle_timer(refresh_at)) == 1


def test_expires_header_used_when_contact_has_none() -> None:
    reg = make_reg()
    (request,) = reg.start(0.0)
    ok = make_response(request, 200, to_tag="x", extra=[("Expires", "120")])
    reg.on_response(ok, 10.0)
    assert reg.state is RegState.REGISTERED
    assert reg.registered_until == 130.0


def test_contact_expires_wins_over_expires_header_and_other_contacts() -> None:
    reg = make_reg()
    (request,) = reg.start(0.0)
    ok = make_response(
        request,
        200,
        to_tag="x",
        extra=[
            ("Contact", "<sip:someone-else@198.51.100.1>;expires=3600"),
            ("Contact", "<sip:acme-trunk@203.0.113.5>;expires=300"),
            ("Expires", "900"),
        ],
    )
    reg.on_response(ok, 0.0)
    assert reg.granted_expires == 300


def test_interval_too_brief_retries_with_min_expires() -> None:
    carrier = FakeCarrier(min_expires=1800)
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    assert reg.state is RegState.REGISTERED
    assert carrier.seen[-1].headers.get("expires") == "1800"
    assert reg.granted_expires == 1800
    # Later refreshes keep asking for what the carrier accepts.
    deadline = reg.next_deadline()
    run(reg, carrier, reg.handle_timer(deadline), deadline)
    assert carrier.seen[-1].headers.get("expires") == "1800"


def test_423_without_usable_min_expires_fails() -> None:
    reg = make_reg()
    (request,) = reg.start(0.0)
    reg.on_response(make_response(request, 423), 0.0)
    assert reg.state is RegState.FAILED
    assert "Min-Expires" in reg.reason


def test_backoff_sequence_without_jitter() -> None:
    reg = make_reg(RegistrationTimers(jitter=0.0))
    now = 0.0
    (request,) = reg.start(now)
    delays = []
    for _ in range(7):
        assert reg.on_timeout(now) == []
        assert reg.state is RegState.FAILED and reg.reason == "no response from the carrier"
        deadline = reg.next_deadline()
        delays.append(deadline - now)
        now = deadline
        (request,) = reg.handle_timer(now)
        assert reg.state is RegState.REGISTERING
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0]


def test_backoff_jitter_is_deterministic_and_bounded() -> None:
    def delays(seed: int) -> list[float]:
        reg = make_reg(seed=seed)
        now = 0.0
        reg.start(now)
        out = []
        for _ in range(6):
            reg.on_timeout(now)
            out.append(reg.next_deadline() - now)
            now = reg.next_deadline()
            reg.handle_timer(now)
        return out

    assert delays(1) == delays(1)
    assert delays(1) != delays(2)
    for got, base in zip(delays(3), [30, 60, 120, 240, 480, 600], strict=True):
        assert 0.75 * base <= got <= base


def test_success_resets_backoff() -> None:
    carrier = FakeCarrier()
    reg = make_reg(RegistrationTimers(jitter=0.0))
    reg.start(0.0)
    reg.on_timeout(0.0)
    reg.on_timeout(0.0)  # ignored: nothing in flight
    assert reg.failures == 1
    (retry,) = reg.handle_timer(30.0)
    run(reg, carrier, [retry], 30.0)
    assert reg.state is RegState.REGISTERED and reg.failures == 0


def test_retry_after_is_honoured_when_longer() -> None:
    reg = make_reg(RegistrationTimers(jitter=0.0))
    (request,) = reg.start(0.0)
    reg.on_response(make_response(request, 503, extra=[("Retry-After", "900")]), 0.0)
    assert reg.state is RegState.FAILED
    assert reg.reason == "503 Service Unavailable"
    assert reg.next_deadline() == 900.0


def test_forbidden_fails_with_status_in_reason() -> None:
    reg = make_reg(RegistrationTimers(jitter=0.0))
    (request,) = reg.start(0.0)
    reg.on_response(make_response(request, 403), 0.0)
    assert (reg.state, reg.reason, reg.last_status) == (RegState.FAILED, "403 Forbidden", 403)


def test_late_and_foreign_responses_are_ignored() -> None:
    reg = make_reg()
    (first,) = reg.start(0.0)
    reg.on_timeout(0.0)
    (second,) = reg.handle_timer(reg.next_deadline())
    # The answer to the first REGISTER arrives late: ignored.
    assert reg.on_response(make_response(first, 200, extra=[("Expires", "60")]), 40.0) == []
    assert reg.state is RegState.REGISTERING
    assert reg.on_response(make_response(second, 100), 40.0) == []
    assert reg.state is RegState.REGISTERING


def test_unregister_on_stop() -> None:
    carrier = FakeCarrier()
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    (bye,) = reg.stop(100.0)
    assert bye.headers.get("expires") == "0"
    assert bye.headers.get("authorization") is not None  # cached credentials
    assert reg.state is RegState.UNREGISTERING
    reg.on_response(carrier.handle(bye), 100.0)
    assert reg.state is RegState.UNREGISTERED
    assert reg.next_deadline() is None
    assert reg.registered_until is None


def test_unregister_answers_a_challenge_then_finishes_on_timeout() -> None:
    carrier = FakeCarrier()
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    (bye,) = reg.stop(100.0)
    challenged = carrier._challenge(bye, stale=True)
    (again,) = reg.on_response(challenged, 100.0)
    assert again.headers.get("expires") == "0"
    reg.on_timeout(132.0)
    assert reg.state is RegState.UNREGISTERED


def test_stop_when_not_registered_sends_nothing() -> None:
    reg = make_reg()
    assert reg.stop(0.0) == []
    assert reg.state is RegState.UNREGISTERED
    reg.start(0.0)
    reg.on_timeout(0.0)
    assert reg.stop(1.0) == []
    assert reg.next_deadline() is None


def test_expiry_while_refresh_in_flight() -> None:
    carrier = FakeCarrier(grant=60)
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    (refresh,) = reg.handle_timer(54.0)
    assert reg.next_deadline() == 60.0  # the binding's end, while we wait
    assert reg.handle_timer(60.0) == []
    assert reg.state is RegState.REGISTERING
    assert reg.registered_until is None
    reg.on_response(carrier.handle(refresh), 61.0)
    assert reg.state is RegState.REGISTERED


def test_state_changes_are_reported_once_each() -> None:
    carrier = FakeCarrier(password="nope-nope")
    reg = make_reg()
    run(reg, carrier, reg.start(5.0), 5.0)
    changes = reg.pop_changes()
    assert [(c.state, c.at) for c in changes] == [
        (RegState.REGISTERING, 5.0),
        (RegState.FAILED, 5.0),
    ]
    assert reg.pop_changes() == []


def test_status_snapshot_in_wall_clock() -> None:
    carrier = FakeCarrier()
    reg = make_reg()
    run(reg, carrier, reg.start(0.0), 0.0)
    status = reg.status(now=10.0, wall=1_000.0)
    assert status.state == "registered"
    assert status.registered_until == 1_590.0
    assert status.next_attempt is None
    assert type(status).from_dict(status.to_dict()) == status


def test_public_address_learned_from_via() -> None:
    reg = make_reg()
    (request,) = reg.start(0.0)
    via = request.top_via.with_params(received="198.51.100.77", rport="40000")
    ok = make_response(request, 200, extra=[("Expires", "600")])
    ok = ok.replace(headers=ok.headers.replace("Via", str(via)))
    reg.on_response(ok, 0.0)
    assert reg.public_address == "198.51.100.77:40000"


def test_tcp_trunk_via_and_auth_username() -> None:
    trunk = Trunk(
        name="t",
        host="sip.carrier.example",
        transport="tcp",
        username="0212345600",
        auth_username="auth-0212345600",
        password="right-password",
        from_domain="voip.carrier.example",
        register=True,
    )
    reg = make_reg(trunk=trunk)
    (request,) = reg.start(0.0)
    assert request.top_via.transport == "TCP"
    assert str(request.uri) == "sip:voip.carrier.example"
    carrier = FakeCarrier()
    (answer,) = reg.on_response(carrier.handle(request), 0.0)
    assert parse_credentials(answer.headers.get("authorization")).username == "auth-0212345600"


def test_requires_username() -> None:
    with pytest.raises(ValueError):
        TrunkRegistration(Trunk(name="x", host="h.example"), CONTACT)
