"""Rooms in the engine on loopback sockets, driven by hand: each tick the fake phones
send one 20 ms frame, the engine reads them (``settle``) and runs ``tick(now)``."""

from __future__ import annotations

import random
import wave
from collections.abc import Iterator

import numpy as np
import pytest

from softswitch.media.conference import (
    ActiveSpeaker,
    LegRef,
    PlaybackDone,
    RoomError,
    RoomRef,
)
from softswitch.media.controller import Codec, Direction, DtmfReceived, LegMedia
from softswitch.media.dtmf import EventReceiver
from softswitch.media.dtmf import tone as dtmf_tone
from softswitch.media.engine import MediaEngine
from softswitch.media.rtp import RtpPacket, TelephoneEvent
from softswitch.media.tones import join_tone, prompt_path
from swcodecs import g711
from swcodecs.opus import OpusDecoder, OpusEncoder
from tests.media._phones import Phone, settle, tone
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(30)

PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
OPUS = Codec("opus", 111, 48000, 2)
TE = Codec("telephone-event", 101)
TICK = 0.020


@pytest.fixture
def engine() -> Iterator[MediaEngine]:
    base = free_port(udp=True, tcp=False, span=40)
    eng = MediaEngine(
        "127.0.0.1", (base, base + 39), media_timeout=30.0, latch_window=5.0, rng=random.Random(3)
    )
    yield eng
    eng.close()


class Peer:
    """A phone in a room: its own session with one leg, sending a tone."""

    def __init__(self, engine: MediaEngine, name: str, codec: Codec = PCMU, te: Codec | None = TE):
        self.engine = engine
        self.name = name
        self.codec = codec
        self.phone = Phone()
        ep = engine.allocate(name, "leg")
        self.to = (ep.host, ep.port)
        self.media = LegMedia(self.phone.host, self.phone.port, codec, telephone_event=te)
        self.enc = OpusEncoder(8000) if codec.name == "opus" else None
        self.dec = OpusDecoder(8000) if codec.name == "opus" else None
        self.got: list[RtpPacket] = []

    def send(self, pcm: np.ndarray) -> None:
        if self.enc is not None:
            self.phone.send(self.to, self.enc.encode(pcm), pt=self.codec.payload_type)
            self.phone.ts = (self.phone.ts - 160 + 960) & 0xFFFFFFFF
        else:
            law = self.codec.name
            self.phone.send(self.to, g711.encode(law, pcm).tobytes(), pt=self.codec.payload_type)

    def collect(self) -> list[RtpPacket]:
        new = []
        while True:
            try:
                new.append(RtpPacket.parse(self.phone.sock.recv(4096)))
            except BlockingIOError:
                break
        self.got += new
        return new

    def heard(self, skip: int = 0) -> np.ndarray:
        """Decoded audio received so far (audio packets only), after ``skip`` frames."""
        audio = [p for p in self.got if p.payload_type == self.codec.payload_type][skip:]
        if self.dec is not None:
            return np.concatenate([self.dec.decode(p.payload) for p in audio])
        return g711.decode(self.codec.name, b"".join(p.payload for p in audio))

    def close(self) -> None:
        self.phone.close()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        p.close()


def peer(peers, engine, name, codec=PCMU, te=TE) -> Peer:
    p = Peer(engine, name, codec, te)
    peers.append(p)
    return p


def run(engine, talkers: dict[Peer, np.ndarray | None], ticks: int, start: float = 0.0) -> float:
    """``ticks`` ticks; each talker sends its next frame (silence if None)."""
    now = start
    for k in range(ticks):
        for p, frames in talkers.items():
            p.send(frames[k] if frames is not None else np.zeros(160, np.int16))
        settle(engine, now, wait=0.02)
        engine.tick(now)
        _flushed(talkers)
        now += TICK
    return now


def _flushed(peers) -> None:
    """Collect what the tick sent (loopback delivers before send() returns)."""
    for p in peers:
        p.collect()


def level(pcm: np.ndarray, freq: float) -> float:
    """Spectral magnitude around ``freq`` (Hann window, +-15 Hz)."""
    x = pcm.astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1 / 8000)
    return float(spec[(f > freq - 15) & (f < freq + 15)].max())


def db(a: float, b: float) -> float:
    return 20 * np.log10(a / max(b, 1e-9))


@pytest.fixture(params=["per-socket", "batched"])
def any_engine(request) -> Iterator[MediaEngine]:
    """The engine sending per socket, and batched through a raw socket where allowed."""
    batch = request.param == "batched"
    base = free_port(udp=True, tcp=False, span=40)
    eng = MediaEngine("127.0.0.1", (base, base + 39), rng=random.Random(3), batch_send=batch)
    if batch and not eng.batch_send:
        eng.close()
        pytest.skip("no CAP_NET_RAW here")
    yield eng
    eng.close()


