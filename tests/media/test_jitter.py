"""The jitter bank on a manual clock: a tick is a ``pull`` at ``now``, packets are ``put``
with their arrival time. Payloads carry their frame number so the order played shows."""

from __future__ import annotations

import numpy as np
import pytest

from softswitch.media.jitter import (
    ACCEPTED,
    DUPLICATE,
    FRAME,
    LATE,
    LOST,
    RESTARTED,
    SILENT,
    JitterBank,
)

TICK = 0.020


def payload(n: int) -> bytes:
    return n.to_bytes(4, "big") * 40


class Sender:
    """A phone: frame k has seq0 + k and ts0 + 160 k; sends at 20 k ms plus a delay."""

    def __init__(self, bank: JitterBank, row: int, seq0: int = 1000, ts0: int = 5000) -> None:
        self.bank, self.row, self.seq0, self.ts0 = bank, row, seq0, ts0

    def send(self, k: int, now: float) -> None:
        seq = (self.seq0 + k) & 0xFFFF
        ts = (self.ts0 + 160 * k) & 0xFFFFFFFF
        self.bank.put(self.row, seq, ts, payload(k), now)

    def send1(self, k: int, now: float) -> int:
        """Send and file at once: the packet's status."""
        self.send(k, now)
        [status] = self.bank.flush(now)
        return int(status)


def pull(bank: JitterBank, row: int, now: float = 0.0) -> tuple[int, int | None]:
    status, data, lengths = bank.pull(np.array([row], np.intp), now)
    if status[0] != FRAME:
        return int(status[0]), None
    assert lengths[0] == 160
    return FRAME, int.from_bytes(data[0, :4].tobytes(), "big")


def run(bank, row, sender, arrivals: dict[int, float], ticks: int, start: float = 0.005):
    """Deliver frame k at arrivals[k]; pull at start + 20 ms * i. What was played."""
    events = sorted((t, k) for k, t in arrivals.items())
    played = []
    for i in range(ticks):
        now = start + TICK * i
        while events and events[0][0] <= now:
            t, k = events.pop(0)
            sender.send(k, t)
        played.append(pull(bank, row, now))
    return played


def frames(played) -> list[int | None]:
    return [k for _, k in played]


@pytest.fixture
def bank() -> JitterBank:
    return JitterBank(4)


def test_in_order_stream_plays_each_frame_once_with_one_frame_of_delay(bank):
    row = bank.open()
    s = Sender(bank, row)
    played = run(bank, row, s, {k: 0.02 * k for k in range(10)}, 11)
    assert played[0] == (FRAME, 0)  # the frame that arrived before the first tick
    assert frames(played)[:10] == list(range(10))
    assert bank.target(row) == 1
    assert played[10] == (LOST, None)  # the sender stopped: conceal, then silence


def test_silent_before_the_first_packet_and_after_concealment_runs_out(bank):
    row = bank.open()
    s = Sender(bank, row)
    assert pull(bank, row) == (SILENT, None)
    s.send(0, 0.0)
    assert pull(bank, row) == (FRAME, 0)
    assert [pull(bank, row)[0] for _ in range(5)] == [LOST, LOST, LOST, SILENT, SILENT]


def test_reordered_packets_are_played_in_order(bank):
    row = bank.open()
    s = Sender(bank, row)
    # Frames 2 and 3 swap places on the way, both before their tick.
    arrivals = {0: 0.0, 1: 0.02, 3: 0.041, 2: 0.043, 4: 0.08, 5: 0.1}
    assert frames(run(bank, row, s, arrivals, 6, start=0.0045 + 0.04)) == [0, 1, 2, 3, 4, 5]


def test_lost_packet_is_reported_and_playout_goes_on(bank):
    row = bank.open()
    s = Sender(bank, row)
    arrivals = {k: 0.02 * k for k in range(8) if k != 3}
    played = run(bank, row, s, arrivals, 8)
    assert played[3] == (LOST, None)
    assert frames(played) == [0, 1, 2, None, 4, 5, 6, 7]
    assert bank.played[0] == 1000 + 7 + (1 << 32)  # extended sequence number


def test_duplicates_are_dropped(bank):
    row = bank.open()
    s = Sender(bank, row)
    assert s.send1(0, 0.0) == ACCEPTED
    assert s.send1(0, 0.001) == DUPLICATE
    # Twice in the same batch, and again later.
    s.send(1, 0.002)
    s.send(1, 0.003)
    assert list(bank.flush(0.004)) == [DUPLICATE, ACCEPTED]
    assert s.send1(1, 0.005) == DUPLICATE
    assert frames([pull(bank, row), pull(bank, row), pull(bank, row)]) == [0, 1, None]
    assert bank.duplicates == 3


