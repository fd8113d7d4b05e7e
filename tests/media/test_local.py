"""LocalMediaController on a running event loop with real sockets: whole calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
import uvloop

from softswitch.clock import ManualClock
from softswitch.media.controller import (
    Codec,
    DtmfReceived,
    LegMedia,
    MediaController,
    MediaEvent,
    MediaTimeout,
)
from softswitch.media.local import LocalMediaController
from softswitch.media.rtp import RtpPacket, TelephoneEvent
from swcodecs import g711
from tests.media._phones import Phone, dominant_frequency, encode, tone
from tests.support.ports import free_port

PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
FRAMES = 25


def port_range() -> tuple[int, int]:
    base = free_port(udp=True, tcp=False, span=16)
    return base, base + 15


@pytest.fixture
async def controller() -> AsyncIterator[LocalMediaController]:
    ctl = LocalMediaController("127.0.0.1", port_range(), media_timeout=30.0, latch_window=5.0)
    await ctl.start()
    yield ctl
    await ctl.stop()


def drain(p: Phone) -> list[tuple[bytes, tuple]]:
    out = []
    while True:
        try:
            out.append(p.sock.recvfrom(4096))
        except BlockingIOError:
            return out


async def talk(
    pairs: list[tuple[Phone, tuple[str, int], np.ndarray, int]], frames: int = FRAMES
) -> None:
    """Each phone sends its frames to its switch port, 20 ms apart, all at once."""
    for i in range(frames):
        for p, to, codes, pt in pairs:
            p.send(to, codes[i].tobytes(), pt=pt)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)


def received_audio(p: Phone, law: str, pt: int) -> tuple[np.ndarray, list[RtpPacket]]:
    packets = [RtpPacket.parse(d) for d, _ in drain(p)]
    codes = np.frombuffer(b"".join(x.payload for x in packets if x.payload_type == pt), np.uint8)
    return g711.decode(law, codes), packets  # type: ignore[arg-type]


def test_local_controller_implements_the_protocol():
    def check(c: MediaController) -> None: ...

    check(LocalMediaController("127.0.0.1", (40000, 40010)))


@pytest.mark.timeout(15)
async def test_relayed_call_each_phone_hears_the_other_tone(controller):
    a, b = Phone(), Phone()
    try:
        ea, eb = controller.allocate("c1", "a"), controller.allocate("c1", "b")
        controller.connect(
            "c1", {"a": LegMedia(a.host, a.port, PCMU), "b": LegMedia(b.host, b.port, PCMU)}
        )
        tone_a, tone_b = encode("PCMU", tone(1000, FRAMES)), encode("PCMU", tone(2000, FRAMES))
        await talk([(a, (ea.host, ea.port), tone_a, 0), (b, (eb.host, eb.port), tone_b, 0)])
        heard_by_b, packets_b = received_audio(b, "PCMU", 0)
        heard_by_a, packets_a = received_audio(a, "PCMU", 0)
        assert len(packets_b) == FRAMES and len(packets_a) == FRAMES
        assert dominant_frequency(heard_by_b) == pytest.approx(1000, abs=10)
        assert dominant_frequency(heard_by_a) == pytest.approx(2000, abs=10)
        # A relay does not touch the payload.
        assert b"".join(p.payload for p in packets_b) == tone_a.tobytes()
        assert controller.stats.forwarded == 2 * FRAMES
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(15)
async def test_transcoded_call_pcmu_to_pcma_each_phone_hears_the_other_tone(controller):
    a, b = Phone(), Phone()
    try:
        ea, eb = controller.allocate("c2", "a"), controller.allocate("c2", "b")
        controller.connect(
            "c2", {"a": LegMedia(a.host, a.port, PCMU), "b": LegMedia(b.host, b.port, PCMA)}
        )
        tone_a, tone_b = encode("PCMU", tone(1000, FRAMES)), encode("PCMA", tone(2000, FRAMES))
        await talk([(a, (ea.host, ea.port), tone_a, 0), (b, (eb.host, eb.port), tone_b, 8)])
        heard_by_b, packets_b = received_audio(b, "PCMA", 8)
        heard_by_a, packets_a = received_audio(a, "PCMU", 0)
        assert len(packets_b) == FRAMES and len(packets_a) == FRAMES
        assert dominant_frequency(heard_by_b) == pytest.approx(1000, abs=10)
        assert dominant_frequency(heard_by_a) == pytest.approx(2000, abs=10)
        assert b"".join(p.payload for p in packets_b) == g711.ulaw_to_alaw(tone_a).tobytes()
        assert controller.stats.transcoded == 2 * FRAMES
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(15)
async def test_rtp_latching_nat_phone_gets_audio_and_strangers_are_dropped(controller):
    """Acceptance point of the calls feature.

    Phone A is behind NAT: its SDP says 127.0.0.1:<port it never uses>, its packets
    come from 127.0.0.2 and another port. It must still hear B. A stranger on
    127.0.0.3 sending to A's switch port must reach nobody, and get nothing back.
    """
    sdp_a = Phone("127.0.0.1")  # the advertised address: bound only so nobody else is
    nat_a = Phone("127.0.0.2")
    b = Phone("127.0.0.1")
    stranger = Phone("127.0.0.3")
    try:
        ea, eb = controller.allocate("c3", "a"), controller.allocate("c3", "b")
        controller.connect(
            "c3",
            {"a": LegMedia(sdp_a.host, sdp_a.port, PCMU), "b": LegMedia(b.host, b.port, PCMU)},
        )
        to_a, to_b = (ea.host, ea.port), (eb.host, eb.port)
        tone_a, tone_b = encode("PCMU", tone(1000, FRAMES)), encode("PCMU", tone(2000, FRAMES))
        noise = encode("PCMU", tone(3000, FRAMES))
        for i in range(FRAMES):
            nat_a.send(to_a, tone_a[i].tobytes())
            b.send(to_b, tone_b[i].tobytes())
            if i >= 2:  # after A latched: to A's port and to B's port
                stranger.send(to_a, noise[i].tobytes())
                stranger.send(to_b, noise[i].tobytes())
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        heard_by_a, packets_a = received_audio(nat_a, "PCMU", 0)
        heard_by_b, packets_b = received_audio(b, "PCMU", 0)
        assert len(packets_a) == FRAMES, "the NATed phone must receive every frame of B"
        assert dominant_frequency(heard_by_a) == pytest.approx(2000, abs=10)
        assert len(packets_b) == FRAMES, "B gets A's frames and nothing from the stranger"
        assert dominant_frequency(heard_by_b) == pytest.approx(1000, abs=10)
        assert b"".join(p.payload for p in packets_b) == tone_a.tobytes()
        assert drain(stranger) == [] and drain(sdp_a) == []
    finally:
        for p in (sdp_a, nat_a, b, stranger):
            p.close()


@pytest.mark.timeout(15)
async def test_dtmf_and_media_timeout_reach_the_event_handler():
    clock = ManualClock()
    ctl = LocalMediaController("127.0.0.1", port_range(), media_timeout=30.0, clock=clock)
    events: list[MediaEvent] = []
    ctl.set_event_handler(events.append)
    await ctl.start()
    a, b = Phone(), Phone()
    te = Codec("telephone-event", 101)
    try:
        ea, _ = ctl.allocate("c4", "a"), ctl.allocate("c4", "b")
        ctl.connect(
            "c4",
            {
                "a": LegMedia(a.host, a.port, PCMU, telephone_event=te),
                "b": LegMedia(b.host, b.port, PCMU, telephone_event=te),
            },
        )
        for _ in range(3):
            a.send(
                (ea.host, ea.port), bytes(TelephoneEvent(9, True, 10, 1600)), pt=101, advance=False
            )
        await asyncio.sleep(0.1)
        assert events == [DtmfReceived("c4", "a", "9", 200)]
        clock.advance(31.0)
        for _ in range(50):
            if len(events) == 3:
                break
            await asyncio.sleep(0.02)
        assert set(events[1:]) == {MediaTimeout("c4", "a"), MediaTimeout("c4", "b")}
        assert ctl.stats.skipped_ticks > 1000  # the clock jumped: ticks skipped, not run
    finally:
        await ctl.stop()
        a.close()
        b.close()


@pytest.mark.timeout(15)
def test_relay_on_uvloop_and_stop_closes_sockets():
    async def main() -> None:
        a, b = Phone(), Phone()
        async with LocalMediaController("127.0.0.1", port_range()) as ctl:
            ea, _ = ctl.allocate("u", "a"), ctl.allocate("u", "b")
            ctl.connect(
                "u", {"a": LegMedia(a.host, a.port, PCMU), "b": LegMedia(b.host, b.port, PCMU)}
            )
            for _ in range(5):
                a.send((ea.host, ea.port))
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert len(drain(b)) == 5
            ctl.release("u")
            ctl.release("u")
        a.send((ea.host, ea.port))
        await asyncio.sleep(0.05)
        assert drain(b) == []
        a.close()
        b.close()

    uvloop.run(main())


# --- rooms and Opus, in real time ------------------------------------------------------

OPUS = Codec("opus", 111, 48000, 2)
TE = Codec("telephone-event", 101)


def spectrum_level(pcm: np.ndarray, freq: float) -> float:
    x = pcm.astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1 / 8000)
    return float(spec[(f > freq - 15) & (f < freq + 15)].max())


@pytest.mark.timeout(15)
async def test_g711_phone_and_opus_endpoint_hear_each_other(controller):
    """A PCMU phone and an Opus endpoint (a plain UDP peer encoding with libopus at
    8 kHz) in one call: the switch transcodes through a room of two."""
    from swcodecs.opus import OpusDecoder, OpusEncoder

    g, o = Phone(), Phone()
    enc, dec = OpusEncoder(8000), OpusDecoder(8000)
    frames = 50
    try:
        eg, eo = controller.allocate("c5", "g"), controller.allocate("c5", "o")
        controller.connect(
            "c5", {"g": LegMedia(g.host, g.port, PCMU), "o": LegMedia(o.host, o.port, OPUS)}
        )
        tone_g = encode("PCMU", tone(700, frames))
        tone_o = tone(1300, frames)
        for i in range(frames):
            g.send((eg.host, eg.port), tone_g[i].tobytes())
            o.send((eo.host, eo.port), enc.encode(tone_o[i]), pt=111, seq=i, ts=960 * i)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        heard_by_g, packets_g = received_audio(g, "PCMU", 0)
        opus_in = [RtpPacket.parse(d) for d, _ in drain(o)]
        heard_by_o = np.concatenate(
            [dec.decode(p.payload) for p in opus_in if p.payload_type == 111]
        )
        assert len(packets_g) >= frames - 5 and len(opus_in) >= frames - 5
        skip = 10 * 160  # jitter buffer start and codec delay
        for heard, want, own in ((heard_by_g, 1300, 700), (heard_by_o, 700, 1300)):
            assert dominant_frequency(heard[skip:]) == pytest.approx(want, abs=15)
            assert spectrum_level(heard[skip:], want) > 30 * spectrum_level(heard[skip:], own)
        assert controller.stats.mixed >= 2 * (frames - 5)
    finally:
        g.close()
        o.close()


@pytest.mark.timeout(15)
async def test_three_phones_in_a_room_each_hear_the_other_two(controller):
    freqs = (500.0, 1100.0, 1700.0)
    phones = [Phone() for _ in freqs]
    frames = 40
    try:
        controller.create_room("t/room")
        targets = []
        for i, p in enumerate(phones):
            ep = controller.allocate(f"p{i}", "leg")
            controller.join("t/room", f"p{i}", "leg", LegMedia(p.host, p.port, PCMU, TE))
            targets.append((ep.host, ep.port))
        tones = [encode("PCMU", tone(f, frames, 5000)) for f in freqs]
        for k in range(frames):
            for p, to, t in zip(phones, targets, tones, strict=True):
                p.send(to, t[k].tobytes())
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        for i, p in enumerate(phones):
            heard, packets = received_audio(p, "PCMU", 0)
            assert len(packets) >= frames - 3
            heard = heard[5 * 160 :]
            own = spectrum_level(heard, freqs[i])
            for j, f in enumerate(freqs):
                if j != i:
                    assert spectrum_level(heard, f) > 30 * own, (i, f)
        [room] = controller.list_rooms()
        assert len(room.members) == 3
    finally:
        for p in phones:
            p.close()


def test_local_controller_implements_the_conference_interface():
    from softswitch.media.conference import ConferenceControl

    def check(c: ConferenceControl) -> None: ...

    check(LocalMediaController("127.0.0.1", (40000, 40010)))
