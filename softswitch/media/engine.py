"""The media engine: every RTP socket of a worker, one epoll set, relays and ticks.

One :class:`MediaEngine` owns all the RTP/RTCP sockets of a process. It is synchronous
and knows nothing of asyncio: a driver tells it when its epoll descriptor is readable
(:meth:`MediaEngine.drain`) and when a 20 ms tick is due (:meth:`MediaEngine.tick`),
always passing ``now``. The in-process driver is :mod:`softswitch.media.local`; a worker
process would run the same engine from a plain ``epoll.poll`` loop and receive the
control calls (plain dataclasses) over a pipe.

Two paths, by what a packet needs:

* Relayed packets (same codec on both legs, and telephone-events) are forwarded as soon
  as they arrive: the 12-byte fixed header is rewritten in place in the receive buffer
  (payload type, sequence number, timestamp, SSRC; one ``struct`` call) and sent from
  the other leg's socket. Nothing waits for a tick.
* Transcoded packets get the same header rewrite on arrival, are queued, and at the next
  tick the payloads of *all* transcoded streams are converted together: one decode and
  one encode table look-up over a ``(frames, 160)`` array (:mod:`.transcode`).
* Legs in rooms (conferences, lobbies, and two-leg calls between G.711 and Opus, which
  are rooms of two) go through jitter buffers, are decoded, mixed and encoded by the
  tick, all rooms in one pass (:mod:`.rooms`). Rooms are driven by the
  :class:`~softswitch.media.conference.ConferenceControl` methods of the engine. Their
  G.711 packets skip the per-packet header work: the drain reads each one straight into
  the rooms' staging area, and the tick checks all headers at once. With
  ``batch_send`` (and CAP_NET_RAW) a tick's packets toward IPv4 legs leave in batches
  through one raw socket instead of one system call per leg (:mod:`.rawsend`).

Why the receive side is one epoll set polled with ``epoll.poll(0, n)`` rather than one
asyncio reader or datagram endpoint per socket: each readable socket then costs one
entry in one list instead of an event-loop callback, and the readiness of hundreds of
sockets arrives in one system call. Each ready socket is read once per pass (level
triggered: a socket with more queued is simply ready again on the next pass), so no
read ever ends in EAGAIN and its exception.

Once a leg has latched (:mod:`.latch`), its RTP socket is ``connect()``-ed to the phone:
the kernel then drops packets from any other address (the "stranger after latching"
rule, enforced before Python sees them), and the packet path uses ``recv_into``/``send``
without addresses, which is the cheapest pair of calls Python has for UDP. A new
address from signalling disconnects the socket and latching starts over. The
measurements behind these choices are in :mod:`.batchio`.
"""

from __future__ import annotations

import errno
import heapq
import random
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softswitch.media.batchio import disconnect
from softswitch.media.conference import (
    Audio,
    LegRef,
    RoomError,
    RoomInfo,
    RoomMember,
    RoomRef,
    Target,
)
from softswitch.media.controller import (
    DtmfReceived,
    LegMedia,
    MediaEndpoint,
    MediaEvent,
    MediaTimeout,
)
from softswitch.media.ports import PortPool
from softswitch.media.rawsend import RawSender, ipv4
from softswitch.media.rooms import MixStage, Room, decodable, is_opus
from softswitch.media.rtcp import RtcpError, parse_compound, relay_rewrite, serialize_compound
from softswitch.media.rtp import DTMF_EVENTS, payload_end, payload_offset
from softswitch.media.stream import MAX_DROPOUT, MAX_MISORDER, Leg, PlanError, Route, same_codec
from softswitch.media.transcode import decode_rows, encode_rows

__all__ = ["EngineStats", "LegRef", "MediaEngine", "PlanError", "RoomError", "RoomRef", "bind_pair"]

_HDR = struct.Struct("!BBHII")
_REWRITE = struct.Struct("!BHII")  # marker/PT, seq, ts, SSRC: bytes 1..11
_BUF_SIZE = 2048  # larger than any RTP packet we relay (audio, Ethernet MTU)
_SEQ_RESTART_HI = 65536 - MAX_MISORDER
_FRAME = 160


