"""The engine's decoded path: rooms of legs, mixed once per tick for all rooms together.

Legs whose media must be decoded (conference rooms, lobbies, and two-leg calls that
need Opus transcoding, which are rooms of two) are served here rather than by the
relay routes of :mod:`.stream`. The engine reads their G.711 packets straight into a
staging area (one slot per packet, plus its leg's row, length, arrival time and epoch:
no header is looked at per packet), hands over anything else one packet at a time
(:meth:`MixStage.receive`), and calls :meth:`MixStage.tick` every 20 ms, which runs one
pass over every leg of every room:

0. check the staged headers all at once and file the plain packets into the jitter
   buffers in one batch; the few others (telephone-events, a new SSRC, other packet
   sizes) go through :meth:`MixStage.receive`;
1. pull each leg's due frame from its jitter buffer: one gather for all G.711 legs
   (:class:`~.jitter.JitterBank`), per leg for Opus (variable-size packets);
2. decode: one table look-up for all G.711 rows (mu-law and A-law together), G.711
   concealment (swcodecs' PLC) for the lost rows only, one libopus call per Opus leg
   (libopus conceals, or rebuilds a lost frame from the next packet's FEC);
3. mix every room (:class:`~.mixer.Mixer`), with prompts and tones added;
4. encode: one table look-up for all G.711 rows, straight into the outgoing packets,
   whose headers are written for all legs by a few array operations, one libopus call
   per Opus leg; and send: one ``sendmmsg`` per 1,024 packets through a raw socket
   where the engine may (:mod:`.rawsend`), otherwise one system call per leg (each leg
   has its own socket);
5. only then what does not change the audio: in-band DTMF detection on the G.711 rows
   of legs without telephone-event (all at once), loudest talkers, recordings. Work
   that varies from tick to tick stays after the send, so packets leave at a steady
   time.

The rows of every per-tick array are the mixer's participant order, so nothing is
reordered between the steps. A Python loop remains only where each element costs a
system call or a libopus call anyway.

The switch is the RTP source toward each leg, as on the relay path: its own SSRC, a
sequence number and timestamp that go on where the leg's previous stream (relayed or
mixed) stopped.
"""

from __future__ import annotations

import struct
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from softswitch.media import jitter
from softswitch.media.audiofile import Recorder, load_audio
from softswitch.media.conference import (
    ActiveSpeaker,
    Audio,
    LegRef,
    PlaybackDone,
    RoomError,
    RoomRef,
    Target,
)
from softswitch.media.controller import Direction, DtmfReceived, MediaEvent
from softswitch.media.dtmf import Digit, EventReceiver, ToneDetector, event_packets
from softswitch.media.dtmf import tone as dtmf_tone
from softswitch.media.mixer import Mixer
from softswitch.media.rawsend import RawSender, ipv4
from softswitch.media.rtp import payload_end, payload_offset
from softswitch.media.stream import Leg, PlanError
from softswitch.media.tones import Playback
from softswitch.media.transcode import decode_rows, encode_rows, law_of
from swcodecs import plc
from swcodecs.opus import MAX_PACKET, OpusDecoder, OpusEncoder

FRAME: Final = 160  # samples per tick at 8 kHz, the mixer's rate
_HDR = struct.Struct("!BBHII")
_PKT: Final = 12 + FRAME
# The settings Opus legs are encoded with (as in bench_codecs): speech at 24 kbit/s,
# in-band FEC against 5 % loss.
OPUS_SETTINGS: Final = {"bitrate": 24000, "complexity": 5, "fec": True, "expected_loss_pct": 5}
_HISTORY: Final = 3  # frames of decoded G.711 kept per row for concealment
RX_SLOT: Final = 256  # staged packet size: longer ones are cut, then refused
_PLC_STARTS: Final = 256  # streams that may start concealing in one tick


def is_opus(name: str) -> bool:
    return name.lower() == "opus"


def decodable(name: str) -> bool:
    return is_opus(name) or law_of(name) is not None


