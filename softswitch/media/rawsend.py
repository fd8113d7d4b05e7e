"""Many UDP datagrams, each from its own source port, in one system call (Linux, IPv4).

A conference tick sends one packet per leg, and each leg has its own socket, because a
phone expects its media from the port it sends to (symmetric RTP). ``sendmmsg`` batches
datagrams of *one* socket only, so the mixer's send step costs a system call per leg,
and on this kind of machine that call (about 5 us of CPU for a 172-byte datagram on
loopback, most of it in the kernel's entry and exit and the socket layer) is the
largest single cost of a conference leg.

A raw IPv4 socket with ``IP_HDRINCL`` can send a datagram with any source port: the
process writes the IP and UDP headers itself. :class:`RawSender` keeps the headers of
every leg in one array, the RTP packets stay where the mixer wrote them (each message is
two iovecs: header, packet), the ``mmsghdr``/``iovec``/``sockaddr_in`` tables are
written with numpy rather than one ctypes field at a time, and a tick's packets leave in
one ``sendmmsg`` per 1,024. Measured here with 2,000 legs on loopback: 3.1 us of CPU per
datagram against 5.0 us for a ``send`` per socket.

It needs ``CAP_NET_RAW``; :meth:`RawSender.open` returns None without it, and the engine
then sends per socket as before. The kernel fills in the IP header's checksum, total
length and identification (``raw(7)``); the UDP checksum is computed here, over all
packets at once.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from typing import Final

import numpy as np
import numpy.typing as npt

from softswitch.media.batchio import _load, _Mmsghdr

_IP_UDP: Final = 28  # IPv4 header without options, UDP header
_MMSGHDR: Final = ctypes.sizeof(_Mmsghdr)  # 64 on LP64
_IOVEC: Final = 16
_SOCKADDR_IN: Final = 16
_CHUNK: Final = 1024  # UIO_MAXIOV: the most messages one sendmmsg takes


def ipv4(host: str) -> int:
    """The address as a host-order integer, -1 if it is not IPv4."""
    try:
        return struct.unpack("!I", socket.inet_aton(host))[0] if ":" not in host else -1
    except OSError:
        return -1


class RawSender:
    """One raw socket; :meth:`plan` says which packets go where, :meth:`send` sends them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._fd = sock.fileno()
        lib = _load()
        if lib is None:
            raise OSError(errno.ENOSYS, "sendmmsg is not available")
        self._sendmmsg = lib.sendmmsg
        self.count = 0
        self.errors = 0

    @classmethod
    def open(cls) -> RawSender | None:
        """A sender, or None when raw sockets are not allowed here."""
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except OSError:
            return None
        try:
            return cls(sock)
        except OSError:
            sock.close()
            return None

    def close(self) -> None:
        self.sock.close()

    def plan(
        self,
        packets: npt.NDArray[np.uint8],
        rows: npt.NDArray[np.intp],
        src_ip: int,
        src_port: npt.NDArray[np.integer],
        dst_ip: npt.NDArray[np.integer],
        dst_port: npt.NDArray[np.integer],
    ) -> None:
        """From now on :meth:`send` sends ``packets[rows[i]]`` (each row one whole RTP
        packet) from ``src_ip:src_port[i]`` to ``dst_ip[i]:dst_port[i]``. ``src_ip`` 0
        lets the kernel choose (no UDP checksum then: it covers the source address)."""
        n = len(rows)
        self.count = n
        self._packets = packets
        self._rows = rows
        if n == 0:
            return
        length = packets.shape[1]
        udp_len = 8 + length
        hdr = np.zeros((n, _IP_UDP), np.uint8)
        hdr[:, 0] = 0x45  # IPv4, 5 words of header
        hdr[:, 6] = 0x40  # don't fragment
        hdr[:, 8] = 64  # TTL
        hdr[:, 9] = socket.IPPROTO_UDP
        hdr[:, 12:16] = _be32(np.full(n, src_ip, np.uint32))
        hdr[:, 16:20] = _be32(dst_ip.astype(np.uint32))
        hdr[:, 20:22] = _be16(src_port.astype(np.uint16))
        hdr[:, 22:24] = _be16(dst_port.astype(np.uint16))
        hdr[:, 24:26] = _be16(np.full(n, udp_len, np.uint16))
        self._hdr = hdr
        # The checksum's fixed part: pseudo-header and UDP header, per packet.
        if src_ip:
            fixed = (
                (src_ip >> 16)
                + (src_ip & 0xFFFF)
                + (dst_ip.astype(np.int64) >> 16)
                + (dst_ip.astype(np.int64) & 0xFFFF)
                + socket.IPPROTO_UDP
                + 2 * udp_len
                + src_port.astype(np.int64)
                + dst_port.astype(np.int64)
            )
            self._fixed: npt.NDArray[np.int64] | None = fixed
        else:
            self._fixed = None
        self._words = length // 2 * 2 == length
        addr = np.zeros((n, _SOCKADDR_IN), np.uint8)
        addr[:, 0:2] = np.frombuffer(struct.pack("=H", socket.AF_INET), np.uint8)
        addr[:, 4:8] = _be32(dst_ip.astype(np.uint32))
        self._addr = addr
        # Two iovecs per message: its header row, then its packet row.
        iov = np.zeros((n, 2, 2), np.uint64)
        iov[:, 0, 0] = hdr.ctypes.data + np.arange(n, dtype=np.uint64) * _IP_UDP
        iov[:, 0, 1] = _IP_UDP
        iov[:, 1, 0] = packets.ctypes.data + rows.astype(np.uint64) * packets.strides[0]
        iov[:, 1, 1] = length
        self._iov = iov
        msgs = np.zeros((n, _MMSGHDR // 8), np.uint64)  # struct mmsghdr as 8-byte words
        msgs[:, 0] = addr.ctypes.data + np.arange(n, dtype=np.uint64) * _SOCKADDR_IN
        msgs[:, 1] = _SOCKADDR_IN  # msg_namelen (the upper half is padding)
        msgs[:, 2] = iov.ctypes.data + np.arange(n, dtype=np.uint64) * (2 * _IOVEC)
        msgs[:, 3] = 2  # msg_iovlen
        self._msgs = msgs

    def send(self) -> int:
        """Send every planned packet as it is now in ``packets``; returns how many the
        kernel took."""
        n = self.count
        if n == 0:
            return 0
        if self._fixed is not None and self._words:
            words = self._packets[self._rows].view(">u2")
            total = words.sum(axis=1, dtype=np.int64) + self._fixed
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            csum = (~total & 0xFFFF).astype(np.uint16)
            csum[csum == 0] = 0xFFFF  # 0 would mean "no checksum"
            self._hdr[:, 26:28] = _be16(csum)
        base = self._msgs.ctypes.data
        sent = 0
        retried = False
        while sent < n:
            k = min(_CHUNK, n - sent)
            ptr = ctypes.cast(ctypes.c_void_p(base + sent * _MMSGHDR), ctypes.POINTER(_Mmsghdr))
            r = self._sendmmsg(self._fd, ptr, k, 0)
            if r <= 0:
                if retried:
                    break
                retried = True  # a full queue: one more try, then the rest is lost
                continue
            sent += r
        self.errors += n - sent
        return sent


def _be16(values: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint8]:
    return values.astype(">u2").view(np.uint8).reshape(-1, 2)


def _be32(values: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint8]:
    return values.astype(">u4").view(np.uint8).reshape(-1, 4)
