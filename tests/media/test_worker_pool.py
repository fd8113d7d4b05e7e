"""WorkerPoolController with real worker processes and real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from softswitch.media import pool as pool_module
from softswitch.media.controller import (
    Codec,
    DtmfReceived,
    LegMedia,
    MediaEvent,
    MediaTimeout,
)
from softswitch.media.pool import WorkerPoolController
from softswitch.media.rtp import RtpPacket, TelephoneEvent
from swcodecs import g711
from tests.media._phones import Phone, dominant_frequency, encode, tone
from tests.support.ports import free_port

PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
FRAMES = 25


def port_range(pairs: int = 20) -> tuple[int, int]:
    base = free_port(udp=True, tcp=False, span=2 * pairs)
    return base, base + 2 * pairs - 1


def worker_children() -> list[int]:
    """Pids of this process's children that run a media worker (zombies included)."""
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"softswitch.media.worker" in cmdline:
            out.append(int(entry.name))
    return out


@pytest.fixture(autouse=True)
def no_worker_left_behind() -> Iterator[None]:
    yield
    assert worker_children() == []


class Recorder:
    def __init__(self) -> None:
        self.events: list[MediaEvent] = []

    def __call__(self, event: MediaEvent) -> None:
        self.events.append(event)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[MediaEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.events


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPoolController]:
    ctl = WorkerPoolController("127.0.0.1", port_range(), 2, media_timeout=30.0)
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop()


def drain(p: Phone) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(p.sock.recv(4096))
        except BlockingIOError:
            return out


def packets_of(p: Phone) -> list[RtpPacket]:
    return [RtpPacket.parse(d) for d in drain(p)]


def audio(packets: list[RtpPacket], law: str, pt: int) -> np.ndarray:
    codes = np.frombuffer(b"".join(x.payload for x in packets if x.payload_type == pt), np.uint8)
    return g711.decode(law, codes)  # type: ignore[arg-type]


async def talk(pairs: list[tuple[Phone, tuple[str, int], np.ndarray, int]]) -> None:
    for i in range(FRAMES):
        for p, to, codes, pt in pairs:
            p.send(to, codes[i].tobytes(), pt=pt)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.15)


def call(ctl: WorkerPoolController, sid: str, a: Phone, b: Phone, codec_b: Codec = PCMU):
    ea, eb = ctl.allocate(sid, "a"), ctl.allocate(sid, "b")
    ctl.connect(sid, {"a": LegMedia(a.host, a.port, PCMU), "b": LegMedia(b.host, b.port, codec_b)})
    return (ea.host, ea.port), (eb.host, eb.port)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(30)
async def test_two_relayed_calls_land_on_different_workers_and_each_phone_hears_the_other(pool):
    phones = [Phone() for _ in range(4)]
    a1, b1, a2, b2 = phones
    try:
        to_a1, to_b1 = call(pool, "c1", a1, b1)
        to_a2, to_b2 = call(pool, "c2", a2, b2)
        assert {pool.worker_of("c1"), pool.worker_of("c2")} == {0, 1}
        await pool.sync()  # bound: in a real call the SDP round trip gives them the time
        for sid, ends in (("c1", (to_a1, to_b1)), ("c2", (to_a2, to_b2))):
            low, high = pool.workers[pool.worker_of(sid)].port_range  # type: ignore[index]
            assert all(low <= port <= high for _, port in ends), "legs live in one worker"
        tones = [encode("PCMU", tone(f, FRAMES)) for f in (500, 1000, 1500, 2000)]
        await talk(
            [
                (a1, to_a1, tones[0], 0),
                (b1, to_b1, tones[1], 0),
                (a2, to_a2, tones[2], 0),
                (b2, to_b2, tones[3], 0),
            ]
        )
        heard = {p: packets_of(p) for p in phones}
        assert all(len(packets) == FRAMES for packets in heard.values())
        for listener, freq in ((b1, 500), (a1, 1000), (b2, 1500), (a2, 2000)):
            assert dominant_frequency(audio(heard[listener], "PCMU", 0)) == pytest.approx(
                freq, abs=10
            )
        # A relay does not touch the payload.
        assert b"".join(p.payload for p in heard[b1]) == tones[0].tobytes()
        await pool.sync()
        assert [w.stats.forwarded for w in pool.workers] == [2 * FRAMES, 2 * FRAMES]
        assert pool.stats.forwarded == 4 * FRAMES
        assert all(w.state == "running" and w.pid for w in pool.workers)
    finally:
        for p in phones:
            p.close()