class MixLeg:
    """A leg's state on the decoded path."""

    __slots__ = (
        "codec",
        "dec",
        "dtmf",
        "enc",
        "event_ts",
        "frame_ts",
        "in_ssrc",
        "inband",
        "leg",
        "law",
        "media",
        "opus",
        "pending",
        "pt",
        "epoch",
        "room",
        "row",
        "seq",
        "take_input",
        "te_pt",
        "ts",
        "mark",
    )

    def __init__(self, leg: Leg, room: Room) -> None:
        media = leg.media
        assert media is not None
        self.leg = leg
        self.media = media  # as negotiated when the leg joined: a change means re-adding
        self.codec = media.codec.name
        self.room = room
        self.pt = media.codec.payload_type
        self.te_pt = media.telephone_event.payload_type if media.telephone_event else -1
        self.opus = is_opus(media.codec.name)
        self.law = law_of(media.codec.name) or 0
        # RTP timestamp units per 20 ms: Opus always counts at 48 kHz (RFC 7587).
        self.frame_ts = media.codec.clock_rate // 50
        self.row = -1
        self.epoch = 0  # tells this leg's received packets from a later owner's of the row
        self.in_ssrc = -1
        self.dtmf = EventReceiver(
            media.telephone_event.clock_rate if media.telephone_event else 8000
        )
        self.inband = not self.opus and self.te_pt < 0
        self.dec: OpusDecoder | None = None
        self.enc: OpusEncoder | None = None
        # No music on hold into a conference; between two parties it passes.
        self.take_input = leg.recv_ok and not (
            room.conference and media.direction is Direction.SENDONLY
        )
        self.seq = 0
        self.ts = 0
        self.mark = True
        # Telephone-events to send, one per tick: (payload, marker); None for a tick of
        # audio between two digits.
        self.pending: deque[tuple[bytes, bool] | None] = deque()
        self.event_ts = 0


@dataclass(eq=False)
class Room:
    room_id: str
    mix: bool = True
    conference: bool = True  # False for the hidden room of a two-leg transcoded call
    members: dict[Leg, MixLeg] = field(default_factory=dict)
    plays: set[int] = field(default_factory=set)
    records: set[int] = field(default_factory=set)


class _Concealer:
    """G.711 loss concealment for jitter-bank rows, paying only for lost rows.

    swcodecs' PLC keeps 48.75 ms of history per stream and shifts it every frame; for
    thousands of streams that shift would cost more than the mixing. Here every row's
    last three decoded frames sit in a ring written in place (one scatter per tick), and
    the PLC state of a row is filled from the ring only when its loss begins."""

    def __init__(self, rows: int) -> None:
        self._alloc(rows)
        self._tick = 0

    def _alloc(self, rows: int) -> None:
        self.rows = rows
        self.ring = np.zeros((_HISTORY, rows, FRAME), np.int16)
        self.state = plc.PlcState(rows)

    def grow(self, rows: int) -> None:
        if rows <= self.rows:
            return
        old_ring, old_state, n = self.ring, self.state, self.rows
        self._alloc(rows)
        self.ring[:, :n] = old_ring
        for name in ("history", "period_buf", "pitch", "elapsed"):
            getattr(self.state, name)[:n] = getattr(old_state, name)

    def reset(self, row: int) -> None:
        self.ring[:, row] = 0
        self.state.elapsed[row] = 0

    def process(
        self, pcm: npt.NDArray[np.int16], rows: npt.NDArray[np.intp], status: np.ndarray
    ) -> None:
        """``pcm`` rows decoded for bank ``rows``; LOST rows are concealed, SILENT rows
        zeroed, rows ending a loss smoothed, in place."""
        st = self.state
        lost = status == jitter.LOST
        silent = status == jitter.SILENT
        good = ~lost & ~silent
        if silent.any():
            pcm[silent] = 0
            st.elapsed[rows[silent]] = 0
        recovering = good & (st.elapsed[rows] > 0)
        if recovering.any():
            pcm[recovering] = plc.receive(st, pcm[recovering], rows[recovering])
        if lost.any():
            lr = rows[lost]
            starting = lr[st.elapsed[lr] == 0]
            if starting.size > _PLC_STARTS:
                # Thousands of streams losing a packet at once (the network, or this
                # process, stalled): starting concealment for all of them would make this
                # tick late too. The rows over budget get silence for this frame.
                over = np.isin(rows, starting[_PLC_STARTS:]) & lost
                pcm[over] = 0
                lost &= ~over
                lr = rows[lost]
                starting = starting[:_PLC_STARTS]
            if starting.size:
                # The ring in time order, oldest first, and its last 48.75 ms.
                order = [(self._tick + 1 + i) % _HISTORY for i in range(_HISTORY)]
                hist = np.concatenate([self.ring[k, starting] for k in order], axis=1)
                st.history[starting] = hist[:, -st.history.shape[1] :]
            pcm[lost] = plc.conceal(st, lr, FRAME)
        self.ring[self._tick % _HISTORY, rows] = pcm
        self._tick += 1


