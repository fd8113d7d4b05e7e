"""Packet-loss concealment for G.711 (and any decoded PCM), vectorised over streams.

A simplified take on G.711 Appendix I, without its 3.75 ms output delay:

* While frames arrive, each stream keeps the last 48.75 ms of output (``history``).
* On the first lost frame the pitch period is estimated from ``history`` by normalised
  autocorrelation over 5..15 ms lags (66-200 Hz voices; the whole range is searched
  at full resolution, no decimated pre-search). The last period is copied into a
  buffer whose final quarter period is cross-faded with the quarter period before it,
  so looping the buffer does not click at the seam.
* Lost frames replay that period. The first 10 ms play at full level, after which the
  gain falls linearly by 20 % per 10 ms, reaching silence 60 ms into the loss (as in
  Appendix I). Appendix I also widens the loop to two and three periods after 10 and
  20 ms to sound less buzzy; this version keeps one period.
* The first good frame after a loss is cross-faded with the continued synthetic signal
  over a quarter period plus 4 ms per further 10 ms of loss, at most 10 ms (Appendix I's
  rule), so the join is smooth both when the loss was short and when it had gone silent.

All state lives in :class:`PlcState`, one row per stream. :func:`process` handles a
whole tick (a mask says which rows were lost); :func:`conceal` and :func:`receive` do
the two halves for a subset of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

_HISTORY_MS = 48.75
_MIN_PITCH_MS = 5.0
_MAX_PITCH_MS = 15.0
_CORR_MS = 20.0  # length of the window compared against its lagged copy
_FULL_LEVEL_MS = 10.0
_DECAY_PER_10MS = 0.2


@dataclass(slots=True)
class PlcState:
    """Concealment state for ``streams`` streams at ``sample_rate`` (8 kHz by default)."""

    streams: int
    sample_rate: int = 8000
    history: np.ndarray = field(init=False)  # (S, H) float32, last output samples
    period_buf: np.ndarray = field(init=False)  # (S, max_pitch) float32, loop buffer
    pitch: np.ndarray = field(init=False)  # (S,) int64, period in samples
    elapsed: np.ndarray = field(init=False)  # (S,) int64, samples concealed so far

    def __post_init__(self) -> None:
        ms = self.sample_rate / 1000.0
        self.history = np.zeros((self.streams, int(round(_HISTORY_MS * ms))), np.float32)
        self.period_buf = np.zeros((self.streams, self.max_pitch), np.float32)
        self.pitch = np.full(self.streams, self.min_pitch, np.int64)
        self.elapsed = np.zeros(self.streams, np.int64)

    @property
    def min_pitch(self) -> int:
        return int(round(_MIN_PITCH_MS * self.sample_rate / 1000))

    @property
    def max_pitch(self) -> int:
        return int(round(_MAX_PITCH_MS * self.sample_rate / 1000))

    @property
    def in_loss(self) -> npt.NDArray[np.bool_]:
        """Which streams are currently concealing."""
        return self.elapsed > 0


def _rows(state: PlcState, rows: npt.ArrayLike | None) -> np.ndarray:
    if rows is None:
        return np.arange(state.streams)
    return np.atleast_1d(np.asarray(rows, dtype=np.int64))


def _estimate_pitch(state: PlcState, hist: np.ndarray) -> np.ndarray:
    lo, hi = state.min_pitch, state.max_pitch
    win = int(round(_CORR_MS * state.sample_rate / 1000))
    seg = hist[:, hist.shape[1] - win - hi :].astype(np.float64)
    target = seg[:, hi:]  # the most recent window
    # candidates[:, i] is the window that ends i samples before the end, for i in lo..hi.
    views = np.lib.stride_tricks.sliding_window_view(seg, win, axis=1)  # (S, hi+1, win)
    lagged = views[:, hi - lo :: -1][:, : hi - lo + 1]  # lag lo .. hi
    num = np.einsum("slw,sw->sl", lagged, target)
    energy = np.einsum("slw,slw->sl", lagged, lagged)
    score = np.where(num > 0, num * num / np.maximum(energy, 1e-9), 0.0)
    return lo + np.argmax(score, axis=1)


def _start_loss(state: PlcState, rows: np.ndarray) -> None:
    hist = state.history[rows]
    pitch = _estimate_pitch(state, hist)
    h = hist.shape[1]
    k = np.arange(state.max_pitch)
    # Loop buffer: the last period, with its last quarter faded towards the quarter
    # period that precedes the period, so that buf[-1] -> buf[0] continues naturally.
    idx = h - pitch[:, None] + np.minimum(k[None, :], pitch[:, None] - 1)
    buf = np.take_along_axis(hist, idx, axis=1)
    quarter = np.maximum(pitch // 4, 1)
    into_q = k[None, :] - (pitch - quarter)[:, None]  # position within the last quarter
    in_q = (into_q >= 0) & (k[None, :] < pitch[:, None])
    w = np.where(in_q, (into_q + 1) / (quarter[:, None] + 1), 0.0).astype(np.float32)
    before = np.take_along_axis(hist, np.clip(idx - pitch[:, None], 0, h - 1), axis=1)
    state.period_buf[rows] = buf * (1 - w) + before * w
    state.pitch[rows] = pitch


def _synth(state: PlcState, rows: np.ndarray, start: np.ndarray, n: int) -> np.ndarray:
    """Concealment samples ``start .. start + n`` after the loss began, for ``rows``."""
    t = start[:, None] + np.arange(n)[None, :]
    pitch = state.pitch[rows][:, None]
    y = np.take_along_axis(state.period_buf[rows], t % pitch, axis=1)
    ms = state.sample_rate / 1000.0
    full = _FULL_LEVEL_MS * ms
    gain = 1.0 - _DECAY_PER_10MS * (t - full) / (10.0 * ms)
    return y * np.clip(gain, 0.0, 1.0).astype(np.float32)


def conceal(
    state: PlcState, rows: npt.ArrayLike | None = None, n: int = 160
) -> npt.NDArray[np.int16]:
    """Synthesize the next ``n`` samples for lost frames of ``rows`` (default: all).

    Returns int16 ``(len(rows), n)``. History is not overwritten while concealing, so
    consecutive calls keep replaying the period captured when the loss began.
    """
    r = _rows(state, rows)
    starting = r[state.elapsed[r] == 0]
    if starting.size:
        _start_loss(state, starting)
    y = _synth(state, r, state.elapsed[r], n)
    state.elapsed[r] += n
    return np.round(y).astype(np.int16)


def receive(
    state: PlcState, frames: npt.NDArray[np.int16], rows: npt.ArrayLike | None = None
) -> npt.NDArray[np.int16]:
    """Record good frames ``(len(rows), n)`` and return them, smoothed after a loss.

    Rows that were concealing get their first samples cross-faded from the continued
    concealment into the real signal; other rows are returned unchanged (as a copy).
    """
    r = _rows(state, rows)
    out = np.array(frames, dtype=np.int16, copy=True).reshape(len(r), -1)
    n = out.shape[1]
    recovering = state.elapsed[r] > 0
    if recovering.any():
        rr = r[recovering]
        ms = state.sample_rate / 1000.0
        lost_10ms = state.elapsed[rr] / (10.0 * ms)
        length = state.pitch[rr] // 4 + np.round(4 * ms * np.maximum(lost_10ms - 1, 0))
        length = np.minimum(length, min(int(10 * ms), n)).astype(np.int64)
        span = int(length.max())
        synth = _synth(state, rr, state.elapsed[rr], span)
        k = np.arange(span)[None, :]
        w = np.clip((k + 1) / (length[:, None] + 1), 0.0, 1.0)
        real = out[recovering, :span].astype(np.float32)
        mixed = np.where(k < length[:, None], synth * (1 - w) + real * w, real)
        out[recovering, :span] = np.clip(np.round(mixed), -32768, 32767).astype(np.int16)
        state.elapsed[rr] = 0
    _push_history(state, r, out)
    return out


def _push_history(state: PlcState, rows: np.ndarray, frames: np.ndarray) -> None:
    h = state.history.shape[1]
    n = frames.shape[1]
    if n >= h:
        state.history[rows] = frames[:, n - h :]
    else:
        state.history[rows] = np.concatenate((state.history[rows][:, n:], frames), axis=1)


def process(
    state: PlcState, frames: npt.NDArray[np.int16], lost: npt.ArrayLike
) -> npt.NDArray[np.int16]:
    """One tick for every stream: ``frames`` ``(S, n)``, ``lost`` a boolean ``(S,)`` mask.

    Rows marked lost are replaced by concealment (their input is ignored); the others are
    recorded and smoothed if they end a loss. Returns a new ``(S, n)`` int16 array.
    """
    lost = np.asarray(lost, dtype=bool)
    if frames.shape[0] != state.streams or lost.shape != (state.streams,):
        raise ValueError("frames and lost must cover every stream of the state")
    out = np.empty_like(frames)
    good = np.flatnonzero(~lost)
    bad = np.flatnonzero(lost)
    if good.size:
        out[good] = receive(state, frames[good], good)
    if bad.size:
        out[bad] = conceal(state, bad, frames.shape[1])
    return out
