"""Reading prompts and writing recordings: 8 kHz mono int16 in and out.

WAV files in the formats telephony uses (16-bit PCM, mu-law, A-law at 8 kHz) are read
directly, with swcodecs' G.711 tables for the companded ones; anything else (other
rates, MP3, Opus, stereo ...) goes through PyAV, resampled to 8 kHz mono.

:class:`Recorder` writes what a leg or room carries through PyAV: ``.wav`` as 16-bit
PCM, ``.opus``/``.ogg`` as Opus at 8 kHz. It collects a second of audio before handing
it to the encoder, so the engine's tick pays for the encoder once a second per
recording, not once a frame.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from swcodecs import g711

RATE: Final = 8000
_WAVE_PCM: Final = 1
_WAVE_ALAW: Final = 6
_WAVE_MULAW: Final = 7


def load_audio(path: str | Path) -> npt.NDArray[np.int16]:
    """The whole file as 8 kHz mono int16 samples."""
    path = Path(path)
    if path.suffix.lower() == ".wav":
        pcm = _read_telephony_wav(path)
        if pcm is not None:
            return pcm
    return _read_av(path)


def _read_telephony_wav(path: Path) -> npt.NDArray[np.int16] | None:
    """8 kHz mono PCM16 / mu-law / A-law WAV, or None for anything else."""
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        chunk = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", chunk)
        elif cid == b"data":
            body = chunk
        pos += 8 + size + (size & 1)
    if fmt is None or body is None:
        return None
    tag, channels, rate, _, _, bits = fmt
    if channels != 1 or rate != RATE:
        return None
    if tag == _WAVE_PCM and bits == 16:
        return np.frombuffer(body[: len(body) // 2 * 2], "<i2").astype(np.int16)
    if tag == _WAVE_MULAW and bits == 8:
        return g711.ulaw_decode(body)
    if tag == _WAVE_ALAW and bits == 8:
        return g711.alaw_decode(body)
    return None


def _read_av(path: Path) -> npt.NDArray[np.int16]:
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        for frame in container.decode(stream):
            for f in resampler.resample(frame):
                out.append(f.to_ndarray().reshape(-1))
        for f in resampler.resample(None):
            out.append(f.to_ndarray().reshape(-1))
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)


class Recorder:
    """Frames of 8 kHz int16 to a file (module docstring). Close it to finish the file."""

    def __init__(self, path: str | Path, *, flush_frames: int = 50) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix == ".wav":
            codec, options = "pcm_s16le", {}
        elif suffix in (".opus", ".ogg"):
            codec, options = "libopus", {"b": "24000"}
        else:
            raise ValueError(f"record to .wav, .opus or .ogg, not {suffix!r}")
        fmt = "ogg" if suffix in (".opus", ".ogg") else None
        self._container = av.open(str(self.path), "w", format=fmt)
        self._stream = self._container.add_stream(codec, rate=RATE, layout="mono")
        if options:
            self._stream.codec_context.options = options
        self._pending: list[npt.NDArray[np.int16]] = []
        self._flush_frames = flush_frames
        self.samples = 0
        self.closed = False

    def write(self, frame: npt.NDArray[np.int16]) -> None:
        if self.closed:
            raise ValueError("recording is closed")
        self._pending.append(np.array(frame, np.int16, copy=True))
        if len(self._pending) >= self._flush_frames:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        pcm = np.concatenate(self._pending)
        self._pending = []
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.samples
        self.samples += len(pcm)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self.closed:
            return
        self._flush()
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self.closed = True
