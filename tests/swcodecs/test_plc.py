from __future__ import annotations

import numpy as np
import pytest

from swcodecs import plc

RATE = 8000
FRAME = 160


def _tone(freq: float, frames: int, amp: float = 8000.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(frames * FRAME)
    return (amp * np.sin(2 * np.pi * freq * t / RATE + phase)).astype(np.int16)


def _run(state: plc.PlcState, x: np.ndarray, lost_frames: set[int]) -> np.ndarray:
    out = []
    for i in range(x.shape[-1] // FRAME):
        frame = x[..., i * FRAME : (i + 1) * FRAME].reshape(state.streams, FRAME)
        lost = np.full(state.streams, i in lost_frames)
        out.append(plc.process(state, frame, lost))
    return np.concatenate(out, axis=1)


def test_output_length_and_dtype() -> None:
    st = plc.PlcState(3)
    plc.receive(st, _tone(200, 3).reshape(3, FRAME))
    for n in (FRAME, 80, 240):
        y = plc.conceal(st, n=n)
        assert y.shape == (3, n) and y.dtype == np.int16
    assert plc.conceal(st, [1], n=FRAME).shape == (1, FRAME)


def test_silence_state_conceals_silence() -> None:
    st = plc.PlcState(2)
    assert not plc.conceal(st).any()


def test_first_10ms_repeat_the_pitch_period() -> None:
    # 200 Hz has a 40-sample period; a periodic signal should continue almost exactly.
    x = _tone(200, 4)
    st = plc.PlcState(1)
    for i in range(3):
        plc.receive(st, x[None, i * FRAME : (i + 1) * FRAME])
    assert st.pitch[0] % 40 == 0
    y = plc.conceal(st)[0]
    full_level = y[:80].astype(int) - x[3 * FRAME : 3 * FRAME + 80]
    assert np.abs(full_level).max() < 0.05 * 8000


def test_decays_to_silence_after_60ms() -> None:
    st = plc.PlcState(1)
    x = _tone(173, 5)
    for i in range(5):
        plc.receive(st, x[None, i * FRAME : (i + 1) * FRAME])
    y = np.concatenate([plc.conceal(st)[0] for _ in range(5)])
    rms = [np.sqrt(np.mean(y[k : k + 80].astype(float) ** 2)) for k in range(0, len(y), 80)]
    assert rms[0] > 0.6 * 8000 / np.sqrt(2)  # 0-10 ms: full level
    assert all(a >= b for a, b in zip(rms[1:6], rms[2:6], strict=False))  # falling
    assert not y[480:].any()  # silent from 60 ms on


def test_continuity_at_loss_start_and_recovery() -> None:
    for freq in (137.0, 200.0, 250.0, 310.0):
        x = _tone(freq, 12, phase=0.3)
        st = plc.PlcState(1)
        y = _run(st, x, {5})[0].astype(int)
        # A step between samples no larger than the signal's own largest step, with
        # some slack for the pitch estimate rounding to whole samples.
        max_step = np.abs(np.diff(x.astype(int))).max()
        assert np.abs(np.diff(y)).max() <= 1.6 * max_step, freq
        # After recovery the real signal is back untouched beyond the cross-fade.
        assert np.array_equal(y[6 * FRAME + 80 :], x[6 * FRAME + 80 :])


def test_recovery_after_long_loss_fades_in() -> None:
    x = _tone(200, 12)
    st = plc.PlcState(1)
    y = _run(st, x, {3, 4, 5, 6, 7})[0].astype(int)
    assert not y[3 * FRAME + 480 : 8 * FRAME].any()
    ramp = np.abs(y[8 * FRAME : 8 * FRAME + 80])
    assert ramp[:10].max() < ramp[-20:].max()
    assert np.abs(np.diff(y[8 * FRAME - 1 : 9 * FRAME])).max() <= np.abs(np.diff(x)).max()


def test_streams_are_independent_and_vectorised() -> None:
    x = np.stack([_tone(140, 10), _tone(220, 10, 3000), _tone(95, 10, 12000)])
    losses = [{3, 4}, set(), {4, 5, 6, 7}]
    st = plc.PlcState(3)
    out = []
    for i in range(10):
        lost = np.array([i in s for s in losses])
        out.append(plc.process(st, x[:, i * FRAME : (i + 1) * FRAME], lost))
    together = np.concatenate(out, axis=1)
    for row, losses_row in enumerate(losses):
        alone = _run(plc.PlcState(1), x[row][None, :], losses_row)[0]
        assert np.array_equal(together[row], alone)
    assert np.array_equal(together[1], x[1])


def test_other_sample_rates_scale_the_search() -> None:
    st = plc.PlcState(1, sample_rate=16000)
    assert (st.min_pitch, st.max_pitch) == (80, 240)
    t = np.arange(320 * 3)
    x = (6000 * np.sin(2 * np.pi * 160 * t / 16000)).astype(np.int16)
    plc.receive(st, x[None, :])
    assert plc.conceal(st, n=320).shape == (1, 320)
    assert st.pitch[0] % 100 == 0  # 160 Hz at 16 kHz: a 100-sample period


def test_process_validates_shapes() -> None:
    st = plc.PlcState(2)
    with pytest.raises(ValueError):
        plc.process(st, np.zeros((3, FRAME), np.int16), np.zeros(3, bool))
