"""Codec bench: swcodecs against aiortc (G.711) and a plain C libopus program (Opus).

Figures:

* "G.711 frames transcoded per second": PCMU decode + PCMA encode of 20 ms frames.
  Ours handles a ``(streams, 160)`` block per call, as the engine does each tick; aiortc
  (``PcmuDecoder`` + ``PcmaEncoder``, FFmpeg through PyAV) handles one frame per call,
  as its RTP receiver does. Target 20x.
* "G.711 <-> Opus transcoded calls per core": per call and 20 ms tick, PCMU -> Opus one
  way and Opus -> PCMU the other, one libopus encoder and decoder per call. Ours batches
  the G.711 look-ups across calls and drives libopus through ctypes; the peer is
  ``bench/c/opus_peer.c`` at the same settings. Calls per core = 20 ms / time per
  call-tick. Target 0.8x. Both must produce byte-identical PCMU before any time counts.

Run alone with ``python -m bench.bench_codecs [--quick]``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "codecs") not in sys.path:
    # An editable install made before swcodecs had an __init__ maps it as a namespace
    # package; putting the source folder first makes the real package win.
    sys.path.insert(0, str(ROOT / "codecs"))

from bench._common import SERVER_CPU, figure, pinned_self, work_dir  # noqa: E402
from swcodecs import g711  # noqa: E402
from swcodecs.opus import OpusDecoder, OpusEncoder  # noqa: E402

VECTOR = ROOT / "codecs" / "vectors" / "speech_8k.wav"
C_SOURCE = Path(__file__).resolve().parent / "c" / "opus_peer.c"
FRAME = 160
TICK = 0.020
# The settings the engine ships with for G.711 <-> Opus legs.
OPUS_SETTINGS = {"bitrate": 24000, "complexity": 5, "fec": True, "expected_loss_pct": 5}


def _speech_codes() -> np.ndarray:
    with wave.open(str(VECTOR)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    frames = pcm[: len(pcm) // FRAME * FRAME].reshape(-1, FRAME)
    return g711.ulaw_encode(frames)


def _best_of(repeats: int, fn: Any) -> float:
    return min(fn() for _ in range(repeats))


# --- (a) G.711 transcoding ---------------------------------------------------------


def _ours_g711(codes: np.ndarray, streams: int, seconds: float) -> tuple[float, np.ndarray]:
    idx = np.arange(streams) % len(codes)
    block = np.ascontiguousarray(codes[idx])
    pcm = np.empty(block.shape, np.int16)
    out = np.empty(block.shape, np.uint8)
    g711.ulaw_decode(block, out=pcm)
    g711.alaw_encode(pcm, out=out)
    result = out.copy()

    def once() -> float:
        reps = 0
        start = time.perf_counter()
        while True:
            for _ in range(20):
                g711.ulaw_decode(block, out=pcm)
                g711.alaw_encode(pcm, out=out)
            reps += 20
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return streams * reps / elapsed

    return _best_of(3, once), result


def _aiortc_g711(codes: np.ndarray, seconds: float) -> tuple[float, np.ndarray]:
    from aiortc.codecs.g711 import PcmaEncoder, PcmuDecoder
    from aiortc.jitterbuffer import JitterFrame

    payloads = [bytes(c) for c in codes]

    def run(n: int) -> tuple[float, list[bytes]]:
        dec, enc = PcmuDecoder(), PcmaEncoder()
        sent: list[bytes] = []
        start = time.perf_counter()
        for i in range(n):
            for frame in dec.decode(JitterFrame(payloads[i % len(payloads)], i * FRAME)):
                sent += enc.encode(frame)[0]
        return time.perf_counter() - start, sent

    _, sent = run(len(payloads))
    result = np.frombuffer(b"".join(sent), np.uint8).reshape(-1, FRAME)

    def once() -> float:
        n = 2000
        while True:
            elapsed, _ = run(n)
            if elapsed >= seconds:
                return n / elapsed
            n *= 2

    return _best_of(3, once), result


def bench_g711(quick: bool) -> dict[str, Any]:
    codes = _speech_codes()
    streams = 1000
    seconds = 0.2 if quick else 1.0
    with pinned_self(SERVER_CPU):
        ours, ours_out = _ours_g711(codes, streams, seconds)
        peer, peer_out = _aiortc_g711(codes, seconds)
    # Check the work before trusting the time. Ours must equal the G.711 reference.
    # FFmpeg's encoder rounds some inputs one level the other way (about 3 % of the
    # samples here, since mu-law levels often sit on A-law decision boundaries).
    expected = g711.ulaw_to_alaw(codes)
    assert np.array_equal(ours_out, expected[np.arange(streams) % len(codes)])
    levels = np.unique(g711.ALAW_DECODE_TABLE)
    rank_ref = np.searchsorted(levels, g711.alaw_decode(expected)).astype(int)
    rank_peer = np.searchsorted(levels, g711.alaw_decode(peer_out[: len(codes)])).astype(int)
    assert np.abs(rank_ref - rank_peer).max() <= 1, "aiortc output is not G.711 A-law"
    return figure(
        "G.711 frames transcoded per second",
        ours,
        peer,
        "aiortc PcmuDecoder+PcmaEncoder, 1 frame per call",
        20.0,
        "frames/s",
        note=f"ours: {streams} streams x 160 samples per call",
    )


# --- (b) G.711 <-> Opus calls per core ----------------------------------------------


def _ours_opus(codes: np.ndarray, calls: int, ticks: int) -> tuple[float, bytes, int]:
    n = len(codes)
    # Call c plays the clip from frame c on, as the C peer does.
    order = (np.arange(ticks)[:, None] + np.arange(calls)[None, :]) % n
    encoders = [OpusEncoder(8000, **OPUS_SETTINGS) for _ in range(calls)]  # type: ignore[arg-type]
    decoders = [OpusDecoder(8000) for _ in range(calls)]
    pcm = np.empty((calls, FRAME), np.int16)
    back = np.empty((calls, FRAME), np.int16)
    out = np.empty((ticks, calls, FRAME), np.uint8)
    total = 0
    start = time.perf_counter()
    for t in range(ticks):
        g711.ulaw_decode(codes[order[t]], out=pcm)
        for c in range(calls):
            packet = encoders[c].encode(pcm[c])
            total += len(packet)
            back[c] = decoders[c].decode(packet)
        g711.ulaw_encode(back, out=out[t])
    elapsed = time.perf_counter() - start
    return elapsed / (ticks * calls), out.tobytes(), total


def _build_peer(work: Path) -> Path | None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    exe = work / "opus_peer"
    proc = subprocess.run(
        [gcc, "-O3", "-o", str(exe), str(C_SOURCE), "-lopus"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(f"cannot build the C peer (libopus-dev installed?):\n{proc.stderr}", flush=True)
        return None
    return exe


def _c_opus(
    exe: Path, work: Path, codes: np.ndarray, calls: int, ticks: int
) -> tuple[float, bytes, int]:
    codes_file, out_file = work / "codes.ulaw", work / "out.ulaw"
    codes_file.write_bytes(codes.tobytes())
    s = OPUS_SETTINGS
    cmd = [str(exe), str(codes_file), str(calls), str(ticks), str(s["bitrate"])]
    cmd += [str(s["complexity"]), str(int(s["fec"])), str(s["expected_loss_pct"]), str(out_file)]
    line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return float(line[0]) * 1e-6, out_file.read_bytes(), int(line[1])


def bench_opus(quick: bool) -> dict[str, Any]:
    codes = _speech_codes()
    calls, ticks, rounds = (10, 50, 3) if quick else (40, 100, 7)
    work = work_dir("codecs")
    exe = _build_peer(work)
    ours_t = peer_t = float("inf")
    with pinned_self(SERVER_CPU):
        # Alternate short rounds and keep each side's best, so a burst of load from
        # elsewhere on the machine cannot land on one side only.
        for i in range(rounds):
            t, ours_out, ours_bytes = _ours_opus(codes, calls, ticks)
            ours_t = min(ours_t, t)
            if exe is None:
                continue
            t, peer_out, peer_bytes = _c_opus(exe, work, codes, calls, ticks)
            peer_t = min(peer_t, t)
            if i == 0:
                # Same libopus, input and settings: the bitstreams and the PCMU sent back
                # to the phones must be identical, or the timing compares different work.
                assert peer_bytes == ours_bytes, (peer_bytes, ours_bytes)
                assert peer_out == ours_out, "C peer and swcodecs produced different PCMU"
    peer = TICK / peer_t if exe is not None else None
    s = OPUS_SETTINGS
    return figure(
        "G.711 <-> Opus transcoded calls per core",
        TICK / ours_t,
        peer,
        "C program on libopus (bench/c/opus_peer.c)" if peer else "C peer unavailable",
        0.8,
        "calls/core",
        note=(
            f"8 kHz, {s['bitrate'] // 1000} kbit/s, complexity {s['complexity']}, FEC on; "
            f"{ours_t * 1e6:.0f} us per call-tick"
        ),
    )


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Both codec figures; ``quick`` shortens the timing runs."""
    return [bench_g711(quick), bench_opus(quick)]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="swcodecs bench")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for f in run(quick=args.quick):
        ratio = "-" if f["ratio"] is None else f"{f['ratio']:.2f}"
        peer = "-" if f["peer"] is None else f"{f['peer']:,.1f}"
        print(f"{f['figure']}: ours {f['ours']:,.1f} {f['unit']}, peer {peer} ({f['peer_name']})")
        print(f"    ratio {ratio}, target {f['target']}; {f.get('note', '')}")
