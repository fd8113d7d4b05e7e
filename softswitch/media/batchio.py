"""Batched datagram I/O: ``recvmmsg``/``sendmmsg`` through ctypes, with a plain fallback.

One :class:`MmsgIO` owns preallocated ``mmsghdr``/``iovec``/``sockaddr`` arrays and one
buffer of ``batch`` slots, so a call moves up to ``batch`` datagrams with no Python
object per datagram until the caller asks for one. :class:`PlainIO` has the same
interface over ``recvfrom_into``/``sendto`` for platforms without the calls (and as the
reference in tests).

Measured here (2 vCPU AMD EPYC KVM guest, Linux 6.18, Python 3.11, 172-byte RTP
packets on loopback, relay pinned to core 0, the C load generator
``bench/c/relay_loadgen.c`` on core 1, ``python -m bench.bench_media options``). The
machine was shared with other test runs, so saturation points moved by +-30 % between
runs; CPU time per relayed packet is the steadier figure. "us/pkt" is relay CPU (user +
kernel) per packet at 60,000 packets/s (1,200 streams), and at 100,000 packets/s where
noted; "sat." is the best relayed packets/s seen when offered 250,000/s:

=====================================  ==========  ======================  =========
relay (2,000 sockets, 1,000 calls)     us/pkt@60k  us/pkt@100k user+kern   sat. pkt/s
=====================================  ==========  ======================  =========
asyncio datagram endpoints, per socket    15.8       (loses 68 % at 60k)       43,000
uvloop datagram endpoints, per socket      9.3       8.4 = 2.1 + 6.3          153,000
epoll + recvfrom_into/sendto               10.8       9.7 = 2.3 + 7.4          131,000
epoll + recvmmsg/sendmmsg (ctypes)         12.8                                135,000
the engine: epoll + connected sockets       9.1       8.3 = 2.7 + 5.6   125,000-138,000
C peer: epoll + recvmmsg/sendmmsg           7.9       6.5 = 0.1 + 6.4          234,000
=====================================  ==========  ======================  =========

What decides it: an RTP relay has one socket per leg and each socket receives one packet
per 20 ms, so at any load a ready socket holds one or two datagrams. ``recvmmsg`` saves
system calls only when one socket holds many (the echo server of the field notes, one
socket, batches of 64); here it costs a ctypes call per socket for nothing. The batching
that matters is across sockets: one ``epoll.poll`` returns hundreds of ready sockets in
one system call. What remains per packet is one receive and one send, and the kernel's
UDP work in them (about 4-6 us here, C or Python alike) dominates.

The largest saving found is not batching but *connecting* each RTP socket to its phone
once latched. ``recvfrom_into`` formats the source address (``inet_ntop``, a tuple and a
string per packet) and ``sendto`` parses one and routes the packet; on a connected
socket ``recv_into``/``send`` do neither, and the kernel drops packets from any other
address before Python sees them. Measured one call at a time on loopback: ``send`` 3.0
us and ``recv_into`` 0.9 us, against ``sendto`` 4.5 us and ``recvfrom_into`` 2.1 us.

The engine therefore uses plain socket calls on the packet path and keeps this module
for the places where one socket does carry batches (a load generator, a worker's control
channel, RTP multiplexed on one port), plus :func:`disconnect`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from typing import Final

MSG_DONTWAIT: Final = 0x40
_AF_INET: Final = socket.AF_INET
_AF_INET6: Final = socket.AF_INET6


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_SOCKADDR_SIZE: Final = 28  # sockaddr_in6, the larger of the two families we use
_libc: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            lib.recvmmsg.argtypes = [
                ctypes.c_int,
                ctypes.POINTER(_Mmsghdr),
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_void_p,
            ]
            lib.sendmmsg.argtypes = [
                ctypes.c_int,
                ctypes.POINTER(_Mmsghdr),
                ctypes.c_uint,
                ctypes.c_int,
            ]
            _libc = lib
        except (OSError, AttributeError):
            return None
    return _libc


class _SockaddrUnspec(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_char * 26)]


def disconnect(sock: socket.socket) -> None:
    """Dissolve a UDP socket's association (``connect`` with AF_UNSPEC, POSIX): it then
    receives from anyone again. Python's ``socket.connect`` cannot express this.
    Linux keeps the local port only if it was bound explicitly (not to port 0)."""
    lib = _load()
    if lib is None:
        raise OSError(errno.ENOSYS, "libc is not available")
    addr = _SockaddrUnspec(socket.AF_UNSPEC)
    if lib.connect(sock.fileno(), ctypes.byref(addr), ctypes.sizeof(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def mmsg_available() -> bool:
    return _load() is not None


def _decode_addr(raw: bytes) -> tuple[str, int]:
    family = struct.unpack_from("=H", raw)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == _AF_INET:
        return socket.inet_ntop(_AF_INET, raw[4:8]), port
    return socket.inet_ntop(_AF_INET6, raw[8:24]), port


def _encode_addr(addr: tuple[str, int]) -> bytes:
    host, port = addr[0], addr[1]
    if ":" in host:
        return (
            struct.pack("=H", _AF_INET6)
            + struct.pack("!HI", port, 0)
            + socket.inet_pton(_AF_INET6, host)
            + struct.pack("=I", 0)
        )
    return (
        struct.pack("=H", _AF_INET)
        + struct.pack("!H", port)
        + socket.inet_pton(_AF_INET, host)
        + bytes(8)
    )


class MmsgIO:
    """``batch`` receive slots and ``batch`` send slots of ``size`` bytes each."""

    def __init__(self, batch: int = 64, size: int = 2048) -> None:
        lib = _load()
        if lib is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        self._lib = lib
        self.batch = batch
        self.size = size
        self.buffer = bytearray(batch * size)
        self.view = memoryview(self.buffer)
        self.out_buffer = bytearray(batch * size)
        self.out_view = memoryview(self.out_buffer)
        self._names = (ctypes.c_char * (_SOCKADDR_SIZE * batch))()
        self._out_names = (ctypes.c_char * (_SOCKADDR_SIZE * batch))()
        self._iov = (_Iovec * batch)()
        self._out_iov = (_Iovec * batch)()
        self._msgs = (_Mmsghdr * batch)()
        self._out_msgs = (_Mmsghdr * batch)()
        base = ctypes.addressof((ctypes.c_char * len(self.buffer)).from_buffer(self.buffer))
        out_base = ctypes.addressof(
            (ctypes.c_char * len(self.out_buffer)).from_buffer(self.out_buffer)
        )
        names, out_names = ctypes.addressof(self._names), ctypes.addressof(self._out_names)
        for i in range(batch):
            self._iov[i].iov_base = base + i * size
            self._iov[i].iov_len = size
            self._out_iov[i].iov_base = out_base + i * size
            for msgs, iov, nbase in (
                (self._msgs, self._iov, names),
                (self._out_msgs, self._out_iov, out_names),
            ):
                hdr = msgs[i].msg_hdr
                hdr.msg_name = nbase + i * _SOCKADDR_SIZE
                hdr.msg_namelen = _SOCKADDR_SIZE
                hdr.msg_iov = ctypes.pointer(iov[i])
                hdr.msg_iovlen = 1
        self._out_count = 0

    # --- receive ----------------------------------------------------------------------

    def recv(self, fd: int) -> int:
        """Read up to ``batch`` datagrams without blocking; 0 when none is queued."""
        msgs = self._msgs
        for i in range(self.batch):
            msgs[i].msg_hdr.msg_namelen = _SOCKADDR_SIZE
        n = self._lib.recvmmsg(fd, msgs, self.batch, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNREFUSED):
                return 0
            raise OSError(err, os.strerror(err))
        return n

    def length(self, i: int) -> int:
        return self._msgs[i].msg_len

    def data(self, i: int) -> memoryview:
        start = i * self.size
        return self.view[start : start + self._msgs[i].msg_len]

    def address(self, i: int) -> tuple[str, int]:
        start = i * _SOCKADDR_SIZE
        return _decode_addr(self._names[start : start + _SOCKADDR_SIZE])

    # --- send -------------------------------------------------------------------------

    def queue(self, data: bytes | bytearray | memoryview, addr: tuple[str, int]) -> bool:
        """Stage one datagram; False when the batch is full (call :meth:`flush`)."""
        i = self._out_count
        if i >= self.batch:
            return False
        if len(data) > self.size:
            raise ValueError("datagram larger than a slot")
        start = i * self.size
        self.out_view[start : start + len(data)] = data
        self._out_iov[i].iov_len = len(data)
        raw = _encode_addr(addr)
        ctypes.memmove(ctypes.addressof(self._out_names) + i * _SOCKADDR_SIZE, raw, len(raw))
        self._out_msgs[i].msg_hdr.msg_namelen = len(raw)
        self._out_count = i + 1
        return True

    def flush(self, fd: int) -> int:
        """Send what was staged, in order; returns how many datagrams the kernel took."""
        count, self._out_count = self._out_count, 0
        sent = 0
        while sent < count:
            msgs = ctypes.cast(
                ctypes.byref(self._out_msgs, sent * ctypes.sizeof(_Mmsghdr)),
                ctypes.POINTER(_Mmsghdr),
            )
            n = self._lib.sendmmsg(fd, msgs, count - sent, 0)
            if n <= 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                break  # the rest is dropped, as a full socket buffer would drop it
            sent += n
        return sent


class PlainIO:
    """The same interface on ``recvfrom_into``/``sendto`` (one system call each)."""

    def __init__(self, batch: int = 64, size: int = 2048) -> None:
        self.batch = batch
        self.size = size
        self.buffer = bytearray(batch * size)
        self.view = memoryview(self.buffer)
        self._lengths = [0] * batch
        self._addrs: list[tuple[str, int]] = [("", 0)] * batch
        self._out: list[tuple[bytes, tuple[str, int]]] = []
        self._socks: dict[int, socket.socket] = {}

    def _sock(self, fd: int) -> socket.socket:
        sock = self._socks.get(fd)
        if sock is None:
            sock = self._socks[fd] = socket.socket(fileno=os.dup(fd))
            sock.setblocking(False)
        return sock

    def recv(self, fd: int) -> int:
        sock = self._sock(fd)
        n = 0
        while n < self.batch:
            start = n * self.size
            try:
                size, addr = sock.recvfrom_into(self.view[start : start + self.size])
            except (BlockingIOError, ConnectionRefusedError):
                break
            self._lengths[n] = size
            self._addrs[n] = addr
            n += 1
        return n

    def length(self, i: int) -> int:
        return self._lengths[i]

    def data(self, i: int) -> memoryview:
        start = i * self.size
        return self.view[start : start + self._lengths[i]]

    def address(self, i: int) -> tuple[str, int]:
        return self._addrs[i]

    def queue(self, data: bytes | bytearray | memoryview, addr: tuple[str, int]) -> bool:
        if len(data) > self.size:
            raise ValueError("datagram larger than a slot")
        if len(self._out) >= self.batch:
            return False
        self._out.append((bytes(data), addr))
        return True

    def flush(self, fd: int) -> int:
        sock = self._sock(fd)
        out, self._out = self._out, []
        sent = 0
        for data, addr in out:
            try:
                sock.sendto(data, addr)
                sent += 1
            except OSError:
                break
        return sent

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


def batch_io(batch: int = 64, size: int = 2048) -> MmsgIO | PlainIO:
    """``MmsgIO`` where the system has the calls, else ``PlainIO``."""
    try:
        return MmsgIO(batch, size)
    except OSError:
        return PlainIO(batch, size)
