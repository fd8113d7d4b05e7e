"""The daemon as systemd runs it: READY/WATCHDOG/STATUS/STOPPING on a notify socket of the
test's own, SIGHUP reloads, SIGTERM, and the admin API over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.helpers import (
    ACME,
    NORD,
    TENANTS,
    TOKEN,
    NotifySocket,
    http,
    http_json,
    log_events,
    register,
    service_config,
    wait_for_log,
)
from tests.support.daemon import SoftswitchDaemon, write_config
from tests.support.sipmsg import send_options


class NotifiedDaemon(SoftswitchDaemon):
    """Ready when READY=1 arrives on the test's notify socket, not when OPTIONS works;
    records whether the SIP and admin ports answered at that moment."""

    def __init__(self, config: Path, notify: NotifySocket, admin_port: int, **kw: Any) -> None:
        self.notify = notify
        self.admin_port = admin_port
        self.ready_message: dict[str, str] | None = None
        self.options_at_ready: str | None = None
        self.admin_at_ready: int | None = None
        self.options_before_ready: list[str | None] = []
        super().__init__(config, **kw)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early\n{self.log_tail()}")
            for fields in self.notify.poll(0.02):
                if fields.get("READY") == "1":
                    self.ready_message = fields
                    # Nothing else happens between READY and these probes: if a socket
                    # were bound after READY, one of them would fail.
                    self.options_at_ready = send_options(*self.address, timeout=1.0)
                    self.admin_at_ready = http(f"http://127.0.0.1:{self.admin_port}/", token=None)[
                        0
                    ]
                    return
            self.options_before_ready.append(send_options(*self.address, timeout=0.05))
        raise AssertionError(f"no READY=1 within {timeout} s\n{self.log_tail()}")


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    with NotifySocket() as sock:
        yield sock


@pytest.fixture
def start(tmp_path: Path, notify: NotifySocket) -> Iterator[Callable[..., NotifiedDaemon]]:
    started: list[NotifiedDaemon] = []

    def run(watchdog_usec: int | None = None, **options: Any) -> NotifiedDaemon:
        path, _, admin_port = service_config(tmp_path / "softswitch.toml", **options)
        env = {"NOTIFY_SOCKET": notify.env_value}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        daemon = NotifiedDaemon(
            path, notify, admin_port, log_path=tmp_path / "softswitch.log", env=env
        )
        daemon.admin_url = f"http://127.0.0.1:{admin_port}"  # type: ignore[attr-defined]
        started.append(daemon)
        daemon.start()
        return daemon

    yield run
    for daemon in started:
        daemon.stop()


def sighup(daemon: SoftswitchDaemon) -> None:
    assert daemon.pid is not None
    os.kill(daemon.pid, signal.SIGHUP)


def rewrite(daemon: NotifiedDaemon, tenants: dict, **options: Any) -> None:
    """The same ports, new contents."""
    service_config(
        daemon.config,
        tenants,
        sip_port=daemon.address[1],
        admin_port=daemon.admin_port,
        **options,
    )


def registered_users(daemon: NotifiedDaemon) -> set[tuple[str, str]]:
    rows = http_json(f"{daemon.admin_url}/api/registrations")["registrations"]  # type: ignore[attr-defined]
    return {(r["tenant"], r["user"]) for r in rows}


# -- systemd notify ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_ready_only_once_sip_and_admin_answer_then_watchdog(start, notify) -> None:
    daemon = start(watchdog_usec=1_000_000)
    assert daemon.options_at_ready is not None and " 200 " in daemon.options_at_ready + " "
    assert daemon.admin_at_ready == 200
    assert daemon.ready_message == {"READY": "1", "STATUS": "0 registrations, 0 active calls"}
    # READY=1 was the first thing said, and came only once.
    assert [m for _, m in notify.messages][0] == daemon.ready_message

    began = time.monotonic()
    while time.monotonic() - began < 2.6:
        notify.poll(0.1)
    pings = [t for t, m in notify.messages if m.get("WATCHDOG") == "1" and t >= began]
    # Every half of WATCHDOG_USEC (0.5 s), so never a whole WATCHDOG_USEC without one.
    assert len(pings) >= 4, notify.messages
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) < 1.0, gaps
    assert sum(1 for _, m in notify.messages if m.get("READY") == "1") == 1


@pytest.mark.timeout(60)
def test_status_shows_registrations(start, notify) -> None:
    daemon = start()
    assert register(daemon.address, "201", ACME, "password-201").status == 200
    notify.wait_for(lambda m: m.get("STATUS") == "1 registration, 0 active calls", timeout=6.0)


@pytest.mark.timeout(60)
def test_sigterm_says_stopping_and_exits_zero(start, notify) -> None:
    daemon = start()
    began = time.monotonic()
    assert daemon.stop(timeout=15) == 0
    assert time.monotonic() - began < 5, "no calls: nothing to wait for"
    notify.poll(0.5)
    stopping = [m for _, m in notify.messages if m.get("STOPPING") == "1"]
    assert stopping and stopping[0]["STATUS"].startswith("stopping:")
    events = [e["event"] for e in log_events(daemon)]
    assert "stopping" in events and events[-1] == "stopped"


@pytest.mark.timeout(60)
def test_without_notify_socket_it_simply_runs(tmp_path: Path) -> None:
    path, _, _ = service_config(tmp_path / "plain.toml")
    with SoftswitchDaemon(path, log_path=tmp_path / "plain.log") as daemon:
        assert register(daemon.address, "201", ACME, "password-201").status == 200
        rc = daemon.stop()
    assert rc == 0
    started = [e for e in log_events(daemon) if e.get("event") == "started"]
    assert started and started[0]["systemd"] is False


# -- SIGHUP -----------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_reload_adds_changes_and_removes(start, notify) -> None:
    daemon = start()
    assert register(daemon.address, "201", ACME, "password-201").status == 200
    assert register(daemon.address, "202", ACME, "password-202").status == 200
    assert register(daemon.address, "100", NORD, "password-100").status == 200
    assert register(daemon.address, "203", ACME, "password-203").status == 403
    assert register(daemon.address, "300", "gamma.example", "password-300").status == 403

    rewrite(
        daemon,
        {
            # 201 unchanged, 202 gets a new password, 203 is new; Studio Nord leaves;
            # gamma.example arrives.
            ACME: [
                ("201", "password-201", "Alice Rossi"),
                ("202", "new-password-202"),
                ("203", "password-203"),
            ],
            "gamma.example": [("300", "password-300")],
        },
    )
    seen, mark = len(log_events(daemon)), notify.mark()
    sighup(daemon)
    entry = wait_for_log(daemon, "reloaded", after=seen)
    assert entry["tenants"] == 2 and entry["extensions"] == 4
    notify.wait_for(lambda m: m.get("RELOADING") == "1", timeout=5, since=mark)
    notify.wait_for(lambda m: m.get("READY") == "1", timeout=5, since=mark)

    # Right after the reload: new extensions and tenants register, the new password
    # is the only one that works, a removed tenant's phones are gone.
    assert register(daemon.address, "203", ACME, "password-203").status == 200
    assert register(daemon.address, "300", "gamma.example", "password-300").status == 200
    assert register(daemon.address, "202", ACME, "password-202").status == 403
    assert register(daemon.address, "202", ACME, "new-password-202").status == 200
    assert register(daemon.address, "100", NORD, "password-100").status == 403
    users = registered_users(daemon)
    assert (ACME, "201") in users, "a registration of a kept extension survives the reload"
    assert (NORD, "100") not in users
    assert {(ACME, "203"), ("gamma.example", "300")} <= users


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("breakage", "needle"),
    [
        ("short_password", "tenants[0].extensions[0].password: must be at least 8"),
        ("toml_syntax", "TOML syntax error"),
        ("admin_token", "admin.token: must be at least 16"),
    ],
)
def test_invalid_config_leaves_the_old_one_running(
    start, notify, breakage: str, needle: str
) -> None:
    daemon = start()
    assert register(daemon.address, "201", ACME, "password-201").status == 200
    if breakage == "short_password":
        rewrite(daemon, {ACME: [("201", "short"), ("204", "password-204")]})
    elif breakage == "admin_token":
        rewrite(daemon, {ACME: [("204", "password-204")]}, token="too-short")
    else:
        daemon.config.write_text(daemon.config.read_text() + "\n[[tenants]\n")
    seen, mark = len(log_events(daemon)), notify.mark()
    sighup(daemon)
    entry = wait_for_log(daemon, "reload_rejected", after=seen)
    assert entry["level"] == "error"
    assert entry["config"] == str(daemon.config)
    assert any(needle in line for line in entry["errors"]), entry
    assert "stays in force" in entry["detail"]
    # systemd is told the reload is over, or `systemctl reload` would hang.
    notify.wait_for(lambda m: m.get("READY") == "1", timeout=5, since=mark)

    assert daemon.running()
    assert register(daemon.address, "201", ACME, "password-201").status == 200
    assert register(daemon.address, "204", ACME, "password-204").status == 403
    assert (ACME, "201") in registered_users(daemon)
    assert not any(e.get("event") == "reloaded" for e in log_events(daemon))


# -- the admin API over HTTP -------------------------------------------------------------


@pytest.mark.timeout(60)
def test_admin_api_needs_the_token_and_metrics_show_a_registration(start) -> None:
    daemon = start()
    base = daemon.admin_url
    for path in ("/api/registrations", "/api/calls", "/api/live", "/metrics"):
        status, headers, _ = http(base + path, token=None)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert http(base + path, token="wrong-" + TOKEN)[0] == 401, path

    assert register(daemon.address, "201", ACME, "password-201").status == 200
    rows = http_json(base + "/api/registrations?tenant=" + ACME)["registrations"]
    assert [(r["user"], r["name"]) for r in rows] == [("201", "Alice Rossi")]
    assert rows[0]["user_agent"] == "softswitch-tests"

    status, headers, body = http(base + "/metrics")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("softswitch_registrations", (("tenant", ACME),))] == 1
    assert samples[("softswitch_registrations", (("tenant", NORD),))] == 0
    assert samples[("softswitch_sip_requests_received_total", (("method", "REGISTER"),))] >= 2
    assert samples[("softswitch_active_calls", (("tenant", ACME),))] == 0

    tenants = http_json(base + "/api/tenants")["tenants"]
    assert {t["domain"]: t["registrations"] for t in tenants} == {ACME: 1, NORD: 0}


@pytest.mark.timeout(60)
def test_reload_rotates_the_admin_token(start) -> None:
    daemon = start()
    new_token = "rotated-admin-token-0123456789"
    rewrite(daemon, TENANTS, token=new_token)
    seen = len(log_events(daemon))
    sighup(daemon)
    wait_for_log(daemon, "reloaded", after=seen)
    url = daemon.admin_url + "/api/status"
    assert http(url, token=TOKEN)[0] == 401
    assert json.loads(http(url, token=new_token)[2])["state"] == "running"


@pytest.mark.timeout(60)
def test_admin_port_taken_is_a_clear_failure(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        path, _, _ = service_config(tmp_path / "c.toml", admin_port=port)
        daemon = SoftswitchDaemon(path, log_path=tmp_path / "c.log", ready_timeout=5)
        with pytest.raises(Exception, match="exited with 1"):
            daemon.start()
    failure = [e for e in log_events(daemon) if e.get("event") == "cannot_listen"]
    assert failure and failure[0]["what"] == "admin"


def test_write_config_tables_are_what_the_daemon_reads(tmp_path: Path) -> None:
    # Guards the helpers above: [admin] and [service] land as tables.
    path = write_config(
        tmp_path / "x.toml", TENANTS, admin={"token": TOKEN}, service={"retry_after": 5}
    )
    text = path.read_text()
    assert "[admin]" in text and "[service]" in text