class MixStage:
    """Rooms and the per-tick pass over them (module docstring). Driven by the engine;
    ``events`` is the engine's event list."""

    def __init__(
        self,
        events: list[MediaEvent],
        *,
        tick: float = 0.020,
        raw: RawSender | None = None,
        src_ip: int = -1,
        resolution: float = 0.001,
    ) -> None:
        self.events = events
        # Batched sends through a raw socket (:mod:`.rawsend`), for IPv4 legs when the
        # engine's own address is IPv4 (``src_ip``; 0 for a wildcard bind).
        self.raw = raw if src_ip >= 0 else None
        self._src_ip = src_ip
        self.tick_s = tick
        self.rooms: dict[str, Room] = {}
        self.mixer = Mixer(FRAME)
        self.g711 = jitter.JitterBank(
            64, width=FRAME, frame=FRAME, clock_rate=8000, tick=tick, resolution=resolution
        )
        self.opus = jitter.JitterBank(
            4,
            width=MAX_PACKET,
            frame=960,
            clock_rate=48000,
            tick=tick,
            staging=16,
            resolution=resolution,
        )
        # A row that never receives anything: Opus legs point at it in the G.711 pull,
        # so that one gather covers every participant in mixer order.
        self._silent_row = self.g711.open()
        self._conceal = _Concealer(self.g711.capacity)
        self._tones = ToneDetector(self.g711.capacity)
        self._plays: dict[int, tuple[Target, Playback]] = {}
        self._records: dict[int, tuple[Target, Recorder]] = {}
        self._next_id = 1
        self._version = -1
        self._pos_of: dict[MixLeg, int] = {}
        self._by_ref: dict[tuple[str, str], Leg] = {}
        self._dtmf_waiting: set[MixLeg] = set()  # legs with an event under way
        self._send_dirty = True  # who goes by the fast send loop must be worked out again
        # Received G.711 packets wait here for the tick, whole, as the socket gave them:
        # the engine reads each one straight into a slot and notes four numbers, and
        # the headers are checked at the tick for all packets at once.
        self.rx_n = 0
        self.rx_cap = 0
        self._epoch = 0
        self._grow_rx(1024)
        self._row_meta(self.g711.capacity)
        self._by_row: dict[int, MixLeg] = {}
        self.sent = 0
        self.dropped = 0
        self.send_errors = 0

    def _grow_rx(self, size: int) -> None:
        n = self.rx_n
        rx = np.zeros((size, RX_SLOT), np.uint8)
        meta = [array(code, bytes(8 * size)) for code in "qqdq"]
        if self.rx_cap:
            rx[:n] = self.rx[:n]
            for new, old in zip(
                meta, (self.rx_row, self.rx_len, self.rx_t, self.rx_epoch), strict=True
            ):
                new[:n] = old[:n]
        self.rx = rx
        flat = memoryview(rx.reshape(-1))
        self.rx_views = [flat[i * RX_SLOT : (i + 1) * RX_SLOT] for i in range(size)]
        self.rx_row, self.rx_len, self.rx_t, self.rx_epoch = meta
        self.rx_cap = size

    def grow_rx(self, need: int) -> None:
        """Make room for ``need`` staged packets (more than a tick's worth so far)."""
        self._grow_rx(max(need, 2 * self.rx_cap))

    def _row_meta(self, rows: int) -> None:
        """What the tick checks received headers against, per G.711 bank row."""
        old = getattr(self, "_row_pt", None)
        arrays = {
            "_row_pt": np.full(rows, -1, np.int64),
            "_row_ssrc": np.full(rows, -1, np.int64),
            "_row_take": np.zeros(rows, bool),
            "_row_epoch": np.full(rows, -1, np.int64),
        }
        if old is not None:
            n = len(old)
            for name, arr in arrays.items():
                arr[:n] = getattr(self, name)
        for name, arr in arrays.items():
            setattr(self, name, arr)

    def last_heard(self, leg: Leg) -> float:
        """When a packet of ``leg`` last arrived, staged packets included."""
        m = leg.mix
        if m is None or m.opus:
            return leg.last_rx
        return max(leg.last_rx, self.g711.last_arrival(m.row), self._staged_at(m))

    def _staged_at(self, m: MixLeg) -> float:
        # Only asked when a media timeout comes due: a scan of one tick's packets.
        rows = np.frombuffer(self.rx_row, np.int64, self.rx_n)
        hit = np.flatnonzero(rows == m.row)
        return float(self.rx_t[int(hit[-1])]) if hit.size else -np.inf

    # --- membership ---------------------------------------------------------------------

    def room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            raise RoomError(f"no room {room_id!r}")
        return room

    def add(self, leg: Leg, room: Room, now: float, *, muted: bool = False) -> None:
        """Serve ``leg`` (already applied with its media) in ``room``."""
        media = leg.media
        assert media is not None
        if not decodable(media.codec.name):
            raise PlanError(f"no media path from {media.codec.name} to a room yet")
        if leg.mix is not None:
            self.remove(leg)
        m = MixLeg(leg, room)
        if m.opus:
            m.row = self.opus.open()
            m.dec = OpusDecoder(8000)
            m.enc = OpusEncoder(8000, **OPUS_SETTINGS)  # type: ignore[arg-type]
        else:
            m.row = self.g711.open()
            self._conceal.grow(self.g711.capacity)
            self._conceal.reset(m.row)
            self._tones.reset(m.row)
            if m.row >= len(self._row_pt):
                self._row_meta(self.g711.capacity)
            self._epoch += 1
            m.epoch = self._epoch
            self._row_pt[m.row] = m.pt
            self._row_ssrc[m.row] = -1
            self._row_take[m.row] = m.take_input
            self._row_epoch[m.row] = m.epoch
            self._by_row[m.row] = m
        m.seq, m.ts = leg.take_stream(now)
        room.members[leg] = m
        leg.mix = m
        self._by_ref[(leg.session_id, leg.name)] = leg
        self.mixer.join(leg, room.room_id, muted=muted or not room.mix)

    def remove(self, leg: Leg) -> None:
        m = leg.mix
        if m is None:
            return
        self._sync_leg(m)
        leg.give_stream(m.seq - 1, m.ts - m.frame_ts, self.last_tick)
        self._by_ref.pop((leg.session_id, leg.name), None)
        (self.opus if m.opus else self.g711).close(m.row)
        if not m.opus:
            self._row_epoch[m.row] = -1
            self._by_row.pop(m.row, None)
        for coder in (m.dec, m.enc):
            if coder is not None:
                coder.close()
        del m.room.members[leg]
        leg.mix = None
        self._dtmf_waiting.discard(m)
        self.mixer.leave(leg)
        for pid, (target, _) in list(self._plays.items()):
            if isinstance(target, LegRef) and (target.session_id, target.leg) == (
                leg.session_id,
                leg.name,
            ):
                self._end_play(pid, completed=False)
        for rid, (target, _) in list(self._records.items()):
            if isinstance(target, LegRef) and (target.session_id, target.leg) == (
                leg.session_id,
                leg.name,
            ):
                self.stop_record(rid)

    def mute(self, leg: Leg, on: bool) -> None:
        m = leg.mix
        if m is None:
            raise RoomError(f"{leg!r} is in no room")
        if not m.room.mix:
            return  # nobody is heard in a room that does not mix
        self.mixer.mute(leg, on)

    def destroy(self, room: Room) -> None:
        for leg in list(room.members):
            self.remove(leg)
        for pid in list(room.plays):
            self._end_play(pid, completed=False)
        for rid in list(room.records):
            self.stop_record(rid)
        self.rooms.pop(room.room_id, None)

    # --- playback and recording -------------------------------------------------------

    def _target_room(self, target: Target, legs: Callable[[str, str], Leg]) -> Room:
        if isinstance(target, RoomRef):
            return self.room(target.room_id)
        leg = legs(target.session_id, target.leg)
        if leg.mix is None:
            raise RoomError(f"{leg!r} is in no room")
        return leg.mix.room

    def _new_id(self, wanted: int | None) -> int:
        if wanted is not None:
            if wanted in self._plays or wanted in self._records:
                raise ValueError(f"playback/recording id {wanted} is in use")
            self._next_id = max(self._next_id, wanted + 1)
            return wanted
        pid = self._next_id
        self._next_id += 1
        return pid

    def play(
        self,
        target: Target,
        audio: Audio,
        legs: Callable[[str, str], Leg],
        *,
        loop: bool,
        play_id: int | None = None,
    ) -> int:
        room = self._target_room(target, legs)
        samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        pid = self._new_id(play_id)
        self._plays[pid] = (target, Playback(np.asarray(samples, np.int16), loop=loop))
        room.plays.add(pid)
        return pid

    def stop_play(self, pid: int) -> None:
        if pid in self._plays:
            self._end_play(pid, completed=False)

    def _end_play(self, pid: int, *, completed: bool) -> None:
        self._plays.pop(pid, None)
        for room in self.rooms.values():
            room.plays.discard(pid)
        self.events.append(PlaybackDone(pid, completed))

    def record(
        self,
        target: Target,
        path: str | Path,
        legs: Callable[[str, str], Leg],
        *,
        record_id: int | None = None,
    ) -> int:
        room = self._target_room(target, legs)
        rid = self._new_id(record_id)
        self._records[rid] = (target, Recorder(path))
        room.records.add(rid)
        return rid

    def stop_record(self, rid: int) -> None:
        entry = self._records.pop(rid, None)
        if entry is None:
            return
        for room in self.rooms.values():
            room.records.discard(rid)
        entry[1].close()

    def playing(self, room: Room) -> tuple[int, ...]:
        return tuple(sorted(room.plays))

    def close(self) -> None:
        for rid in list(self._records):
            self.stop_record(rid)
        if self.raw is not None:
            self.raw.close()

    # --- DTMF out -------------------------------------------------------------------------

    def send_dtmf(self, leg: Leg, digits: str, duration_ms: int) -> None:
        m = leg.mix
        if m is None:
            raise RoomError(f"{leg!r} is in no room")
        if m.te_pt < 0:
            # No telephone-event negotiated: the digits go in the audio, to this leg.
            gap = np.zeros(8 * 60, np.int16)
            audio = np.concatenate([x for d in digits for x in (dtmf_tone(d, duration_ms), gap)])
            pid = self._new_id(None)
            self._plays[pid] = (LegRef(leg.session_id, leg.name), Playback(audio))
            m.room.plays.add(pid)
            return
        media = leg.media
        assert media is not None and media.telephone_event is not None
        rate = media.telephone_event.clock_rate
        for d in digits:
            for p in event_packets(d, duration_ms, clock_rate=rate):
                m.pending.append((p.payload, p.marker))
            m.pending.extend([None] * 3)  # 60 ms of audio between digits
        self._send_dirty = True

    # --- packets in -------------------------------------------------------------------

    def receive(
        self, m: MixLeg, buf: bytearray | memoryview, view: memoryview, n: int, now: float
    ) -> None:
        """One RTP packet of a leg in a room, read into ``buf`` (``view`` is a
        memoryview of it); at least 12 bytes long."""
        b0 = buf[0]
        pt = buf[1] & 0x7F
        m.leg.last_rx = now
        if b0 & 0xC0 != 0x80:
            self.dropped += 1
            return
        if pt == m.pt:
            if not m.take_input:
                return
            _, _, seq, ts, ssrc = _HDR.unpack_from(buf)
            if ssrc != m.in_ssrc:
                if m.in_ssrc >= 0:
                    (self.opus if m.opus else self.g711).restart(m.row)
                m.in_ssrc = ssrc
                if not m.opus:
                    self._row_ssrc[m.row] = ssrc
            if b0 == 0x80 and n == _PKT and not m.opus:
                # The common case: G.711, 20 ms, no CSRC, extension or padding.
                self.g711.put(m.row, seq, ts, view[12:_PKT], now)
                return
            start = payload_offset(buf, n)
            end = payload_end(buf, n)
            if start < 0 or end < start:
                self.dropped += 1
            elif m.opus and end - start <= MAX_PACKET:
                self.opus.put(m.row, seq, ts, view[start:end], now)
            elif not m.opus and end - start == FRAME:
                self.g711.put(m.row, seq, ts, view[start:end], now)
            else:
                self.dropped += 1  # another packet time than 20 ms is not handled yet
        elif pt == m.te_pt:
            start = payload_offset(buf, n)
            end = payload_end(buf, n)
            if start < 0 or end < start:
                return
            ts = _HDR.unpack_from(buf)[3]
            for d in m.dtmf.packet(ts, bytes(buf[start:end]), now):
                self._digit(m, d)
            if m.dtmf.pending:
                self._dtmf_waiting.add(m)
        else:
            self.dropped += 1

    # --- the tick -------------------------------------------------------------------------

    last_tick = 0.0

    def _layout(self) -> None:
        """Per-participant arrays in mixer order, rebuilt when membership changes."""
        self._sync_out()
        mixer = self.mixer
        legs: list[Leg] = mixer.keys  # type: ignore[assignment]
        ms: list[MixLeg] = [leg.mix for leg in legs]  # type: ignore[misc]
        p = len(ms)
        self._legs = legs
        self._ms = ms
        self._g_rows = np.array([self._silent_row if m.opus else m.row for m in ms], np.intp)
        self._laws = np.array([m.law for m in ms], np.uint16)
        g = [i for i, m in enumerate(ms) if not m.opus]
        self._g_pos = np.array(g, np.intp)
        self._opus_pos = [i for i, m in enumerate(ms) if m.opus]
        inband = [i for i, m in enumerate(ms) if m.inband]
        self._inband_pos = np.array(inband, np.intp)
        self._inband_rows = self._g_rows[self._inband_pos]
        self._codes = np.empty((p, FRAME), np.uint8)
        self._pcm = np.empty((p, FRAME), np.int16)
        self._heard = np.empty((p, FRAME), np.int16)
        self._pkt = np.zeros((p, _PKT), np.uint8)
        self._pkt[:, 0] = 0x80
        self._pkt[:, 8:12] = (
            np.array([m.leg.ssrc for m in ms], np.uint32).astype(">u4").view(np.uint8).reshape(p, 4)
        )
        self._pt = np.array([m.pt for m in ms], np.uint8)
        self._seq = np.array([m.seq for m in ms], np.int64)
        self._ts = np.array([m.ts for m in ms], np.int64)
        self._mark = np.array([0x80 if m.mark else 0 for m in ms], np.uint8)
        self._frame_ts = np.array([m.frame_ts for m in ms], np.int64)
        flat = memoryview(self._pkt.reshape(-1))
        self._views = [flat[i * _PKT : (i + 1) * _PKT] for i in range(p)]
        self._pos_of = {m: i for i, m in enumerate(ms)}
        self._send_dirty = True
        self._opus_rows = np.array([ms[i].row for i in self._opus_pos], np.intp)
        self._version = mixer.version

    def _sync_out(self) -> None:
        """Write the per-tick arrays' outgoing sequence numbers and timestamps back to
        the legs (before the layout changes)."""
        for m in self._pos_of:
            self._sync_leg(m)

    def _sync_leg(self, m: MixLeg) -> None:
        i = self._pos_of.get(m)
        if i is not None and m.leg.mix is m:
            m.seq = int(self._seq[i])
            m.ts = int(self._ts[i])
            m.mark = bool(self._mark[i])

    def tick(self, now: float) -> None:
        self.last_tick = now
        mixer = self.mixer
        if not len(mixer):
            self.rx_n = 0  # packets of legs that have left since
            self._tick_plays_without_rooms()
            return
        mixer.keys  # noqa: B018 (rebuilds the mixer's layout if membership changed)
        if mixer.version != self._version:
            self._layout()
        ms = self._ms
        pcm = self._pcm
        if self.rx_n:
            self._file_received(now)
        # 1-2. G.711: one gather, one decode, concealment for the lost rows only.
        status, codes, _ = self.g711.pull(self._g_rows, now, out=self._codes)
        decode_rows(codes, self._laws, pcm)
        self._conceal.process(pcm, self._g_rows, status)
        # Opus: libopus per leg.
        if self._opus_pos:
            self._decode_opus(now)
        # 3. Mix, with what is played.
        inject, whisper = self._playback_frames()
        heard = mixer.mix(pcm, self._heard, inject=inject, whisper=whisper, speakers=False)
        # 4. Encode, stamp the headers, send. Nothing that varies from tick to tick
        # happens between the mix and the send, so that packets leave at a steady time.
        pkt = self._pkt
        encode_rows(heard, self._laws, pkt[:, 12:])
        seq, ts = self._seq, self._ts
        pkt[:, 1] = self._pt | self._mark
        pkt[:, 2:4] = (seq & 0xFFFF).astype(">u2").view(np.uint8).reshape(-1, 2)
        pkt[:, 4:8] = (ts & 0xFFFFFFFF).astype(">u4").view(np.uint8).reshape(-1, 2 * 2)
        self._send()
        ts += self._frame_ts
        # 5. What only needs to be noticed: digits in the audio, talkers, recordings.
        if len(self._inband_pos):
            found = self._tones.process(pcm[self._inband_pos], self._inband_rows)
            if found:
                by_row = {
                    int(r): i for i, r in zip(self._inband_pos, self._inband_rows, strict=True)
                }
                for row, digit in found:
                    self._digit(ms[by_row[row]], digit)
        if self._dtmf_waiting:
            for m in list(self._dtmf_waiting):
                for d in m.dtmf.expire(now):
                    self._digit(m, d)
                if not m.dtmf.pending:
                    self._dtmf_waiting.discard(m)
        mixer.update_speakers()
        for room_id, key in mixer.speaker_changes:
            room = self.rooms.get(room_id)  # type: ignore[arg-type]
            if room is not None and room.conference and key is not None:
                leg = key  # type: ignore[assignment]
                self.events.append(ActiveSpeaker(room.room_id, leg.session_id, leg.name))
        if self._records:
            self._record(pcm, heard)

    def _digit(self, m: MixLeg, digit: Digit) -> None:
        """A digit finished on ``m``: report it, and in a two-party call pass it on to
        the other leg (a conference keeps its members' digits, PINs among them)."""
        leg = m.leg
        self.events.append(DtmfReceived(leg.session_id, leg.name, digit.digit, digit.duration_ms))
        if m.room.conference:
            return
        for other in m.room.members:
            if other is not leg and other.mix is not None:
                if other.mix.te_pt >= 0 or not m.inband:
                    # In-band digits already reach a leg without telephone-event in the
                    # audio; everything else is sent again in the form it can take.
                    ms = max(40, digit.duration_ms)
                    self.send_dtmf(other, digit.digit, ms - ms % 20)

    def _file_received(self, now: float) -> None:
        """Check the headers of the tick's staged G.711 packets all at once and file the
        plain ones (20 ms, no CSRC, extension or padding, the negotiated payload type,
        the current SSRC) in one batch; the others take :meth:`receive`, one by one."""
        n = self.rx_n
        self.rx_n = 0
        pk = self.rx[:n]
        rows = np.frombuffer(self.rx_row, np.int64, n)
        lens = np.frombuffer(self.rx_len, np.int64, n)
        t = np.frombuffer(self.rx_t, np.float64, n)
        epoch = np.frombuffer(self.rx_epoch, np.int64, n)
        live = epoch == self._row_epoch[rows]  # the leg is still there
        head = pk[:, :12].astype(np.int64)
        ssrc = (head[:, 8] << 24) | (head[:, 9] << 16) | (head[:, 10] << 8) | head[:, 11]
        plain = (
            live
            & (lens == _PKT)
            & (head[:, 0] == 0x80)
            & ((head[:, 1] & 0x7F) == self._row_pt[rows])
            & (ssrc == self._row_ssrc[rows])
            & self._row_take[rows]
        )
        other = np.flatnonzero(live & ~plain)
        for i in other.tolist():
            m = self._by_row[int(rows[i])]
            k = int(lens[i])
            if k < 12 or k >= RX_SLOT:  # too short to be RTP, or cut off: not ours
                self.dropped += 1
                continue
            view = self.rx_views[i]
            self.receive(m, view, view, k, float(t[i]))  # type: ignore[arg-type]
        # Packets put one by one (these, and those that came before the leg latched)
        # go in before the batch, to keep the order of arrival.
        self.g711.flush(now)
        if len(other):
            # A packet that set a stream's SSRC makes its followers plain too.
            plain = plain | (
                live
                & (lens == _PKT)
                & (head[:, 0] == 0x80)
                & ((head[:, 1] & 0x7F) == self._row_pt[rows])
                & (ssrc == self._row_ssrc[rows])
                & self._row_take[rows]
            )
            plain[other] = False
        sel = np.flatnonzero(plain)
        if sel.size:
            seq = (head[sel, 2] << 8) | head[sel, 3]
            ts = (head[sel, 4] << 24) | (head[sel, 5] << 16) | (head[sel, 6] << 8) | head[sel, 7]
            self.g711.file(rows[sel], seq, ts, t[sel], pk[sel, 12:_PKT], now)

    def _decode_opus(self, now: float) -> None:
        pos = self._opus_pos
        ms = self._ms
        status, data, lengths = self.opus.pull(self._opus_rows, now)
        played = self.opus.played
        pcm = self._pcm
        for j, i in enumerate(pos):
            m = ms[i]
            dec = m.dec
            assert dec is not None
            s = status[j]
            if s == jitter.FRAME:
                out = dec.decode(data[j, : lengths[j]].tobytes())
            elif s == jitter.LOST:
                nxt = self.opus.payload(m.row, int(played[j]) + 1)
                out = dec.decode(nxt, fec=True) if nxt else dec.decode(None)
            else:
                pcm[i] = 0
                continue
            if len(out) == FRAME:
                pcm[i] = out
            else:  # a packet of another duration: use what fits
                pcm[i] = 0
                k = min(len(out), FRAME)
                pcm[i, :k] = out[:k]

    def _playback_frames(self) -> tuple[list, list]:
        inject: list = []
        whisper: list = []
        if not self._plays:
            return inject, whisper
        for pid, (target, pb) in list(self._plays.items()):
            frame = pb.next_frame()
            if frame is None:
                self._end_play(pid, completed=True)
                continue
            if isinstance(target, RoomRef):
                inject.append((target.room_id, frame))
            else:
                leg = self._leg_of(target)
                if leg is not None:
                    whisper.append((leg, frame))
        return inject, whisper

    def _leg_of(self, ref: LegRef) -> Leg | None:
        return self._by_ref.get((ref.session_id, ref.leg))

    def _tick_plays_without_rooms(self) -> None:
        # Playbacks into empty rooms still run (and finish) in real time.
        if self._plays:
            self._playback_frames()

    def _record(self, pcm: np.ndarray, heard: np.ndarray) -> None:
        for target, rec in self._records.values():
            if isinstance(target, RoomRef):
                frame = self.mixer.room_total(target.room_id)
                rec.write(frame if frame is not None else np.zeros(FRAME, np.int16))
                continue
            leg = self._leg_of(target)
            if leg is None:
                continue
            i = self.mixer.row_of(leg)
            both = self.mixer.voices[i] + heard[i]
            rec.write(np.clip(both, -32768, 32767).astype(np.int16))

    def connected(self, leg: Leg) -> None:
        """The engine connected ``leg``'s socket to its phone (latched), or undid it."""
        self._send_dirty = True

    def _plan_send(self) -> None:
        """Split the legs by how their packets leave: in one batch through the raw
        socket, by the fast loop of plain sends (G.711 on a connected socket, nothing but
        audio to send), or by the careful path (Opus, DTMF, not latched yet)."""
        fast, fast_idx, slow = [], [], []
        raw_idx, raw_port, raw_ip, raw_dport = [], [], [], []
        for i, m in enumerate(self._ms):
            leg = m.leg
            if not leg.send_ok:
                continue
            if m.opus or m.pending:
                slow.append(i)
                continue
            dest = leg.dest
            if self.raw is not None and dest is not None and (ip := ipv4(dest[0])) >= 0:
                raw_idx.append(i)
                raw_port.append(leg.port)
                raw_ip.append(ip)
                raw_dport.append(dest[1])
            elif leg.connected:
                fast.append((leg.send, self._views[i]))
                fast_idx.append(i)
            else:
                slow.append(i)
        self._fast = fast
        self._fast_idx = np.array(fast_idx, np.intp)
        self._slow = slow
        self._raw_idx = np.array(raw_idx, np.intp)
        if self.raw is not None:
            self.raw.plan(
                self._pkt,
                self._raw_idx,
                self._src_ip,
                np.array(raw_port, np.int64),
                np.array(raw_ip, np.int64),
                np.array(raw_dport, np.int64),
            )
        self._send_dirty = False

    def _send(self) -> None:
        if self._send_dirty:
            self._plan_send()
        seq, mark = self._seq, self._mark
        sent = errors = 0
        raw = self._raw_idx
        if len(raw):
            assert self.raw is not None
            n = self.raw.send()
            sent += n
            errors += len(raw) - n
            seq[raw] += 1
            mark[raw] = 0
        # One system call per leg, and as little else as possible around it.
        failed = 0
        for send, view in self._fast:
            try:
                send(view)
            except OSError:
                failed += 1
        fast = self._fast_idx
        seq[fast] += 1
        mark[fast] = 0
        sent += len(fast) - failed
        errors += failed
        ms, pkt = self._ms, self._pkt
        for i in self._slow:
            m = ms[i]
            leg = m.leg
            data: bytes | memoryview | None = None
            if m.pending:
                entry = m.pending.popleft()
                if entry is not None:
                    data = self._event_packet(i, m, *entry)
                if not m.pending:
                    self._send_dirty = True
            if data is None:
                if m.opus:
                    enc = m.enc
                    assert enc is not None
                    data = bytes(pkt[i, :12]) + enc.encode(self._heard[i])
                else:
                    data = self._views[i]
            try:
                if leg.connected:
                    leg.send(data)
                elif leg.dest is not None:
                    leg.rtp.sendto(data, leg.dest)  # type: ignore[attr-defined]
                else:
                    continue
            except OSError:
                errors += 1
                continue
            sent += 1
            seq[i] += 1
            mark[i] = 0
        self.sent += sent
        self.send_errors += errors

    def _event_packet(self, i: int, m: MixLeg, payload: bytes, marker: bool) -> bytes:
        """A telephone-event packet in place of this tick's audio toward ``m``."""
        if marker:
            m.event_ts = int(self._ts[i])  # the event starts now: its timestamp stays
        b1 = m.te_pt | (0x80 if marker else 0)
        seq = int(self._seq[i]) & 0xFFFF
        return _HDR.pack(0x80, b1, seq, m.event_ts & 0xFFFFFFFF, m.leg.ssrc) + payload
