"""The per-tick transcode step, pure: all G.711 frames of a tick in one array.

Every transcoded frame of a tick is a row of a ``(rows, samples)`` uint8 array. Decoding
is one gather from a 512-entry table (mu-law codes at 0..255, A-law at 256..511) and
encoding one gather from a 131,072-entry table (mu-law then A-law, each indexed by the
int16 sample seen as uint16), so a tick costs the same two numpy calls whether it
carries 3 frames or 3,000, and whatever mix of PCMU->PCMA and PCMA->PCMU rows it holds.
The linear ``pcm`` block in between is where conference mixing and Opus rows plug in.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from swcodecs import g711

LAW_PCMU: Final = 0
LAW_PCMA: Final = 1
LAWS: Final = {"PCMU": LAW_PCMU, "PCMA": LAW_PCMA}

_DECODE: Final = np.concatenate([g711.ULAW_DECODE_TABLE, g711.ALAW_DECODE_TABLE])
_ENCODE: Final = np.concatenate([g711.ULAW_ENCODE_TABLE, g711.ALAW_ENCODE_TABLE])
_DECODE.flags.writeable = False
_ENCODE.flags.writeable = False


def law_of(codec_name: str) -> int | None:
    """LAW_PCMU / LAW_PCMA for a G.711 encoding name, None for anything else."""
    return LAWS.get(codec_name.upper())


def decode_rows(
    codes: npt.NDArray[np.uint8], laws: npt.NDArray[np.uint16], out: npt.NDArray[np.int16]
) -> npt.NDArray[np.int16]:
    """Decode each row of ``codes`` with its law (``laws``: one LAW_* per row)."""
    index = codes.astype(np.uint16)
    index |= (laws << 8)[:, None]
    return np.take(_DECODE, index, out=out, mode="clip")


def encode_rows(
    pcm: npt.NDArray[np.int16], laws: npt.NDArray[np.uint16], out: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    """Encode each row of ``pcm`` with its law."""
    index = pcm.view(np.uint16).astype(np.uint32)
    index |= (laws.astype(np.uint32) << 16)[:, None]
    return np.take(_ENCODE, index, out=out, mode="clip")


def transcode_rows(
    codes: npt.NDArray[np.uint8],
    src_laws: npt.NDArray[np.uint16],
    dst_laws: npt.NDArray[np.uint16],
) -> npt.NDArray[np.uint8]:
    """One tick: every row decoded with its source law and re-encoded with its target.

    Rows may have any common length (160 samples for 20 ms at 8 kHz). The result equals
    ``g711.ulaw_to_alaw`` / ``alaw_to_ulaw`` row by row, and the input where the laws
    match.
    """
    if codes.ndim != 2 or codes.dtype != np.uint8:
        raise TypeError("codes must be a (rows, samples) uint8 array")
    if len(src_laws) != len(codes) or len(dst_laws) != len(codes):
        raise ValueError("one source and one target law per row")
    pcm = np.empty(codes.shape, np.int16)
    decode_rows(codes, src_laws, pcm)
    return encode_rows(pcm, dst_laws, np.empty(codes.shape, np.uint8))