@pytest.mark.timeout(30)
async def test_transcoded_call_and_dtmf_event_cross_back_from_the_worker():
    recorder = Recorder()
    ctl = WorkerPoolController("127.0.0.1", port_range(), 2)
    ctl.set_event_handler(recorder)
    await ctl.start()
    a, b = Phone(), Phone()
    te = Codec("telephone-event", 101)
    try:
        ea, eb = ctl.allocate("t", "a"), ctl.allocate("t", "b")
        ctl.connect(
            "t",
            {
                "a": LegMedia(a.host, a.port, PCMU, telephone_event=te),
                "b": LegMedia(b.host, b.port, PCMA, telephone_event=te),
            },
        )
        await ctl.sync()
        tone_a, tone_b = encode("PCMU", tone(1000, FRAMES)), encode("PCMA", tone(2000, FRAMES))
        await talk([(a, (ea.host, ea.port), tone_a, 0), (b, (eb.host, eb.port), tone_b, 8)])
        heard_by_b, heard_by_a = packets_of(b), packets_of(a)
        assert len(heard_by_b) == len(heard_by_a) == FRAMES
        assert b"".join(p.payload for p in heard_by_b) == g711.ulaw_to_alaw(tone_a).tobytes()
        assert dominant_frequency(audio(heard_by_a, "PCMU", 0)) == pytest.approx(2000, abs=10)
        for _ in range(3):
            a.send(
                (ea.host, ea.port), bytes(TelephoneEvent(5, True, 10, 800)), pt=101, advance=False
            )
        assert await recorder.wait_for(1) == [DtmfReceived("t", "a", "5", 100)]
        await ctl.sync()
        # The three event packets go out with the tick too, on a transcoded route.
        assert ctl.stats.transcoded == 2 * FRAMES + 3
    finally:
        await ctl.stop()
        a.close()
        b.close()


@pytest.mark.timeout(30)
async def test_placement_is_least_loaded_and_sticky_per_session(pool):
    pool.allocate("s1", "a")
    pool.allocate("s2", "a")
    pool.allocate("s1", "b")
    pool.allocate("s1", "c")  # a third leg (a conference) stays with its session
    assert pool.worker_of("s1") != pool.worker_of("s2")
    s2_worker = pool.worker_of("s2")
    assert pool.worker_of(pool.allocate("s3", "a") and "s3") == s2_worker  # fewest legs
    assert pool.allocate("s1", "a") == pool.allocate("s1", "a")  # twice: same port
    legs = sorted(w.legs for w in pool.workers)
    assert legs == [2, 3]
    pool.release("s1")
    pool.release("s1")  # harmless
    assert pool.worker_of("s1") is None
    assert sorted(w.legs for w in pool.workers) == [0, 2]
    await pool.sync()
    assert sorted(w.stats.received for w in pool.workers) == [0, 0]


@pytest.mark.timeout(30)
async def test_errors_known_here_raise_at_once_and_engine_errors_end_the_session(pool):
    recorder = Recorder()
    pool.set_event_handler(recorder)
    a, b = Phone(), Phone()
    try:
        with pytest.raises(KeyError):
            pool.connect("nobody", {})
        pool.allocate("p", "a")
        with pytest.raises(KeyError):
            pool.connect(
                "p", {"a": LegMedia(a.host, a.port, PCMU), "z": LegMedia(None, None, PCMU)}
            )
        pool.allocate("p", "b")
        g722 = Codec("G722", 9)  # a codec the engine cannot serve
        pool.connect(
            "p", {"a": LegMedia(a.host, a.port, PCMU), "b": LegMedia(b.host, b.port, g722)}
        )
        events = await recorder.wait_for(2)
        assert set(events) == {MediaTimeout("p", "a"), MediaTimeout("p", "b")}
        # A generic call to a method the engine does not have fails the same way, once.
        pool.call("p", "no_such_method", 1, flag=True)
        await pool.sync()
        assert len(recorder.events) == 2
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(30)
async def test_killed_worker_is_detected_its_sessions_time_out_and_it_is_replaced():
    recorder = Recorder()
    ctl = WorkerPoolController("127.0.0.1", port_range(), 2)
    ctl.set_event_handler(recorder)
    await ctl.start()
    phones = [Phone() for _ in range(6)]
    a1, b1, a2, b2, a3, b3 = phones
    try:
        to_a1, _ = call(ctl, "doomed", a1, b1)
        to_a2, _ = call(ctl, "survivor", a2, b2)
        victim = ctl.workers[ctl.worker_of("doomed")]  # type: ignore[index]
        other = ctl.worker_of("survivor")
        await ctl.sync()
        for _ in range(3):
            a1.send(to_a1)
            a2.send(to_a2)
            await asyncio.sleep(0.02)
        await ctl.sync()
        before = ctl.stats.forwarded
        assert before == 6
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        events = await recorder.wait_for(2)
        assert set(events) == {MediaTimeout("doomed", "a"), MediaTimeout("doomed", "b")}
        assert ctl.worker_of("doomed") is None
        ctl.release("doomed")  # what the B2BUA does next: harmless
        # The other worker's call goes on.
        drain(b2)
        a2.send(to_a2)
        assert len(b2.receive(1, 1.0)) == 1
        # A new worker takes the slice over.
        deadline = time.monotonic() + 10
        while ctl.workers[victim.index].state != "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        replaced = ctl.workers[victim.index]
        assert replaced.state == "running" and replaced.restarts == 1
        assert replaced.pid != victim.pid and not alive(victim.pid)
        # New calls go to it (it holds fewer legs) and relay.
        to_a3, _ = call(ctl, "new", a3, b3)
        assert ctl.worker_of("new") == victim.index != other
        await ctl.sync()
        a3.send(to_a3)
        assert len(b3.receive(1, 1.0)) == 1
        await ctl.sync()
        assert ctl.stats.forwarded >= before + 2  # the dead worker's counts are kept
        assert len(recorder.events) == 2
    finally:
        await ctl.stop()
        for p in phones:
            p.close()


