"""Tones the conference plays (join, leave, beep), and the source that feeds any audio
into a stream or room 20 ms at a time. Pure numpy; prompts are files, see
:mod:`.audiofile`."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

RATE: Final = 8000
FRAME: Final = 160
PROMPTS: Final = Path(__file__).resolve().parent / "prompts"
PROMPT_NAMES: Final = ("enter_pin", "wrong_pin", "muted", "unmuted")


def prompt_path(name: str) -> Path:
    """The file of a built-in prompt: ``enter_pin``, ``wrong_pin``, ``muted``,
    ``unmuted`` (8 kHz mu-law WAV, made by ``codecs/tools/make_prompts.sh``)."""
    if name not in PROMPT_NAMES:
        raise KeyError(f"unknown prompt {name!r}; known: {', '.join(PROMPT_NAMES)}")
    return PROMPTS / f"{name}.wav"


def tone(
    freqs: float | tuple[float, ...],
    ms: int,
    *,
    amplitude: float = 6000.0,
    fade_ms: float = 5.0,
    rate: int = RATE,
) -> npt.NDArray[np.int16]:
    """A sine (or a sum of sines, each of ``amplitude``) with short fades, so that
    starting and stopping it does not click."""
    if isinstance(freqs, int | float):
        freqs = (float(freqs),)
    n = rate * ms // 1000
    t = np.arange(n) / rate
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) * amplitude
    fade = min(int(rate * fade_ms / 1000), n // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        x[:fade] *= ramp
        x[n - fade :] *= ramp[::-1]
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def silence(ms: int, rate: int = RATE) -> npt.NDArray[np.int16]:
    return np.zeros(rate * ms // 1000, np.int16)


def beep(freq: float = 1000.0, ms: int = 150) -> npt.NDArray[np.int16]:
    return tone(freq, ms)


def join_tone() -> npt.NDArray[np.int16]:
    """Two rising notes: someone came in."""
    return np.concatenate([tone(660, 120), silence(30), tone(880, 160)])


def leave_tone() -> npt.NDArray[np.int16]:
    """Two falling notes: someone left."""
    return np.concatenate([tone(880, 120), silence(30), tone(660, 160)])


class Playback:
    """Audio handed out one frame at a time (the tail of the last frame is zero-padded);
    ``loop`` starts over at the end (music on hold)."""

    __slots__ = ("_pos", "_samples", "loop")

    def __init__(self, samples: npt.NDArray[np.int16], *, loop: bool = False) -> None:
        samples = np.asarray(samples)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise TypeError("playback takes mono int16 samples")
        if loop and not len(samples):
            raise ValueError("cannot loop nothing")
        self._samples = samples
        self._pos = 0
        self.loop = loop

    @property
    def done(self) -> bool:
        return not self.loop and self._pos >= len(self._samples)

    def next_frame(self, n: int = FRAME) -> npt.NDArray[np.int16] | None:
        """The next ``n`` samples, or None once finished."""
        if self.done:
            return None
        s = self._samples
        end = self._pos + n
        if end <= len(s):
            frame = s[self._pos : end]
            self._pos = end
            if self.loop and end == len(s):
                self._pos = 0
            return frame
        out = np.zeros(n, np.int16)
        k = len(s) - self._pos
        out[:k] = s[self._pos :]
        if self.loop:
            filled = k
            while filled < n:
                take = min(n - filled, len(s))
                out[filled : filled + take] = s[:take]
                filled += take
            self._pos = (self._pos + n) % len(s)
        else:
            self._pos = len(s)
        return out
