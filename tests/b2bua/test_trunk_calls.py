"""Trunk calls through the real SipServer on a manual clock: what the carrier is sent,
challenges (401 and 407), hunting on 503 and on a silent trunk, inbound DIDs, and the
registration driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from softswitch.clock import ManualClock
from softswitch.config import build_config
from softswitch.server import SipServer
from softswitch.sip.message import Request, Response
from softswitch.store.cdr import MemoryCdrSink
from softswitch.trunk_service import read_statuses, status_path
from tests.b2bua.harness import (
    ACME,
    FakeMedia,
    MemoryLocation,
    Phone,
    Switch,
    answer_sdp,
    offer_sdp,
    place_call,
)

CARRIER_A = ("127.0.0.2", 5070)
CARRIER_B = ("127.0.0.3", 5080)
CHALLENGE = 'Digest realm="carrier.example", nonce="abc123", algorithm=MD5'


def trunk(name: str, address: tuple[str, int], **extra: object) -> dict:
    return {
        "name": name,
        "host": address[0],
        "port": address[1],
        "username": f"user-{name}",
        "password": f"secret-{name}",
        "country": "IT",
        "tenants": ["*"],
        "setup_timeout": 4,
        **extra,
    }


class TrunkSwitch(Switch):
    def __init__(self, state_dir: Path, trunks: list[dict]) -> None:
        raw = {
            "listen": ["udp:127.0.0.1:5060"],
            "state_dir": str(state_dir),
            "sip": {"t1": 0.5, "digest_algorithms": ["MD5"]},
            "security": {"ban_failures": 1000},
            "trunks": trunks,
            "tenants": [
                {
                    "domain": ACME,
                    "extensions": [
                        {"user": "201", "password": "secret201"},
                        {"user": "202", "password": "secret202"},
                    ],
                    "trunks": [t["name"] for t in trunks],
                    "dialplan": {"country": "IT"},
                    "outbound": {"caller_id": "+390287654300"},
                    "numbers": [
                        {"number": "+390287654300", "destination": "202"},
                        {"number": "+390287654301", "destination": "201"},
                    ],
                }
            ],
        }
        self.clock = ManualClock()
        self.fake_media = FakeMedia()
        self.cdr_sink = MemoryCdrSink()
        self.locations = MemoryLocation()
        config = build_config(raw, Path("/nonexistent/softswitch.toml"))
        SipServer.__init__(
            self,
            config,
            self.clock,
            self.locations,
            b"k" * 32,
            media=self.fake_media,
            cdrs=self.cdr_sink,
        )
        self.fake_media.set_event_handler(self._on_media_event)
        self.clock.advance(1.0)
        self.wire = []

    def deadline(self) -> float | None:
        ds = [d for d in (super().deadline(), self.trunks.next_deadline()) if d is not None]
        return min(ds) if ds else None

    def advance(self, seconds: float) -> None:
        target = self.clock.now() + seconds
        while True:
            d = self.deadline()
            if d is None or d > target:
                break
            self.clock.set(max(d, self.clock.now()))
            now = self.clock.now()
            self._emit(self.tx.handle_timers(now), now)
            self._emit(self.call_manager.handle_timers(now), now)
            self.trunks.tick(now)
        self.clock.set(target)


@pytest.fixture
def two_trunks(tmp_path: Path) -> TrunkSwitch:
    return TrunkSwitch(tmp_path / "var", [trunk("alpha", CARRIER_A), trunk("beta", CARRIER_B)])


class _At(Phone):
    """A peer at any loopback address (the harness phones all live on 127.0.0.1)."""

    def __init__(self, switch: Switch, address: tuple[str, int]) -> None:
        super().__init__(switch, "carrier", "-", port=address[1])
        self.address = address

    def send(self, message) -> None:  # type: ignore[no-untyped-def]
        self.switch.deliver(message, self.address)


@pytest.mark.parametrize(
    ("status", "challenge", "credentials"),
    [
        (401, "WWW-Authenticate", "authorization"),
        (407, "Proxy-Authenticate", "proxy-authorization"),
    ],
)
def test_outbound_call_answers_the_challenge_and_carries_the_caller_id(
    two_trunks, status: int, challenge: str, credentials: str
) -> None:
    sw = two_trunks
    anna = Phone(sw, "201", "secret201")
    a = _At(sw, CARRIER_A)
    out = place_call(anna, "0612345678")
    first = a.one("INVITE")
    assert isinstance(first, Request)
    assert str(first.uri) == "sip:+390612345678@127.0.0.2:5070"
    assert "+390287654301" in (first.headers.get("from") or "")
    assert "+390287654301" in (first.headers.get("p-asserted-identity") or "")
    assert first.headers.get(credentials) is None
    a.reply(first, status, tag="c1", headers=[(challenge, CHALLENGE)])
    third = a.one("INVITE")
    assert isinstance(third, Request)
    assert 'username="user-alpha"' in (third.headers.get(credentials) or "")
    assert third.cseq.seq == first.cseq.seq + 1 and third.call_id == first.call_id
    a.reply(third, 180, tag="c3")
    a.reply(third, 200, tag="c3", body=answer_sdp(third.body, 50000))
    assert a.take("ACK")
    ok = anna.one(200)
    assert isinstance(ok, Response)
    out.to_tag = ok.to.tag
    out.ack(ok)
    out.in_dialog("BYE")
    assert a.take("BYE")
    (record,) = sw.cdrs_written
    assert (record.caller, record.callee) == ("201", "+390612345678")
    assert sw.call_manager.trunks.guard.active(ACME) == 0
    assert sw.call_manager.trunks.usage.active("alpha") == 0


def test_wrong_carrier_password_moves_on_without_looping(two_trunks) -> None:
    sw = two_trunks
    anna = Phone(sw, "201", "secret201")
    a, b = _At(sw, CARRIER_A), _At(sw, CARRIER_B)
    place_call(anna, "0612345678")
    first = a.one("INVITE")
    a.reply(first, 401, tag="c1", headers=[("WWW-Authenticate", CHALLENGE)])
    second = a.one("INVITE")
    a.reply(second, 401, tag="c2", headers=[("WWW-Authenticate", CHALLENGE)])
    assert a.take("INVITE") == []
    assert b.take("INVITE")


def test_silent_trunk_gives_way_after_setup_timeout(two_trunks) -> None:
    sw = two_trunks
    anna = Phone(sw, "201", "secret201")
    a, b = _At(sw, CARRIER_A), _At(sw, CARRIER_B)
    place_call(anna, "0612345678")
    assert a.take("INVITE")
    sw.advance(3.9)
    assert b.take("INVITE") == []
    sw.advance(0.2)
    (invite,) = b.take("INVITE")
    # A 180 stops the clock: the second trunk may ring for as long as it likes.
    b.reply(invite, 180, tag="b1")
    sw.advance(10)
    assert [r.status for r in anna.take() if isinstance(r, Response)][-1] == 180
    a.take()
    assert a.take("CANCEL") == []  # nothing had come back from the first: no CANCEL


def test_404_from_the_carrier_is_not_retried_elsewhere(two_trunks) -> None:
    sw = two_trunks
    anna = Phone(sw, "201", "secret201")
    a, b = _At(sw, CARRIER_A), _At(sw, CARRIER_B)
    place_call(anna, "0612345678")
    a.reply(a.one("INVITE"), 404, tag="x")
    assert b.take("INVITE") == []
    assert 404 in anna.statuses()


def test_inbound_did_rings_its_extension_and_other_numbers_get_404(two_trunks) -> None:
    sw = two_trunks
    a = _At(sw, CARRIER_A)
    bob = Phone(sw, "202", "secret202")
    sw.register("202", bob.port)
    invite = a.request(
        "INVITE",
        "sip:0287654300@127.0.0.1:5060",
        call_id="in-1",
        from_tag="f1",
        from_uri="sip:+441632960000@127.0.0.2",
        to="sip:0287654300@127.0.0.1",
        body=offer_sdp(50010),
    )
    a.send(invite)
    ring = bob.one("INVITE")
    assert isinstance(ring, Request)
    assert ring.from_.uri.user == "00441632960000"  # as the phone would dial it back
    wrong = a.request(
        "INVITE",
        "sip:0299999999@127.0.0.1:5060",
        call_id="in-2",
        from_tag="f2",
        from_uri="sip:+441632960000@127.0.0.2",
        to="sip:0299999999@127.0.0.1",
        body=offer_sdp(50012),
    )
    a.send(wrong)
    assert 404 in a.statuses()
    assert bob.take("INVITE") == []


def test_registration_driver_registers_and_writes_status(tmp_path: Path) -> None:
    sw = TrunkSwitch(tmp_path / "var", [trunk("alpha", CARRIER_A, register=True)])
    a = _At(sw, CARRIER_A)
    sw.trunks.configure(sw.config, sw.clock.now())
    first = a.one("REGISTER")
    assert isinstance(first, Request)
    a.reply(first, 401, tag="r", headers=[("WWW-Authenticate", CHALLENGE)])
    second = a.one("REGISTER")
    assert isinstance(second, Request)
    contact = second.headers.get("contact") or ""
    a.reply(second, 200, tag="r", headers=[("Contact", f"{contact};expires=120")])
    statuses = read_statuses(status_path(sw.config))
    assert statuses["alpha"].state == "registered"
    # The carrier's address is now a trunk's: its INVITE is no phone's.
    assert sw.call_manager.trunks.registrations["alpha"].peer_addresses == {"127.0.0.2"}
    sw.advance(107)
    assert a.take("REGISTER") == []
    sw.advance(1.5)
    assert a.take("REGISTER"), "no refresh 12 s before expiry"
