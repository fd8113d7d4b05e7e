"""Compare the two ways to run Opus for an 8 kHz (G.711) leg, as noted in swcodecs.opus.

1. ctypes binding to libopus at 8 kHz (swcodecs.opus), no resampling.
2. PyAV's libopus wrapper, which decodes at 48 kHz only, plus swcodecs.resample
   8 -> 48 kHz before encoding and 48 -> 8 kHz after decoding.

Both encode and decode every 20 ms frame of codecs/vectors/speech_8k.wav at the same
settings (mono, VoIP, 24 kbit/s, complexity 5, FEC on, 5 % expected loss).
Run: .venv/bin/python codecs/tools/measure_opus_paths.py
"""

from __future__ import annotations

import fractions
import sys
import time
import wave
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swcodecs.opus import OpusDecoder, OpusEncoder  # noqa: E402
from swcodecs.resample import Resampler  # noqa: E402

BITRATE, COMPLEXITY, LOSS = 24000, 5, 5


def load() -> np.ndarray:
    with wave.open(str(ROOT / "vectors" / "speech_8k.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def run_ctypes(x: np.ndarray) -> float:
    enc = OpusEncoder(8000, bitrate=BITRATE, complexity=COMPLEXITY, expected_loss_pct=LOSS)
    dec = OpusDecoder(8000)
    frames = x.reshape(-1, 160)
    t0 = time.perf_counter()
    for f in frames:
        dec.decode(enc.encode(f))
    return (time.perf_counter() - t0) / len(frames)


def run_pyav(x: np.ndarray) -> float:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48000
    enc.layout = "mono"
    enc.format = "s16"
    enc.bit_rate = BITRATE
    enc.time_base = fractions.Fraction(1, 48000)
    enc.options = {
        "application": "voip",
        "compression_level": str(COMPLEXITY),
        "fec": "1",
        "packet_loss": str(LOSS),
    }
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate = 48000
    dec.layout = "mono"
    dec.format = "s16"
    up, down = Resampler(8000, 48000), Resampler(48000, 8000)
    su, sd = up.new_state(), down.new_state()
    frames = x.reshape(-1, 160)
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        y48, su = up.process(f, su)
        frame = av.AudioFrame.from_ndarray(y48[None, :], format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = i * 960
        for packet in enc.encode(frame):
            for out in dec.decode(packet):
                _, sd = down.process(out.to_ndarray()[0], sd)
    return (time.perf_counter() - t0) / len(frames)


def main() -> None:
    x = load()
    x = x[: len(x) // 160 * 160]
    for name, fn in (("ctypes @ 8 kHz", run_ctypes), ("PyAV @ 48 kHz + resample", run_pyav)):
        best = min(fn(x) for _ in range(3))
        print(f"{name:28s} {best * 1e6:7.1f} us per 20 ms frame (encode + decode)")


if __name__ == "__main__":
    main()