def test_three_participants_each_hear_the_other_two_and_not_themselves(any_engine, peers):
    engine = any_engine
    engine.create_room("t/1")
    freqs = {"a": 500.0, "b": 1100.0, "c": 1700.0}
    ps = {n: peer(peers, engine, n) for n in freqs}
    for p in ps.values():
        engine.join("t/1", p.name, "leg", p.media, 0.0)
    run(engine, {p: tone(freqs[n], 50, 5000) for n, p in ps.items()}, 50)
    for n, p in ps.items():
        heard = p.heard(skip=5)
        assert len(heard) >= 40 * 160
        others = [f for m, f in freqs.items() if m != n]
        for f in others:
            assert db(level(heard, f), level(heard, freqs[n])) > 30, (n, f)
        packets = [x for x in p.got if x.payload_type == 0]
        seqs = [x.sequence_number for x in packets]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
        assert {x.ssrc for x in packets} == {engine.legs(n)["leg"].ssrc}
        assert [x.timestamp - packets[0].timestamp for x in packets[:3]] == [0, 160, 320]
        assert packets[0].marker and not packets[1].marker
    [info] = engine.list_rooms()
    assert info.room_id == "t/1" and len(info.members) == 3 and info.mix
    assert {(m.session_id, m.codec) for m in info.members} == {
        ("a", "PCMU"),
        ("b", "PCMU"),
        ("c", "PCMU"),
    }


def test_g711_phone_and_opus_peer_hear_each_other_through_a_transcoded_call(engine, peers):
    g = peer(peers, engine, "call", PCMA, te=None)
    o = Peer.__new__(Peer)  # the second leg of the same session
    o.engine, o.name, o.codec = engine, "call", OPUS
    o.phone = Phone()
    ep = engine.allocate("call", "opus")
    o.to = (ep.host, ep.port)
    o.media = LegMedia(o.phone.host, o.phone.port, OPUS)
    o.enc, o.dec, o.got = OpusEncoder(8000), OpusDecoder(8000), []
    peers.append(o)
    ep_g = engine.legs("call")["leg"].endpoint
    g.to = (ep_g.host, ep_g.port)
    engine.connect("call", {"leg": g.media, "opus": o.media}, 0.0)
    run(engine, {g: tone(700, 60, 6000), o: tone(1300, 60, 6000)}, 60)
    heard_by_g = g.heard(skip=10)
    heard_by_o = o.heard(skip=10)
    assert db(level(heard_by_g, 1300), level(heard_by_g, 700)) > 30
    assert db(level(heard_by_o, 700), level(heard_by_o, 1300)) > 30
    opus_packets = [p for p in o.got if p.payload_type == 111]
    assert len(opus_packets) >= 55
    ts = [p.timestamp for p in opus_packets]
    assert all((b - a) & 0xFFFFFFFF == 960 for a, b in zip(ts, ts[1:], strict=False))
    assert all(p.payload_type == 8 for p in g.got)
    assert engine.list_rooms() == []  # a call's room is not a conference
    # Renegotiated to PCMA on both sides: back to the relay, the stream goes on.
    last = g.got[-1]
    engine.update("call", "opus", LegMedia(o.phone.host, o.phone.port, PCMA), 2.0)
    o.codec = PCMA
    o.enc = o.dec = None
    o.send(tone(1300, 1, 6000)[0])
    settle(engine, 2.0)
    [relayed] = g.phone.receive_rtp(1)
    assert relayed.sequence_number == (last.sequence_number + 1) & 0xFFFF
    assert relayed.ssrc == last.ssrc and relayed.marker


def test_dtmf_in_a_room_rfc4733_and_in_band(engine, peers):
    engine.create_room("t/2")
    a = peer(peers, engine, "a")  # telephone-event
    b = peer(peers, engine, "b", te=None)  # in-band only
    for p in (a, b):
        engine.join("t/2", p.name, "leg", p.media, 0.0)
    # a sends "4" as events (with the repeated end packets); b dials "#" in its audio.
    now = 0.0
    frames_b = np.concatenate(
        [np.zeros(800, np.int16), dtmf_tone("#", 100), np.zeros(1600, np.int16)]
    )
    frames_b = frames_b.reshape(-1, 160)
    for k in range(len(frames_b)):
        if k < 8:
            end = k >= 5
            dur = min(k + 1, 5) * 160
            a.phone.send(
                a.to,
                bytes(TelephoneEvent(4, end, 10, dur)),
                pt=101,
                ts=7777,
                advance=False,
                marker=k == 0,
            )
        b.send(frames_b[k])
        settle(engine, now, wait=0.02)
        engine.tick(now)
        now += TICK
    events = [e for e in engine.take_events() if isinstance(e, DtmfReceived)]
    assert DtmfReceived("a", "leg", "4", 100) in events
    assert [e.digit for e in events if e.session_id == "b"] == ["#"]
    assert len(events) == 2


