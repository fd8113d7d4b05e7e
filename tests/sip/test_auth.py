"""Digest authentication: RFC vectors, server verification, nonces, replay, parsers."""

from __future__ import annotations

import base64
import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.sip.auth import (
    AuthParseError,
    AuthResult,
    DigestAlgorithm,
    DigestChallenge,
    DigestCredentials,
    DigestServer,
    NcCheck,
    NonceCountTracker,
    NonceManager,
    NonceState,
    UnsupportedChallenge,
    build_authorization,
    choose_challenge,
    compute_ha1,
    compute_response,
    format_challenge,
    parse_challenge,
    parse_credentials,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "acme.example.com"
T0 = 1_700_000_000.0  # wall-clock seconds, as the driver passes them

# RFC 7616 section 3.9.1 (password with a lower-case "of", see erratum 4495).
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def counter_bytes():
    """Deterministic salts so tests never depend on the OS random source."""
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def make_server(lifetime: float = 300.0, **kwargs) -> DigestServer:
    return DigestServer(NonceManager(SECRET, lifetime, random_bytes=counter_bytes()), **kwargs)


def answer(
    server: DigestServer,
    *,
    algorithm: str = "SHA-256",
    password: str = "s3cret",
    username: str = "1001",
    nc: int = 1,
    realm: str = REALM,
    now: float = T0,
    method: str = "REGISTER",
    uri: str = "sip:acme.example.com",
) -> DigestCredentials:
    challenges = [parse_challenge(v) for v in server.challenge_values(realm, now)]
    challenge = next(c for c in challenges if c.algorithm == algorithm)
    value = build_authorization(challenge, method, uri, username, password, "c0ffee42", nc)
    return parse_credentials(value)


# --- RFC vectors ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_worked_example(algorithm: str) -> None:
    challenge = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", '
        f'algorithm={algorithm}, nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    value = build_authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", RFC7616_CNONCE, 1
    )
    creds = parse_credentials(value)
    assert creds.response == RFC7616_RESPONSES[algorithm]
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.cnonce == RFC7616_CNONCE
    assert creds.opaque == RFC7616_OPAQUE
    assert creds.algorithm == algorithm
    assert "qop=auth," in value and "nc=00000001" in value  # unquoted, as RFC 7616 requires


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_credentials_as_printed_verify_with_compute_response(algorithm: str) -> None:
    # The RFC's Authorization header, reflowed, parsed and recomputed from its parts.
    creds = parse_credentials(
        'Digest username="Mufasa",\r\n    realm="http-auth@example.org",\r\n'
        f'    uri="/dir/index.html",\r\n    algorithm={algorithm},\r\n'
        f'    nonce="{RFC7616_NONCE}",\r\n    nc=00000001,\r\n'
        f'    cnonce="{RFC7616_CNONCE}",\r\n    qop=auth,\r\n'
        f'    response="{RFC7616_RESPONSES[algorithm]}",\r\n    opaque="{RFC7616_OPAQUE}"'
    )
    alg = DigestAlgorithm.from_token(algorithm)
    assert alg is not None
    ha1 = compute_ha1(alg, creds.username, creds.realm, "Circle of Life")
    response = compute_response(
        alg, ha1, "GET", creds.uri, creds.nonce, qop=creds.qop, nc=creds.nc, cnonce=creds.cnonce
    )
    assert response == creds.response


def test_rfc2069_no_qop_example() -> None:
    # RFC 2069 section 2.4 (value as corrected by its erratum), the form RFC 2617 keeps for
    # servers that send no qop.
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.qop == () and challenge.algorithm == "MD5"
    value = build_authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "CircleOfLife", "ignored", 1
    )
    creds = parse_credentials(value)
    assert creds.response == "1949323746fe6a43ef61f9606e7febea"
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert "nc=" not in value and "cnonce=" not in value and "qop=" not in value


def test_rfc2617_qop_example() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = build_authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1
    )
    assert parse_credentials(value).response == "6629fae49393a05397450978507c4ef1"


# --- server: challenges -----------------------------------------------------------------


def test_challenge_values_sha256_first_then_md5_sharing_one_nonce() -> None:
    values = make_server().challenge_values(REALM, T0)
    assert len(values) == 2
    first, second = (parse_challenge(v) for v in values)
    assert (first.algorithm, second.algorithm) == ("SHA-256", "MD5")
    assert first.nonce == second.nonce
    for c in (first, second):
        assert c.realm == REALM and c.qop == ("auth",) and not c.stale
    assert values[0].startswith(f'Digest realm="{REALM}", nonce="')
    assert values[0].endswith('algorithm=SHA-256, qop="auth"')
    assert "stale" not in values[0]


