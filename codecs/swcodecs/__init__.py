"""swcodecs: the softswitch codec library (G.711, Opus, resampling, concealment).

Depends on numpy (and libopus at run time for Opus) only; never on ``softswitch``.

>>> import numpy as np
>>> get_codec("PCMU").payload_type
0
>>> enc = get_encoder("PCMA", 8000)
>>> len(enc.encode(np.zeros(160, np.int16)))
160
"""

from __future__ import annotations

from dataclasses import dataclass

from . import g711, opus, plc, resample
from ._g711_codec import G711Decoder, G711Encoder
from .base import Decoder, Encoder
from .opus import OpusDecoder, OpusEncoder, OpusError

__all__ = [
    "CodecInfo",
    "Decoder",
    "Encoder",
    "G711Decoder",
    "G711Encoder",
    "OpusDecoder",
    "OpusEncoder",
    "OpusError",
    "codec_names",
    "g711",
    "get_codec",
    "get_decoder",
    "get_encoder",
    "opus",
    "plc",
    "resample",
]


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """What SDP negotiation and the RTP layer need to know about a codec."""

    name: str  # RTP/SDP encoding name, with its usual case
    payload_type: int  # static PT, or the conventional dynamic one for Opus
    clock_rate: int  # RTP timestamp rate (48000 for Opus whatever it runs at)
    channels: int  # channels we encode and decode
    frame_samples: int  # RTP timestamp increment per 20 ms frame
    sample_rate: int  # native PCM rate of the codec's own decoder
    sdp_channels: int  # channel count written in a=rtpmap (RFC 7587: opus/48000/2)
    static_payload_type: bool  # False when the PT is dynamic and must come from SDP


_CODECS: dict[str, CodecInfo] = {
    "pcmu": CodecInfo("PCMU", g711.PT_PCMU, 8000, 1, 160, 8000, 1, True),
    "pcma": CodecInfo("PCMA", g711.PT_PCMA, 8000, 1, 160, 8000, 1, True),
    "opus": CodecInfo("opus", opus.PAYLOAD_TYPE, 48000, 1, 960, 48000, 2, False),
}


def codec_names() -> list[str]:
    """Encoding names of every codec in the registry."""
    return [c.name for c in _CODECS.values()]


def get_codec(name: str) -> CodecInfo:
    """Codec facts by encoding name (case-insensitive, as SDP encoding names are)."""
    try:
        return _CODECS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(codec_names())}") from None


def get_encoder(name: str, rate: int = 8000, **options: object) -> Encoder:
    """A fresh encoder for one stream taking int16 PCM at ``rate``.

    G.711 at a rate other than 8 kHz resamples internally. Opus runs natively at 8, 12,
    16, 24 or 48 kHz; ``options`` go to :class:`OpusEncoder` (bitrate, complexity, ...).
    """
    info = get_codec(name)
    if info.name == "opus":
        return OpusEncoder(rate, **options)  # type: ignore[arg-type]
    if options:
        raise TypeError(f"{info.name} takes no options")
    return G711Encoder(info.name, rate)  # type: ignore[arg-type]


def get_decoder(name: str, rate: int = 8000) -> Decoder:
    """A fresh decoder for one stream producing int16 PCM at ``rate``."""
    info = get_codec(name)
    if info.name == "opus":
        return OpusDecoder(rate)
    return G711Decoder(info.name, rate)  # type: ignore[arg-type]
