from __future__ import annotations

import numpy as np
import pytest

from softswitch.media.mixer import Mixer

N = 160


def reference(rooms: dict[str, list[str]], frames: dict[str, np.ndarray], muted=()):
    """Mix-minus with plain Python integers, one sample at a time."""
    heard = {}
    for members in rooms.values():
        for k in members:
            row = []
            for t in range(N):
                total = sum(int(frames[m][t]) for m in members if m != k and m not in muted)
                row.append(max(-32768, min(32767, total)))
            heard[k] = np.array(row, np.int16)
    return heard


def tick(mixer: Mixer, frames: dict, **kw) -> dict:
    pcm = np.stack([frames[k] for k in mixer.keys]) if mixer.keys else np.zeros((0, N), np.int16)
    out = mixer.mix(pcm.astype(np.int16), **kw)
    return {k: out[i] for i, k in enumerate(mixer.keys)}


def silence(keys) -> dict:
    return {k: np.zeros(N, np.int16) for k in keys}


def settle(mixer: Mixer) -> None:
    """One silent tick: the join fades are spent."""
    tick(mixer, silence(mixer.keys))


def test_mix_minus_matches_the_python_reference_across_rooms_of_many_sizes():
    rng = np.random.default_rng(11)
    rooms = {
        f"r{i}": [f"r{i}p{j}" for j in range(size)]
        for i, size in enumerate([1, 2, 3, 3, 5, 10, 4, 3, 7])
    }
    m = Mixer()
    for room, keys in rooms.items():
        for k in keys:
            m.join(k, room)
    settle(m)
    for scale in (3000, 30000):  # the loud tick clips
        frames = {
            k: (rng.standard_normal(N) * scale).clip(-32768, 32767).astype(np.int16) for k in m.keys
        }
        got = tick(m, dict(frames))
        want = reference(rooms, frames)
        for k in m.keys:
            assert np.array_equal(got[k], want[k]), k
    # Rooms of one size share a block: 3 rooms of 3 participants.
    assert sorted(len(m.members(r)) for r in m.rooms) == [1, 2, 3, 3, 3, 4, 5, 7, 10]


def test_clipping_in_both_directions():
    m = Mixer()
    for k in "abc":
        m.join(k, "room")
    settle(m)
    full = np.full(N, 30000, np.int16)
    got = tick(m, {"a": full, "b": full, "c": -full})
    assert np.all(got["c"] == 32767)  # 60000 clipped
    assert np.all(got["a"] == 0) and np.all(got["b"] == 0)
    got = tick(m, {"a": -full, "b": -full, "c": full})
    assert np.all(got["c"] == -32768)


def test_muted_participant_is_not_heard_but_hears():
    m = Mixer()
    for k in "abc":
        m.join(k, "room")
    settle(m)
    m.mute("b", True)
    assert m.muted("b")
    frames = {k: np.full(N, v, np.int16) for k, v in zip("abc", (100, 2000, 30), strict=True)}
    tick(m, dict(frames))  # b's tail goes into this tick
    got = tick(m, dict(frames))
    want = reference({"room": list("abc")}, frames, muted={"b"})
    for k in "abc":
        assert np.array_equal(got[k], want[k])
    assert np.all(got["b"] == 130)


def test_join_fades_in_without_a_click():
    m = Mixer(ramp=80)
    m.join("a", "room")
    settle(m)
    m.join("b", "room")
    loud = np.full(N, 20000, np.int16)
    got = tick(m, {"a": np.zeros(N, np.int16), "b": loud})
    heard = got["a"].astype(int)
    # From silence to full level in 80 steps of 250: no jump larger than one step.
    assert heard[0] == 250 and heard[79] == 20000 and heard[-1] == 20000
    assert np.max(np.abs(np.diff(heard))) <= 251
    # The joiner's own hearing fades in as well.
    m.join("c", "room")
    got = tick(m, {"a": loud, "b": np.zeros(N, np.int16), "c": np.zeros(N, np.int16)})
    assert got["c"][0] == 250 and got["c"][-1] == 20000
    assert got["b"][0] == 20000  # old members hear a at once


