"""Calls across the service life cycle, with SIPp at both ends (UAC -> softswitch -> UAS):
a call survives a SIGHUP reload; SIGTERM refuses new calls with 503, lets the call run
for the grace time, ends it with BYE, writes its CDR and exits 0."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.service.helpers import (
    ACME,
    NORD,
    PortClient,
    http,
    http_json,
    log_events,
    register,
    service_config,
    wait_for_log,
)
from tests.support.daemon import SoftswitchDaemon
from tests.support.ports import free_port
from tests.support.sipmsg import SipUdpClient, build_request, new_call_id
from tests.support.sipp import SippResult, auth_field, run_sipp, write_injection_csv

pytestmark = pytest.mark.interop

GRACE = 3.0
RETRY_AFTER = 7
# SIPp answers MD5 digest challenges only.
CALL_OPTIONS: dict[str, Any] = {
    "digest_algorithms": ["MD5"],
    "calls": {"ring_timeout": 10, "media_timeout": 60},
    "service": {"stop_grace_seconds": GRACE, "retry_after": RETRY_AFTER},
}
PASSWORDS = {"201": "password-201", "202": "password-202"}


class CallDaemon(SoftswitchDaemon):
    admin_url: str


class Peers:
    """SIPp processes in the background: the callee (UAS) and the caller (UAC)."""

    def __init__(self, tmp_path: Path, daemon: CallDaemon) -> None:
        self.tmp_path = tmp_path
        self.daemon = daemon
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.finished_at: dict[str, float] = {}

    def _submit(self, name: str, *args: Any, **kwargs: Any) -> Future[SippResult]:
        future = self.pool.submit(run_sipp, *args, name=name, **kwargs)
        future.add_done_callback(lambda _: self.finished_at.setdefault(name, time.monotonic()))
        return future

    def callee(self, user: str) -> Future[SippResult]:
        """A UAS for ``user``: registered from its own port, answers, waits for BYE."""
        port = free_port()
        with PortClient(self.daemon.address, port) as client:
            ok = register(
                self.daemon.address, user, ACME, PASSWORDS[user], client=client, algorithm="MD5"
            )
            assert ok.status == 200, ok.raw
        return self._submit(
            "uas",
            "uas_call",
            self.daemon.address,
            workdir=self.tmp_path,
            calls=1,
            local_port=port,
            timeout=40,
            trace_msg=True,
            extra_args=[
                "-key", "mode", "answer",
                "-key", "delay", "100",
                "-mp", str(free_port(span=4)),
            ],
        )  # fmt: skip

    def caller(self, user: str, dialled: str) -> Future[SippResult]:
        """A UAC calling ``dialled`` that stays on the line until the switch sends BYE."""
        row = (user, dialled, ACME, auth_field(user, PASSWORDS[user]), "-", "wait")
        inf = write_injection_csv(self.tmp_path / "uac.csv", [row])
        time.sleep(0.3)  # the UAS binds its socket
        return self._submit(
            "uac",
            "uac_call_bye",
            self.daemon.address,
            workdir=self.tmp_path,
            calls=1,
            inf=inf,
            timeout=40,
            trace_msg=True,
            local_port=free_port(),
            extra_args=["-mp", str(free_port(span=4))],
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def call_daemon(tmp_path: Path, sipp_bin: str) -> Iterator[Callable[[], CallDaemon]]:
    started: list[CallDaemon] = []

    def start() -> CallDaemon:
        # RTP ports of our own: other daemons or media benches may hold the default range.
        low = free_port(tcp=False, span=42)
        low += low % 2
        CALL_OPTIONS["calls"].update(rtp_port_min=low, rtp_port_max=low + 39)
        path, _, admin_port = service_config(tmp_path / "softswitch.toml", **CALL_OPTIONS)
        daemon = CallDaemon(path, log_path=tmp_path / "softswitch.log")
        daemon.admin_url = f"http://127.0.0.1:{admin_port}"
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Callable[[CallDaemon], Peers]]:
    made: list[Peers] = []

    def make(daemon: CallDaemon) -> Peers:
        p = Peers(tmp_path, daemon)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def answered_call(daemon: CallDaemon, timeout: float = 15.0) -> dict[str, Any]:
    """The one call in progress, once it is answered (from the admin API)."""
    deadline = time.monotonic() + timeout
    calls: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        calls = http_json(f"{daemon.admin_url}/api/calls")["calls"]
        if len(calls) == 1 and calls[0]["state"] == "answered":
            return calls[0]
        time.sleep(0.1)
    raise AssertionError(f"no answered call within {timeout} s: {calls}\n{daemon.log_tail()}")


def cdr_rows(daemon: SoftswitchDaemon) -> list[dict[str, Any]]:
    res = daemon.run_cli(
        "cdr", "--config", str(daemon.config), "--since", "2000-01-01", "--format", "json"
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def new_invite(daemon: SoftswitchDaemon, dialled: str) -> bytes:
    with SipUdpClient(daemon.address) as client:
        body = (
            b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        raw = build_request(
            "INVITE",
            f"sip:{dialled}@{ACME}",
            local=client.local,
            from_uri=f"sip:201@{ACME}",
            to_uri=f"sip:{dialled}@{ACME}",
            call_id=new_call_id(),
            contact=f"<sip:201@{client.local[0]}:{client.local[1]}>",
            headers=[("Content-Type", "application/sdp")],
            body=body,
        )
        response = client.request(raw, timeout=3.0)
    assert response is not None, "no final answer to a new INVITE"
    return response.raw


@pytest.mark.timeout(120)
def test_call_survives_sighup_and_new_extension_registers(
    call_daemon, peers, tmp_path: Path
) -> None:
    daemon = call_daemon()
    p = peers(daemon)
    uas = p.callee("202")
    uac = p.caller("201", "202")
    before = answered_call(daemon)

    # A changed config: a new extension, a changed name, a tenant gone.
    service_config(
        daemon.config,
        {
            ACME: [
                ("201", "password-201", "Alice Rossi"),
                ("202", "password-202", "Bruno B."),
                ("205", "password-205", "New desk"),
            ]
        },
        sip_port=daemon.address[1],
        admin_port=int(daemon.admin_url.rsplit(":", 1)[1]),
        **CALL_OPTIONS,
    )
    seen = len(log_events(daemon))
    assert daemon.pid is not None
    os.kill(daemon.pid, signal.SIGHUP)
    wait_for_log(daemon, "reloaded", after=seen)

    assert register(daemon.address, "205", ACME, "password-205", algorithm="MD5").status == 200
    assert register(daemon.address, "100", NORD, "password-100", algorithm="MD5").status == 403
    time.sleep(1.0)
    after = answered_call(daemon)
    assert after["id"] == before["id"] and after["answered_at"] == before["answered_at"]
    assert not uac.done() and not uas.done(), "the call ended at the reload"

    # The operator ends the call; both phones get a BYE and answer it.
    status, _, body = http(f"{daemon.admin_url}/api/calls/{after['id']}/hangup", method="POST")
    assert status == 200, body
    caller, callee = uac.result(30), uas.result(30)
    assert caller.ok, caller.describe()
    assert callee.ok, callee.describe()
    (row,) = cdr_rows(daemon)
    assert row["disposition"] == "answered" and row["caller"] == "201"
    assert row["billable_seconds"] >= 1


@pytest.mark.timeout(120)
def test_sigterm_during_a_call(call_daemon, peers, tmp_path: Path) -> None:
    daemon = call_daemon()
    p = peers(daemon)
    uas = p.callee("202")
    uac = p.caller("201", "202")
    call = answered_call(daemon)

    assert daemon.proc is not None
    seen = len(log_events(daemon))
    stopped_at = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    # The signal is handled between two datagrams; wait until it has been.
    wait_for_log(daemon, "stopping", after=seen)

    # No new calls: 503 with Retry-After, while the call in progress goes on.
    answer = new_invite(daemon, "202")
    assert answer.startswith(b"SIP/2.0 503 "), answer[:200]
    assert f"Retry-After: {RETRY_AFTER}".encode() in answer, answer
    status = http_json(f"{daemon.admin_url}/api/status")
    assert status["state"] == "stopping" and status["active_calls"] == 1

    rc = daemon.proc.wait(GRACE + 15)
    exited_at = time.monotonic()
    assert rc == 0, daemon.log_tail()

    caller, callee = uac.result(30), uas.result(30)
    # Each phone got the switch's BYE and answered it: the scenarios end only so.
    assert caller.ok, caller.describe()
    assert callee.ok, callee.describe()
    bye_at = p.finished_at["uac"]
    assert bye_at - stopped_at >= GRACE - 0.3, "the call was ended before the grace time"
    assert exited_at - stopped_at < GRACE + 5, "the daemon lingered after the grace time"

    (row,) = cdr_rows(daemon)
    assert row["id"] == call["id"] or row["caller"] == "201"
    assert row["disposition"] == "answered"
    assert row["hangup_cause"] == "shutdown"
    events = [e["event"] for e in log_events(daemon)]
    assert "calls_ended" in events and events[-1] == "stopped"
