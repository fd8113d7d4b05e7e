"""Opus through a thin ctypes binding to the system libopus (Debian ``libopus0``).

Why ctypes and not PyAV: PyAV's libopus wrapper always decodes at 48 kHz, so a G.711
leg would need a 48 -> 8 kHz resampler on every decoded frame and an 8 -> 48 kHz one on
every encoded frame, and each frame pays for ``AudioFrame``/``Packet`` objects. libopus
itself encodes and decodes natively at 8, 12, 16, 24 and 48 kHz. Measured on this
machine (Debian 12, libopus 1.3.1, PyAV 18), encode + decode of one 20 ms frame of the
speech vector, mono, 24 kbit/s, complexity 5, FEC on, averaged over the 5 s clip:

* ctypes at 8 kHz, no resampler:                           about 100 us per frame
* PyAV (libopus at 48 kHz) + our 8 <-> 48 kHz resampling:  about 350 us per frame

(``codecs/tools/measure_opus_paths.py`` reproduces the figures.) So the engine uses
ctypes; the binding also exposes in-band FEC decoding, which PyAV does not.

Each :class:`OpusEncoder`/:class:`OpusDecoder` owns one libopus state (one per stream
and direction) and frees it when garbage-collected or on :meth:`close`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Final

import numpy as np
import numpy.typing as npt

OPUS_OK: Final = 0
APPLICATION_VOIP: Final = 2048
APPLICATION_AUDIO: Final = 2049
SIGNAL_VOICE: Final = 3001
_SET_BITRATE: Final = 4002
_SET_VBR: Final = 4006
_SET_COMPLEXITY: Final = 4010
_SET_INBAND_FEC: Final = 4012
_SET_PACKET_LOSS_PERC: Final = 4014
_SET_DTX: Final = 4016
_SET_SIGNAL: Final = 4024
_GET_LOOKAHEAD: Final = 4027
_RESET_STATE: Final = 4028
_GET_LAST_PACKET_DURATION: Final = 4039

SUPPORTED_RATES: Final = (8000, 12000, 16000, 24000, 48000)
PAYLOAD_TYPE: Final = 111  # dynamic; the conventional choice (WebRTC, Asterisk)
RTP_CLOCK_RATE: Final = 48000  # RFC 7587: always 48000 in SDP, whatever the codec rate
MAX_PACKET: Final = 1275  # largest single-frame Opus packet (RFC 6716, 3.2.1)
_MAX_FRAME_MS: Final = 120


class OpusError(RuntimeError):
    """A libopus call failed; ``code`` is the negative libopus error code."""

    def __init__(self, what: str, code: int) -> None:
        self.code = code
        super().__init__(f"{what}: {_strerror(code)} ({code})")


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            _lib = _bind(_open_library())
    return _lib


def _open_library() -> ctypes.CDLL:
    candidates = [ctypes.util.find_library("opus"), "libopus.so.0", "libopus.0.dylib"]
    errors = []
    for name in candidates:
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    raise OpusError(
        "cannot load libopus (install the libopus0 package); tried " + "; ".join(errors),
        -7,
    )


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i32, c_int = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int
    err_p = ctypes.POINTER(c_int)
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_get_version_string.argtypes = []
    lib.opus_get_version_string.restype = ctypes.c_char_p
    lib.opus_encoder_create.argtypes = [i32, c_int, c_int, err_p]
    lib.opus_encoder_create.restype = p
    lib.opus_encoder_destroy.argtypes = [p]
    lib.opus_encoder_destroy.restype = None
    # PCM goes in as bytes: ndarray.tobytes() (a 320-byte copy) plus c_char_p is about
    # 5x cheaper than asking numpy for the array's address (ndarray.ctypes.data).
    # Output buffers are preallocated and passed as raw addresses.
    lib.opus_encode.argtypes = [p, ctypes.c_char_p, c_int, p, i32]
    lib.opus_encode.restype = i32
    lib.opus_decoder_create.argtypes = [i32, c_int, err_p]
    lib.opus_decoder_create.restype = p
    lib.opus_decoder_destroy.argtypes = [p]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decode.argtypes = [p, ctypes.c_char_p, i32, p, c_int, c_int]
    lib.opus_decode.restype = c_int
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, i32, i32]
    lib.opus_packet_get_nb_samples.restype = c_int
    # The *_ctl functions are variadic: their argtypes stay unset and every argument
    # is wrapped explicitly (a bare int would be passed as a 32-bit int, truncating
    # the state pointer).
    lib.opus_encoder_ctl.restype = c_int
    lib.opus_decoder_ctl.restype = c_int
    return lib


def _strerror(code: int) -> str:
    try:
        lib = _load()
    except OpusError:
        return "libopus unavailable"
    msg = lib.opus_strerror(code)
    return msg.decode() if msg else "unknown error"


def version() -> str:
    """The libopus version string, e.g. ``'libopus 1.3.1'``."""
    return _load().opus_get_version_string().decode()


def _check_rate(sample_rate: int, channels: int) -> None:
    if sample_rate not in SUPPORTED_RATES:
        raise ValueError(f"Opus runs at {SUPPORTED_RATES} Hz, not {sample_rate}")
    if channels not in (1, 2):
        raise ValueError("Opus channels must be 1 or 2")


class OpusEncoder:
    """One libopus encoder: int16 frames of 2.5-60 ms in, one Opus packet out."""

    name = "opus"

    def __init__(
        self,
        sample_rate: int = 8000,
        channels: int = 1,
        bitrate: int = 24000,
        complexity: int = 5,
        fec: bool = True,
        expected_loss_pct: int = 5,
        dtx: bool = False,
        application: int = APPLICATION_VOIP,
    ) -> None:
        _check_rate(sample_rate, channels)
        if not 0 <= complexity <= 10:
            raise ValueError("complexity must be 0..10")
        if not 0 <= expected_loss_pct <= 100:
            raise ValueError("expected_loss_pct must be 0..100")
        self._lib = _load()
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_samples = sample_rate // 50
        err = ctypes.c_int(0)
        self._st = self._lib.opus_encoder_create(
            sample_rate, channels, application, ctypes.byref(err)
        )
        if err.value != OPUS_OK or not self._st:
            self._st = None
            raise OpusError("opus_encoder_create", err.value or -7)
        self._ctl(_SET_BITRATE, bitrate)
        self._ctl(_SET_COMPLEXITY, complexity)
        self._ctl(_SET_INBAND_FEC, int(fec))
        self._ctl(_SET_PACKET_LOSS_PERC, expected_loss_pct)
        self._ctl(_SET_DTX, int(dtx))
        self._ctl(_SET_SIGNAL, SIGNAL_VOICE)
        self._out = ctypes.create_string_buffer(MAX_PACKET)
        self._out_addr = ctypes.addressof(self._out)
        self.bitrate = bitrate
        self.complexity = complexity
        self.fec = fec

    def _handle(self) -> ctypes.c_void_p:
        # A NULL state would crash inside libopus, so a closed object fails here.
        if self._st is None:
            raise OpusError("use of a closed encoder", -6)
        return ctypes.c_void_p(self._st)

    def _ctl(self, request: int, value: int) -> None:
        rc = self._lib.opus_encoder_ctl(self._handle(), ctypes.c_int(request), ctypes.c_int(value))
        if rc != OPUS_OK:
            raise OpusError(f"opus_encoder_ctl({request}, {value})", rc)

    @property
    def lookahead(self) -> int:
        """Encoder delay in samples at this encoder's rate."""
        val = ctypes.c_int32(0)
        rc = self._lib.opus_encoder_ctl(
            self._handle(), ctypes.c_int(_GET_LOOKAHEAD), ctypes.byref(val)
        )
        if rc != OPUS_OK:
            raise OpusError("OPUS_GET_LOOKAHEAD", rc)
        return val.value

    def set_bitrate(self, bitrate: int) -> None:
        """Change the target bitrate (bits/s) from the next frame on."""
        self._ctl(_SET_BITRATE, bitrate)
        self.bitrate = bitrate

    def set_expected_loss(self, pct: int) -> None:
        """Tell the encoder the loss rate to protect against (drives FEC redundancy)."""
        self._ctl(_SET_PACKET_LOSS_PERC, pct)

    def reset(self) -> None:
        """Forget all history, as a fresh encoder (keeps the settings)."""
        rc = self._lib.opus_encoder_ctl(self._handle(), ctypes.c_int(_RESET_STATE))
        if rc != OPUS_OK:
            raise OpusError("OPUS_RESET_STATE", rc)

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode one frame: int16, ``(samples,)`` mono or ``(samples, channels)``
        interleaved; the length must be a valid Opus frame size (2.5 .. 60 ms)."""
        if self._st is None:
            raise OpusError("use of a closed encoder", -6)
        if pcm.dtype != np.int16:
            raise TypeError("Opus encoder takes int16 samples")
        n = pcm.size // self.channels
        rc = self._lib.opus_encode(self._st, pcm.tobytes(), n, self._out_addr, MAX_PACKET)
        if rc < 0:
            raise OpusError(f"opus_encode({n} samples)", rc)
        return self._out.raw[:rc]

    def close(self) -> None:
        """Free the libopus state now rather than at garbage collection."""
        if self._st is not None:
            self._lib.opus_encoder_destroy(self._st)
            self._st = None

    def __del__(self) -> None:
        if getattr(self, "_st", None) is not None:
            self.close()


class OpusDecoder:
    """One libopus decoder; ``decode(None)`` runs libopus's own concealment."""

    name = "opus"

    def __init__(self, sample_rate: int = 8000, channels: int = 1) -> None:
        _check_rate(sample_rate, channels)
        self._lib = _load()
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_samples = sample_rate // 50
        err = ctypes.c_int(0)
        self._st = self._lib.opus_decoder_create(sample_rate, channels, ctypes.byref(err))
        if err.value != OPUS_OK or not self._st:
            self._st = None
            raise OpusError("opus_decoder_create", err.value or -7)
        self._max = sample_rate * _MAX_FRAME_MS // 1000
        self._pcm = np.zeros(self._max * channels, np.int16)
        self._pcm_addr = self._pcm.ctypes.data
        self._last_samples = self.frame_samples

    def decode(
        self, payload: bytes | None, fec: bool = False, frame_samples: int | None = None
    ) -> npt.NDArray[np.int16]:
        """Decode one packet to int16 ``(samples,)`` (``(samples, channels)`` for stereo).

        ``payload=None`` means the packet was lost: libopus extrapolates
        ``frame_samples`` samples (default: the duration of the last packet). With
        ``fec=True``, ``payload`` is the packet *after* a lost one, and the lost frame
        is rebuilt from the redundant copy it carries (or concealed if it has none);
        decode the same payload again with ``fec=False`` for its own frame.
        """
        if self._st is None:
            raise OpusError("use of a closed decoder", -6)
        if not payload:
            payload = None  # an empty payload carries nothing: treat it as lost
        if payload is None or fec:
            n = frame_samples or self._last_samples
            if n > self._max:
                raise ValueError("frame_samples too large")
        else:
            n = self._max
        length = len(payload) if payload is not None else 0
        rc = self._lib.opus_decode(self._st, payload, length, self._pcm_addr, n, int(fec))
        if rc < 0:
            raise OpusError("opus_decode", rc)
        if payload is not None and not fec:
            self._last_samples = rc
        out = self._pcm[: rc * self.channels].copy()
        return out.reshape(rc, self.channels) if self.channels > 1 else out

    def reset(self) -> None:
        """Forget all history, as a fresh decoder."""
        if self._st is None:
            raise OpusError("use of a closed decoder", -6)
        rc = self._lib.opus_decoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(_RESET_STATE))
        if rc != OPUS_OK:
            raise OpusError("OPUS_RESET_STATE", rc)

    def close(self) -> None:
        """Free the libopus state now rather than at garbage collection."""
        if self._st is not None:
            self._lib.opus_decoder_destroy(self._st)
            self._st = None

    def __del__(self) -> None:
        if getattr(self, "_st", None) is not None:
            self.close()


def packet_samples(payload: bytes, sample_rate: int) -> int:
    """Samples the packet decodes to at ``sample_rate`` (from its TOC byte)."""
    rc = _load().opus_packet_get_nb_samples(payload, len(payload), sample_rate)
    if rc < 0:
        raise OpusError("opus_packet_get_nb_samples", rc)
    return rc
