from __future__ import annotations

import numpy as np
import pytest

from softswitch.media.dtmf import (
    Digit,
    EventReceiver,
    ToneDetector,
    digit_event,
    event_packets,
    tone,
)
from softswitch.media.rtp import TelephoneEvent
from swcodecs import g711


def ev(event: int, duration: int, end: bool = False) -> bytes:
    return bytes(TelephoneEvent(event, end, 10, duration))


# --- RFC 4733 in -------------------------------------------------------------------------


def test_a_digit_is_reported_once_at_its_end():
    rx = EventReceiver()
    got = []
    for i, d in enumerate((160, 320, 480)):
        got += rx.packet(1000, ev(5, d), 0.02 * i)
    assert got == [] and rx.pending
    for _ in range(3):  # the end packet, three times
        got += rx.packet(1000, ev(5, 800, end=True), 0.1)
    assert got == [Digit("5", 100)]
    assert not rx.pending
    # A late copy of an interim packet does not start the digit again.
    assert rx.packet(1000, ev(5, 480), 0.2) == []
    assert rx.expire(5.0) == []


def test_the_same_digit_twice_is_two_events():
    rx = EventReceiver()
    got = rx.packet(0, ev(1, 800, end=True), 0.0)
    got += rx.packet(2000, ev(1, 800, end=True), 0.3)
    assert got == [Digit("1", 100), Digit("1", 100)]


def test_lost_end_packets_next_event_or_timeout_reports_the_digit():
    rx = EventReceiver(end_timeout=0.5)
    rx.packet(0, ev(7, 160), 0.0)
    rx.packet(0, ev(7, 480), 0.04)
    # The next digit starts before any end of "7" arrived.
    assert rx.packet(3000, ev(11, 160), 0.4) == [Digit("7", 60)]
    assert rx.expire(0.89) == []
    assert rx.expire(0.9) == [Digit("#", 20)]
    assert rx.expire(2.0) == []
    # Its end packets turn up late: not reported twice.
    assert rx.packet(3000, ev(11, 640, end=True), 2.1) == []


def test_several_events_in_one_packet():
    rx = EventReceiver()
    # "1" (ended, 800 long) and "2" starting where it ended, in one packet; then the
    # packet after it repeats "2" with its end.
    got = rx.packet(0, ev(1, 800, end=True) + ev(2, 160), 0.0)
    assert got == [Digit("1", 100)]
    got = rx.packet(0, ev(1, 800, end=True) + ev(2, 400, end=True), 0.02)
    assert got == [Digit("2", 50)]


def test_non_digit_events_are_not_reported():
    rx = EventReceiver()
    assert rx.packet(0, ev(16, 800, end=True), 0.0) == []  # flash


# --- RFC 4733 out ------------------------------------------------------------------------


def test_generated_digit_packets_and_their_round_trip():
    packets = event_packets("#", 100)
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True, False, False, False, False, False, False]
    assert [p.offset for p in packets] == list(range(7))
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {11}
    rx = EventReceiver()
    got = []
    for p in packets:
        got += rx.packet(4242, p.payload, 0.02 * p.offset)
    assert got == [Digit("#", 100)]


def test_generation_checks():
    assert digit_event("a") == 12 and digit_event("*") == 10
    with pytest.raises(ValueError):
        digit_event("x")
    with pytest.raises(ValueError):
        event_packets("1", 10)
    # 16 kHz telephone-event clock: durations in its units.
    assert (
        TelephoneEvent.parse(event_packets("1", 40, clock_rate=16000)[-1].payload).duration == 640
    )


# --- in-band -----------------------------------------------------------------------------


def dial(digits: str, on_ms: int = 60, off_ms: int = 60, amplitude: float = 6000, law="PCMU"):
    """A dialled sequence through a G.711 round trip, as 20 ms frames."""
    parts = [np.zeros(8 * 100, np.int16)]
    for d in digits:
        parts += [tone(d, on_ms, amplitude=amplitude), np.zeros(8 * off_ms, np.int16)]
    pcm = np.concatenate(parts + [np.zeros(8 * 100, np.int16)])
    pcm = pcm[: len(pcm) // 160 * 160]
    return g711.decode(law, g711.encode(law, pcm)).reshape(-1, 160)


def detect(det: ToneDetector, streams: list[np.ndarray]) -> list[list[Digit]]:
    """Run several streams side by side (rows 0..n-1), hop by hop."""
    n = max(len(s) for s in streams)
    rows = np.arange(len(streams), dtype=np.intp)
    found: list[list[Digit]] = [[] for _ in streams]
    for k in range(n):
        frames = np.stack([s[k] if k < len(s) else np.zeros(160, np.int16) for s in streams])
        for row, digit in det.process(frames, rows):
            found[row].append(digit)
    return found


def test_in_band_digits_across_streams_at_once():
    det = ToneDetector(2)  # grows to 4 rows
    streams = [
        dial("1234567890"),
        dial("*#ABCD", on_ms=100, off_ms=40, law="PCMA"),
        dial("159", amplitude=1500),  # quiet
        dial("73", on_ms=40, off_ms=40),  # the shortest digits a phone sends
    ]
    found = detect(det, streams)
    assert "".join(d.digit for d in found[0]) == "1234567890"
    assert "".join(d.digit for d in found[1]) == "*#ABCD"
    assert "".join(d.digit for d in found[2]) == "159"
    assert "".join(d.digit for d in found[3]) == "73"
    assert all(d.duration_ms in (60, 80) for d in found[0])
    assert all(d.duration_ms in (100, 120) for d in found[1])


def test_in_band_rejects_speech_like_audio_single_tones_and_twist():
    rng = np.random.default_rng(3)
    t = np.arange(8000 * 2) / 8000
    # A "voice": harmonics of a gliding 120-200 Hz pitch plus noise.
    f0 = 160 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 8000
    voice = sum(np.sin(k * phase) * 3000 / k for k in range(1, 15))
    voice = (voice + rng.normal(0, 300, len(t))).astype(np.int16)
    single = (8000 * np.sin(2 * np.pi * 1209 * t)).astype(np.int16)
    lo = np.sin(2 * np.pi * 697 * t)
    hi = np.sin(2 * np.pi * 1209 * t)
    twisted = (8000 * hi + 1500 * lo).astype(np.int16)  # high group 14.5 dB above
    noise = rng.normal(0, 4000, len(t)).astype(np.int16)
    streams = [x.reshape(-1, 160) for x in (voice, single, twisted, noise)]
    assert detect(ToneDetector(4), streams) == [[], [], [], []]


def test_a_digit_survives_a_noisy_line():
    rng = np.random.default_rng(4)
    pcm = dial("58").astype(np.float64)
    pcm += rng.normal(0, 400, pcm.shape)
    found = detect(ToneDetector(1), [pcm.astype(np.int16)])
    assert "".join(d.digit for d in found[0]) == "58"


def test_reset_forgets_a_digit_under_way():
    det = ToneDetector(1)
    frames = dial("9", on_ms=200)
    rows = np.array([0], np.intp)
    for k in range(10):  # in the middle of the digit
        det.process(frames[k : k + 1], rows)
    det.reset(0)
    quiet = np.zeros((1, 160), np.int16)
    assert [d for _ in range(10) for d in det.process(quiet, rows)] == []
