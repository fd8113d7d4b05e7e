"""Three real phones (baresip) in one conference: each dials the conference number,
enters the PIN with DTMF (RFC 4733), and must hear the other two at once and not
itself.

Each phone sends a tone of its own frequency and records what it receives. The check
runs on the last seconds before the hang-up, when all three are in the room: every
half second of each recording must carry both other tones, and its own tone must be
at least 20 dB below them (mix-minus).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.audio import duration_seconds, make_tone_wav, read_wav
from tests.support.baresip import BaresipPhone
from tests.support.daemon import SoftswitchDaemon, toml_value, write_config

pytestmark = pytest.mark.interop

DOMAIN = "acme.example"
EXTENSIONS = [("201", "secret201"), ("202", "secret202"), ("203", "secret203")]
PIN = "4711"
CONFERENCES = [
    {"number": "800", "name": "Weekly", "pin": PIN, "max_participants": 5},
    {"number": "801", "name": "Open"},
]
TONES = {"201": 440.0, "202": 1000.0, "203": 1700.0}
ROOM_SECONDS = 5.0
# RTP ports away from the other call tests and the kernel's ephemeral range.
CALLS = {"ring_timeout": 10, "media_timeout": 20, "rtp_port_min": 63000, "rtp_port_max": 63499}


def start_daemon(workdir: Path, conferences: Sequence[Mapping[str, Any]]) -> SoftswitchDaemon:
    """A daemon whose only tenant has the three extensions and ``conferences``."""
    config = write_config(
        workdir / "softswitch.toml",
        {DOMAIN: EXTENSIONS},
        t1=0.1,
        ban_failures=1000,
        calls=CALLS,
    )
    # The tenant is the last table of the file, so these attach to it.
    lines = []
    for conf in conferences:
        lines.append("  [[tenants.conferences]]")
        lines += [f"  {k} = {toml_value(v)}" for k, v in conf.items()]
    with config.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    daemon = SoftswitchDaemon(config, log_path=workdir / "softswitch.log")
    daemon.start()
    return daemon


def conference_snapshot(daemon: SoftswitchDaemon) -> dict:
    res = daemon.run_cli("conferences", "--config", str(daemon.config), "--format", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def wait_participants(daemon: SoftswitchDaemon, number: str, count: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        snap = conference_snapshot(daemon)
        rooms = [r for r in snap["rooms"] if r["number"] == number]
        if rooms and len(rooms[0]["participants"]) == count:
            return rooms[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"room {number}: wanted {count} participants, have {snap}")
        time.sleep(0.1)


def level(samples: np.ndarray, rate: int, freq: float) -> float:
    """Spectrum magnitude around ``freq`` (Hann window, ±10 Hz)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    band = (freqs > freq - 10) & (freqs < freq + 10)
    return float(spectrum[band].max())


def check_mix_minus(
    path: Path, hear: Sequence[float], own: float | None, start: float, end: float
) -> list[str]:
    """Problems found in [start, end) s of a recording, half a second at a time."""
    samples, rate = read_wav(path)
    problems = []
    n = rate // 2
    for a in range(round(start * rate), round(end * rate) - n + 1, n):
        seg = samples[a : a + n]
        label = f"{a / rate:.1f} s"
        heard = {f: level(seg, rate, f) for f in hear}
        loudest = float(np.abs(np.fft.rfft(seg * np.hanning(n))).max())
        if loudest < 1.0:
            problems.append(f"{label}: silent")
            continue
        for f, v in heard.items():
            if v < 0.25 * loudest:
                problems.append(f"{label}: {f:.0f} Hz is weak ({v / loudest:.2f} of the peak)")
        if own is not None:
            mine = level(seg, rate, own)
            if mine > 0.1 * min(heard.values()):
                problems.append(f"{label}: hears itself ({own:.0f} Hz at {mine:.1f})")
    if not problems and round(end * rate) - round(start * rate) < n:
        problems.append("nothing to check")
    return problems


def hang_up_together(phones: Sequence[BaresipPhone]) -> None:
    threads = [threading.Thread(target=p.hangup) for p in phones]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)


@pytest.mark.timeout(120)
def test_three_phones_in_a_conference_hear_the_other_two(
    phones: Callable[..., BaresipPhone], tmp_path: Path
) -> None:
    daemon = start_daemon(tmp_path / "switch", CONFERENCES)
    try:
        host, port = daemon.address
        members = []
        for user, _password in EXTENSIONS:
            wav = make_tone_wav(tmp_path / f"tone_{user}.wav", TONES[user], 90, amplitude=0.25)
            phone = phones(
                None,
                f"sip:{user}@{DOMAIN}",
                user,
                f"secret{user}",
                host,
                port,
                audio_file=wav,
                record=True,
            )
            members.append((user, phone))
        for _user, phone in members:
            assert phone.registered(10), phone.log_tail()

        for count, (_user, phone) in enumerate(members, start=1):
            phone.dial(f"sip:800@{DOMAIN}")
            phone.wait_event("CALL_ESTABLISHED", 10)
            time.sleep(0.7)  # the ACK has put the phone in the lobby: "enter PIN" plays
            phone.send_dtmf(PIN + "#")
            wait_participants(daemon, "800", count, 8)

        room = wait_participants(daemon, "800", 3, 1)
        assert sorted(p["caller"] for p in room["participants"]) == ["201", "202", "203"]
        listing = daemon.run_cli("conferences", "--config", str(daemon.config))
        assert "800 Weekly [PIN]: 3/5 in the room" in listing.stdout, listing.stdout
        time.sleep(ROOM_SECONDS)
        hang_up_together([p for _u, p in members])
        for _user, phone in members:
            phone.wait_event("CALL_CLOSED", 10)
        time.sleep(0.5)  # sndfile closes its files when the call's audio stops

        for user, phone in members:
            files = phone.recorded_files("dec")
            assert len(files) == 1, f"{user}: recordings {files}\n{phone.log_tail()}"
            length = duration_seconds(files[0])
            others = [TONES[u] for u in TONES if u != user]
            problems = check_mix_minus(
                files[0], others, TONES[user], length - ROOM_SECONDS + 1.0, length - 0.5
            )
            assert not problems, f"{user} ({length:.1f} s recorded):\n" + "\n".join(problems)

        deadline = time.monotonic() + 5
        while conference_snapshot(daemon)["rooms"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert conference_snapshot(daemon)["rooms"] == []
        res = daemon.run_cli("cdr", "--config", str(daemon.config), "--since", "2000-01-01")
        rows = [r for r in res.stdout.splitlines()[1:] if ",800," in r]
        assert len(rows) == 3 and all(",answered," in r for r in rows), res.stdout
    except BaseException:
        print(daemon.log_tail(80))
        raise
    finally:
        daemon.stop()
