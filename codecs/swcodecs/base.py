"""The small interface every codec object offers, so the media engine can treat them alike."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@runtime_checkable
class Encoder(Protocol):
    """One stream's encoder: int16 PCM frames at ``sample_rate`` in, RTP payloads out."""

    name: str  # RTP encoding name: "PCMU", "PCMA", "opus"
    sample_rate: int  # rate of the PCM it accepts
    frame_samples: int  # PCM samples per 20 ms frame at sample_rate

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes: ...


@runtime_checkable
class Decoder(Protocol):
    """One stream's decoder: payloads in, int16 PCM at ``sample_rate`` out.

    ``decode(None)`` conceals one lost frame. ``decode(next_payload, fec=True)`` rebuilds
    the lost frame before ``next_payload`` from its redundancy where the codec has any
    (Opus in-band FEC), and conceals it otherwise.
    """

    name: str
    sample_rate: int
    frame_samples: int

    def decode(self, payload: bytes | None, fec: bool = False) -> npt.NDArray[np.int16]: ...
