"""Two real phones (baresip) call each other through the switch and must hear each
other for the whole call.

Each phone sends a tone of its own frequency and records what it receives; an FFT of
every half second of each recording must find the other phone's tone. One-way audio,
silence, or a recording much shorter than the call (baresip leaves lost packets out)
fails. The second test gives one phone only PCMU and the other only PCMA, so the
switch has to transcode.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.audio import duration_seconds, make_tone_wav, tone_present_throughout

pytestmark = pytest.mark.interop

DOMAIN = "acme.example"
TENANTS = {DOMAIN: [("201", "secret201", "Alice"), ("202", "secret202", "Bruno")]}
TONE_A, TONE_B = 440.0, 1200.0
CALL_SECONDS = 5.0
# RTP ports above the kernel's ephemeral range, away from other tests and benches.
CALLS = {"ring_timeout": 10, "media_timeout": 20, "rtp_port_min": 62000, "rtp_port_max": 62999}


def run_call(softswitch, phones, tmp_path: Path, codecs_a, codecs_b) -> None:  # type: ignore[no-untyped-def]
    daemon = softswitch(TENANTS, t1=0.1, ban_failures=1000, calls=CALLS)
    host, port = daemon.address
    wav_a = make_tone_wav(tmp_path / "tone_a.wav", TONE_A, 60)
    wav_b = make_tone_wav(tmp_path / "tone_b.wav", TONE_B, 60)
    alice = phones(
        None,
        f"sip:201@{DOMAIN}",
        "201",
        "secret201",
        host,
        port,
        codecs=codecs_a,
        audio_file=wav_a,
        record=True,
    )
    bruno = phones(
        None,
        f"sip:202@{DOMAIN}",
        "202",
        "secret202",
        host,
        port,
        codecs=codecs_b,
        audio_file=wav_b,
        record=True,
    )
    assert alice.registered(10), alice.log_tail()
    assert bruno.registered(10), bruno.log_tail()

    alice.dial(f"sip:202@{DOMAIN}")
    bruno.wait_event("CALL_ESTABLISHED", 10)
    alice.wait_event("CALL_ESTABLISHED", 10)
    time.sleep(CALL_SECONDS)
    alice.hangup()
    alice.wait_event("CALL_CLOSED", 10)
    bruno.wait_event("CALL_CLOSED", 10)
    # sndfile closes its files when the call's audio stops.
    time.sleep(0.5)

    for phone, expected, name in ((alice, TONE_B, "alice"), (bruno, TONE_A, "bruno")):
        files = phone.recorded_files("dec")
        assert len(files) == 1, f"{name}: recordings {files}\n{phone.log_tail()}"
        length = duration_seconds(files[0])
        assert length > CALL_SECONDS - 1.5, f"{name} heard only {length:.1f} s"
        ok, problems = tone_present_throughout(files[0], expected, skip_start=0.5, skip_end=0.3)
        assert ok, f"{name} did not hear {expected:.0f} Hz throughout:\n" + "\n".join(problems)

    res = daemon.run_cli(
        "cdr", "--config", str(daemon.config), "--since", "2000-01-01", "--format", "csv"
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) >= 2 or _wait_cdr(daemon), res.stdout


def _wait_cdr(daemon) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        res = daemon.run_cli("cdr", "--config", str(daemon.config), "--since", "2000-01-01")
        rows = res.stdout.strip().splitlines()[1:]
        if rows:
            assert ",answered," in rows[0], rows
            return True
        time.sleep(0.2)
    return False


@pytest.mark.timeout(90)
def test_two_phones_hear_each_other(softswitch, phones, tmp_path: Path) -> None:
    run_call(softswitch, phones, tmp_path, ("PCMU", "PCMA"), ("PCMU", "PCMA"))


@pytest.mark.timeout(90)
def test_pcmu_phone_and_pcma_phone_are_transcoded(softswitch, phones, tmp_path: Path) -> None:
    run_call(softswitch, phones, tmp_path, ("PCMU",), ("PCMA",))
