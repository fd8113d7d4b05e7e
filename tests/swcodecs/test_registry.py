from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

import swcodecs
from swcodecs import Decoder, Encoder, get_codec, get_decoder, get_encoder

CODECS_DIR = Path(__file__).resolve().parents[2] / "codecs"


def test_codec_table() -> None:
    pcmu, pcma, op = get_codec("PCMU"), get_codec("pcma"), get_codec("OPUS")
    assert (pcmu.payload_type, pcmu.clock_rate, pcmu.channels, pcmu.frame_samples) == (
        0,
        8000,
        1,
        160,
    )
    assert (pcma.payload_type, pcma.clock_rate, pcma.frame_samples) == (8, 8000, 160)
    assert pcmu.static_payload_type and pcma.static_payload_type
    # RFC 7587: opus/48000/2 in SDP, 960 timestamp ticks per 20 ms, dynamic PT.
    assert (op.name, op.clock_rate, op.sdp_channels, op.frame_samples) == ("opus", 48000, 2, 960)
    assert not op.static_payload_type
    assert swcodecs.codec_names() == ["PCMU", "PCMA", "opus"]
    with pytest.raises(KeyError, match="unknown codec"):
        get_codec("G729")


@pytest.mark.parametrize("name", ["PCMU", "PCMA", "opus"])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_encoders_and_decoders_share_one_interface(name: str, rate: int) -> None:
    enc, dec = get_encoder(name, rate), get_decoder(name, rate)
    assert isinstance(enc, Encoder) and isinstance(dec, Decoder)
    assert enc.name == dec.name == get_codec(name).name
    assert enc.sample_rate == dec.sample_rate == rate
    assert enc.frame_samples == dec.frame_samples == rate // 50
    t = np.arange(rate // 50 * 5)
    x = (6000 * np.sin(2 * np.pi * 300 * t / rate)).astype(np.int16)
    for frame in x.reshape(5, -1):
        y = dec.decode(enc.encode(frame))
        assert y.shape == frame.shape and y.dtype == np.int16
    assert dec.decode(None).shape == (rate // 50,)
    assert dec.decode(enc.encode(x[: rate // 50]), fec=True).shape == (rate // 50,)


def test_g711_objects_match_array_functions() -> None:
    rng = np.random.default_rng(5)
    pcm = rng.integers(-20000, 20000, 160, dtype=np.int16)
    enc, dec = get_encoder("PCMA"), get_decoder("PCMA")
    payload = enc.encode(pcm)
    assert payload == swcodecs.g711.alaw_encode(pcm).tobytes()
    assert np.array_equal(dec.decode(payload), swcodecs.g711.alaw_decode(payload))
    with pytest.raises(TypeError):
        get_encoder("PCMU", 8000, bitrate=1)


def test_options_reach_opus() -> None:
    enc = get_encoder("opus", 16000, bitrate=12000, complexity=3)
    assert isinstance(enc, swcodecs.OpusEncoder)
    assert (enc.bitrate, enc.complexity) == (12000, 3)


def test_swcodecs_imports_only_numpy_av_and_stdlib() -> None:
    allowed = {"numpy", "av", "swcodecs"} | set(sys.stdlib_module_names)
    for path in (CODECS_DIR / "swcodecs").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_codecs_folder_is_not_a_package() -> None:
    assert not (CODECS_DIR / "__init__.py").exists()
    import codecs

    assert codecs.__spec__ is not None and "swcodecs" not in str(codecs.__spec__.origin)
    assert Path(swcodecs.__file__).parent == CODECS_DIR / "swcodecs"


def test_vectors_are_small_and_documented() -> None:
    vectors = CODECS_DIR / "vectors"
    assert sum(p.stat().st_size for p in vectors.iterdir()) < 300_000
    assert (vectors / "README.md").exists()
