"""Registrar decisions on real messages, a real SQLite file and the real digest code."""

from __future__ import annotations

from pathlib import Path

import pytest

from softswitch.config import Extension, SipSettings, Tenant
from softswitch.services.authn import Authenticator
from softswitch.services.bans import AuthFailureTracker
from softswitch.services.registrar import Registrar
from softswitch.sip.auth import DigestServer, NonceManager, build_authorization, parse_challenge
from softswitch.sip.flow import Flow
from softswitch.sip.message import Request, parse_message
from softswitch.store.sqlite import SqliteLocationStore, read_bindings

WALL = 1_800_000_000.0
FLOW = Flow("udp", "192.0.2.10", 5062, "udp:127.0.0.1:5060")
ACME = Tenant(
    "acme.example", "Acme", (Extension("201", "secret-201"), Extension("202", "pw-202xx"))
)


class Phone:
    """Builds REGISTERs the way a desk phone does, answering challenges."""

    def __init__(
        self, user: str = "201", password: str = "secret-201", domain: str = "acme.example"
    ):
        self.user, self.password, self.domain = user, password, domain
        self.cseq = 0
        self.call_id = f"reg-{user}@192.0.2.10"
        self.nc = 0

    def register(
        self,
        contact: str | None = "<sip:201@192.0.2.10:5062>",
        expires: int | None = None,
        challenge: str | None = None,
        password: str | None = None,
        extra: str = "",
        cseq: int | None = None,
    ) -> Request:
        self.cseq = cseq if cseq is not None else self.cseq + 1
        lines = [
            f"REGISTER sip:{self.domain} SIP/2.0",
            f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{self.cseq}x{self.user};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.domain}>;tag=abc{self.user}",
            f"To: <sip:{self.user}@{self.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
        ]
        if contact is not None:
            lines.append(f"Contact: {contact}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if challenge is not None:
            self.nc += 1
            auth = build_authorization(
                parse_challenge(challenge),
                "REGISTER",
                f"sip:{self.domain}",
                self.user,
                password if password is not None else self.password,
                "cn0nce",
                self.nc,
            )
            lines.append(f"Authorization: {auth}")
        if extra:
            lines.append(extra)
        lines.append("Content-Length: 0")
        msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
        assert isinstance(msg, Request)
        return msg


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteLocationStore(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def registrar(store) -> Registrar:
    bans = AuthFailureTracker(3, 60.0, 600.0)
    auth = Authenticator(DigestServer(NonceManager(b"k" * 32, 300.0)), bans)
    return Registrar({"acme.example": ACME}, store, auth, SipSettings(min_expires=60))


def registered(registrar: Registrar, phone: Phone, **kw):
    first = registrar.handle(phone.register(**kw), FLOW, WALL, 0.0)
    assert first.response is not None and first.response.status == 401
    challenge = first.response.headers.get_all("WWW-Authenticate")[-1]
    return registrar.handle(phone.register(challenge=challenge, **kw), FLOW, WALL, 0.0)


def test_first_register_is_challenged_with_sha256_then_md5(registrar):
    out = registrar.handle(Phone().register(), FLOW, WALL, 0.0)
    assert out.response.status == 401
    values = out.response.headers.get_all("WWW-Authenticate")
    assert [("SHA-256" in v, "MD5" in v) for v in values] == [(True, False), (False, True)]
    assert all('realm="acme.example"' in v and 'qop="auth"' in v for v in values)
    assert not out.security  # the normal first challenge is not a failure
    assert out.response.to.tag


def test_register_saves_binding_with_flow_and_answers_contacts(registrar, store, tmp_path):
    out = registered(registrar, Phone(), expires=600)
    assert out.response.status == 200
    assert out.response.headers.get_all("Contact") == ["<sip:201@192.0.2.10:5062>;expires=600"]
    [b] = store.lookup("acme.example", "201", WALL)
    assert b.flow == FLOW and b.expires_at == WALL + 600
    # Persisted (written behind, so flushed first): another reader of the file sees it.
    store.flush()
    assert [x.user for x in read_bindings(tmp_path / "state.db", WALL)] == ["201"]


def test_wrong_password_and_unknown_user_get_identical_answers(registrar):
    wrong = registered(registrar, Phone(password="secret-201"), password="nope")  # noqa
    ghost = registered(registrar, Phone(user="999", password="whatever"))
    for out in (wrong, ghost):
        assert out.response.status == 403 and out.security
    assert wrong.response.reason == ghost.response.reason
    assert [n for n, _ in wrong.response.headers] == [n for n, _ in ghost.response.headers]


def test_authenticating_as_another_extension_is_refused(registrar):
    phone = Phone(user="202", password="secret-201")
    first = registrar.handle(phone.register(), FLOW, WALL, 0.0)
    challenge = first.response.headers.get_all("WWW-Authenticate")[0]
    req = phone.register(challenge=challenge)
    # Credentials of 201 presented for the AOR of 202.
    forged = Phone(user="201", password="secret-201")
    forged.call_id = phone.call_id
    auth = forged.register(challenge=challenge).headers.get("Authorization")
    req = req.replace(headers=req.headers.replace("Authorization", auth))
    assert registrar.handle(req, FLOW, WALL, 0.0).response.status == 403


def test_unknown_domain_refused_before_any_challenge(registrar):
    out = registrar.handle(Phone(domain="other.example").register(), FLOW, WALL, 0.0)
    assert out.response.status == 403


def test_interval_too_brief_gets_423_with_min_expires(registrar):
    out = registered(registrar, Phone(), expires=30)
    assert out.response.status == 423
    assert out.response.headers.get("Min-Expires") == "60"


def test_expires_capped_and_contact_param_wins(registrar):
    out = registered(registrar, Phone(), contact="<sip:201@192.0.2.10:5062>;expires=99999")
    assert out.response.headers.get("Contact").endswith("expires=3600")


def test_several_contacts_and_star_removal(registrar, store):
    phone = Phone()
    registered(registrar, phone, contact="<sip:201@192.0.2.10:5062>")
    registered(registrar, phone, contact="<sip:201@192.0.2.11:5070>")
    assert len(store.lookup("acme.example", "201", WALL)) == 2
    assert registered(registrar, phone, contact="*", expires=60).response.status == 400
    out = registered(registrar, phone, contact="*", expires=0)
    assert out.response.status == 200 and store.lookup("acme.example", "201", WALL) == []


def test_expires_zero_removes_one_contact(registrar, store):
    phone = Phone()
    registered(registrar, phone, contact="<sip:201@192.0.2.10:5062>")
    registered(registrar, phone, contact="<sip:201@192.0.2.11:5070>")
    registered(registrar, phone, contact="<sip:201@192.0.2.10:5062>;expires=0")
    assert [b.contact for b in store.lookup("acme.example", "201", WALL)] == [
        "sip:201@192.0.2.11:5070"
    ]


def test_out_of_order_cseq_in_same_call_id_refused(registrar):
    phone = Phone()
    registered(registrar, phone)
    out = registered(registrar, phone, cseq=1)
    assert out.response.status == 400 and "CSeq" in out.response.reason


def test_query_without_contact_lists_bindings(registrar):
    phone = Phone()
    registered(registrar, phone)
    out = registered(registrar, phone, contact=None)
    assert out.response.status == 200 and out.event == "queried"
    assert out.response.headers.get_all("Contact")


def test_path_stored_and_echoed_when_supported(registrar, store):
    phone = Phone()
    out = registered(registrar, phone, extra="Path: <sip:edge.example;lr>\r\nSupported: path")
    assert out.response.headers.get_all("Path") == ["<sip:edge.example;lr>"]
    assert store.lookup("acme.example", "201", WALL)[0].path == ("<sip:edge.example;lr>",)


def test_unsupported_require_gets_420(registrar):
    out = registrar.handle(Phone().register(extra="Require: outbound"), FLOW, WALL, 0.0)
    assert out.response.status == 420
    assert out.response.headers.get("Unsupported") == "outbound"


def test_stale_nonce_rechallenged_with_stale_true(registrar):
    phone = Phone()
    first = registrar.handle(phone.register(), FLOW, WALL, 0.0)
    challenge = first.response.headers.get_all("WWW-Authenticate")[0]
    out = registrar.handle(phone.register(challenge=challenge), FLOW, WALL + 301, 0.0)
    assert out.response.status == 401 and not out.security
    assert "stale=true" in out.response.headers.get("WWW-Authenticate").lower()


def test_failures_ban_the_source_on_the_nth(registrar):
    outs = [registered(registrar, Phone(), password="bad") for _ in range(3)]
    assert [o.security for o in outs] == [True, True, True]
    assert "banned" in outs[-1].detail and "banned" not in outs[-2].detail
    assert registrar.auth.bans.is_banned(FLOW.host, 1.0)


def test_bindings_survive_reopening_the_store(registrar, store, tmp_path):
    registered(registrar, Phone())
    store.close()
    again = SqliteLocationStore(tmp_path / "state.db")
    try:
        [b] = again.lookup("acme.example", "201", WALL)
        assert b.flow.host == FLOW.host and b.flow.connection_id is None
        assert again.purge_expired(WALL + 3601) == 1
        assert again.lookup("acme.example", "201", WALL) == []
    finally:
        again.close()


def test_md5_only_quirk_for_listed_user_agents(registrar):
    out = registrar.handle(
        Phone().register(extra="User-Agent: baresip v1.0.0 (x86_64/linux)"), FLOW, WALL, 0.0
    )
    values = out.response.headers.get_all("WWW-Authenticate")
    assert len(values) == 1 and "algorithm=MD5" in values[0]
    other = registrar.handle(
        Phone().register(extra="User-Agent: Yealink SIP-T46U"), FLOW, WALL, 0.0
    )
    assert len(other.response.headers.get_all("WWW-Authenticate")) == 2
