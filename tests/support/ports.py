"""Free ports on 127.0.0.1 for daemons and peers started by tests and the bench."""

from __future__ import annotations

import random
import socket
import threading

_lock = threading.Lock()
# Ports already handed out in this process: the OS cannot know they are promised.
_handed_out: set[int] = set()


def _kernel_ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int, kind: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            # Matches what servers do, so a port in TIME_WAIT still counts as free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(*, udp: bool = True, tcp: bool = True, span: int = 1, host: str = "127.0.0.1") -> int:
    """A port P such that P .. P+span-1 are free for the requested protocols.

    Ports are drawn outside the kernel's ephemeral range, so that the source port of
    some unrelated outgoing connection cannot take them between this check and the
    moment the server binds. ``span=2`` suits baresip (TLS on SIP port + 1).
    """
    low, high = _kernel_ephemeral_range()
    candidates = [(20000, low - span)] if low - span > 20000 else []
    candidates.append((10000, 19999 - span))
    with _lock:
        for _ in range(2000):
            start, end = random.choice(candidates)
            port = random.randint(start, end)
            block = range(port, port + span)
            if any(p in _handed_out for p in block):
                continue
            ok = all(
                (not udp or _bindable(p, socket.SOCK_DGRAM, host))
                and (not tcp or _bindable(p, socket.SOCK_STREAM, host))
                for p in block
            )
            if ok:
                _handed_out.update(block)
                return port
    raise RuntimeError("no free port found on " + host)


def free_sip_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP (SIP listens on both)."""
    return free_port(udp=True, tcp=True, host=host)