def test_digits_sent_to_a_leg_as_events_or_tones(engine, peers):
    engine.create_room("ivr", mix=False)
    a = peer(peers, engine, "a")
    b = peer(peers, engine, "b", te=None)
    for p in (a, b):
        engine.join("ivr", p.name, "leg", p.media, 0.0)
    engine.send_dtmf("a", "leg", "12", duration_ms=60)
    engine.send_dtmf("b", "leg", "9", duration_ms=80)
    run(engine, {a: None, b: None}, 30)
    rx = EventReceiver()
    digits = []
    events = [p for p in a.got if p.payload_type == 101]
    for p in events:
        digits += rx.packet(p.timestamp, p.payload, 0.0)
    assert [d.digit for d in digits] == ["1", "2"]
    assert events[0].marker
    seqs = [p.sequence_number for p in a.got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]  # one stream
    assert [p.timestamp for p in events[:5]] == [events[0].timestamp] * 5  # "1"
    assert events[5].marker and events[5].timestamp != events[0].timestamp  # "2"
    # b has no telephone-event: it hears the digit as a tone.
    from softswitch.media.dtmf import ToneDetector

    heard = b.heard().reshape(-1, 160)
    det = ToneDetector(1)
    found = [d for f in heard for _, d in det.process(f[None, :], np.array([0], np.intp))]
    assert [d.digit for d in found] == ["9"]
    assert any(isinstance(e, PlaybackDone) for e in engine.take_events())


def test_mute_unmute_and_active_speaker(engine, peers):
    engine.create_room("t/3")
    a, b, c = (peer(peers, engine, n) for n in "abc")
    for p in (a, b, c):
        engine.join("t/3", p.name, "leg", p.media, 0.0)
    loud = tone(900, 40, 8000)
    now = run(engine, {a: loud, b: None, c: None}, 20)
    speakers = [e for e in engine.take_events() if isinstance(e, ActiveSpeaker)]
    assert speakers == [ActiveSpeaker("t/3", "a", "leg")]
    engine.mute("a", "leg", True)
    assert engine.list_rooms()[0].speaker is None
    for p in (b, c):
        p.got.clear()
    run(engine, {a: loud[20:], b: None, c: None}, 20, start=now)
    assert np.abs(b.heard(skip=2)).max() == 0  # the tail fades within the first tick
    assert [m.muted for m in engine.list_rooms()[0].members] == [True, False, False]
    engine.mute("a", "leg", False)
    b.got.clear()
    run(engine, {a: loud, b: None, c: None}, 10, start=now + 1)
    assert db(level(b.heard(skip=2), 900), 1.0) > 60


def test_hold_in_a_conference_is_neither_heard_nor_sent_to(engine, peers):
    engine.create_room("t/4")
    a, b = peer(peers, engine, "a"), peer(peers, engine, "b")
    for p in (a, b):
        engine.join("t/4", p.name, "leg", p.media, 0.0)
    hold = LegMedia(
        a.phone.host, a.phone.port, PCMU, telephone_event=TE, direction=Direction.SENDONLY
    )
    engine.update("a", "leg", hold, 0.0)
    run(engine, {a: tone(900, 20, 8000), b: None}, 20)  # music on hold from a
    assert a.got == []
    assert np.abs(b.heard()).max() == 0
    engine.update("a", "leg", a.media, 1.0)  # resumed
    a.got.clear()
    run(engine, {a: None, b: tone(900, 10, 8000)}, 10, start=1.0)
    assert len(a.got) == 10


