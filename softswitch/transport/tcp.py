"""SIP over TCP: framing by Content-Length, keep-alives, idle connections closed.

Each accepted connection gets an id; a response goes back over the connection its
request came on (RFC 3261 section 18.2.2), and a registered phone's calls will reach it
over the connection it registered on.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable

from softswitch.config import ListenAddress
from softswitch.sip.flow import Flow
from softswitch.sip.framing import (
    KEEPALIVE_PING,
    KEEPALIVE_PONG,
    NEED_DATA,
    FramingError,
    StreamFramer,
)

Receiver = Callable[[bytes, Flow], None]
Rejecter = Callable[[FramingError, Flow], None]

_ids = itertools.count(1)


class TcpConnection(asyncio.Protocol):
    def __init__(self, server: TcpTransport) -> None:
        self.server = server
        self.id = next(_ids)
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.flow: Flow | None = None
        self.last_activity = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.flow = Flow("tcp", peer[0], peer[1], self.server.name, self.id)
        self.last_activity = self.server.loop.time()
        self.server.connections[self.id] = self

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.server.loop.time()
        self.framer.feed(data)
        assert self.flow is not None
        while True:
            try:
                item = self.framer.next_message()
            except FramingError as exc:
                # The stream has lost its framing (oversize or no Content-Length): answer
                # if the head was readable, then close, since nothing after this point can
                # be trusted to start a message.
                self.server.reject(exc, self.flow)
                self.close()
                return
            if item is NEED_DATA:
                return
            if item is KEEPALIVE_PING:
                # RFC 5626 section 4.4.1: a CRLFCRLF ping gets a CRLF pong.
                self.write(b"\r\n")
                continue
            if item is KEEPALIVE_PONG:
                continue
            self.server.receiver(item, self.flow)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.last_activity = self.server.loop.time()
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.pop(self.id, None)


class TcpTransport:
    def __init__(
        self, listen: ListenAddress, receiver: Receiver, reject: Rejecter, idle_timeout: float
    ) -> None:
        self.listen = listen
        self.name = str(listen)
        self.receiver = receiver
        self.reject = reject
        self.idle_timeout = idle_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: dict[int, TcpConnection] = {}
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, listen: ListenAddress, receiver: Receiver, reject: Rejecter, idle_timeout: float
    ) -> TcpTransport:
        self = cls(listen, receiver, reject, idle_timeout)
        family = socket.AF_INET6 if listen.family_v6 else socket.AF_INET
        self._server = await self.loop.create_server(
            lambda: TcpConnection(self),
            listen.host,
            listen.port,
            family=family,
            reuse_address=True,
        )
        self._reaper = asyncio.create_task(self._reap_idle())
        return self

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def send(self, data: bytes, connection_id: int | None) -> bool:
        conn = self.connections.get(connection_id) if connection_id is not None else None
        if conn is None:
            return False
        conn.write(data)
        return True

    async def _reap_idle(self) -> None:
        # A phone keeps its connection alive with CRLF pings or re-REGISTERs; one that
        # does neither for the idle timeout is gone, and its socket would only leak.
        while True:
            await asyncio.sleep(min(self.idle_timeout / 4, 30.0))
            deadline = self.loop.time() - self.idle_timeout
            for conn in list(self.connections.values()):
                if conn.last_activity < deadline:
                    conn.close()

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            conn.close()