def test_stale_challenge_carries_stale_true() -> None:
    values = make_server().challenge_values(REALM, T0, stale=True)
    assert all(v.endswith(", stale=true") for v in values)
    assert all(parse_challenge(v).stale for v in values)


def test_challenge_realm_is_quoted_and_injection_refused() -> None:
    server = make_server()
    value = server.challenge_values('we "quote" \\ this', T0)[0]
    assert parse_challenge(value).realm == 'we "quote" \\ this'
    with pytest.raises(ValueError):
        server.challenge_values("evil\r\nVia: x", T0)


def test_algorithms_order_is_configurable() -> None:
    server = make_server(algorithms=(DigestAlgorithm.MD5,))
    values = server.challenge_values(REALM, T0)
    assert [parse_challenge(v).algorithm for v in values] == ["MD5"]
    creds = answer(server, algorithm="MD5")
    assert server.verify("REGISTER", creds, REALM, "s3cret", T0) is AuthResult.OK
    with pytest.raises(ValueError):
        DigestServer(NonceManager(SECRET, 10), algorithms=())


# --- server: verification ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_round_trip_client_to_server(algorithm: str) -> None:
    server = make_server()
    creds = answer(server, algorithm=algorithm)
    assert creds.algorithm == algorithm
    assert server.verify("REGISTER", creds, REALM, "s3cret", T0 + 1) is AuthResult.OK


def test_method_is_bound_into_the_response() -> None:
    server = make_server()
    creds = answer(server, method="REGISTER")
    assert server.verify("INVITE", creds, REALM, "s3cret", T0) is AuthResult.FAILED


def test_uri_param_need_not_equal_request_uri() -> None:
    # SIPp sends uri="sip:host:port" whatever the Request-URI is; the hash uses what it sent.
    server = make_server()
    creds = answer(server, uri="sip:192.0.2.10:5060", method="INVITE")
    assert server.verify("INVITE", creds, REALM, "s3cret", T0) is AuthResult.OK


def test_wrong_password_fails() -> None:
    server = make_server()
    creds = answer(server, password="guess")
    verdict = server.evaluate("REGISTER", creds, REALM, "s3cret", T0)
    assert verdict.result is AuthResult.FAILED
    assert verdict.reason == "wrong password or unknown user"


def test_unknown_user_fails_exactly_like_wrong_password(monkeypatch) -> None:
    import softswitch.sip.auth as auth

    calls: list[str] = []
    real_h = auth._h
    real_compare = auth.hmac.compare_digest

    def spy_h(algorithm, text):
        calls.append("hash")
        return real_h(algorithm, text)

    def spy_compare(a, b):
        calls.append(f"compare:{len(a)}:{len(b)}")
        return real_compare(a, b)

    monkeypatch.setattr(auth, "_h", spy_h)
    monkeypatch.setattr(auth.hmac, "compare_digest", spy_compare)

    server = make_server()
    creds = answer(server, password="guess")

    calls.clear()
    wrong = server.evaluate("REGISTER", creds, REALM, "s3cret", T0)
    wrong_calls = list(calls)
    calls.clear()
    unknown = server.evaluate("REGISTER", creds, REALM, None, T0)
    assert unknown == wrong
    assert calls == wrong_calls  # same hashes, same constant-time comparisons
    assert "hash" in calls


def test_unknown_user_cannot_log_in_even_with_empty_password() -> None:
    server = make_server()
    creds = answer(server, password="")
    assert server.verify("REGISTER", creds, REALM, None, T0) is AuthResult.FAILED
    assert server.verify("REGISTER", creds, REALM, "", T0) is AuthResult.OK


def test_empty_username_fails() -> None:
    server = make_server()
    creds = answer(server, username="")
    assert server.verify("REGISTER", creds, REALM, "s3cret", T0) is AuthResult.FAILED


