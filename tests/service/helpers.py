"""What the service tests share: a systemd notify socket of our own, registering a phone,
the daemon's JSON log, and HTTP calls to the admin API."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.daemon import Extension, SoftswitchDaemon, write_config
from tests.support.ports import free_port, free_sip_port
from tests.support.sipmsg import (
    SipResponse,
    SipUdpClient,
    digest_authorization,
    new_call_id,
    new_tag,
    parse_challenges,
    pick_challenge,
)

TOKEN = "test-token-" + "0123456789abcdef"
ACME = "acme.example"
NORD = "studio-nord.example"
TENANTS: dict[str, list[Extension]] = {
    ACME: [("201", "password-201", "Alice Rossi"), ("202", "password-202", "Bruno Bianchi")],
    NORD: [("100", "password-100", "Reception")],
}


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's ``$NOTIFY_SOCKET``.

    Abstract (``@name``) by default: no path-length limit and nothing to clean up; pass
    ``path`` to test the file-system form.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"softswitch-test-{os.getpid()}-{secrets.token_hex(4)}"
            self.sock.bind(b"\0" + name.encode())
            self.env_value = "@" + name
        else:
            self.sock.bind(str(path))
            self.env_value = str(path)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self, timeout: float = 0.0) -> list[dict[str, str]]:
        """Messages that arrived, waiting up to ``timeout`` for the first one."""
        got: list[dict[str, str]] = []
        if timeout > 0:
            self.sock.settimeout(timeout)
        else:
            self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, TimeoutError):
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
            got.append(fields)
            self.sock.setblocking(False)
        return got

    def mark(self) -> int:
        """A position in ``messages``, for ``wait_for(..., since=)``."""
        self.poll()
        return len(self.messages)

    def wait_for(
        self, predicate: Callable[[dict[str, str]], bool], timeout: float, since: int = 0
    ) -> dict[str, str]:
        """The first message from position ``since`` on that matches, waiting for it."""
        deadline = time.monotonic() + timeout
        checked = since
        while True:
            for _, fields in self.messages[checked:]:
                if predicate(fields):
                    return fields
            checked = max(checked, len(self.messages))
            if time.monotonic() >= deadline:
                break
            self.poll(min(0.2, max(0.01, deadline - time.monotonic())))
        seen = [m for _, m in self.messages][-10:]
        raise AssertionError(f"no matching notify message within {timeout} s; last: {seen}")


def service_config(
    path: Path,
    tenants: Mapping[str, Sequence[Extension]] = TENANTS,
    *,
    sip_port: int | None = None,
    admin_port: int | None = None,
    admin: bool = True,
    token: str = TOKEN,
    **options: Any,
) -> tuple[Path, int, int]:
    """A daemon config with the admin API on; returns (path, SIP port, admin port).

    Calling it again with the same ports rewrites the file in place, for reload tests.
    """
    sip_port = sip_port or free_sip_port()
    admin_port = admin_port or free_port(udp=False)
    tables: dict[str, Any] = {}
    if admin:
        tables["admin"] = {"listen": f"127.0.0.1:{admin_port}", "token": token}
    write_config(
        path,
        tenants,
        listen=[f"udp:127.0.0.1:{sip_port}", f"tcp:127.0.0.1:{sip_port}"],
        t1=0.05,
        ban_failures=1000,
        **tables,
        **options,
    )
    return path, sip_port, admin_port


class PortClient(SipUdpClient):
    """A SipUdpClient on a chosen local port: registers a contact where another program
    (a SIPp UAS) will listen once this socket is closed."""

    def __init__(self, server: tuple[str, int], port: int) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.local = self.sock.getsockname()


def register(
    address: tuple[str, int],
    user: str,
    domain: str,
    password: str,
    *,
    expires: int = 300,
    client: SipUdpClient | None = None,
    algorithm: str = "SHA-256",
) -> SipResponse:
    """A digest-authenticated REGISTER from a fresh UDP socket (or ``client``); the final
    response."""
    own = client is None
    c = client or SipUdpClient(address)
    try:
        call_id, tag = new_call_id(), new_tag()
        first = c.request(
            c.register_request(user, domain, call_id=call_id, cseq=1, from_tag=tag, expires=expires)
        )
        assert first is not None, "no answer to REGISTER"
        if first.status != 401:
            return first
        challenge = pick_challenge(parse_challenges(first), algorithm)
        auth = digest_authorization(
            challenge, method="REGISTER", uri=f"sip:{domain}", username=user, password=password
        )
        second = c.request(
            c.register_request(
                user,
                domain,
                call_id=call_id,
                cseq=2,
                from_tag=tag,
                expires=expires,
                authorization=auth,
            )
        )
        assert second is not None, "no answer to the authenticated REGISTER"
        return second
    finally:
        if own:
            c.close()


def log_events(daemon: SoftswitchDaemon) -> list[dict[str, Any]]:
    """The daemon's JSON log lines, oldest first."""
    out = []
    try:
        text = daemon.log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def wait_for_log(
    daemon: SoftswitchDaemon, event: str, timeout: float = 10.0, after: int = 0
) -> dict[str, Any]:
    """The first log entry named ``event`` past the first ``after`` entries."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in log_events(daemon)[after:]:
            if entry.get("event") == event:
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} in the daemon log within {timeout} s\n{daemon.log_tail()}")


def http(
    url: str, token: str | None = TOKEN, method: str = "GET", timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; error statuses are returned, not raised."""
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def http_json(url: str, token: str | None = TOKEN) -> Any:
    status, _, body = http(url, token)
    assert status == 200, (status, body[:500])
    return json.loads(body)
