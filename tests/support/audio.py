"""Test tones in, frequency checks out: what call tests feed phones and look for."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, rate: int = 8000) -> Path:
    """16-bit mono PCM WAV from float samples in [-1, 1] or int16 samples."""
    path = Path(path)
    if samples.dtype != np.int16:
        samples = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def make_tone_wav(
    path: str | os.PathLike[str],
    freq: float,
    seconds: float,
    *,
    rate: int = 8000,
    amplitude: float = 0.5,
) -> Path:
    """A sine tone; baresip's aufile ends the call when the file ends, so be generous."""
    t = np.arange(round(seconds * rate)) / rate
    return write_wav(path, amplitude * np.sin(2 * np.pi * freq * t), rate)


def write_silence_wav(path: str | os.PathLike[str], seconds: float, rate: int = 8000) -> Path:
    return write_wav(path, np.zeros(round(seconds * rate), dtype=np.int16), rate)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Mono float samples in [-1, 1] (first channel) and the sample rate."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        frames = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM is supported, got {8 * width}-bit")
    data = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)[:, 0]
    return data.astype(np.float64) / 32768.0, rate


def dominant_frequencies(
    path: str | os.PathLike[str], count: int = 1, *, start: float = 0.0, end: float | None = None
) -> list[float]:
    """The ``count`` strongest frequencies (Hz) of a WAV segment, strongest first.

    Peaks closer than 50 Hz to a stronger one are skipped, so a single tone does not
    also show up as its own neighbouring bins.
    """
    samples, rate = read_wav(path)
    seg = samples[round(start * rate) : None if end is None else round(end * rate)]
    if len(seg) < 64:
        return []
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    freqs = np.fft.rfftfreq(len(seg), 1.0 / rate)
    spectrum[freqs < 20] = 0  # DC offset is not a tone
    picked: list[float] = []
    for idx in np.argsort(spectrum)[::-1]:
        f = float(freqs[idx])
        if spectrum[idx] <= 0:
            break
        if all(abs(f - p) >= 50 for p in picked):
            picked.append(f)
            if len(picked) == count:
                break
    return picked


def tone_present_throughout(
    path: str | os.PathLike[str],
    freq: float,
    *,
    window: float = 0.5,
    tolerance: float = 15.0,
    min_level: float = 0.01,
    skip_start: float = 0.0,
    skip_end: float = 0.0,
) -> tuple[bool, list[str]]:
    """Whether every ``window``-second slice is dominated by ``freq`` (± ``tolerance``).

    Returns ``(ok, problems)`` with one line per bad slice. ``skip_start``/``skip_end``
    leave out call set-up and tear-down. Lost packets are simply absent from baresip's
    recordings, so a gap shows up as a shorter file, not as a silent slice: compare
    the duration separately where that matters.
    """
    samples, rate = read_wav(path)
    n = round(window * rate)
    first = round(skip_start * rate)
    last = len(samples) - round(skip_end * rate)
    problems = []
    slices = 0
    for a in range(first, last - n + 1, n):
        seg = samples[a : a + n]
        slices += 1
        rms = float(np.sqrt(np.mean(seg**2)))
        label = f"{a / rate:.2f}-{(a + n) / rate:.2f} s"
        if rms < min_level:
            problems.append(f"{label}: silent (rms {rms:.4f})")
            continue
        spectrum = np.abs(np.fft.rfft(seg * np.hanning(n)))
        freqs = np.fft.rfftfreq(n, 1.0 / rate)
        spectrum[freqs < 20] = 0
        peak = float(freqs[int(np.argmax(spectrum))])
        if abs(peak - freq) > tolerance:
            problems.append(f"{label}: dominant {peak:.0f} Hz, expected {freq:.0f} Hz")
    if slices == 0:
        problems.append(f"recording too short ({len(samples) / rate:.2f} s)")
    return not problems, problems


def duration_seconds(path: str | os.PathLike[str]) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()