def test_stale_nonce_with_right_password_is_stale_then_recovers() -> None:
    server = make_server(lifetime=30.0)
    creds = answer(server, now=T0)
    assert server.verify("REGISTER", creds, REALM, "s3cret", T0 + 30.0) is AuthResult.OK
    late = T0 + 30.5
    assert server.verify("REGISTER", creds, REALM, "s3cret", late) is AuthResult.STALE
    # The caller re-challenges with stale=true; the phone answers the new nonce.
    fresh = [parse_challenge(v) for v in server.challenge_values(REALM, late, stale=True)]
    assert all(c.stale for c in fresh)
    value = build_authorization(
        choose_challenge(fresh), "REGISTER", "sip:acme.example.com", "1001", "s3cret", "c2", 1
    )
    assert server.verify("REGISTER", parse_credentials(value), REALM, "s3cret", late) is (
        AuthResult.OK
    )


def test_stale_nonce_with_wrong_password_is_failed_not_stale() -> None:
    server = make_server(lifetime=30.0)
    creds = answer(server, password="guess")
    assert server.verify("REGISTER", creds, REALM, "s3cret", T0 + 60) is AuthResult.FAILED


def test_tampered_nonce_is_invalid_and_fails() -> None:
    server = make_server()
    creds = answer(server)
    raw = bytearray(base64.urlsafe_b64decode(creds.nonce))
    raw[3] ^= 0x01  # move the timestamp: the MAC no longer matches
    forged = base64.urlsafe_b64encode(bytes(raw)).decode()
    nonces = NonceManager(SECRET, 300)
    assert nonces.check(forged, REALM, T0) is NonceState.INVALID
    tampered = dataclasses.replace(creds, nonce=forged)
    verdict = server.evaluate("REGISTER", tampered, REALM, "s3cret", T0)
    assert verdict.result is AuthResult.FAILED
    assert "nonce" in verdict.reason


def test_nonce_from_realm_a_fails_on_realm_b() -> None:
    server = make_server()
    creds = answer(server, realm="tenant-a.example")
    # As sent: the realm parameter names A, so B rejects it outright.
    assert server.verify("REGISTER", creds, "tenant-b.example", "s3cret", T0) is (AuthResult.FAILED)
    # Recomputed by an attacker for realm B with A's nonce: the nonce's MAC is realm-bound.
    challenge = DigestChallenge(
        realm="tenant-b.example", nonce=creds.nonce, algorithm="SHA-256", qop=("auth",)
    )
    value = build_authorization(challenge, "REGISTER", "sip:b", "1001", "s3cret", "c", 1)
    verdict = server.evaluate(
        "REGISTER", parse_credentials(value), "tenant-b.example", "s3cret", T0
    )
    assert verdict.result is AuthResult.FAILED
    assert "nonce" in verdict.reason


def test_nonce_from_another_secret_is_invalid() -> None:
    other = DigestServer(NonceManager(b"another-secret-of-32-bytes......", 300))
    creds = answer(other)
    assert make_server().verify("REGISTER", creds, REALM, "s3cret", T0) is AuthResult.FAILED


def test_nonce_survives_restart_with_same_secret() -> None:
    creds = answer(make_server())
    restarted = make_server()
    assert restarted.verify("REGISTER", creds, REALM, "s3cret", T0 + 5) is AuthResult.OK


def test_nc_replay_detected_and_increasing_nc_accepted() -> None:
    server = make_server()
    first = answer(server, nc=1)
    assert server.verify("REGISTER", first, REALM, "s3cret", T0) is AuthResult.OK
    assert server.verify("REGISTER", first, REALM, "s3cret", T0 + 1) is AuthResult.REPLAY

    challenge = DigestChallenge(realm=REALM, nonce=first.nonce, algorithm="SHA-256", qop=("auth",))

    def with_nc(nc: int) -> DigestCredentials:
        value = build_authorization(
            challenge, "REGISTER", "sip:acme.example.com", "1001", "s3cret", "c0ffee42", nc
        )
        return parse_credentials(value)

    assert server.verify("REGISTER", with_nc(2), REALM, "s3cret", T0 + 2) is AuthResult.OK
    assert server.verify("REGISTER", with_nc(5), REALM, "s3cret", T0 + 3) is AuthResult.OK
    assert server.verify("REGISTER", with_nc(4), REALM, "s3cret", T0 + 4) is AuthResult.REPLAY
    assert server.verify("REGISTER", with_nc(5), REALM, "s3cret", T0 + 5) is AuthResult.REPLAY
    assert server.verify("REGISTER", with_nc(6), REALM, "s3cret", T0 + 6) is AuthResult.OK


