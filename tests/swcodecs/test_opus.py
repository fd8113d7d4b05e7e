from __future__ import annotations

import numpy as np
import pytest

from swcodecs import opus
from swcodecs.opus import OpusDecoder, OpusEncoder, OpusError


def _snr(ref: np.ndarray, test: np.ndarray) -> float:
    err = test.astype(float) - ref.astype(float)
    return 10 * np.log10(np.sum(ref.astype(float) ** 2) / max(np.sum(err**2), 1.0))


def test_library_loads() -> None:
    assert opus.version().startswith("libopus")


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_round_trip_shapes_at_native_rates(rate: int) -> None:
    enc, dec = OpusEncoder(rate), OpusDecoder(rate)
    n = rate // 50
    t = np.arange(n * 10)
    x = (8000 * np.sin(2 * np.pi * 440 * t / rate)).astype(np.int16)
    for i in range(10):
        payload = enc.encode(x[i * n : (i + 1) * n])
        assert 1 < len(payload) <= opus.MAX_PACKET
        assert opus.packet_samples(payload, rate) == n
        y = dec.decode(payload)
        assert y.shape == (n,) and y.dtype == np.int16
    assert enc.frame_samples == dec.frame_samples == n


def test_speech_survives_and_lookahead_is_reported(speech_8k: np.ndarray) -> None:
    enc, dec = OpusEncoder(8000), OpusDecoder(8000)
    y = np.concatenate([dec.decode(enc.encode(f)) for f in speech_8k.reshape(-1, 160)])
    d = enc.lookahead
    assert d == 52  # 6.5 ms at 8 kHz (libopus 1.3)
    assert _snr(speech_8k[: len(y) - d], y[d:]) > 5  # a perceptual codec; PESQ is elsewhere


def test_lost_packet_runs_libopus_plc(speech_8k: np.ndarray) -> None:
    enc, dec = OpusEncoder(8000), OpusDecoder(8000)
    frames = speech_8k.reshape(-1, 160)
    for f in frames[:50]:
        dec.decode(enc.encode(f))
    concealed = dec.decode(None)
    assert concealed.shape == (160,) and np.abs(concealed).max() > 0
    assert dec.decode(None, frame_samples=80).shape == (80,)


def test_fec_rebuilds_the_lost_frame_better_than_plc(speech_8k: np.ndarray) -> None:
    frames = speech_8k.reshape(-1, 160)
    enc = OpusEncoder(8000, bitrate=24000, fec=True, expected_loss_pct=10)
    packets = [enc.encode(f) for f in frames]
    lost = set(range(40, len(frames) - 1, 17))

    def run(use_fec: bool) -> np.ndarray:
        dec = OpusDecoder(8000)
        out = []
        for i, p in enumerate(packets):
            if i in lost:
                nxt = packets[i + 1]
                out.append(dec.decode(nxt, fec=True) if use_fec else dec.decode(None))
            else:
                out.append(dec.decode(p))
        return np.concatenate(out)

    with_fec, with_plc = run(True), run(False)
    reference = np.concatenate(_decode_all(packets))  # what arrived had nothing been lost
    lost_idx = np.concatenate([np.arange(i * 160, (i + 1) * 160) for i in sorted(lost)])
    assert (
        _snr(reference[lost_idx], with_fec[lost_idx])
        > _snr(reference[lost_idx], with_plc[lost_idx]) + 3
    )


def _decode_all(packets: list[bytes]) -> list[np.ndarray]:
    dec = OpusDecoder(8000)
    return [dec.decode(p) for p in packets]


def test_each_object_has_its_own_state() -> None:
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((20, 160)) * 3000).astype(np.int16)
    b = (rng.standard_normal((20, 160)) * 3000).astype(np.int16)
    solo_a = list(map(OpusEncoder(8000).encode, a))
    ea, eb = OpusEncoder(8000), OpusEncoder(8000)
    interleaved = []
    for fa, fb in zip(a, b, strict=True):
        interleaved.append(ea.encode(fa))
        eb.encode(fb)
    assert interleaved == solo_a


def test_stereo_interleaved() -> None:
    enc, dec = OpusEncoder(48000, channels=2), OpusDecoder(48000, channels=2)
    x = np.zeros((960, 2), np.int16)
    y = dec.decode(enc.encode(x))
    assert y.shape == (960, 2)


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="Opus runs at"):
        OpusEncoder(44100)
    with pytest.raises(ValueError):
        OpusDecoder(8000, channels=3)
    with pytest.raises(ValueError):
        OpusEncoder(8000, complexity=11)
    enc = OpusEncoder(8000)
    with pytest.raises(OpusError, match="opus_encode") as info:
        enc.encode(np.zeros(100, np.int16))  # not a legal frame size
    assert info.value.code == -1
    with pytest.raises(TypeError):
        enc.encode(np.zeros(160, np.float32))  # type: ignore[arg-type]
    dec = OpusDecoder(8000)
    with pytest.raises(OpusError, match="corrupted"):
        dec.decode(b"\x03")  # code 3 packet without its frame-count byte
    enc.close()
    enc.close()  # idempotent
    with pytest.raises(OpusError, match="closed"):
        enc.encode(np.zeros(160, np.int16))
    with pytest.raises(OpusError, match="closed"):
        enc.set_bitrate(16000)  # must not hand libopus a NULL state
    dec.close()
    with pytest.raises(OpusError, match="closed"):
        dec.reset()
    with pytest.raises(OpusError, match="closed"):
        dec.decode(None)


def test_empty_payload_counts_as_lost() -> None:
    dec = OpusDecoder(8000)
    assert dec.decode(b"").shape == (160,)


def test_reset_and_settings() -> None:
    enc = OpusEncoder(8000, bitrate=12000, complexity=2, fec=False, expected_loss_pct=0)
    enc.set_bitrate(16000)
    enc.set_expected_loss(10)
    x = np.zeros(160, np.int16)
    first = enc.encode(x)
    enc.reset()
    assert enc.encode(x) == first
    dec = OpusDecoder(8000)
    dec.decode(first)
    dec.reset()
