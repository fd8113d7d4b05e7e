"""Streaming rational resampling (8, 16, 48 kHz and friends) for ``(streams, samples)`` blocks.

Method: a Kaiser-windowed sinc low-pass designed at the higher of the two rates, applied
polyphase-style. The transition band runs from 0.425 to 0.5 of the lower rate (3.4 kHz to
4 kHz for an 8 kHz side) with about 65 dB stop-band attenuation, so nothing aliases into
the band that survives (aliasing measured below -60 dB with a sine sweep in the tests).

Why a dense block matrix instead of a tap loop: for each chunk length the filter is
unrolled once into a banded matrix ``T`` with ``y = ext @ T``, where ``ext`` is the
carried history followed by the new chunk. One BLAS call per tick for all streams beats
hundreds of small numpy calls by an order of magnitude, despite multiplying zeros.

Why integer coefficients in float64: the taps are rounded to multiples of 2**-20 and the
products of int16 samples with them are summed in float64, where every partial sum is an
exact integer. The result therefore does not depend on BLAS's summation order, and
streaming in 20 ms chunks is bit-identical to processing the whole signal at once.

State follows SciPy's ``zi`` convention: ``process(x, state) -> (y, new_state)``; the
state holds the last input samples each stream needs, nothing else. Each chunk must be a
multiple of ``in_rate / gcd(in_rate, out_rate)`` samples (any 10 ms or 20 ms chunk of
the rates above qualifies), so there is no fractional phase to carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

_COEF_BITS = 20
_COEF_SCALE = float(1 << _COEF_BITS)
_INV_SCALE = 1.0 / _COEF_SCALE


@dataclass(frozen=True, slots=True)
class ResampleState:
    """Per-stream history: the last ``taps_per_phase - 1`` input samples, shape (streams, k)."""

    history: npt.NDArray[np.float64]

    @property
    def streams(self) -> int:
        return self.history.shape[0]


def _kaiser_beta(attenuation_db: float) -> float:
    a = attenuation_db
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a >= 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def design_filter(
    in_rate: int, out_rate: int, attenuation_db: float = 65.0
) -> tuple[int, int, npt.NDArray[np.float64]]:
    """Return ``(up, down, taps)``: the reduced ratio and the prototype low-pass taps.

    The taps run at ``in_rate * up`` and have a DC gain of ``up`` (so each polyphase
    branch has unity gain).
    """
    if in_rate <= 0 or out_rate <= 0:
        raise ValueError("sample rates must be positive")
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    high = in_rate * up
    low = min(in_rate, out_rate)
    f_pass, f_stop = 0.425 * low, 0.5 * low
    width = (f_stop - f_pass) / high
    # Kaiser's length estimate for the requested attenuation and transition width.
    n = int(math.ceil((attenuation_db - 7.95) / (2.285 * 2 * math.pi * width))) + 1
    n = max(n, 3) | 1  # odd, so the filter is symmetric about a whole sample
    cutoff = 0.5 * (f_pass + f_stop) / high  # cycles per sample at the high rate
    m = np.arange(n) - (n - 1) / 2
    taps = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(n, _kaiser_beta(attenuation_db))
    taps *= up / taps.sum()
    return up, down, taps


class Resampler:
    """An immutable resampler design, shared by every stream converting between two rates.

    >>> r = Resampler(8000, 16000)
    >>> st = r.new_state(streams=3)
    >>> y, st = r.process(np.zeros((3, 160), np.int16), st)
    >>> y.shape
    (3, 320)
    """

    def __init__(self, in_rate: int, out_rate: int, attenuation_db: float = 65.0) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.up, self.down, taps = design_filter(in_rate, out_rate, attenuation_db)
        # Pad so every polyphase branch has the same number of taps.
        self.taps_per_phase = -(-len(taps) // self.up)
        padded = np.zeros(self.taps_per_phase * self.up)
        padded[: len(taps)] = taps
        self._phases = np.round(padded.reshape(-1, self.up).T * _COEF_SCALE)
        self._n_taps = len(taps)
        self._matrices: dict[int, np.ndarray] = {}
        # 5 ms of input, rounded to the decimation factor: small enough that the banded
        # matrix is not mostly zeros, large enough to keep BLAS busy.
        self._block = max(self.down, (in_rate // 200) // self.down * self.down)

    @property
    def delay(self) -> float:
        """Group delay in output samples (the filter is linear-phase)."""
        return (self._n_taps - 1) / 2 / self.down

    @property
    def chunk_multiple(self) -> int:
        """Input chunk lengths must be a multiple of this."""
        return self.down

    def new_state(self, streams: int = 1) -> ResampleState:
        """Silence history for ``streams`` fresh streams."""
        return ResampleState(np.zeros((streams, self.taps_per_phase - 1)))

    def output_length(self, n_in: int) -> int:
        if n_in % self.down:
            raise ValueError(
                f"chunk of {n_in} samples is not a multiple of {self.down} "
                f"({self.in_rate} -> {self.out_rate} Hz)"
            )
        return n_in * self.up // self.down

    def _matrix(self, n_in: int) -> np.ndarray:
        t = self._matrices.get(n_in)
        if t is not None:
            return t
        n_out = self.output_length(n_in)
        k = self.taps_per_phase
        t = np.zeros((n_in + k - 1, n_out))
        j = np.arange(n_out)
        pos = j * self.down  # output j sits at this index of the up-sampled grid
        base, phase = pos // self.up, pos % self.up
        for tap in range(k):
            # Row of ext holding x[base - tap]; ext starts with k - 1 history samples.
            t[base - tap + k - 1, j] = self._phases[phase, tap]
        t.flags.writeable = False
        if len(self._matrices) < 8:  # the block length plus a few odd tail lengths
            self._matrices[n_in] = t
        return t

    def process(
        self, x: npt.NDArray[np.int16], state: ResampleState
    ) -> tuple[npt.NDArray[np.int16], ResampleState]:
        """Resample a chunk. ``x`` is int16 ``(streams, n)`` or ``(n,)`` for one stream.

        Returns the int16 output (same rank as ``x``) and the state for the next chunk.
        """
        if x.dtype != np.int16:
            raise TypeError("resampler input must be int16")
        one = x.ndim == 1
        x2 = x[None, :] if one else x
        if x2.ndim != 2 or x2.shape[0] != state.streams:
            raise ValueError(f"expected ({state.streams}, n) samples, got shape {x.shape}")
        streams, n = x2.shape
        n_out = self.output_length(n)
        k1 = self.taps_per_phase - 1
        ext = np.concatenate((state.history, x2), axis=1, dtype=np.float64)
        acc = np.empty((streams, n_out))
        # Work in fixed blocks: a banded matrix for a long chunk is mostly zeros (and
        # huge for a whole file); per-block matrices keep the waste near 2x.
        block = self._block
        n_blocks = n // block
        done_in = n_blocks * block
        done_out = done_in * self.up // self.down
        if n_blocks:
            windows = np.lib.stride_tricks.sliding_window_view(ext, block + k1, axis=1)
            windows = windows[:, :done_in:block]
            acc[:, :done_out] = (windows @ self._matrix(block)).reshape(streams, done_out)
        if done_in < n:
            acc[:, done_out:] = ext[:, done_in:] @ self._matrix(n - done_in)
        # acc is an exact integer multiple of the coefficient step; scaling by a power
        # of two and adding 0.5 are exact too, so floor() rounds deterministically.
        acc *= _INV_SCALE
        acc += 0.5
        np.floor(acc, out=acc)
        np.clip(acc, -32768, 32767, out=acc)
        y = acc.astype(np.int16)
        new = ResampleState(ext[:, ext.shape[1] - k1 :].copy())
        return (y[0] if one else y), new


@lru_cache(maxsize=32)
def get_resampler(in_rate: int, out_rate: int) -> Resampler:
    """A shared, cached :class:`Resampler` for a rate pair."""
    return Resampler(in_rate, out_rate)


def resample(
    x: npt.NDArray[np.int16],
    in_rate: int,
    out_rate: int,
    state: ResampleState | None = None,
) -> tuple[npt.NDArray[np.int16], ResampleState]:
    """Functional form: ``y, state = resample(x, 8000, 48000, state)``."""
    r = get_resampler(in_rate, out_rate)
    if state is None:
        state = r.new_state(1 if x.ndim == 1 else x.shape[0])
    return r.process(x, state)
