"""Calls through the switch with SIPp at both ends: UAC -> softswitch -> UAS.

Each callee is a SIPp UAS on its own port. Its contact is registered from that very
port (a raw REGISTER from a socket bound to it, closed before SIPp starts), so the
switch reaches it over the registered flow. Every flow ends with its CDR row checked
through ``softswitch cdr --format json``, and the message traces are checked for what
must not cross the switch: the caller's Call-ID, tags, Via and SDP addresses.
"""

from __future__ import annotations

import json
import re
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.sipmsg import (
    build_request,
    digest_authorization,
    new_call_id,
    new_tag,
    parse_challenges,
    pick_challenge,
    send_request,
)
from tests.support.sipp import (
    SippResult,
    auth_field,
    received_messages,
    run_sipp,
    write_injection_csv,
)

pytestmark = pytest.mark.interop

DOMAIN = "acme.example"
OTHER = "beta.example"
EXTENSIONS = [("201", "secret-201"), ("202", "secret-202"), ("203", "secret-203")]
# 204 exists but never registers.
TENANTS = {DOMAIN: [*EXTENSIONS, ("204", "secret-204")], OTHER: [("202", "beta-secret-202")]}
PASSWORDS = dict(EXTENSIONS)
# SIPp answers only MD5 digest challenges (FIELD-NOTES).
OPTIONS = {
    "t1": 0.1,
    "digest_algorithms": ["MD5"],
    "ban_failures": 1000,
    # RTP ports above the kernel's ephemeral range, away from other tests and benches.
    "calls": {"ring_timeout": 2, "media_timeout": 60, "rtp_port_min": 61000, "rtp_port_max": 61999},
}
SINCE = "2000-01-01"


# -- helpers -----------------------------------------------------------------------------


def register_from_port(address: tuple[str, int], user: str, port: int) -> None:
    """REGISTER ``user`` with a contact at 127.0.0.1:``port``, sent from that port."""
    password = PASSWORDS[user]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    try:
        call_id, tag = new_call_id(), new_tag()
        aor = f"sip:{user}@{DOMAIN}"

        def register(cseq: int, auth: str | None) -> bytes:
            headers = [("Expires", "300")]
            if auth:
                headers.append(("Authorization", auth))
            return build_request(
                "REGISTER",
                f"sip:{DOMAIN}",
                local=("127.0.0.1", port),
                from_uri=aor,
                to_uri=aor,
                call_id=call_id,
                cseq=cseq,
                from_tag=tag,
                contact=f"<sip:{user}@127.0.0.1:{port}>",
                headers=headers,
            )

        first = send_request(register(1, None), *address, sock=sock)
        assert first is not None and first.status == 401, first
        challenge = pick_challenge(parse_challenges(first), "MD5")
        auth = digest_authorization(
            challenge, method="REGISTER", uri=f"sip:{DOMAIN}", username=user, password=password
        )
        second = send_request(register(2, auth), *address, sock=sock)
        assert second is not None and second.status == 200, second
    finally:
        sock.close()