def test_play_record_and_lobby(engine, peers, tmp_path):
    engine.create_room("t/lobby", mix=False)
    engine.create_room("t/5")
    a, b, c = (peer(peers, engine, n) for n in "abc")
    for p in (a, b):
        engine.join("t/lobby", p.name, "leg", p.media, 0.0)
    engine.join("t/5", "c", "leg", c.media, 0.0)
    engine.create_room("t/5")  # harmless
    # In the lobby nobody hears anybody; a prompt to one leg reaches that leg only.
    pid = engine.play(LegRef("a", "leg"), prompt_path("muted"))
    engine.record(RoomRef("t/5"), tmp_path / "room.wav")
    leg_rid = engine.record(LegRef("c", "leg"), tmp_path / "c.opus")
    engine.play(RoomRef("t/5"), join_tone())
    now = run(engine, {a: tone(400, 60, 8000), b: tone(600, 60, 8000), c: tone(1500, 60, 8000)}, 60)
    assert np.abs(b.heard()).max() == 0
    heard_a = a.heard()
    assert np.abs(heard_a).max() > 1000 and level(heard_a, 600) < level(heard_a, 400) + 1
    done = [e for e in engine.take_events() if isinstance(e, PlaybackDone)]
    assert PlaybackDone(pid, True) in done and len(done) == 2
    # Mute does nothing in a room that does not mix.
    engine.mute("a", "leg", False)
    # a enters the conference: it hears c, c hears it.
    engine.join("t/5", "a", "leg", a.media, now)
    a.got.clear()
    c.got.clear()
    now = run(engine, {a: tone(400, 40, 8000), b: None, c: tone(1500, 40, 8000)}, 40, start=now)
    assert db(level(a.heard(skip=3), 1500), level(a.heard(skip=3), 400)) > 30
    assert db(level(c.heard(skip=3), 400), level(c.heard(skip=3), 1500)) > 30
    engine.stop_record(leg_rid)
    engine.destroy_room("t/5")  # stops the room's recording too
    assert engine.list_rooms()[0].room_id == "t/lobby"
    with wave.open(str(tmp_path / "room.wav")) as w:
        assert w.getframerate() == 8000 and w.getnframes() == 100 * 160
        rec = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    assert level(rec[: 60 * 160], 1500) > 100 * level(rec[: 60 * 160], 600)
    assert level(rec[60 * 160 :], 400) > 100 * level(rec[60 * 160 :], 600)
    from softswitch.media.audiofile import load_audio

    leg_rec = load_audio(tmp_path / "c.opus")
    assert len(leg_rec) == 100 * 160
    with pytest.raises(RoomError):
        engine.play(RoomRef("t/5"), join_tone())
    with pytest.raises(RoomError):
        engine.mute("c", "leg", True)  # c left with the room


def test_moving_between_rooms_and_out_of_a_call_keeps_the_stream_continuous(engine, peers):
    a = peer(peers, engine, "s")
    b_phone = Phone()
    try:
        ep_b = engine.allocate("s", "b")
        engine.connect("s", {"leg": a.media, "b": LegMedia(b_phone.host, b_phone.port, PCMU)}, 0.0)
        b_phone.send((ep_b.host, ep_b.port), b"\x01" * 160)
        settle(engine, 0.0)
        [relayed] = a.phone.receive_rtp(1)
        engine.create_room("r1")
        engine.create_room("r2")
        engine.join("r1", "s", "leg", a.media, 0.1)  # out of the call, into a room
        now = run(engine, {a: None}, 3, start=0.1)
        engine.join("r2", "s", "leg", a.media, now)  # moves
        run(engine, {a: None}, 3, start=now)
        packets = [relayed] + a.got
        seqs = [p.sequence_number for p in packets]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(7)]
        assert {p.ssrc for p in packets} == {relayed.ssrc}
        assert (packets[1].timestamp - relayed.timestamp) & 0xFFFFFFFF == 800  # 0.1 s
        assert packets[1].marker
        # b is not relayed to a while a is in a room.
        b_phone.send((ep_b.host, ep_b.port), b"\x02" * 160)
        settle(engine, now)
        assert all(p.payload[:1] != b"\x02" for p in a.phone.receive_rtp(timeout=0.05))
        engine.leave("s", "leg")  # back to its call
        b_phone.send((ep_b.host, ep_b.port), b"\x03" * 160)
        settle(engine, now + 0.2)
        [back] = a.phone.receive_rtp(1)
        assert back.payload[:1] == b"\x03" and back.sequence_number == (seqs[-1] + 1) & 0xFFFF
    finally:
        b_phone.close()


