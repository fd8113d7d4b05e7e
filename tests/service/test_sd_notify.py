"""softswitch.daemon: the sd_notify protocol against a socket of the test's own."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from softswitch import daemon
from softswitch.daemon import Notifier, heartbeat, socket_address, status_text, watchdog_interval
from tests.service.helpers import NotifySocket


def test_socket_address_forms() -> None:
    assert socket_address("@/org/freedesktop/systemd1/notify") == (
        b"\0/org/freedesktop/systemd1/notify"
    )
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative/path") is None


def test_watchdog_interval_is_half_and_checks_the_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}
    assert watchdog_interval(env, pid=4242) == 0.5
    # Inherited from a parent that was the watched process: not ours to ping.
    assert watchdog_interval(env, pid=4243) is None


def test_abstract_socket_receives_every_kind_of_message() -> None:
    with NotifySocket() as sock:
        env = {"NOTIFY_SOCKET": sock.env_value, "WATCHDOG_USEC": "2000000"}
        notifier = Notifier.from_environ(env)
        assert notifier.enabled and notifier.watchdog_interval == 1.0
        # Processes we start must not inherit the right to speak for us.
        assert env == {}
        notifier.ready("0 registrations, 0 active calls")
        notifier.status("line one\nline two")
        notifier.watchdog()
        notifier.reloading()
        notifier.stopping("stopping")
        notifier.close()
        got = sock.poll(1.0)
    assert got[0] == {"READY": "1", "STATUS": "0 registrations, 0 active calls"}
    assert got[1] == {"STATUS": "line one line two"}
    assert got[2] == {"WATCHDOG": "1"}
    assert got[3]["RELOADING"] == "1" and int(got[3]["MONOTONIC_USEC"]) > 0
    assert got[4] == {"STOPPING": "1", "STATUS": "stopping"}


def test_path_socket() -> None:
    # A short directory: AF_UNIX paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="ss") as tmp:
        with NotifySocket(Path(tmp) / "notify") as sock:
            notifier = Notifier.from_environ({"NOTIFY_SOCKET": sock.env_value})
            assert notifier.watchdog_interval is None
            assert notifier.ready("up")
            assert sock.poll(1.0) == [{"READY": "1", "STATUS": "up"}]


def test_without_notify_socket_nothing_happens() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.ready("up") is False
    assert notifier.watchdog() is False


def test_a_vanished_manager_is_not_fatal() -> None:
    with tempfile.TemporaryDirectory(prefix="ss") as tmp:
        notifier = Notifier(str(Path(tmp) / "nobody-listens"))
        assert notifier.ready("up") is False
        assert notifier.watchdog() is False


class FakeStatus:
    def __init__(self) -> None:
        self.regs = 0
        self.calls = 0

    def registration_count(self) -> int:
        return self.regs

    def active_call_count(self) -> int:
        return self.calls


def test_status_text() -> None:
    s = FakeStatus()
    assert status_text(s) == "0 registrations, 0 active calls"
    s.regs, s.calls = 1, 1
    assert status_text(s) == "1 registration, 1 active call"
    assert status_text(s, stopping=True) == "stopping: 1 registration, 1 active call"


async def test_heartbeat_pings_and_sends_status_only_when_it_changes(monkeypatch) -> None:
    monkeypatch.setattr(daemon, "STATUS_INTERVAL", 0.05)
    source = FakeStatus()
    with NotifySocket() as sock:
        notifier = Notifier(socket_address(sock.env_value), watchdog=0.02)
        task = asyncio.create_task(heartbeat(notifier, lambda: status_text(source)))
        await asyncio.sleep(0.12)
        source.regs = 3
        await asyncio.sleep(0.12)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        got = sock.poll(0.5)
    assert sum(1 for m in got if m.get("WATCHDOG") == "1") >= 8
    statuses = [m["STATUS"] for m in got if "STATUS" in m]
    assert statuses == ["0 registrations, 0 active calls", "3 registrations, 0 active calls"]


async def test_heartbeat_survives_a_broken_status() -> None:
    def broken() -> str:
        raise RuntimeError("boom")

    with NotifySocket() as sock:
        notifier = Notifier(socket_address(sock.env_value), watchdog=0.02)
        task = asyncio.create_task(heartbeat(notifier, broken))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        got = sock.poll(0.5)
    assert sum(1 for m in got if m.get("WATCHDOG") == "1") >= 3
