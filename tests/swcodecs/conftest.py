from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

VECTORS = Path(__file__).resolve().parents[2] / "codecs" / "vectors"


def load_wav(name: str) -> tuple[np.ndarray, int]:
    with wave.open(str(VECTORS / name)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).copy(), w.getframerate()


@pytest.fixture(scope="session")
def speech_8k() -> np.ndarray:
    x, rate = load_wav("speech_8k.wav")
    assert rate == 8000
    return x[: len(x) // 160 * 160]


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    x, rate = load_wav("speech_16k.wav")
    assert rate == 16000
    return x[: len(x) // 320 * 320]
