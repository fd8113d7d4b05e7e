"""G.711 mu-law (PCMU) and A-law (PCMA) by table look-up, over arrays of any shape.

Decoding is one gather from a 256-entry int16 table; encoding is one gather from a
65,536-entry uint8 table indexed by the int16 sample reinterpreted as uint16, so a whole
``(streams, samples)`` tick costs one numpy call per direction. The tables are generated
from a bit-level transcription of the ITU-T G.191 reference (``codecs/tools``) and are
therefore bit-exact with it. FFmpeg's encoder (used by aiortc through PyAV) rounds a
few hundred inputs one step differently; its decoder agrees with ours.

``ulaw_to_alaw``/``alaw_to_ulaw`` use direct 256-entry tables built via the linear value:
each code is decoded with the reference decoder and re-encoded with the reference
encoder, so they equal ``alaw_encode(ulaw_decode(c))`` exactly. G.711's own conversion
tables were not reproduced. With these, a double conversion (mu -> A -> mu or
A -> mu -> A) moves 16 of the 256 codes by one quantisation level.
"""

from __future__ import annotations

import base64
import zlib
from typing import Final, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from . import _g711_tables as _t

PT_PCMU: Final = 0
PT_PCMA: Final = 8
SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = 160  # 20 ms, the usual RTP packetisation

ULAW_SILENCE: Final = 0xFF
ALAW_SILENCE: Final = 0xD5

Law = Literal["PCMU", "PCMA"]
_T = TypeVar("_T")


def _frozen(values: object, dtype: type) -> np.ndarray:
    arr = np.array(values, dtype=dtype)
    arr.flags.writeable = False
    return arr


def _unpack(packed: str) -> np.ndarray:
    arr = np.frombuffer(zlib.decompress(base64.b64decode(packed)), dtype=np.uint8).copy()
    arr.flags.writeable = False
    return arr


ULAW_DECODE_TABLE: Final = _frozen(_t.ULAW_DECODE, np.int16)
ALAW_DECODE_TABLE: Final = _frozen(_t.ALAW_DECODE, np.int16)
ULAW_ENCODE_TABLE: Final = _unpack(_t.ULAW_ENCODE_Z)
ALAW_ENCODE_TABLE: Final = _unpack(_t.ALAW_ENCODE_Z)
ULAW_TO_ALAW_TABLE: Final = _frozen(_t.ULAW_TO_ALAW, np.uint8)
ALAW_TO_ULAW_TABLE: Final = _frozen(_t.ALAW_TO_ULAW, np.uint8)

CodeInput = bytes | bytearray | memoryview | npt.NDArray[np.uint8]


def _codes(codes: CodeInput) -> np.ndarray:
    if isinstance(codes, bytes | bytearray | memoryview):
        return np.frombuffer(codes, dtype=np.uint8)
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
        raise TypeError("G.711 codes must be bytes-like or a uint8 array")
    return codes


def _pcm_index(pcm: npt.NDArray[np.int16]) -> np.ndarray:
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
        # Silent wrap-around of int32 or float input would corrupt audio, so refuse it.
        raise TypeError("G.711 encoders take int16 arrays; clip and convert first")
    return pcm.view(np.uint16)


def _lookup(table: np.ndarray, index: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    # mode="clip" skips the bounds check buffer that the default mode allocates when
    # out= is given; every index is already in range by construction.
    return np.take(table, index, out=out, mode="clip")


def ulaw_decode(
    codes: CodeInput, out: npt.NDArray[np.int16] | None = None
) -> npt.NDArray[np.int16]:
    """Decode mu-law codes (bytes or uint8 array of any shape) to int16 samples."""
    return _lookup(ULAW_DECODE_TABLE, _codes(codes), out)


def alaw_decode(
    codes: CodeInput, out: npt.NDArray[np.int16] | None = None
) -> npt.NDArray[np.int16]:
    """Decode A-law codes (bytes or uint8 array of any shape) to int16 samples."""
    return _lookup(ALAW_DECODE_TABLE, _codes(codes), out)


def ulaw_encode(
    pcm: npt.NDArray[np.int16], out: npt.NDArray[np.uint8] | None = None
) -> npt.NDArray[np.uint8]:
    """Encode int16 samples of any shape to mu-law codes (uint8, same shape)."""
    return _lookup(ULAW_ENCODE_TABLE, _pcm_index(pcm), out)


def alaw_encode(
    pcm: npt.NDArray[np.int16], out: npt.NDArray[np.uint8] | None = None
) -> npt.NDArray[np.uint8]:
    """Encode int16 samples of any shape to A-law codes (uint8, same shape)."""
    return _lookup(ALAW_ENCODE_TABLE, _pcm_index(pcm), out)


def ulaw_to_alaw(
    codes: CodeInput, out: npt.NDArray[np.uint8] | None = None
) -> npt.NDArray[np.uint8]:
    """Transcode mu-law codes to A-law codes in one look-up (via the linear value)."""
    return _lookup(ULAW_TO_ALAW_TABLE, _codes(codes), out)


def alaw_to_ulaw(
    codes: CodeInput, out: npt.NDArray[np.uint8] | None = None
) -> npt.NDArray[np.uint8]:
    """Transcode A-law codes to mu-law codes in one look-up (via the linear value)."""
    return _lookup(ALAW_TO_ULAW_TABLE, _codes(codes), out)


def decode(
    law: Law, codes: CodeInput, out: npt.NDArray[np.int16] | None = None
) -> npt.NDArray[np.int16]:
    """Decode ``codes`` with the law named by its RTP encoding name."""
    return _lookup(decode_table(law), _codes(codes), out)


def encode(
    law: Law, pcm: npt.NDArray[np.int16], out: npt.NDArray[np.uint8] | None = None
) -> npt.NDArray[np.uint8]:
    """Encode ``pcm`` with the law named by its RTP encoding name."""
    return _lookup(encode_table(law), _pcm_index(pcm), out)


def decode_table(law: Law) -> np.ndarray:
    """The read-only 256-entry int16 decode table of ``law`` (for fused engine kernels)."""
    return _by_law(law, ULAW_DECODE_TABLE, ALAW_DECODE_TABLE)


def encode_table(law: Law) -> np.ndarray:
    """The read-only 65,536-entry uint8 encode table of ``law``, indexed by uint16 view."""
    return _by_law(law, ULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE)


def silence_code(law: Law) -> int:
    """The code of a zero sample: 0xFF for mu-law, 0xD5 for A-law."""
    return _by_law(law, ULAW_SILENCE, ALAW_SILENCE)


def silence(law: Law, n: int = FRAME_SAMPLES) -> bytes:
    """``n`` samples of encoded silence, ready to send as a payload."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return bytes((silence_code(law),)) * n


def payload_type(law: Law) -> int:
    """The static RTP payload type (RFC 3551): 0 for PCMU, 8 for PCMA."""
    return _by_law(law, PT_PCMU, PT_PCMA)


def _by_law(law: str, ulaw: _T, alaw: _T) -> _T:
    name = law.upper()
    if name == "PCMU":
        return ulaw
    if name == "PCMA":
        return alaw
    raise ValueError(f"unknown G.711 law {law!r}; expected 'PCMU' or 'PCMA'")
