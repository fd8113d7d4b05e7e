"""Speaking to systemd: the sd_notify protocol, without libsystemd.

sd_notify is one AF_UNIX datagram of ``KEY=VALUE`` lines sent to ``$NOTIFY_SOCKET``
(``Type=notify`` in the unit). The daemon says ``READY=1`` once every socket is bound,
pings ``WATCHDOG=1`` from the event loop so that a loop stuck in a long computation or a
blocking call gets the service restarted, keeps ``STATUS=`` current for
``systemctl status``, and says ``RELOADING=1`` / ``STOPPING=1`` around reloads and
shutdown. Without ``$NOTIFY_SOCKET`` (a terminal, a test, another supervisor) every call
here does nothing.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Protocol

from softswitch.logs import get_logger

log = get_logger("softswitch.daemon")

# STATUS= is refreshed at least this often even when the watchdog is off.
STATUS_INTERVAL = 2.0


def socket_address(value: str) -> str | bytes | None:
    """The address to send to, from ``$NOTIFY_SOCKET``.

    ``@name`` is a Linux abstract socket: its address starts with a NUL byte instead of
    the ``@``. A path must be absolute. Other forms (``vsock:``) are not supported.
    """
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled
    advises, so one late ping does not kill the service. None when the watchdog is off, or
    when ``$WATCHDOG_PID`` names another process (the variables were inherited)."""
    usec = environ.get("WATCHDOG_USEC", "")
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    wanted_pid = environ.get("WATCHDOG_PID")
    if wanted_pid:
        try:
            if int(wanted_pid) != (pid if pid is not None else os.getpid()):
                return None
        except ValueError:
            return None
    return value / 2_000_000


class Notifier:
    """Sends sd_notify messages; every method is a no-op when there is no socket."""

    def __init__(self, address: str | bytes | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog if address is not None else None
        self._sock: socket.socket | None = None
        self._warned = False
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @classmethod
    def from_environ(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """A notifier for this process. With ``unset`` (the default) the variables are
        removed from the environment, so that processes we start (media workers, tools)
        do not talk to systemd in our name."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = socket_address(raw) if raw else None
        if raw and address is None:
            log.warning("notify_socket_unsupported", notify_socket=raw)
        watchdog = watchdog_interval(env)
        if unset:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(key, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """One datagram with ``KEY=VALUE`` lines; True if it was sent."""
        if self._sock is None or self.address is None:
            return False
        # A newline inside a value would start a new assignment.
        lines = [f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()]
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            # The manager went away or its queue is full: nothing to do but carry on; one
            # warning is enough, a watchdog would repeat it twice a period.
            if not self._warned:
                self._warned = True
                log.warning("notify_failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload match this message to the reload it asked
        # for; older managers ignore the field.
        return self.send(
            RELOADING=1, STATUS="reloading configuration", MONOTONIC_USEC=_monotonic_usec()
        )

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class StatusSource(Protocol):
    """What ``STATUS=`` reports; the composition root provides it from the live server."""

    def registration_count(self) -> int: ...

    def active_call_count(self) -> int: ...


def status_text(source: StatusSource, *, stopping: bool = False) -> str:
    regs = source.registration_count()
    calls = source.active_call_count()
    text = (
        f"{regs} registration{'' if regs == 1 else 's'}, "
        f"{calls} active call{'' if calls == 1 else 's'}"
    )
    return f"stopping: {text}" if stopping else text


async def heartbeat(notifier: Notifier, status: Callable[[], str]) -> None:
    """Ping the watchdog and refresh ``STATUS=`` until cancelled.

    It runs as a task on the event loop on purpose: if the loop stops turning, the pings
    stop and systemd restarts the daemon after ``WatchdogSec``.
    """
    interval = min(notifier.watchdog_interval or math.inf, STATUS_INTERVAL)
    last = ""
    while True:
        fields: dict[str, str | int] = {}
        if notifier.watchdog_interval is not None:
            fields["WATCHDOG"] = 1
        try:
            text = status()
        except Exception as exc:  # a broken status must never stop the watchdog
            log.warning("status_failed", error=repr(exc))
            text = last
        if text != last:
            fields["STATUS"] = text
            last = text
        if fields:
            notifier.send(**fields)
        await asyncio.sleep(interval)
