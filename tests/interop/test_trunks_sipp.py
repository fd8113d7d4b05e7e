"""SIP trunks end to end: SIPp plays the carriers, baresip and SIPp the tenant's phones.

Carriers live on loopback addresses of their own (127.0.0.2, 127.0.0.3), because the
switch knows a trunk by its source address, never by what a request claims; the phones
and the switch stay on 127.0.0.1, so a phone can never pass for a carrier. Audio to and
from a carrier goes through a small RTP peer of the test's at the address the carrier's
SDP names: it answers every packet the switch relays with a tone of its own, so one
call checks both directions (an FFT of what each end received).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from swcodecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from tests.support.audio import duration_seconds, make_tone_wav, tone_present_throughout
from tests.support.daemon import SoftswitchDaemon, toml_value
from tests.support.ports import free_port, free_sip_port
from tests.support.sipmsg import build_request, new_call_id, send_request
from tests.support.sipp import (
    SippResult,
    auth_field,
    received_messages,
    run_sipp,
    write_injection_csv,
)

pytestmark = pytest.mark.interop

DOMAIN = "acme.example"
CARRIER_A, CARRIER_B, STRANGER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
ACCOUNT_A = ("0287654300", "carrier-secret-a")
ACCOUNT_B = ("0287654399", "carrier-secret-b")
EXTENSIONS = {"201": "secret-201", "202": "secret-202", "209": "secret-209"}
MAIN_NUMBER, ANNA_NUMBER = "+390287654300", "+390287654301"
PHONE_TONE, CARRIER_TONE = 440.0, 1200.0
CALL_SECONDS = 3.0
SINCE = "2000-01-01"


# -- the switch -------------------------------------------------------------------------


def trunk_config(
    path: Path,
    trunks: list[dict[str, Any]],
    *,
    tenant_trunks: list[str],
) -> Path:
    port = free_sip_port()
    lines = [
        f'listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]',
        'state_dir = "var"',
        'log_level = "debug"',
        "[sip]",
        "t1 = 0.1",
        'digest_algorithms = ["MD5"]',  # SIPp answers MD5 only
        "[security]",
        "ban_failures = 1000",
        "[calls]",
        "ring_timeout = 10",
        "media_timeout = 20",
        # RTP ports above the kernel's ephemeral range, away from other tests.
        "rtp_port_min = 63000",
        "rtp_port_max = 63999",
    ]
    for trunk in trunks:
        lines += ["", "[[trunks]]", *(f"{k} = {toml_value(v)}" for k, v in trunk.items())]
    lines += [
        "",
        "[[tenants]]",
        f'domain = "{DOMAIN}"',
        'name = "Acme"',
        f"trunks = {toml_value(tenant_trunks)}",
        "extensions = [",
        *(f'  {{ user = "{u}", password = "{p}" }},' for u, p in EXTENSIONS.items()),
        "]",
        "[tenants.dialplan]",
        'country = "IT"',
        "[tenants.outbound]",
        f'caller_id = "{MAIN_NUMBER}"',
        "[tenants.outbound.extensions.209]",
        "external = false",  # the lobby phone: internal and emergency calls only
        "privacy = true",
        "[[tenants.numbers]]",
        f'number = "{MAIN_NUMBER}"',
        'destination = "202"',
        "[[tenants.numbers]]",
        f'number = "{ANNA_NUMBER}"',
        'destination = "201"',
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def carrier_trunk(name: str, host: str, port: int, account: tuple[str, str], **extra: Any) -> dict:
    user, password = account
    return {
        "name": name,
        "host": host,
        "port": port,
        "username": user,
        "password": password,
        "country": "IT",
        "tenants": ["*"],
        **extra,
    }


@pytest.fixture
def switch(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[SoftswitchDaemon] = []

    def start(trunks: list[dict[str, Any]], tenant_trunks: list[str]) -> SoftswitchDaemon:
        workdir = tmp_path / f"switch{len(started)}"
        config = trunk_config(workdir / "softswitch.toml", trunks, tenant_trunks=tenant_trunks)
        daemon = SoftswitchDaemon(config, log_path=workdir / "softswitch.log")
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def background():  # type: ignore[no-untyped-def]
    pool = ThreadPoolExecutor(max_workers=4)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


# -- the carriers ------------------------------------------------------------------------


def carrier_uas(
    pool: ThreadPoolExecutor,
    tmp_path: Path,
    address: tuple[str, int],
    account: tuple[str, str],
    *,
    mode: str,
    rtp_port: int = 9,
    name: str,
    timeout: float = 25,
) -> Future[SippResult]:
    """A carrier taking one call on ``address`` (SIPp in the background)."""
    host, port = address
    return pool.submit(
        run_sipp,
        "trunk_carrier_uas",
        ("127.0.0.1", 5060),  # unused by a UAS, required on SIPp's command line
        workdir=tmp_path,
        calls=1,
        local_port=port,
        timeout=timeout,
        trace_msg=True,
        name=name,
        extra_args=[
            "-i", host,
            "-key", "mode", mode,
            "-key", "user", account[0],
            "-key", "pass", account[1],
            "-key", "rtp_port", str(rtp_port),
            "-mp", str(free_port(span=4, host=host)),
        ],
    )  # fmt: skip


def call_from_extension(
    daemon: SoftswitchDaemon,
    tmp_path: Path,
    dialled: str,
    *,
    caller: str = "201",
    scenario: str = "uac_call_bye",
    name: str,
) -> SippResult:
    row = (caller, dialled, DOMAIN, auth_field(caller, EXTENSIONS[caller]), "-", "-")
    inf = write_injection_csv(tmp_path / f"{name}.csv", [row])
    time.sleep(0.3)  # let the carriers bind their sockets
    return run_sipp(
        scenario,
        daemon.address,
        workdir=tmp_path,
        calls=1,
        inf=inf,
        timeout=20,
        trace_msg=True,
        name=name,
        local_port=free_port(),
        extra_args=["-mp", str(free_port(span=4))],
    )


def requests(result: SippResult, method: str) -> list[bytes]:
    assert result.message_path is not None
    seen: dict[str, bytes] = {}
    for m in received_messages(result.message_path):
        if m.startswith(method.encode() + b" "):
            seen.setdefault(header(m, "CSeq"), m)
    return list(seen.values())


def statuses(result: SippResult) -> list[int]:
    assert result.message_path is not None
    return [
        int(m.split(b" ", 2)[1])
        for m in received_messages(result.message_path)
        if m.startswith(b"SIP/2.0 ")
    ]


def header(message: bytes, name: str) -> str:
    m = re.search(rb"^" + name.encode() + rb"\s*:\s*(.*?)\r?$", message, re.I | re.M)
    assert m, f"no {name} in {message[:300]!r}"
    return m.group(1).decode()


def request_user(message: bytes) -> str:
    uri = message.split(b" ", 2)[1].decode()
    return uri.split(":", 1)[1].split("@", 1)[0]


def cdr_rows(daemon: SoftswitchDaemon, count: int, timeout: float = 5.0) -> list[dict]:
    import json

    deadline = time.monotonic() + timeout
    while True:
        res = daemon.run_cli(
            "cdr", "--config", str(daemon.config), "--since", SINCE, "--format", "json"
        )
        assert res.returncode == 0, res.stderr
        rows = json.loads(res.stdout)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


# -- media -------------------------------------------------------------------------------


class RtpPeer:
    """The carrier's media: answers the switch's RTP with a tone, from the same port
    (the switch latches on it), in the payload type the switch sends; keeps what it
    received as PCM."""

    def __init__(self, host: str, tone: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.005)
        self.port = self.sock.getsockname()[1]
        self.tone = tone
        self.received: list[np.ndarray] = []
        self.payload_types: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-peer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        peer: tuple[str, int] | None = None
        pt = 0
        seq, ts, phase = 0, 0, 0
        ssrc = 0x5EED1234
        next_send = time.monotonic()
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(2048)
            except (TimeoutError, BlockingIOError):
                data = b""
            if len(data) > 12 and data[0] >> 6 == 2:
                ptype = data[1] & 0x7F
                if ptype in (0, 8):
                    peer, pt = source, ptype
                    self.payload_types.add(ptype)
                    payload = data[12 + 4 * (data[0] & 0x0F) :]
                    decode = ulaw_decode if ptype == 0 else alaw_decode
                    self.received.append(decode(payload))
            now = time.monotonic()
            if peer is not None and now >= next_send:
                t = (np.arange(160) + phase) / 8000.0
                pcm = (0.5 * 32767 * np.sin(2 * np.pi * self.tone * t)).astype(np.int16)
                encode = ulaw_encode if pt == 0 else alaw_encode
                header_bytes = bytes([0x80, pt]) + seq.to_bytes(2, "big")
                header_bytes += ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big")
                self.sock.sendto(header_bytes + encode(pcm).tobytes(), peer)
                seq, ts, phase = (seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF, phase + 160
                next_send = max(next_send + 0.02, now - 0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def heard(self) -> tuple[float, float]:
        """(seconds of audio received, its dominant frequency)."""
        if not self.received:
            return 0.0, 0.0
        pcm = np.concatenate(self.received).astype(np.float64)[800:]  # skip the first 0.1 s
        if len(pcm) < 800:
            return len(pcm) / 8000.0, 0.0
        spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
        freqs = np.fft.rfftfreq(len(pcm), 1 / 8000.0)
        spectrum[freqs < 20] = 0
        return (len(pcm) + 800) / 8000.0, float(freqs[int(np.argmax(spectrum))])


@pytest.fixture
def rtp_peers():  # type: ignore[no-untyped-def]
    made: list[RtpPeer] = []

    def make(host: str) -> RtpPeer:
        peer = RtpPeer(host, CARRIER_TONE)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


def check_phone_heard(phone, tone: float) -> None:  # type: ignore[no-untyped-def]
    time.sleep(0.5)  # sndfile closes its file when the call's audio stops
    files = phone.recorded_files("dec")
    assert len(files) == 1, f"recordings {files}\n{phone.log_tail()}"
    length = duration_seconds(files[0])
    assert length > CALL_SECONDS - 1.5, f"the phone heard only {length:.1f} s"
    ok, problems = tone_present_throughout(files[0], tone, skip_start=0.5, skip_end=0.3)
    assert ok, f"the phone did not hear {tone:.0f} Hz throughout:\n" + "\n".join(problems)


def check_carrier_heard(peer: RtpPeer, tone: float) -> None:
    seconds, peak = peer.heard()
    assert seconds > CALL_SECONDS - 1.5, f"the carrier got only {seconds:.1f} s of audio"
    assert abs(peak - tone) < 15, f"the carrier heard {peak:.0f} Hz, not {tone:.0f} Hz"


def phone(phones, tmp_path: Path, daemon: SoftswitchDaemon, user: str):  # type: ignore[no-untyped-def]
    host, port = daemon.address
    wav = make_tone_wav(tmp_path / f"tone_{user}.wav", PHONE_TONE, 60)
    p = phones(
        None,
        f"sip:{user}@{DOMAIN}",
        user,
        EXTENSIONS[user],
        host,
        port,
        codecs=("PCMU", "PCMA"),
        audio_file=wav,
        record=True,
    )
    assert p.registered(10), p.log_tail()
    return p


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_registers_with_the_carrier_and_refreshes(switch, background, tmp_path: Path) -> None:
    reg_port, down_port = free_port(host=CARRIER_A), free_port(host="127.0.0.5")
    registrar = background.submit(
        run_sipp,
        "trunk_carrier_register",
        ("127.0.0.1", 5060),
        workdir=tmp_path,
        calls=1,
        local_port=reg_port,
        timeout=30,
        trace_msg=True,
        name="registrar",
        extra_args=[
            "-i", CARRIER_A,
            "-key", "user", ACCOUNT_A[0],
            "-key", "pass", ACCOUNT_A[1],
            "-key", "expires", "8",
        ],
    )  # fmt: skip
    time.sleep(0.3)
    daemon = switch(
        [
            carrier_trunk("carrier-a", CARRIER_A, reg_port, ACCOUNT_A, register=True),
            # Nobody listens there: the carrier is down.
            carrier_trunk("carrier-down", "127.0.0.5", down_port, ACCOUNT_B, register=True),
        ],
        ["carrier-a", "carrier-down"],
    )
    result = registrar.result(40)
    assert result.ok, result.describe()
    registers = requests(result, "REGISTER")
    assert len(registers) == 3, [r[:80] for r in registers]
    first, answered, refresh = registers
    assert b"Authorization" not in first
    for message in (answered, refresh):
        auth = header(message, "Authorization")
        assert f'username="{ACCOUNT_A[0]}"' in auth and "algorithm=MD5" in auth
    assert header(first, "To").startswith(f"<sip:{ACCOUNT_A[0]}@{CARRIER_A}>")
    assert f"sip:{ACCOUNT_A[0]}-carrier-a@127.0.0.1:" in header(first, "Contact")
    # The refresh came ahead of the 8 s granted: half-way, since 8 s leaves no room for
    # the usual margin of max(5 s, 10 %).
    assert 3.5 < result.elapsed < 15, result.elapsed

    # The dead carrier: Timer F (64 * T1 = 6.4 s), then a retry with back-off.
    deadline = time.monotonic() + 12
    while True:
        res = daemon.run_cli("trunks", "--config", str(daemon.config))
        assert res.returncode == 0, res.stderr
        table = res.stdout
        down = next(line for line in table.splitlines() if line.startswith("carrier-down"))
        if "failed" in down or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert "failed" in down and "no response from the carrier" in down, table
    retry = re.search(r"in (\d+)s", down)
    assert retry and 15 <= int(retry.group(1)) <= 30, down  # 30 s less up to 25 % jitter
    up = next(line for line in table.splitlines() if line.startswith("carrier-a"))
    assert "registered" in up, table


@pytest.mark.timeout(60)
def test_national_call_goes_out_with_caller_id_and_audio(
    switch, background, phones, rtp_peers, tmp_path: Path
) -> None:
    port_b = free_port(host=CARRIER_B)
    peer = rtp_peers(CARRIER_B)
    carrier = carrier_uas(
        background, tmp_path, (CARRIER_B, port_b), ACCOUNT_B,
        mode="answer", rtp_port=peer.port, name="carrier_b",
    )  # fmt: skip
    daemon = switch([carrier_trunk("carrier-b", CARRIER_B, port_b, ACCOUNT_B)], ["carrier-b"])
    anna = phone(phones, tmp_path, daemon, "201")
    anna.dial(f"sip:0612345678@{DOMAIN}")
    anna.wait_event("CALL_ESTABLISHED", 15)
    time.sleep(CALL_SECONDS)
    anna.hangup()
    anna.wait_event("CALL_CLOSED", 10)
    result = carrier.result(30)
    assert result.ok, result.describe()

    first, authenticated = requests(result, "INVITE")
    assert request_user(first) == "+390612345678"
    assert b"Authorization" not in first
    assert f'username="{ACCOUNT_B[0]}"' in header(authenticated, "Authorization")
    assert ANNA_NUMBER in header(authenticated, "From")
    assert ANNA_NUMBER in header(authenticated, "P-Asserted-Identity")
    # Nothing of the phone's leg reaches the carrier.
    assert DOMAIN.encode() not in authenticated
    check_carrier_heard(peer, PHONE_TONE)
    check_phone_heard(anna, CARRIER_TONE)
    (row,) = cdr_rows(daemon, 1)
    assert row["caller"] == "201" and row["callee"] == "+390612345678", row
    assert row["disposition"] == "answered" and row["billable_seconds"] >= 1, row


@pytest.mark.timeout(60)
def test_first_trunk_503_call_completes_over_the_second(switch, background, tmp_path: Path) -> None:
    port_a, port_b = free_port(host=CARRIER_A), free_port(host=CARRIER_B)
    down = carrier_uas(
        background, tmp_path, (CARRIER_A, port_a), ACCOUNT_A, mode="unavailable", name="carrier_a"
    )
    up = carrier_uas(
        background, tmp_path, (CARRIER_B, port_b), ACCOUNT_B, mode="answer", name="carrier_b"
    )
    daemon = switch(
        [
            carrier_trunk("carrier-a", CARRIER_A, port_a, ACCOUNT_A),
            carrier_trunk("carrier-b", CARRIER_B, port_b, ACCOUNT_B, number_format="national"),
        ],
        ["carrier-a", "carrier-b"],
    )
    uac = call_from_extension(daemon, tmp_path, "0612345678", name="uac")
    assert uac.ok, uac.describe()
    assert statuses(uac)[-1] == 200
    for carrier in (down, up):
        res = carrier.result(30)
        assert res.ok, res.describe()
    assert request_user(requests(down.result(), "INVITE")[0]) == "+390612345678"
    # The second carrier wants national numbers.
    assert request_user(requests(up.result(), "INVITE")[0]) == "0612345678"
    (row,) = cdr_rows(daemon, 1)
    assert row["disposition"] == "answered" and row["callee"] == "+390612345678", row


@pytest.mark.timeout(60)
def test_international_refused_and_emergency_always_goes_out(
    switch, background, tmp_path: Path
) -> None:
    port_b = free_port(host=CARRIER_B)
    # Binds the carrier's port first: a refused call must leave it untouched.
    carrier = carrier_uas(
        background, tmp_path, (CARRIER_B, port_b), ACCOUNT_B, mode="answer", name="carrier_b"
    )
    daemon = switch([carrier_trunk("carrier-b", CARRIER_B, port_b, ACCOUNT_B)], ["carrier-b"])
    abroad = call_from_extension(
        daemon, tmp_path, "00442079460000", scenario="uac_call_rejected", name="uac_abroad"
    )
    assert abroad.ok, abroad.describe()
    assert statuses(abroad)[-1] == 403
    # The lobby phone may not call out, and withholds its number; 112 still goes out
    # (the first call the carrier sees), with the caller ID shown.
    emergency = call_from_extension(daemon, tmp_path, "112", caller="209", name="uac_112")
    assert emergency.ok, emergency.describe()
    result = carrier.result(30)
    assert result.ok, result.describe()
    invite = requests(result, "INVITE")[-1]
    assert request_user(invite) == "112"
    assert MAIN_NUMBER in header(invite, "From")
    assert not re.search(rb"^Privacy:", invite, re.M | re.I)
    rows = {r["callee"]: r for r in cdr_rows(daemon, 2)}
    assert rows["+442079460000"]["sip_status"] == 403, rows
    assert rows["112"]["disposition"] == "answered", rows
    log = daemon.log_path.read_text()
    assert "outbound_refused" in log and "blocked_destination" in log


@pytest.mark.timeout(60)
def test_inbound_call_rings_the_did_and_strangers_are_refused(
    switch, background, phones, rtp_peers, tmp_path: Path
) -> None:
    port_a = free_port(host=CARRIER_A)
    daemon = switch([carrier_trunk("carrier-a", CARRIER_A, port_a, ACCOUNT_A)], ["carrier-a"])
    anna = phone(phones, tmp_path, daemon, "201")

    # Someone who is not a carrier tries to ring a DID and to call out through us.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((STRANGER, 0))
    local = sock.getsockname()
    try:
        for target in (ANNA_NUMBER, "00390612345678"):
            raw = build_request(
                "INVITE",
                f"sip:{target}@{daemon.address[0]}:{daemon.address[1]}",
                local=local,
                from_uri=f"sip:+390699999999@{STRANGER}",
                to_uri=f"sip:{target}@{daemon.address[0]}",
                call_id=new_call_id(),
            )
            answer = send_request(raw, *daemon.address, sock=sock, timeout=3)
            assert answer is not None and answer.status in (403, 404), (target, answer)
    finally:
        sock.close()

    peer = rtp_peers(CARRIER_A)
    time.sleep(0.2)
    carrier = run_sipp(
        "trunk_carrier_uac",
        daemon.address,
        workdir=tmp_path,
        calls=1,
        local_port=port_a,
        timeout=20,
        trace_msg=True,
        name="carrier_in",
        extra_args=[
            "-i", CARRIER_A,
            # The carrier writes the DID nationally, and the caller as 0039...
            "-key", "did", "0287654301",
            "-key", "caller", "00390612345678",
            "-key", "rtp_port", str(peer.port),
            "-key", "hold_ms", str(int(CALL_SECONDS * 1000)),
            "-mp", str(free_port(span=4, host=CARRIER_A)),
        ],
    )  # fmt: skip
    assert carrier.ok, carrier.describe()
    anna.wait_event("CALL_CLOSED", 10)
    established = [e for e in anna.events if e.get("type") == "CALL_ESTABLISHED"]
    assert len(established) == 1, anna.events
    # The phone shows the caller as it would dial them back.
    assert "sip:0612345678@" in str(established[0].get("peeruri")), established[0]
    check_carrier_heard(peer, PHONE_TONE)
    check_phone_heard(anna, CARRIER_TONE)
    rows = cdr_rows(daemon, 1)
    assert [(r["caller"], r["callee"], r["disposition"]) for r in rows] == [
        ("0612345678", "201", "answered")
    ], rows
