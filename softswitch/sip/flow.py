"""Where a message came from, or goes to, at the transport level."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Flow:
    """A transport, a remote address and the local socket it is bound to.

    Replies and calls to a phone go back along the flow its request came in on, so a
    phone behind NAT is reached at its public address and over its own TCP connection.
    """

    transport: str  # "udp" | "tcp"
    host: str  # remote IP, no brackets
    port: int
    local: str = ""  # the listen address it arrived on, e.g. "udp:127.0.0.1:5060"
    connection_id: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"
