"""Per-leg and per-direction media state, and the rules that plan a session. Pure.

A :class:`Leg` is one phone's side of a session: the switch's port pair, what was
negotiated, where the phone is (its :class:`~softswitch.media.latch.Latch`) and the
switch's own outgoing stream toward it. The switch is the RTP source toward each phone:
it sends under the leg's own SSRC, chosen once at allocation, and keeps that stream's
sequence numbers and timestamps continuous whatever happens on the far side (a new
SSRC, a restarted sequence, a re-INVITE, another leg replacing the far one).

A :class:`Route` is one direction, from the phone of ``src`` to the phone of ``dst``. It
maps the far side's header into the destination's stream:
``out_seq = in_seq + seq_off`` and ``out_ts = in_ts + ts_off`` (modulo 2**16 / 2**32),
so forwarding needs no per-packet state beyond "is this still the same source". When it
is not (new SSRC, a sequence jump beyond RFC 3550's dropout/misorder limits, or the
route is not the one that last fed ``dst``), :func:`resync` picks new offsets so that the
outgoing stream goes on from where it was: next sequence number, timestamp advanced by
the real time elapsed (rounded to whole frames), marker bit set on that packet.

Directions follow the brief given to the media engine: the ``Direction`` of a leg is the
phone's own SDP attribute. ``sendonly`` (the phone put the call on hold, it may send
music) and ``inactive`` get no media; ``recvonly`` gets media but sends none. Only a
``sendrecv`` leg is expected to send, so only such a leg is subject to the media timeout.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from softswitch.media.controller import Codec, Direction, LegMedia, MediaEndpoint
from softswitch.media.latch import Address, Latch
from softswitch.media.transcode import law_of

MAX_DROPOUT = 3000  # RFC 3550 A.1: a forward jump larger than this is a restart
MAX_MISORDER = 100  # and a step back larger than this one too


def _unbound(data: object) -> int:
    raise OSError("socket not connected")


def sends_to_phone(direction: Direction) -> bool:
    return direction in (Direction.SENDRECV, Direction.RECVONLY)


def phone_sends(direction: Direction) -> bool:
    return direction in (Direction.SENDRECV, Direction.SENDONLY)


def watched_for_timeout(direction: Direction) -> bool:
    return direction is Direction.SENDRECV


class Leg:
    """One phone's side of a session. ``rtp``/``rtcp`` are whatever the engine's I/O
    layer uses for sockets; this module never touches them."""

    __slots__ = (
        "_dtmf_end_ts",
        "clock_rate",
        "codec_pt",
        "connected",
        "dest",
        "endpoint",
        "feeder",
        "frame",
        "last_rx",
        "latch",
        "latched",
        "media",
        "mix",
        "name",
        "out_seq",
        "out_time",
        "out_ts",
        "partner",
        "port",
        "recv_ok",
        "recv_into",
        "route",
        "rtcp",
        "room_id",
        "rtp",
        "send",
        "send_ok",
        "session_id",
        "ssrc",
        "started",
        "te_pt",
        "timed_out",
        "timer_due",
        "watch",
    )

    def __init__(
        self,
        session_id: str,
        name: str,
        endpoint: MediaEndpoint,
        rtp: object = None,
        rtcp: object = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.session_id = session_id
        self.name = name
        self.endpoint = endpoint
        self.port = endpoint.port
        self.rtp = rtp
        self.rtcp = rtcp
        self.ssrc = rng.getrandbits(32)
        # RFC 3550 5.1: initial sequence number and timestamp should be random.
        self.out_seq = rng.getrandbits(16)
        self.out_ts = rng.getrandbits(32)
        self.out_time = 0.0
        self.started = False  # nothing sent toward this phone yet
        self.feeder: Route | None = None  # the route that last sent toward this phone
        self.media: LegMedia | None = None
        self.latch = Latch()
        self.latched: Address | None = None  # mirror of latch.latched for the hot path
        self.dest: Address | None = None  # where RTP toward this phone goes now
        self.connected = False  # the engine connected the RTP socket to ``latched``
        # Bound methods of the connected socket, set by the engine (hot path).
        self.recv_into: Callable[[memoryview], int] = _unbound
        self.send: Callable[[memoryview | bytes | bytearray], int] = _unbound
        self.partner: Leg | None = None
        self.route: Route | None = None  # carries this phone's packets, None if dropped
        self.codec_pt = -1
        self.te_pt = -1
        self.clock_rate = 8000
        self.frame = 160
        self.send_ok = False
        self.recv_ok = False
        self.watch = False
        self.last_rx = 0.0
        self.timed_out = False
        self.timer_due: float | None = None  # the engine's media-timeout deadline
        self._dtmf_end_ts = -1
        # The decoded path (:mod:`.rooms`): state while the leg is mixed in a room, and
        # the conference room it was put in (None when relayed, or in a call's room).
        self.mix: Any = None
        self.room_id: str | None = None

    def __repr__(self) -> str:
        return f"Leg({self.session_id!r}, {self.name!r}, port={self.port})"

    def apply(self, media: LegMedia, now: float, latch_window: float) -> None:
        """Take a (re)negotiated LegMedia. The latch survives unless the address changed."""
        old = self.media
        sdp = None
        if media.remote_host is not None and media.remote_port is not None:
            sdp = (media.remote_host, media.remote_port)
        expected = {media.codec.payload_type}
        if media.telephone_event is not None:
            expected.add(media.telephone_event.payload_type)
        old_sdp = None
        if old is not None and old.remote_host is not None and old.remote_port is not None:
            old_sdp = (old.remote_host, old.remote_port)
        if old is None or sdp != old_sdp:
            self.latch.reset(sdp, frozenset(expected), now, latch_window)
        else:
            self.latch.set_expected(frozenset(expected))
        self.media = media
        self.codec_pt = media.codec.payload_type
        self.te_pt = media.telephone_event.payload_type if media.telephone_event else -1
        self.clock_rate = media.codec.clock_rate
        self.frame = max(1, media.codec.clock_rate * media.ptime_ms // 1000)
        self.send_ok = sends_to_phone(media.direction)
        self.recv_ok = phone_sends(media.direction)
        watch = watched_for_timeout(media.direction)
        if watch and (not self.watch or self.timed_out):
            # The timer (re)starts when media is (again) expected.
            self.last_rx = now
        self.watch = watch
        self.timed_out = False
        self.sync_latch()

    def sync_latch(self) -> None:
        """Refresh the hot-path mirrors of the latch."""
        self.latched = self.latch.latched
        self.dest = self.latch.target

    def take_stream(self, now: float) -> tuple[int, int]:
        """The sequence number and timestamp of the next packet toward this phone, for
        a sender taking over the stream (the mixer): it goes on from the last packet
        sent, whoever sent it, with the timestamp advanced by the time elapsed."""
        if not self.started:
            self.started = True
            self.feeder = None
            return self.out_seq, self.out_ts
        prev = self.feeder
        if prev is not None:
            self.out_seq = (prev.last_seq + prev.seq_off) & 0xFFFF
            self.out_ts = (prev.last_ts + prev.ts_off) & 0xFFFFFFFF
            self.out_time = prev.last_time
            self.feeder = None
        gap = max(1, round((now - self.out_time) * self.clock_rate / self.frame)) * self.frame
        return (self.out_seq + 1) & 0xFFFF, (self.out_ts + gap) & 0xFFFFFFFF

    def give_stream(self, last_seq: int, last_ts: int, last_time: float) -> None:
        """The mixer stops sending: record its last packet, so whoever sends next (a
        relay route's resync, or the mixer again) goes on from there."""
        self.out_seq = last_seq & 0xFFFF
        self.out_ts = last_ts & 0xFFFFFFFF
        self.out_time = last_time
        self.feeder = None

    def dtmf_end(self, event_ts: int) -> bool:
        """True the first time an RFC 4733 end packet with this timestamp is seen (the
        sender repeats the last packet of an event three times)."""
        if event_ts == self._dtmf_end_ts:
            return False
        self._dtmf_end_ts = event_ts
        return True


class PlanError(ValueError):
    """The negotiated media cannot be served by this engine."""


class Route:
    """One direction of a two-leg session: packets of ``src``'s phone to ``dst``'s."""

    __slots__ = (
        "audio_in_pt",
        "audio_out_pt",
        "dst",
        "dst_law",
        "in_ssrc",
        "last_seq",
        "last_time",
        "last_ts",
        "mark",
        "out_ssrc",
        "seq_off",
        "src",
        "src_law",
        "te_in_pt",
        "te_out_pt",
        "transcode",
        "ts_off",
    )

    def __init__(self, src: Leg, dst: Leg) -> None:
        self.src = src
        self.dst = dst
        self.out_ssrc = dst.ssrc
        self.in_ssrc = -1  # no packet seen yet: the first one resyncs
        self.seq_off = 0
        self.ts_off = 0
        self.last_seq = 0
        self.last_ts = 0
        self.last_time = 0.0
        self.mark = False
        self.audio_in_pt = self.audio_out_pt = -1
        self.te_in_pt = self.te_out_pt = -1
        self.transcode = False
        self.src_law = self.dst_law = 0

    def plan(self) -> None:
        """Relay when both legs use the same codec, transcode G.711 when they differ."""
        a, b = self.src.media, self.dst.media
        assert a is not None and b is not None
        self.audio_in_pt = a.codec.payload_type
        self.audio_out_pt = b.codec.payload_type
        self.transcode = not same_codec(a.codec, b.codec)
        if self.transcode:
            src_law, dst_law = law_of(a.codec.name), law_of(b.codec.name)
            if src_law is None or dst_law is None:
                raise PlanError(f"no media path from {a.codec.name} to {b.codec.name} yet")
            self.src_law, self.dst_law = src_law, dst_law
        self.te_in_pt = a.telephone_event.payload_type if a.telephone_event else -1
        self.te_out_pt = b.telephone_event.payload_type if b.telephone_event else -1

    def resync(self, seq: int, ts: int, ssrc: int, now: float) -> None:
        """New offsets so ``dst``'s outgoing stream continues (module docstring)."""
        dst = self.dst
        if dst.started:
            prev = dst.feeder
            if prev is not None:
                # Offsets are applied lazily, so the last packet sent is derived from
                # the route that sent it.
                dst.out_seq = (prev.last_seq + prev.seq_off) & 0xFFFF
                dst.out_ts = (prev.last_ts + prev.ts_off) & 0xFFFFFFFF
                dst.out_time = prev.last_time
            frame = dst.frame
            gap = max(1, round((now - dst.out_time) * dst.clock_rate / frame)) * frame
            target_seq = (dst.out_seq + 1) & 0xFFFF
            target_ts = (dst.out_ts + gap) & 0xFFFFFFFF
        else:
            target_seq, target_ts = dst.out_seq, dst.out_ts
            dst.started = True
        self.seq_off = (target_seq - seq) & 0xFFFF
        self.ts_off = (target_ts - ts) & 0xFFFFFFFF
        self.in_ssrc = ssrc
        self.last_seq = seq
        self.last_ts = ts
        self.last_time = now
        self.mark = True
        dst.feeder = self


def same_codec(a: Codec, b: Codec) -> bool:
    return (
        a.name.lower() == b.name.lower()
        and a.clock_rate == b.clock_rate
        and a.channels == b.channels
    )


@dataclass(frozen=True, slots=True)
class LegStats:
    session_id: str
    leg: str
    port: int
    latched: Address | None
    dest: Address | None
    ssrc: int
