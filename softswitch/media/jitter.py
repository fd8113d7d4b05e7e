"""Adaptive jitter buffers for decoded streams, pure: one row per stream, all in one bank.

Each stream (a leg whose media is decoded: conference rooms, Opus transcoding) has its
own buffer, a power-of-two ring of ``slots`` packets indexed by sequence number (the
aiortc layout). What is unusual is where the rings live: every stream of an engine is a
row of one :class:`JitterBank`, so the tick pulls the due frame of *all* streams with
one gather and hands the mixer a ``(streams, width)`` array, instead of calling a
Python object per stream per tick. Packets arrive one at a time, but :meth:`put` only
copies the payload into a staging area and notes its row, sequence number, timestamp
and arrival time; the bookkeeping (extension, duplicates, lateness, delay statistics,
the scatter into the rings) runs for the whole batch at the next :meth:`flush`, which
:meth:`pull` does first. Per packet that leaves a copy and five stores.

Sequence numbers and timestamps are extended to 64-bit integers on the way in (the
RFC 3550 A.1 rule: the 16-bit value closest to the highest one seen), so the ring, the
playout point and every comparison are plain integer arithmetic, wrap-around included.

Playout, per stream (:meth:`pull`, once per tick):

* A stream starts *buffering* with its first packet and starts *playing* once the
  frames available ahead of the playout point (``lead``) reach the target depth.
* Each tick plays one frame: present (``FRAME``), missing (``LOST``: the decoder
  conceals it; Opus rebuilds it from the next packet's FEC when that one is here), or
  ``SILENT`` when there is nothing to conceal (never started, or missing for longer than
  ``conceal_frames``: concealment has faded out by then).
* Running dry (nothing at or after the playout point) goes back to buffering without
  advancing, so a late burst makes the buffer deeper instead of losing the burst; when
  playing resumes after a gap the playout point jumps to ``target`` frames behind the
  newest packet (unless the frame at the playout point is there: a pause in sending
  loses nothing).

Target depth, 1 to 10 frames (20-200 ms): every packet's *relative delay* (arrival time
minus its timestamp in seconds) is compared to the smallest relative delay of the last
few seconds (two windows, so the sender's clock drift is forgotten); the difference is
how late this packet was against the best case. A peak detector keeps the largest
lateness and lets it decay by one frame per second; the target is one frame more than
that peak in frames, raised at once and lowered by at most a frame per window. Every
``window`` ticks the buffer compares its depth with the target, the depth being how long
ago the frame due now would have arrived on a perfect network (from the same smallest
relative delay: counting the frames held instead would follow every burst). It inserts
one concealed frame (``LOST`` without advancing) when the depth is below target, and
drops one frame when the depth is more than half a frame above target and at least two
frames were held all along. So depth follows jitter up within a window or through an
underrun, and back down a frame per window once the peak has decayed.

Packets are refused as duplicates (already held), late (their frame was played or
concealed) or, when the gap is too large for any jitter, they restart the stream (a new
talk spurt after a long pause, or a restarted sender).
"""

from __future__ import annotations

from array import array
from typing import Final

import numpy as np
import numpy.typing as npt

# flush() results, one per staged packet
ACCEPTED: Final = 0
DUPLICATE: Final = 1
LATE: Final = 2
RESTARTED: Final = 3  # accepted, and it restarted its stream (a jump, or a new stream)

# pull() statuses
FRAME: Final = 0
LOST: Final = 1
SILENT: Final = 2

_IDLE: Final = 0
_BUFFERING: Final = 1
_PLAYING: Final = 2

_EXT_BASE: Final = 1 << 32  # first extended sequence number is seq + this: never negative
_NO_SEQ: Final = -1
MAX_MISORDER: Final = 100  # RFC 3550 A.1: further back than this is a restart, not late
_BASE_WINDOW: Final = 4.0  # seconds per relative-delay minimum window
_NEVER: Final = 1 << 30  # "missed" count of a stream that has not played yet