@pytest.mark.timeout(30)
async def test_silent_worker_is_killed_by_the_watchdog():
    recorder = Recorder()
    ctl = WorkerPoolController("127.0.0.1", port_range(), 2, stats_interval=0.1, watchdog=0.6)
    ctl.set_event_handler(recorder)
    await ctl.start()
    try:
        ctl.allocate("hung", "a")
        victim = ctl.workers[ctl.worker_of("hung")]  # type: ignore[index]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGSTOP)  # alive, but deaf
        assert await recorder.wait_for(1, 5.0) == [MediaTimeout("hung", "a")]
        assert not alive(victim.pid)
    finally:
        await ctl.stop()


@pytest.mark.timeout(30)
async def test_allocate_stays_instant_while_workers_cannot_answer(pool, monkeypatch):
    recorder = Recorder()
    pool.set_event_handler(recorder)
    pids = [w.pid for w in pool.workers]
    a, b = Phone(), Phone()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        durations = []
        for i in range(8):  # the slices hold 10 pairs each
            sid = f"call{i}"
            started = time.perf_counter()
            pool.allocate(sid, "a")
            pool.allocate(sid, "b")
            pool.connect(
                sid, {"a": LegMedia(a.host, a.port, PCMU), "b": LegMedia(b.host, b.port, PCMU)}
            )
            durations.append(time.perf_counter() - started)
            await asyncio.sleep(0)  # the loop runs: the writes are attempted
        assert max(durations) < 0.005
        assert sorted(w.legs for w in pool.workers) == [8, 8]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    await pool.sync()
    assert recorder.events == []  # every port was bound when they woke up
    a.close()
    b.close()


@pytest.mark.timeout(30)
async def test_a_worker_that_cannot_keep_up_with_control_calls_is_killed(pool, monkeypatch):
    monkeypatch.setattr(pool_module, "MAX_BACKLOG", 256 * 1024)
    recorder = Recorder()
    pool.set_event_handler(recorder)
    pool.allocate("flood", "a")
    victim = pool.workers[pool.worker_of("flood")]  # type: ignore[index]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGSTOP)
    media = LegMedia("127.0.0.1", 9, PCMU)
    for _ in range(200):
        if recorder.events:
            break
        for _ in range(500):
            pool.update("flood", "a", media)
        await asyncio.sleep(0.01)
    assert await recorder.wait_for(1) == [MediaTimeout("flood", "a")]


@pytest.mark.timeout(30)
async def test_stop_leaves_no_process_and_closes_the_ports():
    ctl = WorkerPoolController("127.0.0.1", port_range(), 2)
    await ctl.start()
    a, b = Phone(), Phone()
    try:
        to_a, _ = call(ctl, "x", a, b)
        pids = [w.pid for w in ctl.workers]
        assert sorted(worker_children()) == sorted(pids)
        await ctl.sync()
        a.send(to_a)
        assert len(b.receive(1, 1.0)) == 1
        await ctl.stop()
        assert not any(alive(pid) for pid in pids if pid is not None)
        assert worker_children() == []
        assert all(w.state == "stopped" for w in ctl.workers)
        a.send(to_a)
        assert b.receive(1, 0.2) == []
        await ctl.stop()  # twice: harmless
    finally:
        await ctl.stop()
        a.close()
        b.close()


@pytest.mark.timeout(30)
async def test_workers_can_be_pinned_to_a_cpu():
    cpu = sorted(os.sched_getaffinity(0))[-1]
    async with WorkerPoolController("127.0.0.1", port_range(), 1, pin=[cpu]) as ctl:
        pid = ctl.workers[0].pid
        assert pid is not None and os.sched_getaffinity(pid) == {cpu}


@pytest.mark.timeout(30)
async def test_a_stop_abandoned_at_its_first_wait_still_leaves_no_process():
    """What a synchronous shutdown path does with a coroutine that would wait."""
    ctl = WorkerPoolController("127.0.0.1", port_range(), 2)
    await ctl.start()
    pids = [w.pid for w in ctl.workers]
    stopping = ctl.stop()
    with pytest.raises(StopIteration):
        stopping.send(None)
        stopping.close()
        raise StopIteration
    assert not any(alive(pid) for pid in pids if pid is not None)
