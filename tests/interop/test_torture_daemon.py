"""Every RFC 4475 / RFC 5118 torture message replayed at a running daemon over UDP.

Each gets the treatment of the table in tests/data/sip/torture.json, and after each one
the daemon still answers OPTIONS. Responses without rport go to the Via's sent-by port
at the source address (RFC 3261 18.2.2), so the test sends each message from a socket
bound to that port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import pytest

from tests.support.sipmsg import send_options

DATA = Path(__file__).resolve().parents[1] / "data" / "sip"
CASES = json.loads((DATA / "torture.json").read_text())

# The torture messages address users of example.com: make it a tenant.
TENANTS = {
    "example.com": [
        ("user", "torture-pw-1"),
        ("j_user", "torture-pw-2"),
        ("j.user", "torture-pw-3"),
    ]
}

_VIA_PORT = re.compile(
    rb"^(?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*\w+[ \t]+"
    rb"(\[[^\]]*\]|[^\s;:,]+)(?:[ \t]*:[ \t]*(\d+))?",
    re.IGNORECASE | re.MULTILINE,
)


def via_port(data: bytes) -> int:
    m = _VIA_PORT.search(data)
    return int(m.group(2)) if m and m.group(2) else 5060


def bind_or_fail(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError as exc:
        s.close()
        message = f"127.0.0.1:{port} is taken ({exc.strerror}); the replay needs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    s.settimeout(0.05)
    return s


_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_BRANCH = re.compile(
    rb"^(?:via|v)[ \t]*:[^\r\n]*?;[ \t]*branch[ \t]*=[ \t]*([^;,\s]+)", re.IGNORECASE | re.MULTILINE
)


def transaction_of(data: bytes) -> bytes | None:
    """What ties a response to its request: the top Via branch, else the Call-ID.

    The branch, not the Call-ID: RFC 4475 cparam02 reuses cparam01's branch and sent-by,
    so it is (rightly) taken as a retransmission of cparam01 and answered as such."""
    head = re.sub(rb"\r?\n[ \t]+", b" ", data.split(b"\r\n\r\n", 1)[0])  # unfold
    m = _BRANCH.search(head) or _CALL_ID.search(head)
    return m.group(1) if m else None


def final_response(sock: socket.socket, key: bytes | None, deadline: float) -> bytes | None:
    """The first final response of transaction ``key`` before ``deadline``.

    Earlier cases' final responses to INVITEs are retransmitted (the test sends no ACK),
    so anything of another transaction is ignored.
    """
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            continue
        if data.startswith(b"SIP/2.0 1") or (key is not None and transaction_of(data) != key):
            continue
        return data
    return None


@pytest.mark.interop
@pytest.mark.timeout(120)
def test_torture_messages_at_the_daemon(softswitch):
    daemon = softswitch(TENANTS, t1=0.05)
    host, port = daemon.address
    sockets: dict[int, socket.socket] = {}
    failures: list[str] = []
    try:
        for case in CASES:
            data = (DATA / case["filename"]).read_bytes()
            vport = via_port(data)
            sock = sockets.get(vport) or sockets.setdefault(vport, bind_or_fail(vport))
            sock.sendto(data, (host, port))
            # A response is never answered, however well-formed (RFC 3261 18.1.2).
            unanswered = case["kind"] == "drop" or data.startswith(b"SIP/")
            wait = 0.4 if unanswered else 2.0
            answer = final_response(sock, transaction_of(data), time.monotonic() + wait)
            status_line = answer.split(b"\r\n", 1)[0].decode("utf-8", "replace") if answer else None
            status = int(status_line.split(" ", 2)[1]) if status_line else None
            name = case["filename"]
            if unanswered:
                if answer is not None:
                    failures.append(f"{name}: expected no answer, got {status_line}")
            elif case["kind"] == "accept":
                if status is None or status == 400:
                    failures.append(f"{name}: accepted message answered {status_line}")
            else:
                if status != case["status"]:
                    failures.append(f"{name}: expected {case['status']}, got {status_line}")
                elif case["reason_contains"] and case["reason_contains"] not in status_line:
                    failures.append(
                        f"{name}: reason should name {case['reason_contains']!r}: {status_line}"
                    )
            if send_options(host, port, timeout=1.0) != "SIP/2.0 200 OK":
                failures.append(f"{name}: OPTIONS not answered afterwards")
    finally:
        for s in sockets.values():
            s.close()
    assert failures == [], "\n".join(failures)
