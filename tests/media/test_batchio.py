from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from softswitch.media.batchio import MmsgIO, PlainIO, disconnect, mmsg_available
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(10)

IOS = [PlainIO] + ([MmsgIO] if mmsg_available() else [])


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    yield socks[0], socks[1]
    for s in socks:
        s.close()


@pytest.mark.parametrize("io_class", IOS)
def test_batches_move_datagrams_in_order_with_addresses(io_class, pair):
    a, b = pair
    io = io_class(4, 256)
    datagrams = [bytes([i]) * (i + 1) for i in range(6)]
    sent = 0
    for d in datagrams:
        if not io.queue(d, b.getsockname()):
            sent += io.flush(a.fileno())
            assert io.queue(d, b.getsockname())
    sent += io.flush(a.fileno())
    assert sent == 6
    got = []
    while n := io.recv(b.fileno()):
        assert n <= 4
        for i in range(n):
            assert io.address(i) == a.getsockname()
            assert io.length(i) == len(io.data(i))
            got.append(bytes(io.data(i)))
    assert got == datagrams
    assert io.recv(b.fileno()) == 0


@pytest.mark.parametrize("io_class", IOS)
def test_oversized_datagram_is_refused(io_class):
    with pytest.raises(ValueError):
        io_class(2, 16).queue(bytes(17), ("127.0.0.1", 9))


def test_disconnect_lets_a_connected_socket_hear_everyone_again(pair):
    a, _ = pair
    # Bound to an explicit port, as the engine's sockets are: a socket bound to port 0
    # loses its port on disconnect.
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", free_port(udp=True, tcp=False)))
    b.setblocking(False)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.2", 0))
    try:
        b.connect(a.getsockname())
        c.sendto(b"from c", b.getsockname())  # dropped by the kernel: not the peer
        a.sendto(b"from a", b.getsockname())
        assert b.recv(100) == b"from a"
        with pytest.raises(BlockingIOError):
            b.recv(100)
        disconnect(b)
        c.sendto(b"again", b.getsockname())
        assert b.recvfrom(100) == (b"again", c.getsockname())
    finally:
        c.close()
        b.close()
