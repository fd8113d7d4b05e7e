"""Per-source banning after repeated failed digest attempts, over real UDP."""

from __future__ import annotations

import time

import pytest

from tests.support.sipmsg import (
    SipResponse,
    SipUdpClient,
    digest_authorization,
    new_call_id,
    new_tag,
    parse_challenges,
    pick_challenge,
)

pytestmark = pytest.mark.interop

DOMAIN = "acme.example"
USER, PASSWORD = "201", "secret201"
BAN_FAILURES, BAN_WINDOW, BAN_TIME = 3, 10, 3
SILENCE = 0.6  # long enough for a loopback answer, short next to BAN_TIME


class Phone:
    def __init__(self, client: SipUdpClient) -> None:
        self.c = client
        self.last_challenge = None

    def challenge(self, timeout: float = 2.0) -> SipResponse | None:
        """An unauthenticated REGISTER (a fresh call), as every phone sends first."""
        raw = self.c.register_request(
            USER, DOMAIN, call_id=new_call_id(), cseq=1, from_tag=new_tag()
        )
        resp = self.c.request(raw, timeout=timeout, retransmit=None)
        if resp is not None and resp.status == 401:
            self.last_challenge = pick_challenge(parse_challenges(resp), "MD5")
        return resp

    def authenticated(self, pw: str, timeout: float = 2.0) -> SipResponse | None:
        """A REGISTER answering the last challenge seen (possibly an old nonce)."""
        assert self.last_challenge is not None
        auth = digest_authorization(
            self.last_challenge, method="REGISTER", uri=f"sip:{DOMAIN}", username=USER, password=pw
        )
        raw = self.c.register_request(
            USER, DOMAIN, call_id=new_call_id(), cseq=2, from_tag=new_tag(), authorization=auth
        )
        return self.c.request(raw, timeout=timeout, retransmit=None)

    def fail_once(self) -> SipResponse | None:
        first = self.challenge()
        assert first is not None and first.status == 401, first
        return self.authenticated("wrong-" + PASSWORD)


def status(resp: SipResponse | None) -> int | None:
    return resp.status if resp is not None else None


@pytest.mark.timeout(60)
def test_failed_auths_ban_the_source_for_ban_time(softswitch) -> None:
    daemon = softswitch(
        {DOMAIN: [(USER, PASSWORD)]},
        t1=0.05,
        ban_failures=BAN_FAILURES,
        ban_window=BAN_WINDOW,
        ban_time=BAN_TIME,
    )
    with SipUdpClient(daemon.address) as client:
        phone = Phone(client)

        # Challenges are the normal first step of every registration: never failures.
        for i in range(4 * BAN_FAILURES):
            assert status(phone.challenge()) == 401, f"challenge {i} not answered"
        ok = phone.authenticated(PASSWORD)
        assert status(ok) == 200, ok

        # One failure short of the limit, then many more challenges: still not banned.
        for i in range(BAN_FAILURES - 1):
            assert status(phone.fail_once()) in (401, 403), f"failure {i} not refused"
        for i in range(4 * BAN_FAILURES):
            assert status(phone.challenge()) == 401, f"challenge {i} after failures"

        # The failure that reaches the limit may or may not still be answered; the ban
        # starts no earlier than when it is sent.
        assert status(phone.challenge()) == 401
        banned_at = time.monotonic()
        assert status(phone.authenticated("wrong-" + PASSWORD, timeout=SILENCE)) in (401, 403, None)

        assert phone.challenge(timeout=SILENCE) is None, "banned source still challenged"
        assert phone.authenticated(PASSWORD, timeout=SILENCE) is None, (
            "banned source answered, even with the right password"
        )
        assert time.monotonic() - banned_at < BAN_TIME, "checks too slow to prove the ban"

        # After ban_time the source is served again, and the right password works.
        time.sleep(max(0.0, banned_at + BAN_TIME + 0.3 - time.monotonic()))
        deadline = time.monotonic() + 5
        resp = None
        while time.monotonic() < deadline:
            resp = phone.challenge(timeout=SILENCE)
            if resp is not None:
                break
        assert status(resp) == 401, "still ignored after ban_time"
        assert status(phone.authenticated(PASSWORD)) == 200