def test_failed_attempt_does_not_advance_nc() -> None:
    # Otherwise anyone could burn a victim's nonce-counts with forged responses.
    server = make_server()
    bad = answer(server, nc=7, password="guess")
    assert server.verify("REGISTER", bad, REALM, "s3cret", T0) is AuthResult.FAILED
    challenge = DigestChallenge(realm=REALM, nonce=bad.nonce, algorithm="SHA-256", qop=("auth",))
    good = build_authorization(challenge, "REGISTER", "sip:x", "1001", "s3cret", "c", 1)
    assert server.verify("REGISTER", parse_credentials(good), REALM, "s3cret", T0) is (
        AuthResult.OK
    )


def test_two_clients_challenged_at_once_get_distinct_nonces() -> None:
    server = make_server()
    a = answer(server, username="1001")
    b = answer(server, username="1002")
    assert a.nonce != b.nonce
    assert server.verify("REGISTER", a, REALM, "s3cret", T0) is AuthResult.OK
    assert server.verify("REGISTER", b, REALM, "s3cret", T0) is AuthResult.OK


def test_no_qop_form_is_accepted_without_replay_check() -> None:
    server = make_server()
    nonce = NonceManager(SECRET, 300).issue(REALM, T0)
    challenge = DigestChallenge(realm=REALM, nonce=nonce, algorithm="MD5")
    creds = parse_credentials(
        build_authorization(challenge, "REGISTER", "sip:x", "1001", "s3cret", "unused", 1)
    )
    assert creds.qop is None
    assert server.verify("REGISTER", creds, REALM, "s3cret", T0) is AuthResult.OK
    # No nc means nothing to compare: a repeat is accepted within the nonce lifetime.
    assert server.verify("REGISTER", creds, REALM, "s3cret", T0 + 1) is AuthResult.OK


def test_algorithm_not_offered_fails() -> None:
    server = make_server(algorithms=(DigestAlgorithm.SHA256,))
    nonce = NonceManager(SECRET, 300).issue(REALM, T0)
    md5 = DigestChallenge(realm=REALM, nonce=nonce, algorithm="MD5", qop=("auth",))
    creds = parse_credentials(build_authorization(md5, "REGISTER", "sip:x", "u", "p", "c", 1))
    assert server.verify("REGISTER", creds, REALM, "p", T0) is AuthResult.FAILED
    unknown = dataclasses.replace(creds, algorithm="SHA-512-256")
    assert server.verify("REGISTER", unknown, REALM, "p", T0) is AuthResult.FAILED


def test_auth_int_is_refused() -> None:
    server = make_server()
    creds = dataclasses.replace(answer(server), qop="auth-int")
    assert server.verify("REGISTER", creds, REALM, "s3cret", T0) is AuthResult.FAILED


def test_upper_case_hex_response_is_accepted() -> None:
    server = make_server()
    creds = answer(server)
    shouted = dataclasses.replace(creds, response=creds.response.upper())
    assert server.verify("REGISTER", shouted, REALM, "s3cret", T0) is AuthResult.OK


@pytest.mark.parametrize("algorithm", [DigestAlgorithm.MD5_SESS, DigestAlgorithm.SHA256_SESS])
def test_sess_variants_round_trip(algorithm: DigestAlgorithm) -> None:
    server = make_server(algorithms=(algorithm,))
    creds = answer(server, algorithm=algorithm.value)
    assert server.verify("REGISTER", creds, REALM, "s3cret", T0) is AuthResult.OK
    assert server.verify("REGISTER", creds, REALM, "other", T0 + 1) is AuthResult.FAILED


@pytest.mark.parametrize("algorithm", list(DigestAlgorithm))
def test_verify_ha1(algorithm: DigestAlgorithm) -> None:
    server = make_server(algorithms=(algorithm,))
    creds = answer(server, algorithm=algorithm.value)
    ha1 = compute_ha1(algorithm, "1001", REALM, "s3cret")
    assert server.verify_ha1("REGISTER", creds, REALM, ha1.upper(), T0) is AuthResult.OK
    wrong = compute_ha1(algorithm, "1001", REALM, "nope")
    creds2 = answer(server, algorithm=algorithm.value)
    assert server.verify_ha1("REGISTER", creds2, REALM, wrong, T0) is AuthResult.FAILED
    assert server.verify_ha1("REGISTER", creds2, REALM, None, T0) is AuthResult.FAILED