def bind_pair(
    host: str, port: int, *, rcvbuf: int = 0, sndbuf: int = 0
) -> tuple[socket.socket, socket.socket]:
    """Non-blocking UDP sockets bound on ``port`` (RTP) and ``port + 1`` (RTCP)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    rtp = socket.socket(family, socket.SOCK_DGRAM)
    rtcp = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for sock, p in ((rtp, port), (rtcp, port + 1)):
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, p))
        if rcvbuf:
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    except OSError:
        rtp.close()
        rtcp.close()
        raise
    return rtp, rtcp


@dataclass(slots=True)
class EngineStats:
    received: int = 0  # RTP packets read from sockets
    forwarded: int = 0  # RTP packets sent on the relay path
    transcoded: int = 0  # RTP packets sent by a tick after payload conversion
    mixed: int = 0  # RTP packets sent by a tick from the rooms' mix
    dropped: int = 0  # RTP packets refused (stranger, bad header, unknown PT, held leg)
    rtcp_in: int = 0
    rtcp_out: int = 0
    send_errors: int = 0
    ticks: int = 0
    late_ticks: int = 0  # counted by the driver's pacer
    skipped_ticks: int = 0


class _Session:
    __slots__ = ("id", "legs", "routes")

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.legs: dict[str, Leg] = {}
        self.routes: dict[tuple[str, str], Route] = {}


class MediaEngine:
    """All media of one process (module docstring). Not thread-safe; one driver."""

    def __init__(
        self,
        host: str,
        port_range: tuple[int, int],
        *,
        media_timeout: float = 30.0,
        latch_window: float = 10.0,
        rcvbuf: int = 256 * 1024,
        sndbuf: int = 0,
        max_events: int = 1024,
        rng: random.Random | None = None,
        bind: Callable[[str, int], tuple[socket.socket, socket.socket]] | None = None,
        advertised_host: str | None = None,
        batch_send: bool = False,
        room_poll: float = 0.004,
    ) -> None:
        """``batch_send``: send the rooms' packets of a tick in batches through a raw
        socket (:mod:`.rawsend`; needs CAP_NET_RAW, IPv4; silently off without them).
        ``room_poll``: how often the driver calls :meth:`drain_rooms` between ticks
        (the jitter buffers take arrival times to be this coarse)."""
        self.host = host
        # What SDP should carry when the sockets are bound to a wildcard or private
        # address (0.0.0.0 behind a 1:1 NAT).
        self.advertised_host = advertised_host or host
        self.pool = PortPool(*port_range)
        self.media_timeout = media_timeout
        self.latch_window = latch_window
        self.stats = EngineStats()
        self.events: list[MediaEvent] = []
        self._rcvbuf = rcvbuf
        self._sndbuf = sndbuf
        self._rng = rng or random.Random()
        self._bind = bind or self._bind_default
        self._max_events = max_events
        self._ep = select.epoll()
        self._rtp_by_fd: dict[int, Leg] = {}
        self._rtcp_by_fd: dict[int, Leg] = {}
        self._sessions: dict[str, _Session] = {}
        self._buf = bytearray(_BUF_SIZE)
        self._view = memoryview(self._buf)
        # Transcoded packets waiting for the tick: (dst leg, packet, payload start,
        # payload end, route); route None for packets that only needed the rewrite.
        self._queue: list[tuple[Leg, bytearray, int, int, Route | None]] = []
        # Media-timeout deadlines: (due, n, leg). A leg's entry is re-armed from its
        # last packet when it comes due, so each watched leg costs one heap operation
        # per timeout period, however many packets it receives.
        self._timers: list[tuple[float, int, Leg]] = []
        self._timer_n = 0
        self._closed = False
        raw = RawSender.open() if batch_send else None
        self.room_poll = room_poll
        self._mix = MixStage(
            self.events, raw=raw, src_ip=ipv4(host) if raw else -1, resolution=room_poll
        )
        self.batch_send = raw is not None
        # The RTP sockets of legs in rooms: their packets are only needed by the tick,
        # so they are read in bulk (:meth:`drain_rooms`), not as each one arrives.
        self._room_ep = select.epoll()
        self._room_max = max(max_events, 4096)

    # --- control (called by the controller, never on the packet path) -------------

    def _bind_default(self, host: str, port: int) -> tuple[socket.socket, socket.socket]:
        return bind_pair(host, port, rcvbuf=self._rcvbuf, sndbuf=self._sndbuf)

    def fileno(self) -> int:
        """The epoll descriptor: readable whenever any RTP or RTCP socket is."""
        return self._ep.fileno()

    def allocate(self, session_id: str, leg_name: str) -> MediaEndpoint:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session(session_id)
        leg = session.legs.get(leg_name)
        if leg is not None:
            return leg.endpoint  # allocating twice hands back the same ports
        port, (rtp, rtcp) = self.pool.allocate(lambda p: self._bind(self.host, p))
        endpoint = MediaEndpoint(self.advertised_host, port)
        leg = Leg(session_id, leg_name, endpoint, rtp, rtcp, rng=self._rng)
        session.legs[leg_name] = leg
        self._rtp_by_fd[rtp.fileno()] = leg
        self._rtcp_by_fd[rtcp.fileno()] = leg
        self._ep.register(rtp.fileno(), select.EPOLLIN)
        self._ep.register(rtcp.fileno(), select.EPOLLIN)
        return leg.endpoint

    def connect(self, session_id: str, legs: dict[str, LegMedia], now: float) -> None:
        session = self._session(session_id)
        for name in legs:
            if name not in session.legs:
                raise KeyError(f"leg {name!r} of session {session_id!r} was never allocated")
        active = [leg for leg in session.legs.values() if leg.media is not None or leg.name in legs]
        if len(active) > 2:
            raise PlanError("sessions of more than two legs need the conference mixer")
        for name, media in legs.items():
            self._apply(session.legs[name], media, now)
        self._plan(session, now)

    def update(self, session_id: str, leg_name: str, media: LegMedia, now: float) -> None:
        session = self._session(session_id)
        leg = session.legs.get(leg_name)
        if leg is None:
            raise KeyError(f"leg {leg_name!r} of session {session_id!r} was never allocated")
        self._apply(leg, media, now)
        if leg.room_id is not None:
            self._mix_add(leg, self._mix.room(leg.room_id), now, muted=self._muted(leg))
        self._plan(session, now)

    def _apply(self, leg: Leg, media: LegMedia, now: float) -> None:
        leg.apply(media, now, self.latch_window)
        if leg.latched is None:
            self._disconnect(leg)  # a new address: learn it again
        if leg.watch and leg.timer_due is None:
            self._arm_timeout(leg, leg.last_rx + self.media_timeout)

    def release(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        for leg in session.legs.values():
            self._mix_remove(leg)
            leg.room_id = None
        self._mix.rooms.pop(_call_room(session_id), None)
        for leg in session.legs.values():
            self._close_leg(leg)
        if self._queue:
            self._queue = [q for q in self._queue if q[0].session_id != session_id]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for session_id in list(self._sessions):
            self.release(session_id)
        self._mix.close()
        self._ep.close()
        self._room_ep.close()

    def legs(self, session_id: str) -> dict[str, Leg]:
        """The legs of a session (for inspection and tests)."""
        return dict(self._session(session_id).legs)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise KeyError(f"unknown media session {session_id!r}")
        return session

    def _close_leg(self, leg: Leg) -> None:
        for sock, table in ((leg.rtp, self._rtp_by_fd), (leg.rtcp, self._rtcp_by_fd)):
            assert isinstance(sock, socket.socket)
            fd = sock.fileno()
            if fd >= 0:
                table.pop(fd, None)
                for ep in (self._ep, self._room_ep):
                    try:
                        ep.unregister(fd)
                    except (OSError, ValueError):
                        pass
            sock.close()
        self.pool.release(leg.port)
        leg.timer_due = None
        leg.route = None
        leg.partner = None

    def _plan(self, session: _Session, now: float = 0.0) -> None:
        # Legs put in a conference room are the room's; the rest pair up as before.
        legs = [
            leg for leg in session.legs.values() if leg.media is not None and leg.room_id is None
        ]
        for leg in session.legs.values():
            leg.route = None
            leg.partner = None
        call_id = _call_room(session.id)
        call = self._mix.rooms.get(call_id)
        if len(legs) == 2 and _needs_decoding(legs[0], legs[1]):
            # G.711 <-> Opus: the two legs become a room of two (mix-minus of two is
            # "each hears the other"), with jitter buffers and codecs on both sides.
            if call is None:
                call = self._mix.rooms[call_id] = Room(call_id, conference=False)  # type: ignore[arg-type]
            for leg in legs:
                m = leg.mix
                if m is None or m.room is not call or m.media is not leg.media:
                    self._mix_add(leg, call, now)
            return
        if call is not None:
            for leg in list(call.members):
                self._mix_remove(leg)
            del self._mix.rooms[call_id]
        if len(legs) != 2:
            return
        a, b = legs
        a.partner, b.partner = b, a
        for src, dst in ((a, b), (b, a)):
            route = session.routes.get((src.name, dst.name))
            if route is None:
                route = session.routes[(src.name, dst.name)] = Route(src, dst)
            route.plan()
            src.route = route if src.recv_ok and dst.send_ok else None

    # --- packet path ----------------------------------------------------------------

    def drain(self, now: float) -> int:
        """Read every socket that is ready now, once, and forward what can go at once.
        Returns the number of sockets that were ready (0 when none was)."""
        ready = self._ep.poll(0, self._max_events)
        if not ready:
            return 0
        rtp_by_fd = self._rtp_by_fd
        buf, view = self._buf, self._view
        unpack, rewrite = _HDR.unpack_from, _REWRITE.pack_into
        received = forwarded = 0
        for fd, _ in ready:
            leg = rtp_by_fd.get(fd)
            if leg is None:
                self._rtcp_ready(fd, now)
                continue
            if not leg.connected:
                received += 1
                forwarded += self._unlatched(leg, now)
                continue
            # Latched: the socket is connected, so the kernel only delivers packets
            # from the latched address. What follows is _forward() inlined for the
            # common case (a relayed audio packet of the current source); anything
            # else takes the full path.
            try:
                n = leg.recv_into(view)
            except OSError:
                continue
            received += 1
            route = leg.route
            if n < 12 or route is None or route.transcode:
                if leg.mix is not None and n >= 12:
                    self._mix.receive(leg.mix, buf, view, n, now)
                else:
                    forwarded += self._forward(leg, n, now)
                continue
            b0, b1, seq, ts, ssrc = unpack(buf)
            d = (seq - route.last_seq) & 0xFFFF
            if (
                b1 & 0x7F != route.audio_in_pt
                or b0 & 0xC0 != 0x80
                or ssrc != route.in_ssrc
                or d > MAX_DROPOUT
                or route.mark
            ):
                forwarded += self._forward(leg, n, now)
                continue
            dst = route.dst
            if dst.feeder is not route or not dst.connected:
                forwarded += self._forward(leg, n, now)
                continue
            leg.last_rx = now
            if d:
                route.last_seq = seq
                route.last_ts = ts
                route.last_time = now
            rewrite(
                buf,
                1,
                route.audio_out_pt | (b1 & 0x80),
                (seq + route.seq_off) & 0xFFFF,
                (ts + route.ts_off) & 0xFFFFFFFF,
                route.out_ssrc,
            )
            try:
                dst.send(view[:n])
            except OSError:
                self.stats.send_errors += 1
                continue
            forwarded += 1
        st = self.stats
        st.received += received
        st.forwarded += forwarded
        return len(ready)

    def _unlatched(self, leg: Leg, now: float) -> int:
        """A packet on a socket not connected to its phone yet: latch, or drop it."""
        try:
            n, addr = leg.rtp.recvfrom_into(self._view)  # type: ignore[attr-defined]
        except OSError:
            return 0
        buf = self._buf
        if addr != leg.latched:
            if n < 12 or buf[0] & 0xC0 != 0x80 or not leg.latch.offer(addr, buf[1] & 0x7F, now):
                self.stats.dropped += 1
                return 0
            leg.sync_latch()
        sent = self._forward(leg, n, now)
        if leg.latched is not None and not leg.connected:
            sent += self._connect(leg, now)
        return sent

    def _connect(self, leg: Leg, now: float) -> int:
        """Connect a newly latched socket to its phone: from then on the kernel drops
        packets from anyone else, and sends need no address. Packets queued before the
        connect may come from anyone, so they are read with their address first."""
        sock = leg.rtp
        try:
            sock.connect(leg.latched)  # type: ignore[attr-defined]
        except OSError:
            return 0
        leg.connected = True
        leg.recv_into, leg.send = sock.recv_into, sock.send  # type: ignore[attr-defined]
        if leg.mix is not None:
            self._mix.connected(leg)
        sent = 0
        while True:
            try:
                n, addr = sock.recvfrom_into(self._view)  # type: ignore[attr-defined]
            except OSError:
                break
            self.stats.received += 1
            if addr == leg.latched:
                sent += self._forward(leg, n, now)
            else:
                self.stats.dropped += 1
        return sent

    def _disconnect(self, leg: Leg) -> None:
        if leg.connected:
            disconnect(leg.rtp)  # type: ignore[arg-type]
            leg.connected = False
            if leg.mix is not None:
                self._mix.connected(leg)

    def _forward(self, leg: Leg, n: int, now: float) -> int:
        """Rewrite the packet in the receive buffer for the other leg and send it (or
        queue it for the tick when transcoded). Returns 1 if it was sent now."""
        buf = self._buf
        if n < 12:
            self.stats.dropped += 1
            return 0
        if leg.mix is not None:
            self._mix.receive(leg.mix, buf, self._view, n, now)
            return 0
        b0, b1, seq, ts, ssrc = _HDR.unpack_from(buf)
        route = leg.route
        pt = b1 & 0x7F
        if b0 & 0xC0 != 0x80 or route is None:
            self.stats.dropped += 1
            if b0 & 0xC0 == 0x80 and leg.recv_ok:
                leg.last_rx = now  # held toward the other phone, but alive
                if pt == leg.te_pt:
                    self._dtmf(leg, n, ts)
            return 0
        leg.last_rx = now
        if pt == route.audio_in_pt:
            out_b1 = route.audio_out_pt
        elif pt == route.te_in_pt:
            self._dtmf(leg, n, ts)
            out_b1 = route.te_out_pt
            if out_b1 < 0:
                self.stats.dropped += 1
                return 0
        else:
            self.stats.dropped += 1
            return 0
        dst = route.dst
        d = (seq - route.last_seq) & 0xFFFF
        if ssrc != route.in_ssrc or MAX_DROPOUT < d < _SEQ_RESTART_HI or dst.feeder is not route:
            route.resync(seq, ts, ssrc, now)
        elif d < 0x8000:
            route.last_seq = seq
            route.last_ts = ts
            route.last_time = now
        if route.mark:
            route.mark = False
            out_b1 |= 0x80
        else:
            out_b1 |= b1 & 0x80
        dest = dst.dest
        if dest is None:
            self.stats.dropped += 1
            return 0
        _REWRITE.pack_into(
            buf,
            1,
            out_b1,
            (seq + route.seq_off) & 0xFFFF,
            (ts + route.ts_off) & 0xFFFFFFFF,
            route.out_ssrc,
        )
        if route.transcode:
            self._enqueue(route, n, pt == route.audio_in_pt)
            return 0
        try:
            if dst.connected:
                dst.send(self._view[:n])
            else:
                dst.rtp.sendto(self._view[:n], dest)  # type: ignore[attr-defined]
        except OSError:
            self.stats.send_errors += 1
            return 0
        return 1

    def _dtmf(self, leg: Leg, n: int, ts: int) -> None:
        buf = self._buf
        start = payload_offset(buf, n)
        if start < 0 or n - start < 4 or not buf[start + 1] & 0x80:
            return
        if not leg.dtmf_end(ts):
            return
        event = buf[start]
        if event >= len(DTMF_EVENTS):
            return  # flash and tones are relayed but are not digits
        duration = (buf[start + 2] << 8) | buf[start + 3]
        ms = duration * 1000 // (leg.clock_rate or 8000)
        self.events.append(DtmfReceived(leg.session_id, leg.name, DTMF_EVENTS[event], ms))

    def _enqueue(self, route: Route, n: int, audio: bool) -> None:
        packet = bytearray(self._view[:n])
        if not audio:
            self._queue.append((route.dst, packet, 0, 0, None))
            return
        start = payload_offset(packet, n)
        end = payload_end(packet, n)
        if start < 0 or end < start:
            self.stats.dropped += 1
            return
        self._queue.append((route.dst, packet, start, end, route))

    def drain_rooms(self, now: float) -> int:
        """Read what the legs in rooms received since the last call: one ``epoll`` for
        all of them, one read per packet. The tick calls it first; a driver calls it
        every :attr:`room_poll` seconds in between, so that arrival times (which the
        jitter buffers measure) are that precise. Returns the packets read."""
        get = self._rtp_by_fd.get
        mix = self._mix
        received = 0
        for _ in range(4):  # a socket holding several packets is ready again
            ready = self._room_ep.poll(0, self._room_max)
            if not ready:
                break
            i = mix.rx_n
            if i + len(ready) > mix.rx_cap:
                mix.grow_rx(i + len(ready))
            views, rows, lens = mix.rx_views, mix.rx_row, mix.rx_len
            times, epochs = mix.rx_t, mix.rx_epoch
            start = i
            for fd, _ in ready:
                leg = get(fd)
                if leg is None:
                    continue
                m = leg.mix
                if m is None or m.opus or not leg.connected:
                    received += self._room_packet(leg, now)
                    continue
                # G.711: straight into the rooms' staging area, with four numbers; the
                # tick checks every staged header at once.
                try:
                    n = leg.recv_into(views[i])
                except OSError:
                    continue
                rows[i] = m.row
                lens[i] = n
                times[i] = now
                epochs[i] = m.epoch
                i += 1
            mix.rx_n = i
            received += i - start
        self.stats.received += received
        return received

    def _room_packet(self, leg: Leg, now: float) -> int:
        """A packet for a room leg that is not latched yet, or not G.711."""
        if not leg.connected:
            self._unlatched(leg, now)
            return 1
        try:
            n = leg.recv_into(self._view)
        except OSError:
            return 0
        self._forward(leg, n, now)
        return 1

    @property
    def room_legs(self) -> int:
        """Legs served by rooms (a driver polls :meth:`drain_rooms` while there are)."""
        return len(self._mix.mixer)

    def _mix_add(self, leg: Leg, room: Room, now: float, *, muted: bool = False) -> None:
        was = leg.mix is not None
        self._mix.add(leg, room, now, muted=muted)
        if not was:
            self._move_fd(leg, self._ep, self._room_ep)

    def _mix_remove(self, leg: Leg) -> None:
        if leg.mix is None:
            return
        self._mix.remove(leg)
        self._move_fd(leg, self._room_ep, self._ep)

    def _move_fd(self, leg: Leg, old: select.epoll, new: select.epoll) -> None:
        fd = leg.rtp.fileno()  # type: ignore[attr-defined]
        if fd < 0:
            return
        try:
            old.unregister(fd)
        except (OSError, ValueError):
            pass
        new.register(fd, select.EPOLLIN)

    def _rtcp_ready(self, fd: int, now: float) -> None:
        leg = self._rtcp_by_fd.get(fd)
        if leg is None:
            return
        try:
            data, addr = leg.rtcp.recvfrom(_BUF_SIZE)  # type: ignore[attr-defined]
        except OSError:
            return
        self.stats.rtcp_in += 1
        if not leg.latch.offer_rtcp(addr):
            return
        dst = leg.partner
        if dst is None:
            return
        try:
            packets = parse_compound(data)
        except RtcpError:
            return
        # RTCP keeps flowing while a leg is on hold (RFC 3264 section 8.4).
        fwd = _route_between(leg, dst)
        back = _route_between(dst, leg)
        out = relay_rewrite(
            packets,
            sender_ssrc=dst.ssrc,
            ts_offset=fwd.ts_off if fwd else 0,
            own_ssrc=leg.ssrc,
            reported_ssrc=back.in_ssrc if back is not None and back.in_ssrc >= 0 else None,
            seq_offset=back.seq_off if back is not None else 0,
        )
        target = dst.latch.rtcp_target
        if not out or target is None:
            return
        try:
            dst.rtcp.sendto(serialize_compound(out), target)  # type: ignore[attr-defined]
            self.stats.rtcp_out += 1
        except OSError:
            self.stats.send_errors += 1

    # --- tick -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One 20 ms step: transcode and send the queued frames, check media timeouts."""
        self.stats.ticks += 1
        if self._mix.mixer:
            self.drain_rooms(now)
        if self._queue:
            queue, self._queue = self._queue, []
            self._transcode(queue)
        mix = self._mix
        if mix.rooms:
            mix.tick(now)
            self.stats.mixed = mix.sent
            self.stats.send_errors += mix.send_errors
            mix.send_errors = 0
        timers = self._timers
        while timers and timers[0][0] <= now:
            self._timer_due(heapq.heappop(timers), now)

    def _transcode(self, queue: list[tuple[Leg, bytearray, int, int, Route | None]]) -> None:
        rows = [q for q in queue if q[4] is not None and q[3] - q[2] == _FRAME]
        if rows:
            codes = np.frombuffer(b"".join(p[s:e] for _, p, s, e, _ in rows), np.uint8)
            codes = codes.reshape(len(rows), _FRAME)
            src = np.fromiter((q[4].src_law for q in rows), np.uint16, len(rows))  # type: ignore[union-attr]
            dst = np.fromiter((q[4].dst_law for q in rows), np.uint16, len(rows))  # type: ignore[union-attr]
            pcm = decode_rows(codes, src, np.empty(codes.shape, np.int16))
            out = encode_rows(pcm, dst, np.empty(codes.shape, np.uint8))
            for i, (_, packet, s, e, _) in enumerate(rows):
                packet[s:e] = out[i].data
        for leg, packet, s, e, route in queue:
            if route is not None and e - s != _FRAME:
                # Other packet sizes (ptime 10, 30 ...) are rare: convert them alone.
                codes = np.frombuffer(packet, np.uint8, e - s, s).reshape(1, -1)
                laws = np.array([route.src_law], np.uint16), np.array([route.dst_law], np.uint16)
                pcm = decode_rows(codes, laws[0], np.empty(codes.shape, np.int16))
                packet[s:e] = encode_rows(pcm, laws[1], np.empty(codes.shape, np.uint8)).data
            dest = leg.dest
            if dest is None or not leg.send_ok:
                continue
            try:
                if leg.connected:
                    leg.send(packet)
                else:
                    leg.rtp.sendto(packet, dest)  # type: ignore[attr-defined]
                self.stats.transcoded += 1
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.ECONNREFUSED):
                    self.stats.send_errors += 1

    def _arm_timeout(self, leg: Leg, due: float) -> None:
        leg.timer_due = due
        self._timer_n += 1
        heapq.heappush(self._timers, (due, self._timer_n, leg))

    def _timer_due(self, entry: tuple[float, int, Leg], now: float) -> None:
        due, _, leg = entry
        if leg.timer_due != due:
            return  # superseded by a later arm, or released
        leg.timer_due = None
        if not leg.watch or leg.timed_out:
            return  # on hold: resuming arms it again
        last = leg.last_rx if leg.mix is None else self._mix.last_heard(leg)
        deadline = last + self.media_timeout
        if deadline > now:
            self._arm_timeout(leg, deadline)
            return
        leg.timed_out = True
        self.events.append(MediaTimeout(leg.session_id, leg.name))

    def take_events(self) -> list[MediaEvent]:
        # Emptied in place: the rooms hold on to this very list.
        events = list(self.events)
        self.events.clear()
        return events

    # --- rooms (ConferenceControl) ----------------------------------------------------

    def create_room(self, room_id: str, *, mix: bool = True) -> None:
        if room_id not in self._mix.rooms:
            self._mix.rooms[room_id] = Room(room_id, mix=mix)

    def destroy_room(self, room_id: str) -> None:
        room = self._mix.rooms.get(room_id)
        if room is None or not room.conference:
            return
        legs = list(room.members)
        for leg in legs:
            self._mix_remove(leg)
        self._mix.destroy(room)
        for leg in legs:
            leg.room_id = None
            session = self._sessions.get(leg.session_id)
            if session is not None:
                self._plan(session, self._mix.last_tick)

    def join(
        self,
        room_id: str,
        session_id: str,
        leg_name: str,
        media: LegMedia,
        now: float,
        *,
        muted: bool = False,
    ) -> None:
        room = self._mix.room(room_id)
        if not room.conference:
            raise RoomError(f"no room {room_id!r}")
        session = self._session(session_id)
        leg = session.legs.get(leg_name)
        if leg is None:
            raise KeyError(f"leg {leg_name!r} of session {session_id!r} was never allocated")
        if not decodable(media.codec.name):
            raise PlanError(f"no media path from {media.codec.name} to a room yet")
        self._apply(leg, media, now)
        leg.room_id = room_id
        self._plan(session, now)  # out of its call, if it was in one
        self._mix_add(leg, room, now, muted=muted)

    def leave(self, session_id: str, leg_name: str) -> None:
        session = self._sessions.get(session_id)
        leg = session.legs.get(leg_name) if session is not None else None
        if session is None or leg is None or leg.room_id is None:
            return
        self._mix_remove(leg)
        leg.room_id = None
        self._plan(session, self._mix.last_tick)

    def mute(self, session_id: str, leg_name: str, on: bool) -> None:
        self._mix.mute(self._leg(session_id, leg_name), on)

    def _muted(self, leg: Leg) -> bool:
        return leg.mix is not None and self._mix.mixer.muted(leg)

    def play(
        self, target: Target, audio: Audio, *, loop: bool = False, play_id: int | None = None
    ) -> int:
        """``play_id``: the id to use, for callers that cannot wait for the answer (a
        worker pool numbers playbacks itself); by default the engine numbers them."""
        return self._mix.play(target, audio, self._leg, loop=loop, play_id=play_id)

    def stop_play(self, play_id: int) -> None:
        self._mix.stop_play(play_id)

    def record(self, target: Target, path: str | Path, *, record_id: int | None = None) -> int:
        return self._mix.record(target, path, self._leg, record_id=record_id)

    def stop_record(self, record_id: int) -> None:
        self._mix.stop_record(record_id)

    def send_dtmf(
        self, session_id: str, leg_name: str, digits: str, *, duration_ms: int = 100
    ) -> None:
        self._mix.send_dtmf(self._leg(session_id, leg_name), digits, duration_ms)

    def list_rooms(self) -> list[RoomInfo]:
        out = []
        mixer = self._mix.mixer
        for room in self._mix.rooms.values():
            if not room.conference:
                continue
            members = tuple(
                RoomMember(leg.session_id, leg.name, mixer.muted(leg), m.codec)
                for leg, m in room.members.items()
            )
            spk = mixer.speakers.get(room.room_id)
            out.append(
                RoomInfo(
                    room.room_id,
                    room.mix,
                    members,
                    (spk.session_id, spk.name) if isinstance(spk, Leg) else None,
                    tuple(sorted(room.plays)),
                    tuple(sorted(room.records)),
                )
            )
        return out

    def _leg(self, session_id: str, leg_name: str) -> Leg:
        leg = self._session(session_id).legs.get(leg_name)
        if leg is None:
            raise KeyError(f"leg {leg_name!r} of session {session_id!r} was never allocated")
        return leg


def _call_room(session_id: str) -> tuple[str, str]:
    """Key of the room of two that carries a transcoded G.711 <-> Opus call."""
    return ("call", session_id)


def _needs_decoding(a: Leg, b: Leg) -> bool:
    ca, cb = a.media.codec, b.media.codec  # type: ignore[union-attr]
    return (
        not same_codec(ca, cb)
        and (is_opus(ca.name) or is_opus(cb.name))
        and decodable(ca.name)
        and decodable(cb.name)
    )


def _route_between(src: Leg, dst: Leg) -> Route | None:
    route = dst.feeder
    return route if route is not None and route.src is src else None