def sine(freq: float, start: int, amplitude: float = 12000) -> np.ndarray:
    t = np.arange(start, start + N)
    return (amplitude * np.sin(2 * np.pi * freq * t / 8000)).astype(np.int16)


@pytest.mark.parametrize("how", ["leave", "mute"])
def test_leaving_or_muting_tails_off_without_a_discontinuity(how):
    m = Mixer(ramp=80)
    m.join("a", "room")
    m.join("b", "room")
    settle(m)
    quiet = np.zeros(N, np.int16)
    got = tick(m, {"a": quiet, "b": sine(440, 0)})
    last = int(got["a"][-1])
    if how == "leave":
        m.leave("b")
        after = tick(m, {"a": quiet})["a"].astype(int)
    else:
        m.mute("b", True)
        after = tick(m, {"a": quiet, "b": sine(440, N)})["a"].astype(int)
    # The first sample continues the waveform; the tail is gone within the ramp.
    step = np.max(np.abs(np.diff(got["a"].astype(int))))
    assert abs(after[0] - last) <= step
    assert np.all(after[80:] == 0)
    again = tick(m, {k: quiet for k in m.keys})["a"]
    assert np.all(again == 0)


def test_rooms_are_independent_and_participants_can_move():
    m = Mixer()
    m.join("a", "x")
    m.join("b", "x")
    m.join("c", "y")
    m.join("d", "y")
    settle(m)
    frames = {k: np.full(N, v, np.int16) for k, v in zip("abcd", (1, 10, 100, 1000), strict=True)}
    got = tick(m, dict(frames))
    assert [int(got[k][0]) for k in "abcd"] == [10, 1, 1000, 100]
    m.join("b", "y")  # moves
    assert m.room_of("b") == "y" and m.members("x") == ["a"]
    settle(m)
    settle(m)
    got = tick(m, dict(frames))
    assert [int(got[k][0]) for k in "abcd"] == [0, 1100, 1010, 110]
    assert m.room_total("y")[0] == 1110
    assert m.room_total("nowhere") is None


def test_injections_reach_a_room_or_one_participant():
    m = Mixer()
    for k in "ab":
        m.join(k, "x")
    m.join("c", "y")
    settle(m)
    prompt = np.full(N, 500, np.int16)
    got = tick(m, silence("abc"), inject=[("x", prompt)], whisper=[("c", prompt + 1)])
    assert [int(got[k][0]) for k in "abc"] == [500, 500, 501]
    assert m.room_total("x")[0] == 500


def test_loudest_talker_with_hysteresis():
    m = Mixer(speaker_every=1)
    for k in "abc":
        m.join(k, "room")
    m.join("z", "other")
    settle(m)
    assert m.speakers == {"room": None, "other": None}

    def talk(**amps):
        changes = []
        for _ in range(6):
            tick(m, {k: sine(300, 0, amps.get(k, 0)) for k in m.keys})
            changes += m.speaker_changes
        return changes

    assert talk(a=3000) == [("room", "a")]
    assert talk(a=3000, b=3600) == []  # 1.4x louder: not enough to take over
    assert talk(a=3000, b=6000) == [("room", "b")]
    assert talk(b=60, c=80) == []  # background noise moves nothing
    assert m.speakers["room"] == "b"
    m.leave("b")
    assert m.speakers["room"] is None
    assert talk(z=5000) == [("other", "z")]


def test_shape_and_ramp_checks():
    m = Mixer()
    m.join("a", "r")
    with pytest.raises(ValueError):
        m.mix(np.zeros((2, N), np.int16))
    with pytest.raises(ValueError):
        Mixer(ramp=0)
    assert len(m) == 1 and "a" in m
    m.leave("a")
    m.leave("a")  # harmless
    assert m.keys == [] and m.mix(np.zeros((0, N), np.int16)).shape == (0, N)