def test_verify_never_raises_on_odd_credentials() -> None:
    server = make_server()
    creds = answer(server)
    for odd in (
        dataclasses.replace(creds, response="\ud800\u00e9"),
        dataclasses.replace(creds, nc="zzzzzzzz"),
        dataclasses.replace(creds, cnonce=None),
        dataclasses.replace(creds, nonce=""),
        dataclasses.replace(creds, nonce="A" * 44),
        dataclasses.replace(creds, username="\ud800"),
    ):
        assert server.verify("REGISTER", odd, REALM, "s3cret", T0) is AuthResult.FAILED


# --- nonces and the nonce-count table ---------------------------------------------------


def test_nonce_states() -> None:
    nonces = NonceManager(SECRET, 60.0)
    nonce = nonces.issue(REALM, T0)
    assert nonces.check(nonce, REALM, T0) is NonceState.VALID
    assert nonces.check(nonce, REALM, T0 + 60.0) is NonceState.VALID
    assert nonces.check(nonce, REALM, T0 + 60.001) is NonceState.STALE
    assert nonces.check(nonce, REALM, T0 - 61) is NonceState.STALE  # clock stepped back
    assert nonces.check(nonce, "other.example", T0) is NonceState.INVALID
    for garbage in ("", "not a nonce", nonce[:-1], nonce + "A", "=" * 44, "é" * 44):
        assert nonces.check(garbage, REALM, T0) is NonceState.INVALID
    assert nonces.issued_at(nonce, REALM) == T0


def test_nonce_manager_validates_arguments() -> None:
    with pytest.raises(ValueError):
        NonceManager(b"short", 60)
    with pytest.raises(ValueError):
        NonceManager(SECRET, 0)
    with pytest.raises(ValueError):
        NonceManager(SECRET, 60).issue(REALM, float("inf"))


def test_nc_tracker_lru_bound_is_honoured() -> None:
    tracker = NonceCountTracker(lifetime=300.0, max_entries=3)
    for i in range(10):
        assert tracker.check(f"n{i}", 1, T0 + i, T0 + i) is NcCheck.FRESH
        assert len(tracker) <= 3
    assert len(tracker) == 3


def test_nc_tracker_recently_used_entry_survives_eviction() -> None:
    tracker = NonceCountTracker(lifetime=300.0, max_entries=2)
    assert tracker.check("a", 1, T0, T0) is NcCheck.FRESH
    assert tracker.check("b", 1, T0 + 1, T0 + 1) is NcCheck.FRESH
    assert tracker.check("a", 2, T0, T0 + 2) is NcCheck.FRESH  # a becomes most recent
    assert tracker.check("c", 1, T0 + 3, T0 + 3) is NcCheck.FRESH  # evicts b, not a
    assert tracker.check("a", 2, T0, T0 + 4) is NcCheck.REPLAY


def test_nc_tracker_evicted_nonce_is_never_trusted_again() -> None:
    tracker = NonceCountTracker(lifetime=300.0, max_entries=1)
    assert tracker.check("old", 5, T0, T0) is NcCheck.FRESH
    assert tracker.check("new", 1, T0 + 1, T0 + 1) is NcCheck.FRESH  # evicts "old"
    # A replay of old's nc=5 must not be accepted as a first sighting.
    assert tracker.check("old", 5, T0, T0 + 2) is NcCheck.FORGOTTEN
    # Nonces issued after the evicted one cannot have been evicted: trusted as new.
    assert tracker.check("newer", 1, T0 + 2, T0 + 2) is NcCheck.FRESH


def test_server_answers_stale_when_nc_history_was_evicted() -> None:
    server = make_server(max_tracked_nonces=1)
    a = answer(server, username="1001", now=T0)
    b = answer(server, username="1002", now=T0 + 1)
    assert server.verify("REGISTER", a, REALM, "s3cret", T0 + 1) is AuthResult.OK
    assert server.verify("REGISTER", b, REALM, "s3cret", T0 + 2) is AuthResult.OK
    assert server.verify("REGISTER", a, REALM, "s3cret", T0 + 3) is AuthResult.STALE


def test_nc_tracker_forgets_entries_after_lifetime() -> None:
    tracker = NonceCountTracker(lifetime=10.0, max_entries=100)
    for i in range(5):
        tracker.check(f"n{i}", 1, T0, T0)
    for i in range(5):  # later traffic sweeps the expired ones out
        tracker.check(f"m{i}", 1, T0 + 20, T0 + 20)
    assert len(tracker) == 5
    # An entry found expired is treated as absent.
    tracker.check("x", 3, T0 + 20, T0 + 20)
    assert tracker.check("x", 3, T0 + 20, T0 + 31) is NcCheck.FRESH


