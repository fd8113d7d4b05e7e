"""DTMF: RFC 4733 events in and out, and in-band tones detected in decoded audio. Pure.

RFC 4733 reception (:class:`EventReceiver`, one per leg). An event is a series of
packets that all carry the event's start as their RTP timestamp, with a growing
duration; the last one has the E bit and is sent three times. A packet may also carry
several event blocks (RFC 4733 2.5.1.5: earlier, ended events first, each starting
where the one before ended). A digit is reported once, when it ends, keyed by its start
timestamp, so the repeated end packets, redundant blocks and late duplicates are all
recognised. When the end packets are lost the digit is still reported, once: when the
next event starts, or when nothing more was heard of it for ``end_timeout`` seconds
(:meth:`EventReceiver.expire`).

RFC 4733 generation (:func:`event_packets`): the payloads, markers and timestamp offsets
of one digit as a sender emits them, one packet per ``ptime`` plus the end packet three
times; the caller stamps them into its own outgoing stream.

In-band detection (:class:`ToneDetector`) for G.711 legs that did not negotiate
telephone-event: over every stream's decoded frames at once. Each 20 ms hop analyses
the last 40 ms (320 samples, 25 Hz bins, enough to separate the DTMF frequencies, which
are 70 Hz apart at the closest) at the eight DTMF frequencies. A Goertzel filter per
frequency is a single-bin DFT; across many streams the same bins are cheaper as one
matrix product of the ``(streams, 320)`` block with a ``(320, 16)`` cosine/sine basis
than as a 320-step recurrence. A hop holds digit ``d`` when the strongest low-group and
high-group frequencies are ``d``'s, both are loud enough, neither group has a rival
within 6 dB, the twist (high against low) is within -8..+4 dB, and the two tones carry
most of the hop's energy (speech and music spread theirs). A digit starts after two
such hops and ends after two hops without it, and is reported at its end (what
:class:`~softswitch.media.controller.DtmfReceived` says: a digit finished).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from softswitch.media.rtp import DTMF_EVENTS, TelephoneEvent

LOW: Final = (697.0, 770.0, 852.0, 941.0)
HIGH: Final = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD: Final = ("123A", "456B", "789C", "*0#D")  # KEYPAD[low][high]


def digit_event(digit: str) -> int:
    """RFC 4733 event code of a DTMF character (0-9 * # A-D)."""
    code = DTMF_EVENTS.find(digit.upper())
    if code < 0 or len(digit) != 1:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


# --- RFC 4733 in -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Digit:
    digit: str
    duration_ms: int


class EventReceiver:
    """Digits from one leg's telephone-event packets (module docstring)."""

    __slots__ = ("_current", "_current_dur", "_done", "_last_heard", "clock_rate", "end_timeout")

    def __init__(self, clock_rate: int = 8000, end_timeout: float = 0.5) -> None:
        self.clock_rate = clock_rate
        self.end_timeout = end_timeout
        self._current: tuple[int, int] | None = None  # (start timestamp, event) under way
        self._current_dur = 0
        self._last_heard = 0.0
        self._done: list[int] = []  # start timestamps of events reported, newest last

    def packet(self, ts: int, payload: bytes | bytearray | memoryview, now: float) -> list[Digit]:
        """One telephone-event packet (its RTP timestamp and payload)."""
        out: list[Digit] = []
        start = ts
        for off in range(0, len(payload) - 3, 4):
            ev = TelephoneEvent.parse(payload[off : off + 4])
            self._block(start & 0xFFFFFFFF, ev, now, out)
            start += ev.duration
        return out

    def _block(self, start: int, ev: TelephoneEvent, now: float, out: list[Digit]) -> None:
        if start in self._done:
            return  # a repeated end packet, or a redundant copy of an ended event
        if self._current is not None and self._current[0] != start:
            self._finish(out)  # a new event began: the previous one lost its end
        if ev.end:
            self._current = None
            self._report(start, ev.event, ev.duration, out)
            return
        self._current = (start, ev.event)
        self._current_dur = max(self._current_dur, ev.duration)
        self._last_heard = now

    def expire(self, now: float) -> list[Digit]:
        """Report an event whose end packets never came, ``end_timeout`` after its last
        packet. Call it now and then (the engine does every tick for legs with one)."""
        out: list[Digit] = []
        if self._current is not None and now - self._last_heard >= self.end_timeout:
            self._finish(out)
        return out

    @property
    def pending(self) -> bool:
        return self._current is not None

    def _finish(self, out: list[Digit]) -> None:
        assert self._current is not None
        start, event = self._current
        self._current = None
        self._report(start, event, self._current_dur, out)

    def _report(self, start: int, event: int, duration: int, out: list[Digit]) -> None:
        self._current_dur = 0
        self._done.append(start)
        del self._done[:-8]
        if event < len(DTMF_EVENTS):  # flash and other events are not digits
            out.append(Digit(DTMF_EVENTS[event], duration * 1000 // self.clock_rate))


# --- RFC 4733 out ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventPacket:
    marker: bool
    offset: int  # when to send it, in packets (ptimes) after the first
    payload: bytes


def event_packets(
    digit: str,
    duration_ms: int = 100,
    *,
    clock_rate: int = 8000,
    ptime_ms: int = 20,
    volume: int = 10,
) -> list[EventPacket]:
    """The packets of one digit: every ``ptime`` a packet with the duration so far (the
    marker on the first), then the end packet three times (RFC 4733 2.5.1.4), all to be
    sent with the RTP timestamp of the event's start."""
    if duration_ms < ptime_ms:
        raise ValueError("a digit lasts at least one packet time")
    event = digit_event(digit)
    step = clock_rate * ptime_ms // 1000
    total = min(clock_rate * duration_ms // 1000, 0xFFFF)
    out = []
    n = 1
    while n * step < total:
        out.append(
            EventPacket(n == 1, n - 1, bytes(TelephoneEvent(event, False, volume, n * step)))
        )
        n += 1
    end = bytes(TelephoneEvent(event, True, volume, total))
    # The three end packets go out in consecutive packet times (RFC 4733 2.5.1.4 allows
    # them back to back or spread; spread survives a burst of loss).
    out += [EventPacket(n == 1 and i == 0, n - 1 + i, end) for i in range(3)]
    return out


# --- in-band ---------------------------------------------------------------------------

_HOP: Final = 160
_WINDOW: Final = 320
# Power of a bin holding a Hann-windowed sine of amplitude A is (A * N / 4) ** 2.
_MIN_POWER: Final = (400.0 * _WINDOW / 4) ** 2  # tones of amplitude 400 (-38 dBFS) or more
_RIVAL: Final = 10 ** (-6 / 10)  # a group's second frequency must be 6 dB down
_TWIST_HIGH: Final = 10 ** (4 / 10)  # high group at most 4 dB above the low group
_TWIST_LOW: Final = 10 ** (-8 / 10)  # and at most 8 dB below it
_PURITY: Final = 0.4  # the two tones carry this much of the window's energy (a tone
# filling half the window, as at its start and end, scores 0.5; a pure full one 1.0)
_STATE = ("_prev", "_cand", "_run", "_active", "_dur", "_gap")


class ToneDetector:
    """In-band DTMF for streams numbered ``0 .. rows - 1`` (module docstring); the
    numbers are the caller's (the engine uses its jitter bank rows), grown on demand."""

    def __init__(self, rows: int = 16, rate: int = 8000) -> None:
        self.rate = rate
        self._window = np.hanning(_WINDOW).astype(np.float32)
        t = np.arange(_WINDOW) / rate
        cols = []
        for f in LOW + HIGH:
            cols += [np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)]
        self._basis = np.stack(cols, axis=1).astype(np.float32)
        self.rows = rows
        self._prev = np.zeros((rows, _HOP), np.int16)  # each stream's previous hop
        self._cand = np.full(rows, -1, np.int8)  # digit seen in the last hop
        self._run = np.zeros(rows, np.int32)  # ... in how many hops in a row
        self._active = np.full(rows, -1, np.int8)  # digit being held, -1 for none
        self._dur = np.zeros(rows, np.int32)  # its length in hops
        self._gap = np.zeros(rows, np.int32)  # hops since it was last seen

    def reset(self, row: int) -> None:
        """A new stream in ``row``."""
        if row >= self.rows:
            self._grow(row + 1)
        self._prev[row] = 0
        self._cand[row] = self._active[row] = -1
        self._run[row] = self._dur[row] = self._gap[row] = 0

    def _grow(self, rows: int) -> None:
        rows = max(rows, 2 * self.rows)
        for name in _STATE:
            old = getattr(self, name)
            fill = -1 if name in ("_cand", "_active") else 0
            new = np.full((rows, *old.shape[1:]), fill, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self.rows = rows

    def classify(self, frames: npt.NDArray[np.int16], rows: npt.NDArray[np.intp]) -> np.ndarray:
        """The digit (index into :data:`DTMF_EVENTS`) each row's last 40 ms hold, or -1.
        Advances the rows' history by ``frames``; :meth:`process` is the usual entry."""
        window = np.empty((len(rows), _WINDOW), np.float32)
        window[:, :_HOP] = self._prev[rows]
        window[:, _HOP:] = frames
        self._prev[rows] = frames
        window *= self._window
        bins = window @ self._basis  # (S, 16): cos, sin per frequency
        power = bins[:, 0::2] ** 2 + bins[:, 1::2] ** 2  # (S, 8)
        low, high = power[:, :4], power[:, 4:]
        li = np.argmax(low, axis=1)
        hi = np.argmax(high, axis=1)
        ar = np.arange(len(rows))
        lp, hp = low[ar, li], high[ar, hi]
        low2 = np.partition(low, 2, axis=1)[:, 2]  # second largest of four
        high2 = np.partition(high, 2, axis=1)[:, 2]
        # A bin holding a windowed sine has N / 3 times the windowed sine's energy, so
        # two pure tones make lp + hp equal to N / 3 times the window's energy.
        energy = np.einsum("ij,ij->i", window, window) * (_WINDOW / 3)
        ok = (
            (lp >= _MIN_POWER)
            & (hp >= _MIN_POWER)
            & (low2 <= _RIVAL * lp)
            & (high2 <= _RIVAL * hp)
            & (hp <= _TWIST_HIGH * lp)
            & (hp >= _TWIST_LOW * lp)
            & (lp + hp >= _PURITY * energy)
        )
        digit = li * 4 + hi  # KEYPAD order: row-major low x high
        return np.where(ok, _KEYPAD_EVENT[digit], -1).astype(np.int8)

    def process(
        self, frames: npt.NDArray[np.int16], rows: npt.NDArray[np.intp]
    ) -> list[tuple[int, Digit]]:
        """One 20 ms hop for streams ``rows`` (``frames`` is ``(len(rows), 160)``);
        returns ``(row, Digit)`` for every digit that ended in this hop."""
        if len(rows) and int(rows.max()) >= self.rows:
            self._grow(int(rows.max()) + 1)
        det = self.classify(frames, rows)
        cand, run = self._cand[rows], self._run[rows]
        active, dur, gap = self._active[rows], self._dur[rows], self._gap[rows]
        idle = active < 0
        # Not holding a digit: the same detection twice in a row starts one.
        run = np.where(det >= 0, np.where(det == cand, run + 1, 1), 0)
        starts = idle & (run >= 2)
        # Holding one: it grows while seen, ends after two hops without it.
        seen = ~idle & (det == active)
        gap = np.where(idle | seen, 0, gap + 1)
        dur = np.where(seen, dur + 1, dur)
        ends = ~idle & (gap >= 2)
        out: list[tuple[int, Digit]] = []
        for j in np.flatnonzero(ends).tolist():
            ms = int(dur[j]) * 1000 * _HOP // self.rate
            out.append((int(rows[j]), Digit(DTMF_EVENTS[int(active[j])], ms)))
        active = np.where(starts, det, np.where(ends, -1, active)).astype(np.int8)
        dur = np.where(starts, run, np.where(ends, 0, dur))
        gap = np.where(ends | starts, 0, gap)
        run = np.where(ends, 0, run)
        self._cand[rows] = det
        self._run[rows] = run
        self._active[rows] = active
        self._dur[rows] = dur
        self._gap[rows] = gap
        return out


_KEYPAD_EVENT = np.array(
    [DTMF_EVENTS.index(KEYPAD[lo][hi]) for lo in range(4) for hi in range(4)], np.int8
)


def tone(digit: str, duration_ms: int, rate: int = 8000, amplitude: float = 6000.0) -> np.ndarray:
    """A DTMF digit as int16 samples (two sines of ``amplitude`` each)."""
    d = digit.upper()
    cells = [(lo, row.find(d)) for lo, row in enumerate(KEYPAD) if d and d in row]
    if len(d) != 1 or not cells:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    lo, hi = cells[0]
    t = np.arange(rate * duration_ms // 1000) / rate
    x = amplitude * (np.sin(2 * np.pi * LOW[lo] * t) + np.sin(2 * np.pi * HIGH[hi] * t))
    return x.astype(np.int16)