class JitterBank:
    """Adaptive jitter buffers for up to ``rows`` streams (grows on demand).

    ``width`` bytes of payload per slot (longer payloads are refused by :meth:`put`),
    ``frame`` RTP timestamp units per packet at ``clock_rate``, ``tick`` seconds per
    pull, ``resolution`` the precision of the arrival times given. Depths are in frames,
    ``min_depth`` .. ``max_depth``.
    """

    def __init__(
        self,
        rows: int = 16,
        *,
        slots: int = 32,
        width: int = 160,
        frame: int = 160,
        clock_rate: int = 8000,
        tick: float = 0.020,
        min_depth: int = 1,
        max_depth: int = 10,
        window: int = 10,
        conceal_frames: int = 3,
        staging: int = 256,
        resolution: float = 0.001,
    ) -> None:
        if slots < 2 or slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        if not 1 <= min_depth <= max_depth < slots:
            raise ValueError("need 1 <= min_depth <= max_depth < slots")
        self.slots = slots
        self.width = width
        self.frame = frame
        self.clock_rate = clock_rate
        self.tick = tick
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.window = window
        self.conceal_frames = conceal_frames
        # Lateness up to this much is measurement noise, not jitter: how precise the
        # arrival times given to put() are (a driver reading sockets every few ms).
        self._tolerance = resolution + 0.001
        self._mask = slots - 1
        self._frame_s = frame / clock_rate
        self._decay = self._frame_s * tick  # the peak decays by one frame per second
        self._ticks = 0
        self._src: np.ndarray | None = None  # payloads being filed, and their lengths
        self._src_len: np.ndarray | None = None
        self.played: npt.NDArray[np.int64] = np.empty(0, np.int64)
        self._free: list[int] = []
        self._rows = 0
        self.late = 0  # packets refused because their frame had been played already
        self.duplicates = 0
        self.restarts = 0
        self._alloc(max(rows, 1))
        self._n = 0
        self._stage_cap = 0
        self._grow_stage(max(staging, 1))

    # --- storage ----------------------------------------------------------------------

    def _alloc(self, rows: int) -> None:
        old = self._rows
        # Slot-major: at a given moment most streams are at the same slot (slot =
        # sequence number modulo slots, and streams advance together), so a tick's
        # reads and writes fall in one contiguous stretch of memory rather than one
        # cache line here and there across the whole bank.
        self.data = _grow_cols(getattr(self, "data", None), (self.slots, rows, self.width), 0)
        self._cells = self.data.reshape(-1, self.width)
        self._seq = _grow_cols(getattr(self, "_seq", None), (self.slots, rows), _NO_SEQ)
        self.length = _grow_cols(getattr(self, "length", None), (self.slots, rows), 0)
        self._owner = np.zeros(rows * self.slots, np.int64)  # scratch of flush()
        for name, dtype, fill in (
            ("_state", np.int8, _IDLE),
            ("_play", np.int64, 0),
            ("_high", np.int64, 0),
            ("_target", np.int64, self.min_depth),
            ("_rawmax", np.int64, 0),
            ("_peak", np.float64, 0.0),
            ("_spread", np.float64, 0.0),  # largest lateness since the last pull
            ("_lmin", np.int64, _NEVER),
            ("_missed", np.int64, _NEVER),
            # Where each stream's frames would arrive on a perfect network: frame k at
            # anchor + k * frame_s (from the earliest relative delay seen).
            ("_anchor", np.float64, 0.0),
            ("_ts_last", np.int64, 0),  # newest timestamp, and extended past wraps
            ("_ts_ext", np.int64, 0),
            ("_base", np.float64, np.inf),  # smallest relative delay, this window
            ("_base_prev", np.float64, np.inf),  # ... and the previous one
            ("_base_end", np.float64, 0.0),
            ("_last_t", np.float64, -np.inf),  # when a packet of the stream last came
        ):
            setattr(self, name, _grow(getattr(self, name, None), (rows,), dtype, fill))
        self._gen: list[int] = getattr(self, "_gen", []) + [0] * (rows - old)
        self._gen_np = np.array(self._gen, np.int64)
        self._free.extend(range(rows - 1, old - 1, -1))
        self._rows = rows

    def _grow_stage(self, size: int) -> None:
        n = self._n
        stage = np.zeros((size, self.width), np.uint8)
        meta = [array(code, bytes(8 * size)) for code in "qqqqdq"]
        if self._stage_cap:
            stage[:n] = self._stage[:n]
            for new, old in zip(meta, self._meta, strict=True):
                new[:n] = old[:n]
        self._stage = stage
        self._stage_mv = memoryview(stage.reshape(-1))
        self._meta = meta
        self._s_row, self._s_seq, self._s_ts, self._s_len, self._s_t, self._s_gen = meta
        self._stage_cap = size

    @property
    def capacity(self) -> int:
        return self._rows

    def open(self) -> int:
        """A fresh row (stream) for a new leg."""
        if not self._free:
            self.flush(0.0)
            self._alloc(self._rows * 2)
        row = self._free.pop()
        self._reset(row)
        self._target[row] = self.min_depth
        self._rawmax[row] = 0
        self._peak[row] = 0.0
        self._last_t[row] = -np.inf
        return row

    def close(self, row: int) -> None:
        """Give a row back; its frames are forgotten (staged packets of it too)."""
        self._drop_staged(row)
        self._reset(row)
        self._free.append(row)

    def restart(self, row: int) -> None:
        """The sender changed (new SSRC): drop what is buffered, keep the adaptation."""
        self._drop_staged(row)
        self._reset(row)

    def _drop_staged(self, row: int) -> None:
        # Staged packets carry their row's generation; flush() files only those of the
        # current one, so forgetting them costs nothing here.
        self._gen[row] += 1
        self._gen_np[row] = self._gen[row]

    def _reset(self, row: int) -> None:
        self._seq[:, row] = _NO_SEQ
        self._state[row] = _IDLE
        self._missed[row] = _NEVER
        self._lmin[row] = _NEVER
        self._spread[row] = 0.0
        self._base[row] = self._base_prev[row] = np.inf

    # --- packets in -------------------------------------------------------------------

    def put(
        self, row: int, seq: int, ts: int, payload: bytes | bytearray | memoryview, now: float
    ) -> None:
        """Stage one packet (its payload is copied): it joins its ring at the next flush."""
        n = len(payload)
        if n > self.width:
            raise ValueError(f"payload of {n} bytes exceeds the slot width {self.width}")
        i = self._n
        if i == self._stage_cap:
            self._grow_stage(2 * i)
        off = i * self.width
        self._stage_mv[off : off + n] = payload
        self._s_row[i] = row
        self._s_seq[i] = seq
        self._s_ts[i] = ts
        self._s_len[i] = n
        self._s_t[i] = now
        self._s_gen[i] = self._gen[row]
        self._n = i + 1

    def flush(self, now: float) -> npt.NDArray[np.int8]:
        """File every staged packet into its ring; one ACCEPTED/DUPLICATE/LATE/RESTARTED
        per packet, in the order they were put (-1 for a packet of a closed row)."""
        m = self._n
        self._n = 0
        if m == 0:
            return np.empty(0, np.int8)
        rows = np.frombuffer(self._s_row, np.int64, m).copy()
        seq = np.frombuffer(self._s_seq, np.int64, m).copy()
        ts = np.frombuffer(self._s_ts, np.int64, m).copy()
        t = np.frombuffer(self._s_t, np.float64, m).copy()
        lens = np.frombuffer(self._s_len, np.int64, m).copy()
        gen = np.frombuffer(self._s_gen, np.int64, m)
        todo = np.flatnonzero(gen == self._gen_np[rows])
        return self._file_all(todo, rows, seq, ts, t, self._stage[:m], lens, now)

    def file(
        self,
        rows: npt.NDArray[np.int64],
        seq: npt.NDArray[np.int64],
        ts: npt.NDArray[np.int64],
        t: npt.NDArray[np.float64],
        payloads: npt.NDArray[np.uint8],
        now: float,
    ) -> npt.NDArray[np.int8]:
        """File a batch of packets at once, without staging them one by one first:
        ``payloads`` is ``(len(rows), width)`` (every payload ``width`` bytes long).
        Staged packets should be flushed first, so that arrival order is kept."""
        if payloads.shape != (len(rows), self.width):
            raise ValueError("payloads must be (packets, width)")
        lens = np.full(len(rows), self.width, np.int64)
        todo = np.arange(len(rows))
        return self._file_all(todo, rows, seq, ts, t, payloads, lens, now)

    def _file_all(
        self,
        todo: np.ndarray,
        rows: np.ndarray,
        seq: np.ndarray,
        ts: np.ndarray,
        t: np.ndarray,
        payloads: np.ndarray,
        lens: np.ndarray,
        now: float,
    ) -> npt.NDArray[np.int8]:
        m = len(rows)
        if m:
            np.maximum.at(self._last_t, rows, t)
        self._src, self._src_len = payloads, lens
        result = np.full(m, -1, np.int8)
        restarted: list[np.ndarray] = []
        # A batch that restarts a stream is filed again from the restarting packet on,
        # with the stream idle: the restarting packet is then the stream's base, so
        # another round is needed only by a stream restarting twice in one batch.
        for _ in range(4):  # old packets straggling after a restart could ping-pong
            if not todo.size:
                break
            todo = self._file(todo, rows, seq, ts, t, now, result)
            if todo.size:
                _, at = np.unique(rows[todo], return_index=True)
                restarted.append(todo[at])  # the restarting packet of each stream
        for first in restarted:
            result[first[result[first] == ACCEPTED]] = RESTARTED
        if todo.size:
            self.late += todo.size
            result[todo] = LATE
        self._src = self._src_len = None
        return result

    def _file(
        self,
        idx: np.ndarray,
        all_rows: np.ndarray,
        all_seq: np.ndarray,
        all_ts: np.ndarray,
        all_t: np.ndarray,
        now: float,
        result: np.ndarray,
    ) -> np.ndarray:
        """One round of flush() over staged packets ``idx``; returns those to refile."""
        rows, seq, ts, t = all_rows[idx], all_seq[idx], all_ts[idx], all_t[idx]
        # Streams starting in this batch: their first packet (in arrival order) is the
        # base for extension, the earliest sequence number the playout point.
        idle = self._state[rows] == _IDLE
        if idle.any():
            new_rows, first = np.unique(rows[idle], return_index=True)
            first = np.flatnonzero(idle)[first]
            self._high[new_rows] = seq[first] + _EXT_BASE
            self._ts_last[new_rows] = ts[first]
            self._ts_ext[new_rows] = ts[first] + _EXT_BASE
            self._base_end[new_rows] = now + _BASE_WINDOW
        hi = self._high[rows]
        ext = hi + ((seq - hi + 0x8000) & 0xFFFF) - 0x8000
        if idle.any():
            self._play[new_rows] = _EXT_BASE << 1
            np.minimum.at(self._play, rows[idle], ext[idle])
            self._state[new_rows] = _BUFFERING
        ahead = ext - self._play[rows]
        late = (ahead < 0) & (ahead >= -MAX_MISORDER)
        jump = (ahead < -MAX_MISORDER) | (ahead >= self.slots)
        missed = late.copy()  # came after their frame was played: the buffer was short
        redo = np.zeros(len(idx), bool)
        if jump.any():
            # The first jump of a stream restarts it: what came before it in the batch
            # belonged to the old stream, it and what follows go to the next round.
            pos = np.flatnonzero(jump)
            j_rows, first = np.unique(rows[pos], return_index=True)
            cut = np.full(self._rows, len(idx), np.int64)
            cut[j_rows] = pos[first]
            before = np.arange(len(idx)) < cut[rows]
            restarting = cut[rows] < len(idx)
            redo = restarting & ~before
            late |= restarting & before
            self.restarts += len(j_rows)
            for r in j_rows.tolist():
                self._reset(r)
            missed &= ~restarting
        if missed.any():
            # The plainest sign of too little depth, and one the delay statistics can
            # miss (a packet a millisecond late against a tick, within the arrival time
            # resolution): ask for as many more frames as it came too late, through the
            # peak detector, which lets the depth go down again later.
            mr = rows[missed]
            need = (self._target[mr] - 1 - ahead[missed]) * self._frame_s + self._tolerance
            np.maximum.at(self._spread, mr, need)
        self.late += int(np.count_nonzero(late))
        result[idx[late]] = LATE
        self._file_ok(~late & ~redo, idx, rows, seq, ts, t, ext, now, result)
        return idx[redo]

    def _file_ok(
        self,
        ok: np.ndarray,
        idx: np.ndarray,
        rows: np.ndarray,
        seq: np.ndarray,
        ts: np.ndarray,
        t: np.ndarray,
        ext: np.ndarray,
        now: float,
        result: np.ndarray,
    ) -> None:
        """Store accepted packets and update the delay statistics of their streams."""
        sel = np.flatnonzero(ok)
        if sel.size == 0:
            return
        if sel.size < len(ok):
            rows, ext, ts, t, idx = rows[sel], ext[sel], ts[sel], t[sel], idx[sel]
        where = idx
        cells = (ext & self._mask) * self._rows + rows
        seq_cells = self._seq.reshape(-1)
        dup = seq_cells[cells] == ext
        # The same packet twice in one batch: the last copy written to a cell owns it.
        owner = self._owner
        owner[cells] = where
        dup |= owner[cells] != where
        if dup.any():
            self.duplicates += int(np.count_nonzero(dup))
            result[where[dup]] = DUPLICATE
            keep = ~dup
            rows, ext, ts, t, where, cells = (
                rows[keep],
                ext[keep],
                ts[keep],
                t[keep],
                where[keep],
                cells[keep],
            )
        result[where] = ACCEPTED
        seq_cells[cells] = ext
        self.length.reshape(-1)[cells] = self._src_len[where]
        self._cells[cells] = self._src[where]
        # Relative delay (arrival minus timestamp) against the smallest of the last few
        # seconds: how late each packet was compared with the best case.
        d = ((ts - self._ts_last[rows] + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        ts_ext = self._ts_ext[rows] + d
        r = t - ts_ext / self.clock_rate
        roll = rows[self._base_end[rows] <= now]  # repeats are harmless: same values
        if roll.size:
            self._base_prev[roll] = self._base[roll]
            self._base[roll] = np.inf
            self._base_end[roll] = now + _BASE_WINDOW
        np.minimum.at(self._base, rows, r)
        base = np.minimum(self._base[rows], self._base_prev[rows])
        np.maximum.at(self._spread, rows, r - base)
        np.maximum.at(self._high, rows, ext)
        newest = ext == self._high[rows]
        nr = rows[newest]
        self._ts_last[nr] = ts[newest] & 0xFFFFFFFF
        self._ts_ext[nr] = ts_ext[newest]
        self._anchor[nr] = (
            base[newest] + ts_ext[newest] / self.clock_rate - ext[newest] * (self._frame_s)
        )

    # --- frames out -------------------------------------------------------------------

    def pull(
        self,
        rows: npt.NDArray[np.intp],
        now: float,
        out: npt.NDArray[np.uint8] | None = None,
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
        """Play one frame of each stream in ``rows`` (each row at most once per tick).

        Returns ``(status, payloads, lengths)``: FRAME/LOST/SILENT per row, the payload
        slots (``(len(rows), width)``; meaningful where FRAME) and payload lengths.
        :attr:`played` then holds the extended sequence number each row played.
        """
        self.flush(now)
        self._ticks += 1
        state = self._state[rows]
        play = self._play[rows]
        high = self._high[rows]
        peak = np.maximum(self._peak[rows] - self._decay, self._spread[rows])
        self._peak[rows] = peak
        self._spread[rows] = 0.0
        raw = np.ceil((peak - self._tolerance) / self._frame_s).astype(np.int64) + 1
        np.clip(raw, self.min_depth, self.max_depth, out=raw)
        # Up at once; down by one frame per window, and only if the peak stayed below
        # all window long (a peak hovering at a frame boundary must not make the depth
        # go down and up again).
        target = np.maximum(self._target[rows], raw)
        rawmax = np.maximum(self._rawmax[rows], raw)

        lead = high - play + 1
        start = (state == _BUFFERING) & (lead >= target)
        if start.any():
            # Resuming after a gap with its first frames missing: start no deeper than
            # the target. Frames that are there (a pause in sending, DTX) all play.
            gap = start & (self._seq[play & self._mask, rows] != play)
            play = np.where(gap, np.maximum(play, high - target + 1), play)
            state = np.where(start, _PLAYING, state).astype(np.int8)
            lead = high - play + 1
        playing = state == _PLAYING
        dry = playing & (lead <= 0)
        lmin = np.where(playing, np.minimum(self._lmin[rows], lead), _NEVER)
        grow = np.zeros(len(rows), bool)
        if self._ticks % self.window == 0:
            # How many frames ago the frame due now would have arrived on a perfect
            # network: the depth the buffer really gives, free of arrival noise.
            depth = (now - self._anchor[rows]) / self._frame_s - play
            grow = playing & ~dry & (depth < target - 1.1)
            shrink = playing & ~dry & (lmin > 1) & (depth > target + 0.5)
            play = play + shrink
            lmin[:] = _NEVER
            target = np.where(rawmax < target, target - 1, target)
            rawmax[:] = 0
        self._lmin[rows] = lmin
        self._target[rows] = target
        self._rawmax[rows] = rawmax
        advance = playing & ~dry & ~grow
        slot = play & self._mask
        present = advance & (self._seq[slot, rows] == play)
        self.played = play
        missed = np.where(present, 0, self._missed[rows] + 1)
        self._missed[rows] = missed
        status = np.where(
            present, FRAME, np.where(missed <= self.conceal_frames, LOST, SILENT)
        ).astype(np.int8)
        if out is None:
            out = np.empty((len(rows), self.width), np.uint8)
        flat = slot * self._rows + rows
        np.take(self.data.reshape(-1, self.width), flat, axis=0, out=out, mode="clip")
        lengths = self.length.reshape(-1)[flat]
        self._play[rows] = play + advance
        self._state[rows] = np.where(dry, _BUFFERING, state)
        return status, out, lengths

    # --- inspection -------------------------------------------------------------------

    def payload(self, row: int, ext_seq: int) -> bytes | None:
        """The payload held for extended sequence number ``ext_seq``, if any (for Opus
        FEC: the packet after a lost one)."""
        slot = ext_seq & self._mask
        if self._seq[slot, row] != ext_seq:
            return None
        n = int(self.length[slot, row])
        return self.data[slot, row, :n].tobytes()

    def target(self, row: int) -> int:
        """Target depth in frames."""
        return int(self._target[row])

    def depth(self, row: int) -> int:
        """Frames held at or after the playout point (holes included)."""
        if self._state[row] == _IDLE:
            return 0
        return max(0, int(self._high[row] - self._play[row] + 1))

    def last_arrival(self, row: int) -> float:
        """When a packet of the stream in ``row`` last arrived (filed ones only)."""
        return float(self._last_t[row])

    def lateness(self, row: int) -> float:
        """The peak detector's current value: how late packets have recently been
        against the best case, in seconds."""
        return float(self._peak[row])


def _grow_cols(old: np.ndarray | None, shape: tuple[int, ...], fill: int) -> np.ndarray:
    """``_grow`` along the second axis (rows of a slot-major array)."""
    dtype = old.dtype if old is not None else {2: np.int64, 3: np.uint8}[len(shape)]
    new = np.full(shape, fill, dtype)
    if old is not None:
        new[:, : old.shape[1]] = old
    return new


def _grow(old: np.ndarray | None, shape: tuple[int, ...], dtype: type, fill: object) -> np.ndarray:
    new = np.full(shape, fill, dtype)
    if old is not None:
        new[: old.shape[0]] = old
    return new