def test_a_packet_after_its_frame_was_concealed_is_late(bank):
    row = bank.open()
    s = Sender(bank, row)
    s.send(0, 0.0)
    s.send(2, 0.04)
    assert frames([pull(bank, row), pull(bank, row)]) == [0, None]
    assert s.send1(1, 0.045) == LATE
    assert pull(bank, row) == (FRAME, 2)
    assert bank.late == 1


def test_payloads_wider_than_a_slot_are_refused(bank):
    row = bank.open()
    with pytest.raises(ValueError):
        bank.put(row, 1, 1, b"x" * 161, 0.0)


def test_sequence_wrap_around(bank):
    row = bank.open()
    s = Sender(bank, row, seq0=65533, ts0=0xFFFFFF00)
    played = run(bank, row, s, {k: 0.02 * k for k in range(8)}, 8)
    assert frames(played) == list(range(8))
    assert bank.late == 0 and bank.restarts == 0


def test_big_sequence_jump_restarts_the_stream(bank):
    row = bank.open()
    s = Sender(bank, row)
    for k in range(3):
        s.send(k, 0.02 * k)
        pull(bank, row)
    # The sender restarts with new numbers (a new SSRC would call restart() instead).
    bank.put(row, 40000, 99, payload(100), 0.06)
    assert list(bank.flush(0.06)) == [RESTARTED]
    assert pull(bank, row) == (FRAME, 100)
    # ... and a packet from far in the past is a restart too, not a late one.
    bank.put(row, 30000, 77, payload(200), 0.08)
    assert list(bank.flush(0.08)) == [RESTARTED]
    assert pull(bank, row) == (FRAME, 200)
    # In one batch: the old stream, a restart, and the new stream going on.
    bank.put(row, 30001, 77 + 160, payload(201), 0.1)
    bank.put(row, 9, 5, payload(300), 0.1)
    bank.put(row, 10, 165, payload(301), 0.1)
    assert list(bank.flush(0.1)) == [LATE, RESTARTED, ACCEPTED]
    assert frames([pull(bank, row), pull(bank, row)]) == [300, 301]
    assert bank.restarts == 3


def test_restart_drops_what_was_buffered(bank):
    row = bank.open()
    s = Sender(bank, row)
    s.send(0, 0.0)
    bank.restart(row)
    assert pull(bank, row) == (SILENT, None)
    bank.put(row, 7, 7, payload(9), 0.03)
    assert pull(bank, row) == (FRAME, 9)


def test_late_burst_deepens_the_buffer_instead_of_losing_it(bank):
    row = bank.open()
    s = Sender(bank, row)
    arrivals = {k: 0.02 * k for k in range(20)}
    for k in (5, 6, 7):  # stuck in a queue, all arrive with frame 8
        arrivals[k] = 0.161
    played = run(bank, row, s, arrivals, 24)
    assert [k for k in frames(played) if k is not None] == list(range(20))
    assert bank.late == 0
    assert bank.target(row) >= 4  # a 60 ms late burst: depth of 4 frames or more


def jittery(n: int, rng: np.random.Generator, spread: float) -> dict[int, float]:
    return {k: 0.02 * k + float(rng.uniform(0, spread)) for k in range(n)}


def test_adapts_up_to_jitter_and_back_down_when_it_ends():
    bank = JitterBank(2)
    row = bank.open()
    s = Sender(bank, row)
    rng = np.random.default_rng(5)
    n = 1500  # 30 s: 10 s of up to 70 ms jitter, then 20 s of a clean network
    arrivals = jittery(500, rng, 0.070)
    arrivals.update({k: 0.02 * k + 0.001 for k in range(500, n)})
    events = sorted((t, k) for k, t in arrivals.items())
    targets, depths, statuses = [], [], []
    for i in range(n):
        now = 0.0105 + TICK * i
        while events and events[0][0] <= now:
            t, k = events.pop(0)
            s.send(k, t)
        statuses.append(pull(bank, row, now)[0])
        targets.append(bank.target(row))
        depths.append(bank.depth(row))
    # Up: within the first second the target covers the jitter ...
    assert 4 <= max(targets[:50]) <= 6
    # ... and after that, what was late at the start is no longer lost.
    assert statuses[100:500].count(FRAME) >= 398
    # Down: the peak decays a frame per second, and the depth follows.
    assert targets[-1] == 1
    assert max(depths[-100:]) <= 2
    assert statuses[-300:].count(FRAME) == 300
    assert bank.lateness(row) < 0.001