class Callees:
    """SIPp UAS processes running in the background while a UAC runs in front."""

    def __init__(self, tmp_path: Path, address: tuple[str, int]) -> None:
        self.tmp_path = tmp_path
        self.address = address
        self.pool = ThreadPoolExecutor(max_workers=4)
        self.running: list[Future[SippResult]] = []

    def start(
        self, user: str, mode: str, *, delay_ms: int = 200, name: str | None = None
    ) -> Future[SippResult]:
        port = free_port()
        register_from_port(self.address, user, port)
        future = self.pool.submit(
            run_sipp,
            "uas_call",
            self.address,
            workdir=self.tmp_path,
            calls=1,
            local_port=port,
            timeout=20,
            trace_msg=True,
            name=name or f"uas_{user}_{mode}",
            extra_args=[
                "-key", "mode", mode,
                "-key", "delay", str(delay_ms),
                "-mp", str(free_port(span=4)),
            ],
        )  # fmt: skip
        self.running.append(future)
        return future

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def callees(softswitch, tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[Callees] = []

    def make(daemon):  # type: ignore[no-untyped-def]
        c = Callees(tmp_path, daemon.address)
        started.append(c)
        return c

    yield make
    for c in started:
        c.close()


def call(
    daemon,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    dialled: str,
    *,
    caller: str = "201",
    password: str | None = None,
    scenario: str = "uac_call_bye",
    mode: str = "",
    ending: str = "",
    name: str = "uac",
    timeout: float = 20,
) -> SippResult:
    row = (
        caller,
        dialled,
        DOMAIN,
        auth_field(caller, password or PASSWORDS[caller]),
        mode or "-",
        ending or "-",
    )
    inf = write_injection_csv(tmp_path / f"{name}.csv", [row])
    time.sleep(0.3)  # let the UAS processes bind their sockets
    return run_sipp(
        scenario,
        daemon.address,
        workdir=tmp_path,
        calls=1,
        inf=inf,
        timeout=timeout,
        trace_msg=True,
        name=name,
        local_port=free_port(),
        extra_args=["-mp", str(free_port(span=4))],
    )


def cdr_rows(daemon, count: int, timeout: float = 5.0) -> list[dict]:  # type: ignore[no-untyped-def]
    """The CDRs the CLI exports, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        res = daemon.run_cli(
            "cdr", "--config", str(daemon.config), "--since", SINCE, "--format", "json"
        )
        assert res.returncode == 0, res.stderr
        rows = json.loads(res.stdout)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def statuses(result: SippResult) -> list[int]:
    assert result.message_path is not None
    return [
        int(m.split(b" ", 2)[1])
        for m in received_messages(result.message_path)
        if m.startswith(b"SIP/2.0 ")
    ]


def requests(result: SippResult, method: str) -> list[bytes]:
    """Requests of ``method`` SIPp received, retransmissions (same CSeq) left out."""
    assert result.message_path is not None
    seen: dict[str, bytes] = {}
    for m in received_messages(result.message_path):
        if m.startswith(method.encode() + b" "):
            seen.setdefault(header(m, "CSeq"), m)
    return list(seen.values())


def header(message: bytes, name: str) -> str:
    m = re.search(rb"^" + name.encode() + rb"\s*:\s*(.*?)\r?$", message, re.I | re.M)
    assert m, f"no {name} in {message[:300]!r}"
    return m.group(1).decode()


def assert_no_leak(uac: SippResult, uas: SippResult) -> None:
    """Nothing of the caller's leg (Call-ID, tag, Via, Contact, SDP) in what the callee
    received, and nothing of the callee's leg in what the caller received."""
    assert uac.message_path is not None and uas.message_path is not None
    to_caller = received_messages(uac.message_path)
    to_callee = received_messages(uas.message_path)
    caller = to_caller[0]
    caller_call_id = header(caller, "Call-ID")
    caller_tag = header(caller, "From").split("tag=")[1]
    caller_port = header(caller, "Via").split(":")[1].split(";")[0]
    callee_invite = requests(uas, "INVITE")[0]
    callee_call_id = header(callee_invite, "Call-ID")
    for message in to_callee:
        assert caller_call_id.encode() not in message
        assert caller_tag.encode() not in message
        assert f":{caller_port}".encode() not in message
        assert b"caller 1001" not in message and b"sipp-uac-call" not in message
        assert len(re.findall(rb"^Via:", message, re.M | re.I)) == 1
    for message in to_caller:
        assert callee_call_id.encode() not in message
        assert b"callee 2002" not in message and b"SIPpTag01" not in message


def check_cdr(row: dict, **expected: object) -> None:
    for key, value in expected.items():
        assert row[key] == value, (key, row)


# -- the flows -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_answered_call_caller_hangs_up(softswitch, callees, tmp_path: Path) -> None:
    daemon = softswitch(TENANTS, **OPTIONS)
    uas = callees(daemon).start("202", "answer")
    uac = call(daemon, tmp_path, "202")
    assert uac.ok, uac.describe()
    callee = uas.result(30)
    assert callee.ok, callee.describe()
    assert statuses(uac)[-1] == 200
    assert_no_leak(uac, callee)
    (row,) = cdr_rows(daemon, 1)
    check_cdr(
        row,
        tenant=DOMAIN,
        caller="201",
        callee="202",
        disposition="answered",
        hangup_side="caller",
        hangup_cause="normal_clearing",
        sip_status=200,
    )
    assert row["answer_time"] is not None
    assert row["billable_seconds"] >= 1


@pytest.mark.timeout(60)
def test_answered_call_callee_hangs_up(softswitch, callees, tmp_path: Path) -> None:
    daemon = softswitch(TENANTS, **OPTIONS)
    uas = callees(daemon).start("202", "hangup")
    uac = call(daemon, tmp_path, "202", ending="wait")
    assert uac.ok, uac.describe()
    callee = uas.result(30)
    assert callee.ok, callee.describe()
    # The BYE the caller got is the switch's own, in the caller's dialog.
    (bye,) = requests(uac, "BYE")
    assert b"SIPpTag01" not in bye, bye
    (row,) = cdr_rows(daemon, 1)
    check_cdr(
        row,
        disposition="answered",
        hangup_side="callee",
        hangup_cause="normal_clearing",
        sip_status=200,
    )


@pytest.mark.timeout(60)
def test_cancel_while_ringing(softswitch, callees, tmp_path: Path) -> None:
    daemon = softswitch(TENANTS, **OPTIONS)
    uas = callees(daemon).start("202", "cancel")
    uac = call(daemon, tmp_path, "202", scenario="uac_call_cancel")
    assert uac.ok, uac.describe()
    callee = uas.result(30)
    assert callee.ok, callee.describe()
    assert requests(callee, "CANCEL"), "the callee was never cancelled"
    (row,) = cdr_rows(daemon, 1)
    check_cdr(
        row,
        disposition="cancelled",
        hangup_side="caller",
        hangup_cause="cancelled",
        sip_status=487,
        answer_time=None,
        billable_seconds=0,
    )


@pytest.mark.timeout(60)
def test_busy_is_passed_on(softswitch, callees, tmp_path: Path) -> None:
    daemon = softswitch(TENANTS, **OPTIONS)
    uas = callees(daemon).start("202", "busy")
    uac = call(daemon, tmp_path, "202", scenario="uac_call_rejected")
    assert uac.ok, uac.describe()
    assert uas.result(30).ok
    assert statuses(uac)[-1] == 486
    (row,) = cdr_rows(daemon, 1)
    check_cdr(
        row, disposition="busy", hangup_cause="user_busy", hangup_side="callee", sip_status=486
    )


@pytest.mark.timeout(60)
def test_ring_timeout_gives_480(softswitch, callees, tmp_path: Path) -> None:
    daemon = softswitch(TENANTS, **OPTIONS)  # ring_timeout = 2 s
    uas = callees(daemon).start("202", "cancel")
    started = time.monotonic()
    uac = call(daemon, tmp_path, "202", scenario="uac_call_rejected")
    assert uac.ok, uac.describe()
    assert 1.5 < time.monotonic() - started < 8
    callee = uas.result(30)
    assert callee.ok, callee.describe()
    assert statuses(uac)[-1] == 480
    (row,) = cdr_rows(daemon, 1)
    check_cdr(
        row, disposition="no_answer", hangup_cause="no_answer", hangup_side="switch", sip_status=480
    )


@pytest.mark.timeout(60)
def test_hold_and_resume_by_reinvite(softswitch, callees, tmp_path: Path) -> None:
    daemon = softswitch(TENANTS, **OPTIONS)
    uas = callees(daemon).start("202", "answer")
    uac = call(daemon, tmp_path, "202", mode="hold")
    assert uac.ok, uac.describe()
    callee = uas.result(30)
    assert callee.ok, callee.describe()
    # The callee's leg saw the hold and the resume as re-INVITEs of its own dialog.
    invites = requests(callee, "INVITE")
    assert len(invites) == 3, [i[:60] for i in invites]
    assert b"a=sendonly" in invites[1]
    assert b"a=sendrecv" in invites[2]
    call_ids = {header(i, "Call-ID") for i in invites}
    assert len(call_ids) == 1
    assert call_ids.isdisjoint({header(i, "Call-ID") for i in requests(uac, "BYE")})
    (row,) = cdr_rows(daemon, 1)
    check_cdr(row, disposition="answered", hangup_side="caller")


@pytest.mark.timeout(60)
def test_unknown_number_404_and_unregistered_480(softswitch, tmp_path: Path) -> None:
    daemon = softswitch(TENANTS, **OPTIONS)
    missing = call(daemon, tmp_path, "999", scenario="uac_call_rejected", name="uac404")
    assert missing.ok, missing.describe()
    assert statuses(missing)[-1] == 404
    away = call(daemon, tmp_path, "204", scenario="uac_call_rejected", name="uac480")
    assert away.ok, away.describe()
    assert statuses(away)[-1] == 480
    rows = cdr_rows(daemon, 2)
    by_callee = {r["callee"]: r for r in rows}
    check_cdr(by_callee["999"], disposition="failed", hangup_cause="not_found", sip_status=404)
    check_cdr(by_callee["204"], disposition="failed", hangup_cause="unavailable", sip_status=480)


@pytest.mark.timeout(60)
def test_credentials_407_then_wrong_password_403(softswitch, tmp_path: Path) -> None:
    daemon = softswitch(TENANTS, **OPTIONS)
    row = ("201", "202", DOMAIN)
    inf = write_injection_csv(tmp_path / "noauth.csv", [row])
    bare = run_sipp(
        "uac_call_noauth",
        daemon.address,
        workdir=tmp_path,
        calls=1,
        inf=inf,
        timeout=15,
        trace_msg=True,
        local_port=free_port(),
    )
    assert bare.ok, bare.describe()
    assert statuses(bare)[-1] == 407
    wrong = call(
        daemon,
        tmp_path,
        "202",
        password="not-the-password",
        scenario="uac_call_rejected",
        name="uac_wrong",
    )
    assert wrong.ok, wrong.describe()
    assert statuses(wrong)[-1] == 403
    # Nobody was authenticated: no call attempt to record.
    time.sleep(0.5)
    assert cdr_rows(daemon, 0) == []


@pytest.mark.timeout(60)
def test_two_contacts_ring_first_answer_wins(softswitch, callees, tmp_path: Path) -> None:
    daemon = softswitch(TENANTS, **OPTIONS)
    c = callees(daemon)
    ringer = c.start("202", "cancel", name="uas_ringer")
    answerer = c.start("202", "answer", delay_ms=400, name="uas_answerer")
    uac = call(daemon, tmp_path, "202")
    assert uac.ok, uac.describe()
    for uas in (ringer, answerer):
        res = uas.result(30)
        assert res.ok, res.describe()
    # Both contacts got the INVITE, each in a dialog of its own.
    ids = {header(requests(u.result(), "INVITE")[0], "Call-ID") for u in (ringer, answerer)}
    assert len(ids) == 2
    assert requests(ringer.result(), "CANCEL")
    (row,) = cdr_rows(daemon, 1)
    check_cdr(row, disposition="answered", callee="202", hangup_side="caller")
