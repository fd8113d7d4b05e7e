"""Fake phones for media tests: plain UDP sockets speaking RTP on 127.0.0.0/8."""

from __future__ import annotations

import select
import socket
import time

import numpy as np

from softswitch.media.engine import MediaEngine
from softswitch.media.rtp import RtpPacket
from swcodecs import g711

RATE = 8000
FRAME = 160


def tone(freq: float, frames: int, amplitude: float = 8000.0) -> np.ndarray:
    """``frames`` 20 ms frames of a sine, shape (frames, 160) int16."""
    t = np.arange(frames * FRAME) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16).reshape(frames, FRAME)


def dominant_frequency(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64).ravel()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[int(np.argmax(spectrum))])


def encode(law: str, pcm: np.ndarray) -> np.ndarray:
    return g711.encode(law, pcm)  # type: ignore[arg-type]


class Phone:
    """One UDP socket; sends RTP to the switch, collects what comes back."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.ssrc = 0x1234_0000 + self.port
        self.seq = 1000
        self.ts = 50_000

    @property
    def addr(self) -> tuple[str, int]:
        return self.sock.getsockname()

    @property
    def host(self) -> str:
        return self.addr[0]

    @property
    def port(self) -> int:
        return self.addr[1]

    def send_raw(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def send(
        self,
        to: tuple[str, int],
        payload: bytes = b"\xff" * FRAME,
        *,
        pt: int = 0,
        marker: bool = False,
        ssrc: int | None = None,
        seq: int | None = None,
        ts: int | None = None,
        advance: bool = True,
    ) -> RtpPacket:
        packet = RtpPacket(
            payload_type=pt,
            marker=marker,
            sequence_number=self.seq if seq is None else seq,
            timestamp=self.ts if ts is None else ts,
            ssrc=self.ssrc if ssrc is None else ssrc,
            payload=payload,
        )
        self.sock.sendto(bytes(packet), to)
        if advance:
            self.seq = (packet.sequence_number + 1) & 0xFFFF
            self.ts = (packet.timestamp + FRAME) & 0xFFFFFFFF
        return packet

    def receive(self, count: int | None = None, timeout: float = 0.3) -> list[tuple[bytes, tuple]]:
        """Datagrams until ``count`` arrived or ``timeout`` passed without one."""
        out: list[tuple[bytes, tuple]] = []
        deadline = time.monotonic() + timeout
        while count is None or len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not select.select([self.sock], [], [], left)[0]:
                break
            while True:
                try:
                    out.append(self.sock.recvfrom(4096))
                except BlockingIOError:
                    break
        return out

    def receive_rtp(self, count: int | None = None, timeout: float = 0.3) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for d, _ in self.receive(count, timeout)]

    def close(self) -> None:
        self.sock.close()


def settle(engine: MediaEngine, now: float, wait: float = 0.05) -> int:
    """Let the engine read everything already sent to it (at time ``now``)."""
    handled = 0
    while select.select([engine.fileno()], [], [], wait)[0]:
        n = engine.drain(now)
        handled += n
        if n == 0:
            break
        wait = 0.01
    return handled
