from __future__ import annotations

import numpy as np
import pytest

from softswitch.media.transcode import LAW_PCMA, LAW_PCMU, law_of, transcode_rows
from swcodecs import g711

ALL = np.arange(256, dtype=np.uint8)


def laws(*values: int) -> np.ndarray:
    return np.array(values, np.uint16)


def test_a_tick_of_pcmu_becomes_the_reference_pcma():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (300, 160), dtype=np.uint8)
    out = transcode_rows(
        codes, np.full(300, LAW_PCMU, np.uint16), np.full(300, LAW_PCMA, np.uint16)
    )
    assert out.dtype == np.uint8 and out.shape == (300, 160)
    assert np.array_equal(out, g711.ulaw_to_alaw(codes))
    assert np.array_equal(out, g711.alaw_encode(g711.ulaw_decode(codes)))


def test_every_code_in_both_directions_and_identity_in_one_tick():
    codes = np.stack([ALL, ALL, ALL, ALL])
    out = transcode_rows(
        codes,
        laws(LAW_PCMU, LAW_PCMA, LAW_PCMU, LAW_PCMA),
        laws(LAW_PCMA, LAW_PCMU, LAW_PCMU, LAW_PCMA),
    )
    assert np.array_equal(out[0], g711.ulaw_to_alaw(ALL))
    assert np.array_equal(out[1], g711.alaw_to_ulaw(ALL))
    assert np.array_equal(out[2], g711.ulaw_encode(g711.ulaw_decode(ALL)))
    assert np.array_equal(out[3], g711.alaw_encode(g711.alaw_decode(ALL)))


def test_empty_tick_and_shape_errors():
    empty = np.empty((0, 160), np.uint8)
    assert transcode_rows(empty, laws(), laws()).shape == (0, 160)
    with pytest.raises(TypeError):
        transcode_rows(np.zeros(160, np.uint8), laws(0), laws(1))
    with pytest.raises(ValueError):
        transcode_rows(np.zeros((2, 160), np.uint8), laws(0), laws(1, 0))


def test_law_names():
    assert law_of("pcmu") == LAW_PCMU and law_of("PCMA") == LAW_PCMA
    assert law_of("opus") is None