# --- client side ------------------------------------------------------------------------


def test_choose_challenge_prefers_sha256_and_skips_unknown() -> None:
    md5 = DigestChallenge(realm="r", nonce="n", algorithm="MD5", qop=("auth",))
    sha = DigestChallenge(realm="r", nonce="n", algorithm="sha-256", qop=("auth",))
    odd = DigestChallenge(realm="r", nonce="n", algorithm="SHA-512-256", qop=("auth",))
    int_only = DigestChallenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth-int",))
    assert choose_challenge([md5, odd, sha]) is sha
    assert choose_challenge([odd, md5]) is md5
    assert choose_challenge([int_only, md5]) is md5
    with pytest.raises(UnsupportedChallenge):
        choose_challenge([odd, int_only])
    with pytest.raises(UnsupportedChallenge):
        choose_challenge([])


def test_build_authorization_refuses_what_it_cannot_answer() -> None:
    odd = DigestChallenge(realm="r", nonce="n", algorithm="SHA-512-256", qop=("auth",))
    with pytest.raises(UnsupportedChallenge):
        build_authorization(odd, "REGISTER", "sip:x", "u", "p", "c", 1)
    ok = DigestChallenge(realm="r", nonce="n", algorithm="MD5", qop=("auth",))
    with pytest.raises(ValueError):
        build_authorization(ok, "REGISTER", "sip:x", "u", "p", "c", 0)
    with pytest.raises(ValueError):
        build_authorization(ok, "REGISTER", "sip:x", "u\r\nX: y", "p", "c", 1)


# --- parsers ----------------------------------------------------------------------------


def test_parse_escaped_quotes_spaces_and_case() -> None:
    c = parse_challenge(
        '  dIgEsT   REALM = "a \\"quoted\\" \\\\ realm, with comma" ,NONCE="n1",'
        '  Algorithm=sha-256 , QOP="Auth , auth-int", stale=TRUE, , opaque=""  '
    )
    assert c.realm == 'a "quoted" \\ realm, with comma'
    assert c.nonce == "n1"
    assert c.algorithm == "sha-256" and c.digest_algorithm is DigestAlgorithm.SHA256
    assert c.qop == ("auth", "auth-int")
    assert c.stale is True
    assert c.opaque == ""


def test_parse_credentials_token_and_quoted_forms() -> None:
    creds = parse_credentials(
        'Digest username="1001",realm="r",nonce="n",uri="sip:r",response="abc",'
        'qop="auth",nc=0000000A,cnonce="xyz",algorithm="MD5",extra=whatever'
    )
    assert creds.qop == "auth" and creds.nc == "0000000A" and creds.nc_value == 10
    assert creds.algorithm == "MD5"


def test_parse_challenge_defaults() -> None:
    c = parse_challenge('Digest realm="r", nonce="n"')
    assert (c.algorithm, c.qop, c.opaque, c.stale) == ("MD5", (), None, False)


