"""Perceptual quality (ITU-T P.862 PESQ, narrowband MOS-LQO) of the speech vector.

Thresholds sit a margin below the values measured on Debian 12 with libopus 1.3.1 and
pesq 0.0.4, noted beside each; PESQ and libopus are deterministic for a given build.
"""

from __future__ import annotations

import numpy as np
import pytest
from pesq import pesq

from swcodecs import g711, get_decoder, get_encoder, plc
from swcodecs.opus import OpusDecoder, OpusEncoder

RATE = 8000
FRAME = 160


def mos(ref: np.ndarray, deg: np.ndarray) -> float:
    return float(pesq(RATE, ref, deg[: len(ref)], "nb"))


def _loss_pattern(frames: int, pct: float, seed: int = 0) -> np.ndarray:
    lost = np.random.default_rng(seed).random(frames) < pct / 100
    lost[0] = False
    return lost


def _opus_round_trip(frames: np.ndarray, lost: np.ndarray | None = None) -> np.ndarray:
    enc, dec = OpusEncoder(RATE, bitrate=24000, complexity=5), OpusDecoder(RATE)
    packets = [enc.encode(f) for f in frames]
    out = []
    for i, p in enumerate(packets):
        if lost is None or not lost[i]:
            out.append(dec.decode(p))
        elif i + 1 < len(packets) and not lost[i + 1]:
            out.append(dec.decode(packets[i + 1], fec=True))  # the jitter buffer has it
        else:
            out.append(dec.decode(None))
    return np.concatenate(out)


def test_ulaw_round_trip(speech_8k: np.ndarray) -> None:
    score = mos(speech_8k, g711.ulaw_decode(g711.ulaw_encode(speech_8k)))
    assert score >= 4.2  # measured 4.345


def test_alaw_round_trip(speech_8k: np.ndarray) -> None:
    score = mos(speech_8k, g711.alaw_decode(g711.alaw_encode(speech_8k)))
    assert score >= 4.15  # measured 4.303


def test_opus_round_trip_narrowband(speech_8k: np.ndarray) -> None:
    score = mos(speech_8k, _opus_round_trip(speech_8k.reshape(-1, FRAME)))
    assert score >= 4.1  # measured 4.270 (24 kbit/s, complexity 5, FEC on)


def test_g711_to_opus_to_g711(speech_8k: np.ndarray) -> None:
    from_phone = g711.ulaw_decode(g711.ulaw_encode(speech_8k)).reshape(-1, FRAME)
    through_opus = _opus_round_trip(from_phone)
    to_phone = g711.ulaw_decode(g711.ulaw_encode(through_opus))
    assert mos(speech_8k, to_phone) >= 3.85  # measured 3.973


def test_opus_with_5pct_loss_fec_and_plc(speech_8k: np.ndarray) -> None:
    frames = speech_8k.reshape(-1, FRAME)
    lost = _loss_pattern(len(frames), 5.0)
    assert lost.sum() == 12  # 12 of 250 frames
    assert mos(speech_8k, _opus_round_trip(frames, lost)) >= 3.75  # measured 3.986


def test_g711_with_5pct_loss_plc_beats_silence(speech_8k: np.ndarray) -> None:
    codes = g711.ulaw_encode(speech_8k.reshape(-1, FRAME))
    lost = _loss_pattern(len(codes), 5.0)
    st = plc.PlcState(1)
    concealed = np.concatenate(
        [
            plc.process(st, g711.ulaw_decode(codes[i : i + 1]), lost[i : i + 1])[0]
            for i in range(len(codes))
        ]
    )
    zeroed = g711.ulaw_decode(codes).copy()
    zeroed[lost] = 0
    with_plc, with_zeros = mos(speech_8k, concealed), mos(speech_8k, zeroed.ravel())
    assert with_plc >= 3.35  # measured 3.525
    assert with_plc > with_zeros + 0.1  # zero-fill measured 3.299


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_wideband_leg_through_g711(
    law: g711.Law, speech_16k: np.ndarray, speech_8k: np.ndarray
) -> None:
    # A 16 kHz leg bridged to a G.711 phone: our resampler, then G.711, judged against
    # the clip that sox resampled independently.
    enc, dec = get_encoder(law, 16000), get_decoder(law, 8000)
    out = np.concatenate([dec.decode(enc.encode(f)) for f in speech_16k.reshape(-1, 320)])
    assert mos(speech_8k, out) >= 4.15  # measured 4.336 (PCMU), 4.302 (PCMA)
