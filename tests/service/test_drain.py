"""The shutdown sequence of app.Daemon in-process, over a fake call side: grace time,
calls that end by themselves, a second SIGTERM, and reloads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from softswitch.admin.sources import CallSummary, CallView
from softswitch.app import Daemon
from softswitch.config import load_config
from softswitch.daemon import Notifier, socket_address
from tests.service.helpers import NotifySocket, service_config


class FakeCalls:
    def __init__(self, active: int) -> None:
        self.active = active
        self.hangups: list[str] = []

    def active_count(self) -> int:
        return self.active

    def active_calls(self) -> Sequence[CallView]:
        return [
            CallSummary(str(i), "acme.example", "201", "202", "answered", 0.0)
            for i in range(self.active)
        ]

    def hangup(self, call_id: str, reason: str) -> bool:
        return False

    def hangup_all(self, reason: str) -> int:
        self.hangups.append(reason)
        ended, self.active = self.active, 0
        return ended


def make_daemon(tmp_path: Path, grace: float, notifier: Notifier | None = None) -> Daemon:
    path, _, _ = service_config(
        tmp_path / "c.toml", service={"stop_grace_seconds": grace, "retry_after": 9}
    )
    return Daemon(load_config(path), notifier or Notifier(None))


def use_calls(daemon: Daemon, calls: FakeCalls) -> FakeCalls:
    daemon.calls = daemon.runtime.call_control = calls
    return calls


async def test_calls_get_the_grace_time_then_bye(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, grace=0.4)
    calls = use_calls(daemon, FakeCalls(active=2))
    began = time.monotonic()
    await daemon.drain()
    assert time.monotonic() - began >= 0.4
    assert calls.hangups == ["shutdown"]
    assert daemon.server.draining_retry_after == 9
    assert daemon.runtime.is_stopping
    daemon.store.close()


async def test_calls_that_end_in_time_are_left_alone(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, grace=5.0)
    calls = use_calls(daemon, FakeCalls(active=1))

    async def caller_hangs_up() -> None:
        await asyncio.sleep(0.2)
        calls.active = 0

    began = time.monotonic()
    await asyncio.gather(daemon.drain(), caller_hangs_up())
    assert time.monotonic() - began < 1.0
    assert calls.hangups == []
    daemon.store.close()


async def test_a_second_sigterm_cuts_the_grace_short(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, grace=30.0)
    calls = use_calls(daemon, FakeCalls(active=1))
    daemon.request_stop()

    async def impatient() -> None:
        await asyncio.sleep(0.2)
        daemon.request_stop()

    began = time.monotonic()
    await asyncio.wait_for(asyncio.gather(daemon.drain(), impatient()), 5.0)
    assert time.monotonic() - began < 3.0
    assert calls.hangups == ["shutdown"]
    daemon.store.close()


async def test_status_while_stopping_goes_to_systemd(tmp_path: Path) -> None:
    with NotifySocket() as sock:
        daemon = make_daemon(tmp_path, grace=0.0, notifier=Notifier(socket_address(sock.env_value)))
        use_calls(daemon, FakeCalls(active=1))
        await daemon.drain()
        daemon.store.close()
        got = sock.poll(1.0)
    assert got[0] == {"STOPPING": "1", "STATUS": "stopping: 0 registrations, 1 active call"}


@pytest.mark.parametrize("valid", [True, False])
async def test_reload_keeps_or_replaces_the_config(tmp_path: Path, valid: bool) -> None:
    daemon = make_daemon(tmp_path, grace=1.0)
    old = daemon.config
    if valid:
        service_config(old.path, {"gamma.example": [("300", "password-300")]})
    else:
        old.path.write_text(old.path.read_text() + "\nbogus = 1\n")
    assert daemon.reload() is valid
    assert (daemon.config is old) is not valid
    assert (daemon.server.config.tenant("gamma.example") is not None) is valid
    daemon.store.close()