def test_lost_and_reordered_packets_in_a_room(engine, peers):
    engine.create_room("t/6")
    a, b = peer(peers, engine, "a"), peer(peers, engine, "b")
    for p in (a, b):
        engine.join("t/6", p.name, "leg", p.media, 0.0)
    frames = tone(440, 40, 8000)
    enc = [g711.encode("PCMU", f).tobytes() for f in frames]
    now = 0.0
    order = list(range(40))
    order[10], order[11] = order[11], order[10]  # swapped on the way ...
    order.remove(20)  # ... and one lost
    sent = 0
    for k in range(40):
        while sent < len(order) and order[sent] <= k + (1 if k == 10 else 0):
            i = order[sent]
            a.phone.send(a.to, enc[i], seq=1000 + i, ts=160 * i, advance=False)
            sent += 1
        b.send(np.zeros(160, np.int16))
        settle(engine, now, wait=0.02)
        engine.tick(now)
        b.collect()
        now += TICK
    heard = b.heard(skip=2).reshape(-1, 160)
    # Every frame carries the tone: the swap is undone and the loss concealed.
    assert np.all(np.abs(heard[:-1]).max(axis=1) > 4000)
    assert engine._mix.g711.late == 0


def test_control_errors(engine, peers):
    a = peer(peers, engine, "a")
    with pytest.raises(RoomError):
        engine.join("nope", "a", "leg", a.media, 0.0)
    engine.create_room("r")
    with pytest.raises(KeyError):
        engine.join("r", "a", "zz", a.media, 0.0)
    from softswitch.media.stream import PlanError

    with pytest.raises(PlanError):
        engine.join("r", "a", "leg", LegMedia(None, None, Codec("G722", 9)), 0.0)
    with pytest.raises(RoomError):
        engine.play(LegRef("a", "leg"), join_tone())  # not in a room
    with pytest.raises(RoomError):
        engine.send_dtmf("a", "leg", "1")
    engine.leave("a", "leg")  # in no room: nothing happens
    engine.join("r", "a", "leg", a.media, 0.0)
    assert engine.play(RoomRef("r"), join_tone(), play_id=70) == 70
    with pytest.raises(ValueError):
        engine.play(RoomRef("r"), join_tone(), play_id=70)
    assert engine.play(RoomRef("r"), join_tone()) == 71  # numbering goes on after it
    engine.stop_play(70)
    assert PlaybackDone(70, False) in engine.take_events()
    engine.leave("a", "leg")
    engine.destroy_room("unknown")
    engine.join("r", "a", "leg", a.media, 0.0)
    engine.release("a")
    assert engine.list_rooms()[0].members == ()


def test_media_timeout_of_a_leg_in_a_room(engine, peers):
    engine.create_room("t/7")
    a, b = peer(peers, engine, "a"), peer(peers, engine, "b")
    for p in (a, b):
        engine.join("t/7", p.name, "leg", p.media, 0.0)
    # a keeps talking for 20 s (a packet now and then, read by the staged path), b
    # says nothing after its first packet.
    now = run(engine, {a: None, b: None}, 3)
    for t in (10.0, 20.0):
        a.send(np.zeros(160, np.int16))
        settle(engine, t)
        engine.tick(t)
    assert [e for e in engine.take_events() if not isinstance(e, PlaybackDone)] == []
    engine.tick(now + 30.0)
    from softswitch.media.controller import MediaTimeout

    assert engine.take_events() == [MediaTimeout("b", "leg")]
    engine.tick(50.01)
    assert engine.take_events() == [MediaTimeout("a", "leg")]


def test_digits_cross_a_transcoded_call_as_events(engine, peers):
    g = peer(peers, engine, "call", PCMU)
    o_phone = Phone()
    try:
        ep = engine.allocate("call", "opus")
        o_media = LegMedia(
            o_phone.host, o_phone.port, OPUS, telephone_event=Codec("telephone-event", 96, 48000)
        )
        engine.connect("call", {"leg": g.media, "opus": o_media}, 0.0)
        enc = OpusEncoder(8000)
        now = 0.0
        for k in range(20):
            if k < 7:
                end = k >= 4
                g.phone.send(
                    g.to,
                    bytes(TelephoneEvent(3, end, 10, min(k + 1, 4) * 160)),
                    pt=101,
                    ts=4000,
                    advance=False,
                    marker=k == 0,
                )
            o_phone.send(
                (ep.host, ep.port), enc.encode(np.zeros(160, np.int16)), pt=111, seq=k, ts=960 * k
            )
            settle(engine, now, wait=0.02)
            engine.tick(now)
            now += TICK
        got = [RtpPacket.parse(d) for d, _ in o_phone.receive(timeout=0.05)]
        events = [p for p in got if p.payload_type == 96]
        rx = EventReceiver(48000)
        digits = [d for p in events for d in rx.packet(p.timestamp, p.payload, 0.0)]
        assert [d.digit for d in digits] == ["3"]
        assert digits[0].duration_ms == 80
        assert DtmfReceived("call", "leg", "3", 80) in engine.take_events()
    finally:
        o_phone.close()
