"""G.711 encoder/decoder objects with the :mod:`swcodecs.base` interface.

The array functions in :mod:`swcodecs.g711` are what a batched engine should call;
these per-stream objects exist for legs handled one at a time and for tests. A rate
other than 8 kHz adds a streaming resampler on the PCM side.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from . import g711, plc
from .resample import ResampleState, get_resampler


class G711Encoder:
    def __init__(self, law: g711.Law, sample_rate: int = g711.SAMPLE_RATE) -> None:
        self.name = law.upper()
        self._table = g711.encode_table(law)
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 50
        self._resampler = None
        self._state: ResampleState | None = None
        if sample_rate != g711.SAMPLE_RATE:
            self._resampler = get_resampler(sample_rate, g711.SAMPLE_RATE)
            self._state = self._resampler.new_state()

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        if self._resampler is not None and self._state is not None:
            pcm, self._state = self._resampler.process(pcm, self._state)
        return g711.encode(self.name, pcm).tobytes()  # type: ignore[arg-type]


class G711Decoder:
    def __init__(self, law: g711.Law, sample_rate: int = g711.SAMPLE_RATE) -> None:
        self.name = law.upper()
        self._table = g711.decode_table(law)
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 50
        self._plc = plc.PlcState(1)
        self._last_len = g711.FRAME_SAMPLES
        self._resampler = None
        self._state: ResampleState | None = None
        if sample_rate != g711.SAMPLE_RATE:
            self._resampler = get_resampler(g711.SAMPLE_RATE, sample_rate)
            self._state = self._resampler.new_state()

    def decode(self, payload: bytes | None, fec: bool = False) -> npt.NDArray[np.int16]:
        # G.711 carries no redundancy, so a FEC request is a concealment request.
        if payload is None or fec:
            pcm = plc.conceal(self._plc, 0, self._last_len)[0]
        else:
            self._last_len = len(payload)
            pcm = g711.decode(self.name, payload)  # type: ignore[arg-type]
            pcm = plc.receive(self._plc, pcm[None, :], 0)[0]
        if self._resampler is not None and self._state is not None:
            pcm, self._state = self._resampler.process(pcm, self._state)
        return pcm
