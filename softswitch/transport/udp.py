"""SIP over UDP: an asyncio edge that stamps each datagram and hands it on.

Kept as thin as aioquic's protocol adapter: no parsing here, no policy.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from softswitch.config import ListenAddress
from softswitch.sip.flow import Flow

Receiver = Callable[[bytes, Flow], None]


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, listen: ListenAddress, receiver: Receiver) -> None:
        self.listen = listen
        self.name = str(listen)
        self._receiver = receiver
        self._transport: asyncio.DatagramTransport | None = None
        self.sent = 0
        self.received = 0

    @classmethod
    async def start(cls, listen: ListenAddress, receiver: Receiver) -> UdpTransport:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if listen.family_v6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Bursts of REGISTERs from a whole office arrive at once after a power cut.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.bind((listen.host, listen.port))
        except OSError:
            sock.close()
            raise
        _, protocol = await loop.create_datagram_endpoint(lambda: cls(listen, receiver), sock=sock)
        return protocol

    @property
    def bound_port(self) -> int:
        assert self._transport is not None
        return self._transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.received += 1
        self._receiver(data, Flow("udp", addr[0], addr[1], self.name))

    def error_received(self, exc: Exception) -> None:
        # ICMP port-unreachable from a phone that went away; nothing to do per datagram.
        pass

    def send(self, data: bytes, host: str, port: int) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self.sent += 1
        self._transport.sendto(data, (host, port))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