def test_format_then_parse_round_trip() -> None:
    c = DigestChallenge(
        realm='r "x"', nonce="n", algorithm="SHA-256", qop=("auth",), opaque="o", stale=True
    )
    assert parse_challenge(format_challenge(c)) == c


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "expected an auth scheme"),
        ('Basic realm="r"', "unsupported auth scheme 'Basic'"),
        ("Digest", "no parameters"),
        ("Digest   ", "no parameters"),
        ("Digest ,,", "no parameters"),
        ('Digestrealm="r"', "unsupported auth scheme"),
        ('Digest realm="r"', "missing required parameter(s) nonce"),
        ('Digest nonce="n"', "missing required parameter(s) realm"),
        ('Digest realm="r", nonce="n", realm="s"', "duplicate parameter 'realm'"),
        ('Digest realm="r" nonce="n"', "expected ','"),
        ('Digest realm "r"', "expected '=' after parameter 'realm'"),
        ('Digest realm=, nonce="n"', "expected a value for 'realm'"),
        ('Digest realm="r, nonce="n"', "expected ','"),
        ('Digest realm="unterminated', "unterminated quoted string for 'realm'"),
        ('Digest realm="r\\', "dangling backslash"),
        ('Digest realm="a\nb", nonce="n"', "invalid character"),
        ('Digest realm="a\\\rb", nonce="n"', "invalid escaped character"),
        ('Digest =x, realm="r"', "expected a parameter name"),
        ('Digest realm="r", nonce="n", qop=""', "empty qop"),
        ("Digest realm=r\u00e9, nonce=n", "expected ','"),
    ],
)
def test_parse_challenge_errors(value: str, message: str) -> None:
    with pytest.raises(AuthParseError) as info:
        parse_challenge(value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            'Digest realm="r", nonce="n", uri="u", response="x"',
            "missing required parameter(s) username",
        ),
        ('Digest username="u", realm="r", nonce="n", uri="u"', "response"),
        (
            'Digest username="u", realm="r", nonce="n", uri="u", response="x", qop=auth',
            "missing required parameter(s) nc, cnonce",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="u", response="x", qop=auth, '
            'nc=1, cnonce="c"',
            "nc must be 8 hex digits",
        ),
        (
            'Digest username="u", realm="r", nonce="n", uri="u", response="x", qop=auth, '
            'nc=0000000g, cnonce="c"',
            "nc must be 8 hex digits",
        ),
    ],
)
def test_parse_credentials_errors(value: str, message: str) -> None:
    with pytest.raises(AuthParseError) as info:
        parse_credentials(value)
    assert message in str(info.value)


def test_folded_header_is_unfolded() -> None:
    c = parse_challenge('Digest realm="a\r\n b",\r\n\tnonce="n"')
    assert c.realm == "a b" and c.nonce == "n"


_PARAM_NAMES = st.sampled_from(
    [
        "realm",
        "nonce",
        "username",
        "uri",
        "response",
        "qop",
        "nc",
        "cnonce",
        "algorithm",
        "opaque",
        "stale",
        "Realm",
        "x",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=12),
    st.text(max_size=12).map(lambda s: '"' + s + '"'),
    st.from_regex(r'"([^"\\]|\\.)*"', fullmatch=True),
    st.sampled_from(["auth", "00000001", "MD5", "SHA-256", "true", '"auth,auth-int"']),
)
_DIGESTISH = st.builds(
    lambda scheme, pairs, sep: scheme + " " + sep.join(f"{k}={v}" for k, v in pairs),
    st.sampled_from(["Digest", "digest", "DIGEST", "Basic", ""]),
    st.lists(st.tuples(_PARAM_NAMES, _VALUES), max_size=10),
    st.sampled_from([", ", ",", " ,", ",\r\n ", " "]),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), _DIGESTISH))
def test_parsers_raise_only_auth_parse_error(value: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        try:
            parse(value)
        except AuthParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(_DIGESTISH)
def test_verify_never_raises_on_parsed_input(value: str) -> None:
    try:
        creds = parse_credentials(value)
    except AuthParseError:
        return
    server = make_server()
    assert server.verify("REGISTER", creds, REALM, "pw", T0) in AuthResult
    assert server.verify_ha1("REGISTER", creds, REALM, "00", T0) in AuthResult


_SAFE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x7f"), max_size=20
)


@settings(max_examples=200, deadline=None)
@given(realm=_SAFE_TEXT, opaque=st.none() | _SAFE_TEXT, stale=st.booleans())
def test_challenge_round_trip_property(realm: str, opaque: str | None, stale: bool) -> None:
    c = DigestChallenge(
        realm=realm, nonce="n", algorithm="MD5", qop=("auth",), opaque=opaque, stale=stale
    )
    assert parse_challenge(format_challenge(c)) == c


def test_restart_with_started_at_closes_the_replay_window() -> None:
    creds = answer(make_server(), now=T0)
    first = make_server()
    assert first.verify("REGISTER", creds, REALM, "s3cret", T0 + 1) is AuthResult.OK
    # Without started_at a restarted process cannot tell this is a replay...
    forgetful = make_server()
    assert forgetful.verify("REGISTER", creds, REALM, "s3cret", T0 + 3) is AuthResult.OK
    # ...with it, nonces from before the restart are refreshed once instead.
    restarted = make_server(started_at=T0 + 2)
    assert restarted.verify("REGISTER", creds, REALM, "s3cret", T0 + 3) is AuthResult.STALE
    fresh = answer(restarted, now=T0 + 3)
    assert restarted.verify("REGISTER", fresh, REALM, "s3cret", T0 + 3) is AuthResult.OK