def test_target_depth_stays_within_200_ms():
    bank = JitterBank(1)
    row = bank.open()
    s = Sender(bank, row)
    rng = np.random.default_rng(1)
    run(bank, row, s, jittery(200, rng, 0.5), 200)
    assert bank.target(row) == 10


def test_streams_are_independent_and_pulled_together():
    bank = JitterBank(2)  # grows to 4 rows on the third open
    rows = [bank.open() for _ in range(3)]
    senders = [Sender(bank, r, seq0=100 * i) for i, r in enumerate(rows)]
    assert bank.capacity == 4
    for k in range(4):
        for i, s in enumerate(senders):
            if not (i == 1 and k == 2):
                s.send(k + 10 * i, 0.02 * k)
    order = np.array([rows[2], rows[0], rows[1]], np.intp)
    got = []
    for _ in range(4):
        status, data, _ = bank.pull(order, 0.0)
        got.append(
            [
                int.from_bytes(data[j, :4].tobytes(), "big") if status[j] == FRAME else None
                for j in range(3)
            ]
        )
    assert got[0] == [20, 0, 10]
    assert got[2] == [22, 2, None]
    bank.close(rows[1])
    assert bank.open() == rows[1]


def test_fec_lookup_of_the_next_packet(bank):
    row = bank.open()
    s = Sender(bank, row)
    s.send(0, 0.0)
    s.send(2, 0.04)
    pull(bank, row)
    assert pull(bank, row) == (LOST, None)
    lost = int(bank.played[0])
    assert bank.payload(row, lost + 1) == payload(2)
    assert bank.payload(row, lost) is None


def test_constructor_checks():
    with pytest.raises(ValueError):
        JitterBank(slots=24)
    with pytest.raises(ValueError):
        JitterBank(slots=8, max_depth=8)


def test_a_batch_filed_at_once_behaves_as_staged_packets():
    bank = JitterBank(4)
    a, b = bank.open(), bank.open()
    rows = np.array([a, b, a, b], np.int64)
    seq = np.array([10, 500, 11, 501], np.int64)
    ts = np.array([1600, 0, 1760, 160], np.int64)
    t = np.array([0.0, 0.0, 0.001, 0.001])
    payloads = np.stack([np.frombuffer(payload(k), np.uint8) for k in (1, 2, 3, 4)])
    assert list(bank.file(rows, seq, ts, t, payloads, 0.005)) == [ACCEPTED] * 4
    assert list(bank.file(rows[:1], seq[:1], ts[:1], t[:1], payloads[:1], 0.006)) == [DUPLICATE]
    got = []
    for _ in range(2):
        status, data, _ = bank.pull(np.array([a, b], np.intp), 0.01)
        got.append([int.from_bytes(d[:4].tobytes(), "big") for d in data])
    assert got == [[1, 2], [3, 4]]
    assert bank.last_arrival(a) == 0.001
    with pytest.raises(ValueError):
        bank.file(rows, seq, ts, t, payloads[:, :10], 0.0)


def test_a_stream_arriving_around_the_ticks_settles_one_frame_deeper():
    """Arrival times known to 4 ms only (a driver reading sockets every 4 ms), a stream
    arriving around the ticks with a few milliseconds of jitter: the statistics see
    nothing, and the first underrun makes the buffer a frame deeper (no loss)."""
    bank = JitterBank(1, resolution=0.004)
    row = bank.open()
    s = Sender(bank, row)
    rng = np.random.default_rng(2)
    arrivals = {k: 0.02 * k + 0.0195 + float(rng.uniform(0, 0.003)) for k in range(500)}
    played = run(bank, row, s, arrivals, 500, start=0.02)
    assert sum(1 for status, _ in played[5:] if status == LOST) <= 2
    assert bank.late == 0


def test_a_late_packet_raises_the_target_by_what_it_missed():
    bank = JitterBank(1, resolution=0.004)
    row = bank.open()
    s = Sender(bank, row)
    for k in range(3):
        s.send(k, 0.02 * k)
        pull(bank, row, 0.02 * k + 0.005)
    s.send(4, 0.065)
    assert pull(bank, row, 0.065) == (LOST, None)  # frame 3 is missing
    assert s.send1(3, 0.066) == LATE  # ... and comes a millisecond after its tick
    pull(bank, row, 0.085)
    assert bank.target(row) == 2
