"""An Opus endpoint and a G.711 phone (baresip) in one conference hear each other.

The Opus endpoint is the test's own: a raw SIP user agent over a UDP socket that
registers, sends an INVITE with an Opus-only SDP (opus/48000/2 on a dynamic payload
type), and sends and receives RTP encoded with libopus at 8 kHz (swcodecs). baresip
has no Opus module, so the switch transcodes both ways in the room.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from swcodecs.opus import OpusDecoder, OpusEncoder
from tests.interop.test_conference_baresip import (
    CONFERENCES,
    DOMAIN,
    check_mix_minus,
    start_daemon,
    wait_participants,
)
from tests.support.audio import duration_seconds, make_tone_wav, write_wav
from tests.support.baresip import BaresipPhone
from tests.support.sipmsg import (
    SipResponse,
    build_request,
    digest_authorization,
    new_branch,
    new_call_id,
    new_tag,
    parse_challenges,
    parse_response,
    pick_challenge,
)

pytestmark = pytest.mark.interop

OPUS_PT = 96
OPUS_TONE, PHONE_TONE = 1000.0, 440.0
SECONDS = 5.0


class OpusEndpoint:
    """Just enough of a SIP phone for one call, plus an Opus RTP stream."""

    def __init__(self, switch: tuple[str, int], user: str, password: str) -> None:
        self.switch = switch
        self.user, self.password = user, password
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.local = self.sip.getsockname()
        self.aor = f"sip:{user}@{DOMAIN}"
        self.contact = f"<sip:{user}@{self.local[0]}:{self.local[1]}>"

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    # -- SIP ---------------------------------------------------------------------------

    def _wait(self, call_id: str, cseq: str, timeout: float = 3.0) -> SipResponse:
        """The final response to (call_id, cseq), skipping provisionals and others."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sip.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data, _ = self.sip.recvfrom(65535)
            except TimeoutError:
                break
            resp = parse_response(data)
            if resp is None or resp.status < 200:
                continue
            if resp.get("call-id") == call_id and resp.get("cseq") == cseq:
                return resp
        raise AssertionError(f"no final response to {cseq}")

    def _authorized(
        self, method: str, uri: str, build: Callable[[int, list[tuple[str, str]]], bytes]
    ) -> tuple[SipResponse, int]:
        """Send, answer the digest challenge, send again; (final response, CSeq)."""
        raw = build(1, [])
        call_id = _header(raw, "Call-ID")
        self.sip.sendto(raw, self.switch)
        first = self._wait(call_id, f"1 {method}")
        if method == "INVITE" and first.status >= 300:
            self._ack_failure(raw, first)
        if first.status not in (401, 407):
            return first, 1
        challenge = pick_challenge(parse_challenges(first), "MD5")
        auth = digest_authorization(
            challenge, method=method, uri=uri, username=self.user, password=self.password
        )
        name = "Proxy-Authorization" if first.status == 407 else "Authorization"
        self.sip.sendto(build(2, [(name, auth)]), self.switch)
        return self._wait(call_id, f"2 {method}"), 2

    def _ack_failure(self, invite: bytes, resp: SipResponse) -> None:
        # RFC 3261 17.1.1.3: same branch as the INVITE, To with the response's tag.
        to = resp.get("to") or ""
        lines = invite.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        keep = [line for line in lines[1:] if line.split(":")[0] in ("Via", "From", "Call-ID")]
        uri = lines[0].split()[1]
        cseq = _header(invite, "CSeq").split()[0]
        ack = [f"ACK {uri} SIP/2.0", *keep, f"To: {to}", f"CSeq: {cseq} ACK"]
        ack += ["Max-Forwards: 70", "Content-Length: 0"]
        self.sip.sendto(("\r\n".join(ack) + "\r\n\r\n").encode(), self.switch)

    def register(self) -> int:
        call_id, tag = new_call_id(), new_tag()
        uri = f"sip:{DOMAIN}"

        def build(cseq: int, extra: list[tuple[str, str]]) -> bytes:
            return build_request(
                "REGISTER",
                uri,
                local=self.local,
                from_uri=self.aor,
                to_uri=self.aor,
                call_id=call_id,
                cseq=cseq,
                from_tag=tag,
                contact=self.contact,
                headers=[("Expires", "300"), *extra],
            )

        resp, _ = self._authorized("REGISTER", uri, build)
        return resp.status

    def call(self, number: str) -> None:
        self.call_id, self.tag = new_call_id(), new_tag()
        self.target = f"sip:{number}@{DOMAIN}"
        rtp_port = self.rtp.getsockname()[1]
        sdp = (
            "v=0\r\n"
            f"o=- {random.randrange(1 << 30)} 1 IN IP4 127.0.0.1\r\n"
            "s=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP {OPUS_PT}\r\n"
            f"a=rtpmap:{OPUS_PT} opus/48000/2\r\n"
            f"a=fmtp:{OPUS_PT} useinbandfec=1\r\n"
            "a=ptime:20\r\na=sendrecv\r\n"
        ).encode()

        def build(cseq: int, extra: list[tuple[str, str]]) -> bytes:
            return build_request(
                "INVITE",
                self.target,
                local=self.local,
                from_uri=self.aor,
                to_uri=self.target,
                call_id=self.call_id,
                cseq=cseq,
                from_tag=self.tag,
                contact=self.contact,
                headers=[("Content-Type", "application/sdp"), *extra],
                body=sdp,
            )

        ok, cseq = self._authorized("INVITE", self.target, build)
        assert ok.status == 200, ok.status_line
        answer = ok.body.decode()
        assert f"a=rtpmap:{OPUS_PT} opus/48000/2" in answer, answer
        host = next(x.split()[-1] for x in answer.splitlines() if x.startswith("c="))
        port = next(int(x.split()[1]) for x in answer.splitlines() if x.startswith("m=audio"))
        self.rtp_dest = (host, port)
        self.to = ok.get("to") or ""
        self.remote_target = (ok.get("contact") or "").strip("<>").split(">")[0]
        self.cseq = cseq
        self._in_dialog("ACK", cseq)

    def _in_dialog(self, method: str, cseq: int) -> bytes:
        lines = [
            f"{method} {self.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};rport;branch={new_branch()}",
            "Max-Forwards: 70",
            f"From: <{self.aor}>;tag={self.tag}",
            f"To: {self.to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            "Content-Length: 0",
        ]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.sip.sendto(raw, self.switch)
        return raw

    def hang_up(self) -> int:
        self.cseq += 1
        self._in_dialog("BYE", self.cseq)
        return self._wait(self.call_id, f"{self.cseq} BYE").status

    # -- RTP ---------------------------------------------------------------------------

    def stream(self, freq: float, seconds: float) -> np.ndarray:
        """Send a tone in Opus for ``seconds``, 20 ms a packet; what came back, decoded."""
        enc, dec = OpusEncoder(8000), OpusDecoder(8000)
        t = np.arange(round(seconds * 8000)) / 8000
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        ssrc = random.randrange(1 << 32)
        heard: list[np.ndarray] = []
        self.rtp.setblocking(False)
        start = time.monotonic()
        for i in range(len(pcm) // 160):
            header = bytes([0x80, OPUS_PT | (0x80 if i == 0 else 0)])
            header += (i & 0xFFFF).to_bytes(2, "big") + (960 * i & 0xFFFFFFFF).to_bytes(4, "big")
            header += ssrc.to_bytes(4, "big")
            self.rtp.sendto(header + enc.encode(pcm[i * 160 : (i + 1) * 160]), self.rtp_dest)
            while True:
                due = start + 0.02 * (i + 1) - time.monotonic()
                try:
                    data = self.rtp.recv(2048)
                except BlockingIOError:
                    if due <= 0:
                        break
                    time.sleep(min(due, 0.005))
                    continue
                if len(data) > 12 and data[1] & 0x7F == OPUS_PT:
                    heard.append(dec.decode(data[12 + 4 * (data[0] & 0x0F) :]))
        return np.concatenate(heard) if heard else np.zeros(0, np.int16)


def _header(raw: bytes, name: str) -> str:
    for line in raw.split(b"\r\n\r\n", 1)[0].decode().split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise KeyError(name)


@pytest.mark.timeout(90)
def test_opus_endpoint_and_g711_phone_hear_each_other_in_a_conference(
    phones: Callable[..., BaresipPhone], tmp_path: Path
) -> None:
    daemon = start_daemon(tmp_path / "switch", CONFERENCES)
    opus = OpusEndpoint(daemon.address, "201", "secret201")
    try:
        host, port = daemon.address
        wav = make_tone_wav(tmp_path / "phone.wav", PHONE_TONE, 60, amplitude=0.25)
        phone = phones(
            None,
            f"sip:202@{DOMAIN}",
            "202",
            "secret202",
            host,
            port,
            codecs=("PCMU",),
            audio_file=wav,
            record=True,
        )
        assert phone.registered(10), phone.log_tail()
        assert opus.register() == 200

        phone.dial(f"sip:801@{DOMAIN}")
        phone.wait_event("CALL_ESTABLISHED", 10)
        wait_participants(daemon, "801", 1, 5)
        opus.call("801")
        room = wait_participants(daemon, "801", 2, 5)
        assert {p["codec"] for p in room["participants"]} == {"PCMU", "opus"}

        heard = opus.stream(OPUS_TONE, SECONDS)
        assert opus.hang_up() == 200
        phone.hangup()
        phone.wait_event("CALL_CLOSED", 10)
        time.sleep(0.5)

        # What the Opus endpoint heard: the phone's tone, not its own.
        assert len(heard) > (SECONDS - 1.5) * 8000, f"only {len(heard) / 8000:.1f} s came back"
        wav_heard = write_wav(tmp_path / "opus_heard.wav", heard)
        problems = check_mix_minus(wav_heard, [PHONE_TONE], OPUS_TONE, 1.5, SECONDS - 0.5)
        assert not problems, "the Opus endpoint:\n" + "\n".join(problems)

        # What the G.711 phone heard: the Opus endpoint's tone, while it was streaming.
        (recording,) = phone.recorded_files("dec")
        length = duration_seconds(recording)
        problems = check_mix_minus(
            recording, [OPUS_TONE], PHONE_TONE, length - SECONDS + 1.5, length - 1.0
        )
        assert not problems, f"the G.711 phone ({length:.1f} s):\n" + "\n".join(problems)
    except BaseException:
        print(daemon.log_tail(80))
        raise
    finally:
        opus.close()
        daemon.stop()
